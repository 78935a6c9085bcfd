"""What the image pretext tasks hide, and the losses that score the reconstruction.

Context encoders (Pathak et al., 2016, "Context Encoders: Feature Learning by Inpainting"):
  masks of one image, bool [size, size], True = hidden:
  * `central_mask`: the centred square covering 1/4 of the area (half the side);
  * `random_blocks_mask`: possibly overlapping random square blocks, ~1/4 of the area;
  * `random_region_mask`: an arbitrary-shaped random region, ~1/4 of the area (the paper
    pasted PASCAL VOC segmentation shapes; we threshold a smoothed noise field instead, so
    nothing is downloaded);
  * `overlap_weights`, `inpaint_loss` (numpy reference), `inpaint_loss_jax` (for a model).

MAE (He et al., 2021, "Masked Autoencoders Are Scalable Vision Learners"):
  `patch_mask` / `patch_masks` (random shuffle, keep the first K), `patchify` / `unpatchify`,
  `normalized_patch_targets` (norm_pix_loss) and `mae_loss_jax`.

Masks are drawn on the host with a `np.random.Generator`, so a pipeline that seeds its
generator per example is deterministic and resumable.
"""
from __future__ import annotations

import math

import jax.numpy as jnp
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


def inpaint_loss(pred: np.ndarray, target: np.ndarray, mask: np.ndarray,
                 weights: np.ndarray | None = None) -> float:
    """Weighted L2 over the hidden pixels only (numpy reference, float64):

        sum_{pixels p, channels c} m_p w_p (pred - target)^2 / (C * sum_p m_p w_p)

    pred, target: [..., H, W, C]; mask, weights: [..., H, W] (broadcast over the batch);
    weights default to 1. A constant error d on the hidden pixels scores d^2.
    """
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    mask = np.asarray(mask, bool)
    weights = np.ones(mask.shape) if weights is None else np.asarray(weights, np.float64)
    per_pixel = ((pred - target) ** 2).mean(axis=-1)  # [..., H, W]
    scale = np.broadcast_to(mask * weights, per_pixel.shape)  # [..., H, W]
    if scale.sum() <= 0:
        raise ValueError("inpaint_loss: the mask hides no pixel with a positive weight")
    return float((scale * per_pixel).sum() / scale.sum())


def inpaint_loss_jax(pred: jnp.ndarray, target: jnp.ndarray, mask: jnp.ndarray,
                     weights: jnp.ndarray | None = None) -> jnp.ndarray:
    """`inpaint_loss` in jax.numpy, float32, for use inside a model's loss. Visible pixels
    get exactly zero gradient; an empty mask gives 0 (it cannot raise under jit)."""
    pred, target = jnp.asarray(pred, jnp.float32), jnp.asarray(target, jnp.float32)
    scale = jnp.asarray(mask, jnp.float32)
    if weights is not None:
        scale = scale * jnp.asarray(weights, jnp.float32)
    per_pixel = jnp.mean(jnp.square(pred - target), axis=-1)  # [..., H, W]
    scale = jnp.broadcast_to(scale, per_pixel.shape)  # [..., H, W]
    total = jnp.sum(scale)
    return jnp.sum(scale * per_pixel) / jnp.where(total > 0, total, 1.0)


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


def patchify(images, patch: int):
    """[B, H, W, C] -> [B, (H/p)*(W/p), p*p*C]: row-major patches, each flattened (row,
    column, channel) as in MAE. Uses only array methods, so numpy stays numpy on the host and
    a jax array stays jax inside a jitted model."""
    if images.ndim != 4:
        raise ValueError(f"patchify expects images [B, H, W, C], got shape {list(images.shape)}")
    b, h, w, c = images.shape
    if isinstance(patch, bool) or not isinstance(patch, (int, np.integer)) or patch < 1 \
            or h % patch or w % patch:
        raise ValueError(f"patch={patch!r} does not divide the image size {h}x{w}")
    grid = images.reshape(b, h // patch, patch, w // patch, patch, c)  # [B, h, p, w, p, C]
    grid = grid.transpose(0, 1, 3, 2, 4, 5)  # [B, h, w, p, p, C]
    return grid.reshape(b, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(patches, patch: int, height: int | None = None, width: int | None = None):
    """[B, N, p*p*C] -> [B, H, W, C], the exact inverse of `patchify`. Without height/width
    the image is square (N must be a perfect square)."""
    if patches.ndim != 3:
        raise ValueError(f"unpatchify expects patches [B, N, p*p*C], got {list(patches.shape)}")
    b, n, dim = patches.shape
    if isinstance(patch, bool) or not isinstance(patch, (int, np.integer)) or patch < 1 \
            or dim % (patch * patch):
        raise ValueError(f"patch={patch!r}: patch dim {dim} is not patch*patch*channels")
    c = dim // (patch * patch)
    if height is None and width is None:
        rows = math.isqrt(n)
        if rows * rows != n:
            raise ValueError(f"{n} patches do not form a square; pass height and width")
        height = width = rows * patch
    if height is None or width is None or height % patch or width % patch \
            or (height // patch) * (width // patch) != n:
        raise ValueError(f"height={height!r}, width={width!r} do not hold {n} patches of "
                         f"{patch}x{patch}")
    h, w = height // patch, width // patch
    grid = patches.reshape(b, h, w, patch, patch, c)  # [B, h, w, p, p, C]
    grid = grid.transpose(0, 1, 3, 2, 4, 5)  # [B, h, p, w, p, C]
    return grid.reshape(b, height, width, c)


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
