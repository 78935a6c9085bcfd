"""The reconstruction losses of the image pretext tasks (their masks are drawn host-side in
ssl_jax/data/image_masks.py).

Context encoders (Pathak et al., 2016): `inpaint_loss_jax`, an L2 over the hidden pixels,
weighted by `image_masks.overlap_weights` (the overlap band 10x).
MAE (He et al., 2021): `normalized_patch_targets` (norm_pix_loss) and `mae_loss_jax`, the
MSE over the hidden patches.
"""
from __future__ import annotations

import jax.numpy as jnp


def inpaint_loss_jax(pred: jnp.ndarray, target: jnp.ndarray, mask: jnp.ndarray,
                     weights: jnp.ndarray | None = None) -> jnp.ndarray:
    """Weighted L2 over the hidden pixels only, float32:

        sum_{pixels p, channels c} m_p w_p (pred - target)^2 / (C * sum_p m_p w_p)

    pred, target: [..., H, W, C]; mask, weights: [..., H, W] (broadcast over the batch);
    weights default to 1. A constant error d on the hidden pixels scores d^2. Visible pixels
    get exactly zero gradient; an empty mask gives 0 (it cannot raise under jit)."""
    pred, target = jnp.asarray(pred, jnp.float32), jnp.asarray(target, jnp.float32)
    scale = jnp.asarray(mask, jnp.float32)
    if weights is not None:
        scale = scale * jnp.asarray(weights, jnp.float32)
    per_pixel = jnp.mean(jnp.square(pred - target), axis=-1)  # [..., H, W]
    scale = jnp.broadcast_to(scale, per_pixel.shape)  # [..., H, W]
    total = jnp.sum(scale)
    return jnp.sum(scale * per_pixel) / jnp.where(total > 0, total, 1.0)


def normalized_patch_targets(patches, eps: float = 1e-6):
    """[..., D] -> [..., D]: each patch's pixels minus their mean, over sqrt(var + eps).

    MAE's norm_pix_loss target, which improved its representations (Table 1 of the paper);
    works on numpy and jax arrays alike.
    """
    mean = patches.mean(axis=-1, keepdims=True)
    var = patches.var(axis=-1, keepdims=True)
    return (patches - mean) / (var + eps) ** 0.5


def mae_loss_jax(pred: jnp.ndarray, target: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """MAE's loss: mean squared error per patch [B, N], averaged over the hidden patches only
    (mask [B, N] or [N], True = hidden), float32; visible patches get zero gradient. An empty
    mask gives 0."""
    per_patch = jnp.mean(jnp.square(jnp.asarray(pred, jnp.float32)
                                    - jnp.asarray(target, jnp.float32)), axis=-1)  # [B, N]
    weight = jnp.broadcast_to(jnp.asarray(mask, jnp.float32), per_patch.shape)  # [B, N]
    total = jnp.sum(weight)
    return jnp.sum(weight * per_patch) / jnp.where(total > 0, total, 1.0)
