"""Host-side transforms of the jigsaw pretext task (Noroozi & Favaro 2016), numpy only.

An image is cut into a grid of tiles (3x3), the tiles are shuffled by one permutation of a
fixed set of N, and the network predicts which (the label is the permutation's index). The
set is chosen greedily for a large Hamming distance between its permutations, so that no
two classes are nearly the same puzzle. Against shortcuts the paper cuts each tile smaller
than its cell, at a random position inside it (no continuous edges between neighbours),
jitters colour (or drops it) and normalises each tile on its own (no shared low-level
statistics).

Permutation convention: `shuffle(tiles, p)[i] = tiles[p[i]]`; position i of the puzzle
holds original tile p[i].
"""
from __future__ import annotations

import functools
import math

import numpy as np

# Enumerating all num_tiles! permutations is the method; 10! (3.6M rows) is the largest kept
# in memory (36 MB of uint8).
MAX_TILES = 10
# The paper's 225-pixel image: 75-pixel cells, 64-pixel tiles, so the default gap is 11/75.
PAPER_GAP_FRACTION = 11 / 75


# ---------------------------------------------------------------- permutation set


@functools.lru_cache(maxsize=4)
def _all_permutations(num_tiles: int) -> np.ndarray:
    """All num_tiles! permutations in lexicographic order, [num_tiles, num_tiles!] uint8
    (transposed: one contiguous row per position makes the distance update fast)."""
    perms = np.zeros((1, 0), np.uint8)  # [1, 0]: the one permutation of nothing
    for k in range(1, num_tiles + 1):
        # Permutations of 0..k-1: each first value, followed by the permutations of k-1
        # values relabelled to skip it.
        perms = np.concatenate([np.concatenate(
            [np.full((len(perms), 1), first, np.uint8), perms + (perms >= first)], axis=1)
            for first in range(k)])  # [k!, k]
    perms = np.ascontiguousarray(perms.T)
    perms.flags.writeable = False
    return perms


def _check_set_args(num_permutations: int, num_tiles: int) -> None:
    if not 2 <= num_tiles <= MAX_TILES:
        raise ValueError(f"num_tiles={num_tiles} must be in [2, {MAX_TILES}] (all num_tiles! "
                         f"permutations are enumerated)")
    total = math.factorial(num_tiles)
    if not 2 <= num_permutations <= total:
        raise ValueError(f"num_permutations={num_permutations} must be in [2, {total}] "
                         f"({num_tiles}! permutations of {num_tiles} tiles)")


@functools.lru_cache(maxsize=16)
def _greedy_permutation_set(num_permutations: int, num_tiles: int, seed: int) -> np.ndarray:
    """The greedy maximin selection (see permutation_set); read-only, cached."""
    candidates = _all_permutations(num_tiles)  # [num_tiles, num_tiles!]
    rng = np.random.default_rng(seed)
    # min_distance[k]: smallest Hamming distance from candidate k to the selected set.
    min_distance = np.full(candidates.shape[1], num_tiles, np.uint8)  # [num_tiles!]
    matches = np.empty_like(min_distance)
    chosen = [int(rng.integers(candidates.shape[1]))]
    for _ in range(num_permutations - 1):
        new = candidates[:, chosen[-1]]  # [num_tiles]
        matches[:] = 0
        for position in range(num_tiles):  # matches[k] = #positions where k agrees with new
            matches += candidates[position] == new[position]
        np.minimum(min_distance, num_tiles - matches, out=min_distance)
        # A selected permutation is at distance 0, so it is never chosen again.
        ties = np.flatnonzero(min_distance == min_distance.max())
        chosen.append(int(ties[rng.integers(len(ties))]))
    out = candidates[:, chosen].T.astype(np.int32)  # [num_permutations, num_tiles]
    out.flags.writeable = False
    return out


def permutation_set(num_permutations: int, num_tiles: int = 9, seed: int = 0) -> np.ndarray:
    """[num_permutations, num_tiles] int32: the paper's greedy maximal-Hamming-distance set.

    Starts from a random permutation and repeatedly adds the one whose minimum Hamming
    distance to those already chosen is largest (ties: uniformly by the seeded rng), so the
    classes are as far apart as the greedy order allows. Deterministic for a seed; cached.
    """
    _check_set_args(num_permutations, num_tiles)
    return _greedy_permutation_set(num_permutations, num_tiles, seed).copy()


def _pairwise_hamming(perms: np.ndarray) -> np.ndarray:
    """[N, N] Hamming distances between the rows of perms [N, num_tiles]."""
    perms = np.asarray(perms)
    if perms.ndim != 2 or len(perms) < 2:
        raise ValueError(f"perms of shape {perms.shape} must be [N >= 2, num_tiles]")
    distances = np.zeros((len(perms), len(perms)), np.int32)
    for position in range(perms.shape[1]):  # [N, N] per position: no [N, N, tiles] tensor
        distances += perms[:, None, position] != perms[None, :, position]
    return distances


def min_hamming(perms: np.ndarray) -> int:
    """The smallest Hamming distance between two different rows (0 means a duplicate)."""
    distances = _pairwise_hamming(perms)
    return int(distances[~np.eye(len(distances), dtype=bool)].min())


def mean_hamming(perms: np.ndarray) -> float:
    """The mean Hamming distance over pairs of different rows."""
    distances = _pairwise_hamming(perms)
    return float(distances.sum() / (len(distances) * (len(distances) - 1)))


# ---------------------------------------------------------------- tiles


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, np.float32)
    if image.ndim != 3:
        raise ValueError(f"image of shape {image.shape} must be [H, W, C]")
    return image


def tile_geometry(height: int, width: int, grid: int = 3, tile_size: int | None = None,
                  gap: int | None = None) -> tuple[int, int, int]:
    """(cell_height, cell_width, tile_size) of a grid x grid puzzle of an H x W image.

    tile_size and gap say the same thing (tile = smaller cell side - gap); give at most
    one. Neither: the paper's gap, 11/75 of the cell.
    """
    if grid < 1:
        raise ValueError(f"grid={grid} must be >= 1")
    if height % grid or width % grid:
        raise ValueError(f"grid={grid} does not divide the image size {height}x{width}")
    cell_h, cell_w = height // grid, width // grid
    cell = min(cell_h, cell_w)
    if tile_size is not None and gap is not None and tile_size != cell - gap:
        raise ValueError(f"tile_size={tile_size} and gap={gap} disagree for cell {cell}; "
                         f"give one")
    if tile_size is None:
        gap = round(cell * PAPER_GAP_FRACTION) if gap is None else gap
        if not 0 <= gap < cell:
            raise ValueError(f"gap={gap} must be in [0, cell={cell})")
        tile_size = cell - gap
    if not 1 <= tile_size <= cell:
        raise ValueError(f"tile_size={tile_size} must be in [1, cell={cell}]")
    return cell_h, cell_w, tile_size


def tile_offsets(height: int, width: int, grid: int = 3, tile_size: int | None = None,
                 gap: int | None = None, jitter: bool = True,
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """[grid*grid, 2] int (row, col) image coordinates of each tile's top-left corner,
    row-major over cells: jittered uniformly inside the cell, or centred without jitter."""
    cell_h, cell_w, tile = tile_geometry(height, width, grid, tile_size, gap)
    slack = np.array([cell_h - tile, cell_w - tile])  # [2]: room to move inside a cell
    if jitter:
        if rng is None:
            raise ValueError("jitter=True needs an rng")
        inside = rng.integers(0, slack + 1, size=(grid * grid, 2))  # [grid*grid, 2]
    else:
        inside = np.broadcast_to(slack // 2, (grid * grid, 2))
    rows, cols = np.divmod(np.arange(grid * grid), grid)  # [grid*grid] each
    corners = np.stack([rows * cell_h, cols * cell_w], axis=1)  # [grid*grid, 2]
    return corners + inside


def crop_tiles(image: np.ndarray, offsets: np.ndarray, tile_size: int) -> np.ndarray:
    """[H, W, C] image, [n, 2] top-left offsets -> [n, tile, tile, C] crops."""
    image = _check_image(image)
    span = np.arange(tile_size)
    rows = offsets[:, 0, None] + span  # [n, tile]
    cols = offsets[:, 1, None] + span  # [n, tile]
    return image[rows[:, :, None], cols[:, None, :]]  # [n, tile, tile, C]


def cut_tiles(image: np.ndarray, grid: int = 3, tile_size: int | None = None,
              gap: int | None = None, jitter: bool = True,
              rng: np.random.Generator | None = None, return_offsets: bool = False):
    """[H, W, C] image -> [grid*grid, tile, tile, C] float32 tiles, row-major over cells
    (and their [grid*grid, 2] offsets if return_offsets). Each tile is smaller than its
    cell (tile = cell - gap) so neighbouring tiles share no edge to match on."""
    image = _check_image(image)
    height, width = image.shape[:2]
    tile = tile_geometry(height, width, grid, tile_size, gap)[2]
    offsets = tile_offsets(height, width, grid, tile, None, jitter, rng)
    tiles = crop_tiles(image, offsets, tile)
    return (tiles, offsets) if return_offsets else tiles


def _check_permutation(permutation: np.ndarray, n: int) -> np.ndarray:
    permutation = np.asarray(permutation)
    if permutation.shape != (n,) or not np.array_equal(np.sort(permutation), np.arange(n)):
        raise ValueError(f"permutation {permutation.tolist()} is not a permutation of "
                         f"{n} tiles")
    return permutation


def shuffle(tiles: np.ndarray, permutation: np.ndarray) -> np.ndarray:
    """Position i gets tile permutation[i]: [n, ...] -> [n, ...]."""
    return tiles[_check_permutation(permutation, len(tiles))]


def unshuffle(shuffled: np.ndarray, permutation: np.ndarray) -> np.ndarray:
    """The inverse of shuffle: puts each tile back at its original index."""
    return shuffled[np.argsort(_check_permutation(permutation, len(shuffled)))]


# ---------------------------------------------------------------- appearance


def normalize_tiles(tiles: np.ndarray, eps: float = 1e-5,
                    per_channel: bool = True) -> np.ndarray:
    """[n, t, t, C] -> zero mean, unit std per tile (and per channel), float32, so that
    tiles cannot be matched by shared brightness, contrast or colour statistics."""
    tiles = np.asarray(tiles, np.float32)
    axes = (1, 2) if per_channel else (1, 2, 3)
    # Statistics in float64: a flat tile then normalises to exact zeros.
    mean = tiles.mean(axis=axes, keepdims=True, dtype=np.float64)  # [n, 1, 1, C] or [n,1,1,1]
    var = tiles.var(axis=axes, keepdims=True, dtype=np.float64)
    return ((tiles - mean) / np.sqrt(var + eps)).astype(np.float32)


def _grayscale(image: np.ndarray) -> np.ndarray:
    """[H, W, C] -> [H, W, C] with every channel the luma (RGB) or the channel mean."""
    if image.shape[-1] == 3:
        luma = image @ np.array([0.299, 0.587, 0.114], np.float32)  # [H, W]
    else:
        luma = image.mean(axis=-1)
    return np.repeat(luma[..., None], image.shape[-1], axis=-1)


def color_jitter(image: np.ndarray, rng: np.random.Generator, strength: float = 0.4,
                 grayscale_prob: float = 0.0) -> np.ndarray:
    """[H, W, C] float image in [0, 1] -> jittered, clipped to [0, 1], float32.

    Each channel gets its own contrast factor in [1 - s, 1 + s] (about its mean) and
    brightness shift in [-s/2, s/2]; with probability grayscale_prob the image becomes
    gray. Both break the colour cues (e.g. chromatic aberration) that locate a tile.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength={strength} must be in [0, 1]")
    if not 0.0 <= grayscale_prob <= 1.0:
        raise ValueError(f"grayscale_prob={grayscale_prob} must be in [0, 1]")
    image = _check_image(image)
    channels = image.shape[-1]
    contrast = rng.uniform(1 - strength, 1 + strength, size=channels).astype(np.float32)
    brightness = rng.uniform(-strength / 2, strength / 2, size=channels).astype(np.float32)
    mean = image.mean(axis=(0, 1))  # [C]
    out = (image - mean) * contrast + mean + brightness
    if rng.random() < grayscale_prob:
        out = _grayscale(out)
    return np.clip(out, 0.0, 1.0)


# ---------------------------------------------------------------- the example


def jigsaw_example(image: np.ndarray, perms: np.ndarray, rng: np.random.Generator, *,
                   grid: int = 3, gap: int | None = None, jitter: bool = True,
                   color: bool = True, color_strength: float = 0.4,
                   grayscale_prob: float = 0.3) -> dict[str, np.ndarray]:
    """[H, W, C] image -> {tiles: [grid*grid, t, t, C] float32, shuffled by a uniformly
    drawn row of perms [N, grid*grid] and normalised per tile; label: int32 row index}."""
    perms = np.asarray(perms)
    if perms.ndim != 2 or perms.shape[1] != grid * grid:
        raise ValueError(f"perms of shape {perms.shape} must be [N, grid*grid={grid * grid}]")
    image = _check_image(image)
    if color:
        image = color_jitter(image, rng, color_strength, grayscale_prob)
    tiles = cut_tiles(image, grid, gap=gap, jitter=jitter, rng=rng)  # [grid*grid, t, t, C]
    label = int(rng.integers(len(perms)))
    tiles = normalize_tiles(shuffle(tiles, perms[label]))
    return {"tiles": tiles, "label": np.int32(label)}
