"""What the image pretext tasks hide (the losses that score the reconstruction are in
ssl_jax/models/image_losses.py, the patch layout in ssl_jax/models/vision.py).

Context encoders (Pathak et al., 2016, "Context Encoders: Feature Learning by Inpainting"):
  masks of one image, bool [size, size], True = hidden:
  * `central_mask`: the centred square covering 1/4 of the area (half the side);
  * `random_blocks_mask`: possibly overlapping random square blocks, ~1/4 of the area;
  * `random_region_mask`: an arbitrary-shaped random region, ~1/4 of the area (the paper
    pasted PASCAL VOC segmentation shapes; we threshold a smoothed noise field instead, so
    nothing is downloaded);
  * `erode_mask` and `overlap_weights`: the hole blanked in the input and the loss weights
    of the predicted region (the overlap band weighed 10x).

MAE (He et al., 2021, "Masked Autoencoders Are Scalable Vision Learners"):
  `num_masked_patches`, `patch_mask` / `patch_masks` (random shuffle, keep the first K).

Masks are drawn on the host with a `np.random.Generator`, so a pipeline that seeds its
generator per example is deterministic and resumable.
"""
from __future__ import annotations

import math

import numpy as np

# ----------------------------------------------------------------------------- checks


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"mask size={size!r} must be a positive int")


def _check_open_fraction(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name}={value!r} must be in (0, 1)")


# ----------------------------------------------------------------------------- context encoders

def central_mask(size: int, fraction: float = 0.25) -> np.ndarray:
    """bool [size, size]: a centred square of side round(size * sqrt(fraction)).

    The paper's "central region" hides the central 1/4 of the area (a square of half the
    side); the fraction is exact whenever size * sqrt(fraction) is an integer (e.g. even
    sizes with fraction 0.25). An odd margin puts the extra row/column after the square.
    """
    _check_size(size)
    _check_open_fraction("fraction", fraction)
    side = round(size * math.sqrt(fraction))
    if side < 1:
        raise ValueError(f"fraction={fraction!r} of a {size}x{size} image hides no pixel")
    start = (size - side) // 2
    mask = np.zeros((size, size), bool)
    mask[start:start + side, start:start + side] = True
    return mask


def random_blocks_mask(size: int, rng: np.random.Generator, block: int,
                       coverage: float = 0.25) -> np.ndarray:
    """bool [size, size]: the union of uniformly placed block x block squares (they may
    overlap), added until `coverage` of the area is hidden.

    The paper's "random block" masks many smaller, possibly overlapping squares covering up
    to 1/4 of the image. The square that crosses the target is kept only if that lands nearer
    to it, so every draw is within half a block's area of `coverage` (unless one block alone
    exceeds it: at least one block is always hidden).
    """
    _check_size(size)
    _check_open_fraction("coverage", coverage)
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) \
            or not 1 <= block <= size:
        raise ValueError(f"block={block!r} must be an int in [1, size={size}]")
    target = coverage * size * size
    mask = np.zeros((size, size), bool)
    while True:
        top, left = rng.integers(0, size - block + 1, size=2)
        grown = mask.copy()
        grown[top:top + block, left:left + block] = True
        hidden, grown_hidden = mask.sum(), grown.sum()
        if grown_hidden >= target:
            if hidden and target - hidden < grown_hidden - target:
                return mask
            return grown
        mask = grown


def _gaussian_blur_matrix(size: int, sigma: float) -> np.ndarray:
    """[size, size + 2 * pad] Gaussian weights (pad = ceil(3 sigma)): M @ x blurs a noise
    field padded by `pad` on each side down to `size` rows, every row seeing the full kernel
    (so the smoothed field is equally variable everywhere and no edge is favoured)."""
    pad = math.ceil(3 * sigma)
    offsets = (np.arange(size)[:, None] + pad) - np.arange(size + 2 * pad)[None, :]
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    return weights / weights.sum(axis=1, keepdims=True)


def random_region_mask(size: int, rng: np.random.Generator, coverage: float = 0.25,
                       smoothness: float | None = None) -> np.ndarray:
    """bool [size, size]: an arbitrary-shaped random region, the round(coverage * size^2)
    pixels where a Gaussian-smoothed white-noise field is highest.

    A stand-in for the paper's random PASCAL VOC shapes: blobs of varied shape, count and
    position, with exactly the stated area. `smoothness` is the blur's standard deviation in
    pixels (default size / 8): larger means fewer, rounder blobs.
    """
    _check_size(size)
    _check_open_fraction("coverage", coverage)
    sigma = size / 8 if smoothness is None else smoothness
    if not sigma > 0:
        raise ValueError(f"smoothness={smoothness!r} must be > 0")
    hidden = round(coverage * size * size)
    if hidden < 1:
        raise ValueError(f"coverage={coverage!r} of a {size}x{size} image hides no pixel")
    blur = _gaussian_blur_matrix(size, sigma)  # [size, size + 2 pad]
    noise = rng.standard_normal((blur.shape[1], blur.shape[1]))  # [size + 2 pad] x 2
    field = blur @ noise @ blur.T  # [size, size], smooth
    order = np.argsort(field, axis=None)[::-1]  # highest first
    mask = np.zeros(size * size, bool)
    mask[order[:hidden]] = True
    return mask.reshape(size, size)


def erode_mask(mask: np.ndarray, overlap: int) -> np.ndarray:
    """bool [H, W]: the hidden pixels with no visible pixel within `overlap` pixels (a square
    neighbourhood, i.e. Chebyshev distance). Outside the image counts as hidden, so a region
    touching the image edge is not eroded there (there is no context beyond the edge)."""
    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be bool [H, W], got shape {list(mask.shape)}")
    if isinstance(overlap, bool) or not isinstance(overlap, (int, np.integer)) or overlap < 0:
        raise ValueError(f"overlap={overlap!r} must be an int >= 0")
    if overlap == 0:
        return mask.copy()
    window = 2 * overlap + 1
    padded = np.pad(mask, overlap, constant_values=True)  # [H + 2o, W + 2o]
    rows = np.lib.stride_tricks.sliding_window_view(padded, window, axis=0).all(-1)
    return np.lib.stride_tricks.sliding_window_view(rows, window, axis=1).all(-1)  # [H, W]


def overlap_weights(mask: np.ndarray, overlap: int = 4, weight: float = 10.0) -> np.ndarray:
    """float32 [H, W] loss weights: `weight` on the band of hidden pixels within `overlap`
    pixels of a visible one, 1 on the rest of the hidden region, 0 where nothing is hidden.

    The paper predicts a region slightly larger than the hole, overlapping the context, and
    weighs the loss on that overlap band 10x (the text says 7 px; the released code uses
    overlapPred = 4 px with overlapL2Weight = 10). To reproduce it, let `mask` be the region
    the decoder predicts, blank only `erode_mask(mask, overlap)` in the input, and weigh the
    reconstruction with these weights: the band is then visible context the decoder must
    blend into.
    """
    if not weight > 0:
        raise ValueError(f"weight={weight!r} must be > 0")
    mask = np.asarray(mask, bool)
    interior = erode_mask(mask, overlap)
    return np.where(interior, 1.0, np.where(mask, weight, 0.0)).astype(np.float32)


# ----------------------------------------------------------------------------- MAE

def num_masked_patches(num_patches: int, ratio: float) -> int:
    """round(ratio * num_patches) (Python's round), checked to leave >= 1 patch visible."""
    if isinstance(num_patches, bool) or not isinstance(num_patches, (int, np.integer)) \
            or num_patches < 1:
        raise ValueError(f"num_patches={num_patches!r} must be a positive int")
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio={ratio!r} must be in [0, 1)")
    masked = round(ratio * num_patches)
    if masked >= num_patches:
        raise ValueError(f"mask ratio={ratio!r} of {num_patches} patches leaves none visible")
    return masked


def patch_masks(batch: int, num_patches: int, ratio: float,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Independent MAE masks for a batch: (keep_idx int32 [batch, K], mask bool [batch, N]).

    As in MAE's `random_masking`: argsort per-example uniform noise to shuffle the patches and
    keep the first K = N - round(ratio * N); `keep_idx` stays in that shuffled order (a
    decoder scatters the encoded tokens back with it). mask is True where a patch is hidden.
    """
    masked = num_masked_patches(num_patches, ratio)
    shuffle = np.argsort(rng.random((batch, num_patches)), axis=1)  # [batch, N]
    keep_idx = shuffle[:, :num_patches - masked].astype(np.int32)  # [batch, K]
    mask = np.ones((batch, num_patches), bool)
    np.put_along_axis(mask, keep_idx, False, axis=1)
    return keep_idx, mask


def patch_mask(num_patches: int, ratio: float,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One MAE mask: (keep_idx int32 [K] in random shuffle order, mask bool [N], True =
    hidden), with exactly round(ratio * num_patches) patches hidden (MAE uses 0.75)."""
    keep_idx, mask = patch_masks(1, num_patches, ratio, rng)
    return keep_idx[0], mask[0]
