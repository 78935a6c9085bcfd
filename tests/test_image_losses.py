"""The image pretext losses: in-painting's weighted L2 and MAE's masked MSE (by hand, with
zero gradient outside the mask) and MAE's per-patch normalised targets."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.data import image_masks as M
from ssl_jax.models import image_losses as L


def _reference_inpaint_loss(pred, target, mask, weights=None) -> float:
    """The in-painting loss in numpy float64 (was ssl_jax's numpy reference; only tests used
    it): sum m w (pred - target)^2 / (C * sum m w) over pixels and channels."""
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    mask = np.asarray(mask, bool)
    weights = np.ones(mask.shape) if weights is None else np.asarray(weights, np.float64)
    per_pixel = ((pred - target) ** 2).mean(axis=-1)  # [..., H, W]
    scale = np.broadcast_to(mask * weights, per_pixel.shape)  # [..., H, W]
    if scale.sum() <= 0:
        raise ValueError("inpaint_loss: the mask hides no pixel with a positive weight")
    return float((scale * per_pixel).sum() / scale.sum())


def _hand_loss(pred, target, mask, weights):
    total, norm = 0.0, 0.0
    for b in range(pred.shape[0]):
        for i in range(pred.shape[1]):
            for j in range(pred.shape[2]):
                if mask[i, j]:
                    total += weights[i, j] * np.mean((pred[b, i, j] - target[b, i, j]) ** 2)
                    norm += weights[i, j]
    return total / norm


def test_inpaint_loss_by_hand_and_jax_agrees():
    rng = np.random.default_rng(2)
    pred, target = rng.random((2, 6, 6, 3)), rng.random((2, 6, 6, 3))
    mask = np.zeros((6, 6), bool)
    mask[1:5, 2:6] = True
    weights = M.overlap_weights(mask, overlap=1, weight=10.0)
    expected = _hand_loss(pred, target, mask, weights)
    assert _reference_inpaint_loss(pred, target, mask, weights) == pytest.approx(expected,
                                                                                 rel=1e-12)
    assert float(L.inpaint_loss_jax(pred, target, mask, weights)) == pytest.approx(expected,
                                                                                  rel=1e-5)
    # Unit weights, constant error d: the loss is d^2 whatever the visible pixels hold.
    off = target + 0.5 * mask[None, :, :, None] + 9.0 * ~mask[None, :, :, None]
    assert _reference_inpaint_loss(off, target, mask) == pytest.approx(0.25)
    assert float(L.inpaint_loss_jax(off, target, mask)) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="hides no pixel"):
        _reference_inpaint_loss(pred, target, np.zeros((6, 6), bool), weights)


def test_inpaint_loss_jax_gradient_is_zero_outside_the_mask():
    rng = np.random.default_rng(3)
    pred, target = rng.random((2, 8, 8, 3)), rng.random((2, 8, 8, 3))
    mask = M.central_mask(8)
    weights = M.overlap_weights(mask, overlap=1)
    grad = jax.grad(L.inpaint_loss_jax)(jnp.asarray(pred, jnp.float32), target, mask, weights)
    grad = np.asarray(grad)
    assert np.all(grad[:, ~mask] == 0.0)
    assert np.all(grad[:, mask] != 0.0)
    jitted = jax.jit(L.inpaint_loss_jax)(pred, target, mask, weights)
    assert float(jitted) == pytest.approx(_reference_inpaint_loss(pred, target, mask, weights),
                                          rel=1e-5)


def test_normalized_patch_targets():
    rng = np.random.default_rng(7)
    patches = rng.random((2, 5, 48)) * 3.0 + 2.0
    normed = L.normalized_patch_targets(patches)
    np.testing.assert_allclose(normed.mean(-1), 0.0, atol=1e-12)
    np.testing.assert_allclose(normed.var(-1), 1.0, rtol=1e-4)
    flat = L.normalized_patch_targets(np.full((1, 1, 4), 5.0))  # constant patch: eps keeps 0
    np.testing.assert_array_equal(flat, 0.0)
    np.testing.assert_allclose(np.asarray(L.normalized_patch_targets(jnp.asarray(patches))),
                               normed, rtol=1e-4, atol=1e-5)


def test_mae_loss_ignores_visible_patches():
    rng = np.random.default_rng(8)
    pred, target = rng.random((2, 6, 12)), rng.random((2, 6, 12))
    _, mask = M.patch_masks(2, 6, 0.5, rng)
    expected = np.mean([np.mean((pred[b, n] - target[b, n]) ** 2)
                        for b in range(2) for n in range(6) if mask[b, n]])
    assert float(L.mae_loss_jax(pred, target, mask)) == pytest.approx(expected, rel=1e-5)
    changed = np.where(mask[:, :, None], pred, 100.0)  # visible predictions do not count
    assert float(L.mae_loss_jax(changed, target, mask)) == pytest.approx(expected, rel=1e-5)
    grad = np.asarray(jax.grad(L.mae_loss_jax)(jnp.asarray(pred, jnp.float32), target, mask))
    assert np.all(grad[~mask] == 0.0) and np.all(grad[mask] != 0.0)
    assert float(L.mae_loss_jax(pred, target, np.zeros((6,), bool))) == 0.0
