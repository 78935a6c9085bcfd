"""Masks of the in-painting (context encoder) and masked-patch (MAE) pretext tasks."""
from __future__ import annotations

import numpy as np
import pytest

from ssl_jax.data import image_masks as M

# ----------------------------------------------------------------------------- context encoders


@pytest.mark.parametrize("size", [8, 32, 64, 128])
def test_central_mask_is_the_centred_quarter(size):
    mask = M.central_mask(size)
    assert mask.dtype == bool and mask.shape == (size, size)
    assert mask.mean() == 0.25  # exact: half the side
    q = size // 4
    assert mask[q:3 * q, q:3 * q].all() and mask.sum() == (size // 2) ** 2
    assert np.array_equal(mask, mask[::-1, ::-1])  # centred
    assert M.central_mask(30, fraction=0.16).sum() == 12 * 12


def test_random_blocks_mask_coverage():
    rng = np.random.default_rng(0)
    size, block, coverage = 32, 4, 0.25
    masks = np.stack([M.random_blocks_mask(size, rng, block, coverage) for _ in range(300)])
    assert masks.dtype == bool and masks.shape == (300, size, size)
    fractions = masks.mean(axis=(1, 2))
    half_block = block * block / 2 / size ** 2
    assert np.all(np.abs(fractions - coverage) <= half_block + 1e-9)  # every draw
    assert abs(fractions.mean() - coverage) < 0.01
    assert len({m.tobytes() for m in masks}) == 300  # random
    # Blocks lie inside the image, placed uniformly: every pixel is hidden sometimes (corners,
    # in one of 29^2 placements, least often) and the centre most often.
    rate = masks.mean(axis=0)
    assert rate.min() > 0 and rate[0, 0] < 0.1 and 0.25 < rate[12:20, 12:20].mean() < 0.5
    one = M.random_blocks_mask(16, rng, 16, 0.1)  # one block overshoots: still one block
    assert one.all()


def test_random_region_mask_coverage_and_shape():
    rng = np.random.default_rng(1)
    size, coverage = 32, 0.25
    masks = np.stack([M.random_region_mask(size, rng, coverage) for _ in range(200)])
    assert masks.dtype == bool and masks.shape == (200, size, size)
    assert np.all(masks.sum(axis=(1, 2)) == round(coverage * size * size))  # exact area
    assert len({m.tobytes() for m in masks}) == 200
    assert 0.1 < masks.mean(axis=0).min() and masks.mean(axis=0).max() < 0.45
    # Blobs, not salt and pepper: hidden pixels' right/down neighbours are mostly hidden
    # (independent pixels would give ~coverage).
    same = np.mean(masks[:, :, 1:][masks[:, :, :-1]]), np.mean(masks[:, 1:][masks[:, :-1]])
    assert min(same) > 0.85
    for coverage in (0.1, 0.5):
        assert M.random_region_mask(16, rng, coverage).sum() == round(coverage * 256)


def test_masks_are_reproducible_from_the_seed():
    def draw(seed):
        rng = np.random.default_rng(seed)
        return M.random_blocks_mask(24, rng, 6), M.random_region_mask(24, rng)
    assert all(np.array_equal(a, b) for a, b in zip(draw(5), draw(5)))
    assert not np.array_equal(draw(5)[1], draw(6)[1])


def test_overlap_weights_by_hand():
    mask = np.zeros((8, 8), bool)
    mask[1:7, 1:7] = True  # a 6x6 square
    weights = M.overlap_weights(mask, overlap=2, weight=10.0)
    expected = np.zeros((8, 8), np.float32)
    expected[1:7, 1:7] = 10.0  # the 2-pixel band inside the border...
    expected[3:5, 3:5] = 1.0  # ...around a 2x2 interior
    assert weights.dtype == np.float32
    np.testing.assert_array_equal(weights, expected)
    np.testing.assert_array_equal(M.overlap_weights(mask, overlap=0), mask.astype(np.float32))
    # A region on the image edge: no band along the edge (there is no context beyond it).
    edge = np.zeros((5, 5), bool)
    edge[:, :3] = True
    np.testing.assert_array_equal(M.overlap_weights(edge, overlap=1, weight=3.0)[0],
                                  [1, 1, 3, 0, 0])
    # The paper's setup: 128x128, central 64x64 predicted, 4 px band, 56x56 interior hidden.
    central = M.central_mask(128)
    weights = M.overlap_weights(central, overlap=4)
    assert (weights == 1).sum() == 56 * 56 and M.erode_mask(central, 4).sum() == 56 * 56
    assert (weights == 10).sum() == 64 * 64 - 56 * 56 and (weights[~central] == 0).all()


# ----------------------------------------------------------------------------- MAE

def test_patch_mask_counts_and_partition():
    rng = np.random.default_rng(4)
    for num_patches, ratio in [(196, 0.75), (64, 0.75), (10, 0.3), (7, 0.5), (16, 0.0)]:
        keep_idx, mask = M.patch_mask(num_patches, ratio, rng)
        assert mask.dtype == bool and mask.shape == (num_patches,)
        assert keep_idx.dtype == np.int32
        assert mask.sum() == round(ratio * num_patches)
        assert len(keep_idx) == num_patches - round(ratio * num_patches)
        assert len(set(keep_idx.tolist())) == len(keep_idx)  # no repeats
        assert not mask[keep_idx].any()  # kept and masked do not overlap...
        assert set(keep_idx.tolist()) | set(np.flatnonzero(mask).tolist()) == set(
            range(num_patches))  # ...and together they are every patch


def test_patch_mask_is_uniform_over_patches():
    rng = np.random.default_rng(5)
    draws = 4000
    keep_idx, masks = M.patch_masks(draws, 64, 0.75, rng)
    assert keep_idx.shape == (draws, 16) and masks.shape == (draws, 64)
    assert np.all(masks.sum(axis=1) == 48)
    rate = masks.mean(axis=0)  # each patch: Binomial-ish mean 0.75, std ~0.0068
    assert np.all(np.abs(rate - 0.75) < 0.035)
    assert abs(rate.mean() - 0.75) < 1e-12
    # keep_idx is in shuffled order, not sorted (MAE keeps the shuffle order).
    assert np.mean([np.all(np.diff(k) > 0) for k in keep_idx]) < 0.01
    # Every position is equally likely to be kept first.
    first = np.bincount(keep_idx[:, 0], minlength=64) / draws
    assert np.all(np.abs(first - 1 / 64) < 0.02)


# ----------------------------------------------------------------------------- bad inputs

@pytest.mark.parametrize("call, match", [
    (lambda: M.patch_mask(16, 1.0, np.random.default_rng(0)), "ratio=1.0"),
    (lambda: M.patch_mask(16, -0.1, np.random.default_rng(0)), "ratio=-0.1"),
    (lambda: M.patch_mask(10, 0.97, np.random.default_rng(0)), "ratio=0.97"),
    (lambda: M.patch_mask(0, 0.5, np.random.default_rng(0)), "num_patches=0"),
    (lambda: M.central_mask(32, 1.0), "fraction=1.0"),
    (lambda: M.central_mask(32, 0.0), "fraction=0.0"),
    (lambda: M.central_mask(0), "size=0"),
    (lambda: M.random_blocks_mask(32, np.random.default_rng(0), 4, 1.5), "coverage=1.5"),
    (lambda: M.random_blocks_mask(32, np.random.default_rng(0), 40), "block=40"),
    (lambda: M.random_region_mask(32, np.random.default_rng(0), 0.0), "coverage=0.0"),
    (lambda: M.random_region_mask(32, np.random.default_rng(0), smoothness=0), "smoothness=0"),
    (lambda: M.overlap_weights(M.central_mask(8), overlap=-1), "overlap=-1"),
    (lambda: M.overlap_weights(M.central_mask(8), weight=0.0), "weight=0.0"),
])
def test_bad_inputs_raise_naming_the_value(call, match):
    with pytest.raises(ValueError, match=match):
        call()

