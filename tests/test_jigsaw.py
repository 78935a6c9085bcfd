"""Jigsaw pretext transforms: the greedy permutation set's Hamming distances, tiles cut with
gaps and jitter, shuffle round trips, per-tile normalisation and uniform labels."""
import math
import time

import numpy as np
import pytest

from ssl_jax.data import jigsaw
from ssl_jax.data.jigsaw import (color_jitter, crop_tiles, cut_tiles, jigsaw_example,
                                 mean_hamming, min_hamming, normalize_tiles, permutation_set,
                                 shuffle, tile_offsets, unshuffle)

# Measured (seeds 0-19 for N=100, 0-5 for N=1000, all equal). Min distance 8 is impossible
# for 100 permutations of 9: a code of minimum distance d has at most 9!/(d-1)! words,
# 72 for d=8 (504 for d=7, which greedy does not find).
GREEDY_MIN_HAMMING = {9: 9, 100: 6, 1000: 5}


def assemble(tiles: np.ndarray, grid: int = 3) -> np.ndarray:
    """[grid*grid, t, t, C] row-major tiles -> [grid*t, grid*t, C] image, no gaps (the
    reference inverse of cut_tiles with gap=0)."""
    tiles = np.asarray(tiles)
    if tiles.ndim != 4 or len(tiles) != grid * grid:
        raise ValueError(f"tiles of shape {tiles.shape} must be [grid*grid={grid * grid}, "
                         f"t, t, C]")
    _, t_h, t_w, channels = tiles.shape
    blocks = tiles.reshape(grid, grid, t_h, t_w, channels)  # [grid_row, grid_col, t, t, C]
    return blocks.transpose(0, 2, 1, 3, 4).reshape(grid * t_h, grid * t_w, channels)


def _image(height=30, width=30, channels=3, seed=0):
    return np.random.default_rng(seed).random((height, width, channels), dtype=np.float32)


def _check_set(perms, n, num_tiles=9):
    assert perms.shape == (n, num_tiles) and perms.dtype == np.int32
    np.testing.assert_array_equal(np.sort(perms, axis=1),
                                  np.broadcast_to(np.arange(num_tiles), perms.shape))
    assert len(np.unique(perms, axis=0)) == n, "duplicate permutations"


@pytest.mark.parametrize("n", [9, 100, 1000])
def test_greedy_set_has_no_duplicates_and_a_large_min_distance(n):
    start = time.perf_counter()
    perms = permutation_set(n)
    assert time.perf_counter() - start < 10.0  # ~1 s for N=1000 over 9! candidates
    _check_set(perms, n)
    assert min_hamming(perms) >= GREEDY_MIN_HAMMING[n]
    assert mean_hamming(perms) > 8.0  # random pairs of 9! average 9 - 1 = 8


def test_greedy_beats_a_random_set_of_the_same_size():
    greedy = permutation_set(100)
    random_set = np.stack([np.random.default_rng(s).permutation(9) for s in range(100)])
    assert min_hamming(greedy) > min_hamming(random_set)
    assert mean_hamming(greedy) > mean_hamming(random_set) - 0.1


def test_set_is_deterministic_per_seed_and_cached_copies():
    uncached = jigsaw._greedy_permutation_set.__wrapped__(100, 9, 3)
    np.testing.assert_array_equal(permutation_set(100, seed=3), uncached)
    assert not np.array_equal(permutation_set(100, seed=3), permutation_set(100, seed=4))
    perms = permutation_set(100, seed=3)
    perms[:] = 0  # the caller's copy: the cache is untouched
    np.testing.assert_array_equal(permutation_set(100, seed=3), uncached)


def test_small_sets_are_exhaustive():
    for num_tiles in (3, 4):
        total = math.factorial(num_tiles)
        _check_set(permutation_set(total, num_tiles=num_tiles), total, num_tiles)


def test_hamming_statistics_on_a_hand_example():
    perms = np.array([[0, 1, 2], [1, 0, 2], [2, 1, 0]])  # distances 2, 2, 3
    assert min_hamming(perms) == 2
    assert mean_hamming(perms) == pytest.approx(7 / 3)
    assert min_hamming(np.array([[0, 1, 2], [0, 1, 2]])) == 0


@pytest.mark.parametrize("n", [1, 0, math.factorial(9) + 1])
def test_bad_set_size_names_the_value(n):
    with pytest.raises(ValueError, match=f"num_permutations={n}"):
        permutation_set(n)


def test_too_many_tiles_is_an_error():
    with pytest.raises(ValueError, match="num_tiles=11"):
        permutation_set(10, num_tiles=11)


def test_gap_zero_round_trips_exactly():
    image = _image(12, 12)
    tiles = cut_tiles(image, grid=3, gap=0, rng=np.random.default_rng(0))
    assert tiles.shape == (9, 4, 4, 3) and tiles.dtype == np.float32
    np.testing.assert_array_equal(assemble(tiles, grid=3), image)
    np.testing.assert_array_equal(assemble(cut_tiles(image, 2, gap=0, jitter=False), 2), image)


def test_tiles_with_gaps_are_crops_at_their_offsets_inside_their_cells():
    image, gap, cell = _image(30, 30), 3, 10
    seen = set()
    for seed in range(30):
        tiles, offsets = cut_tiles(image, grid=3, gap=gap, rng=np.random.default_rng(seed),
                                   return_offsets=True)
        assert tiles.shape == (9, cell - gap, cell - gap, 3)
        for k, (row, col) in enumerate(offsets):
            np.testing.assert_array_equal(tiles[k], image[row:row + 7, col:col + 7])
            inside = (row - (k // 3) * cell, col - (k % 3) * cell)
            assert 0 <= min(inside) and max(inside) <= gap
            seen.add(inside)
    assert len(seen) == (gap + 1) ** 2  # the jitter reaches every position in the cell
    centred = tile_offsets(30, 30, grid=3, gap=gap, jitter=False)
    np.testing.assert_array_equal(centred % cell, 1)  # (10 - 7) // 2


def test_cut_tiles_is_deterministic_for_an_rng():
    image = _image(36, 24)  # rectangular: cells 12 x 8, tile 8 - 2
    tiles = cut_tiles(image, grid=3, gap=2, rng=np.random.default_rng(7))
    offsets = tile_offsets(36, 24, grid=3, gap=2, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(tiles, crop_tiles(image, offsets, 6))


def test_default_gap_is_the_papers():
    tiles = cut_tiles(_image(225, 225), grid=3, rng=np.random.default_rng(0))
    assert tiles.shape == (9, 64, 64, 3)  # 75-pixel cells, 64-pixel tiles


def test_shuffle_unshuffle_round_trip():
    tiles = cut_tiles(_image(), grid=3, rng=np.random.default_rng(0))
    for p in permutation_set(100)[:10]:
        shuffled = shuffle(tiles, p)
        np.testing.assert_array_equal(shuffled, tiles[p])
        np.testing.assert_array_equal(unshuffle(shuffled, p), tiles)
    with pytest.raises(ValueError, match="not a permutation"):
        shuffle(tiles, np.array([0, 0, 1, 2, 3, 4, 5, 6, 7]))


def test_normalized_tiles_have_zero_mean_unit_std():
    tiles = cut_tiles(_image() * 0.3 + 0.5, grid=3, rng=np.random.default_rng(0))
    out = normalize_tiles(tiles)
    np.testing.assert_allclose(out.mean(axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2)), 1.0, atol=1e-3)
    flat = normalize_tiles(tiles, per_channel=False)
    np.testing.assert_allclose(flat.std(axis=(1, 2, 3)), 1.0, atol=1e-3)
    constant = normalize_tiles(np.full((9, 4, 4, 3), 0.7, np.float32))
    np.testing.assert_array_equal(constant, 0.0)


def test_color_jitter_stays_in_range_and_grayscale_drops_colour():
    image, rng = _image(), np.random.default_rng(0)
    out = color_jitter(image, rng, strength=0.5)
    assert out.shape == image.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0 and not np.allclose(out, image)
    gray = color_jitter(image, rng, strength=0.5, grayscale_prob=1.0)
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
    np.testing.assert_allclose(color_jitter(image, rng, strength=0.0), image, atol=1e-6)
    with pytest.raises(ValueError, match="strength=1.5"):
        color_jitter(image, rng, strength=1.5)


def test_example_is_shuffled_normalised_tiles_and_its_label():
    image, perms = _image(), permutation_set(100)
    example = jigsaw_example(image, perms, np.random.default_rng(0), gap=3, jitter=False,
                             color=False)
    assert example["tiles"].shape == (9, 7, 7, 3) and example["tiles"].dtype == np.float32
    assert example["label"].dtype == np.int32 and 0 <= example["label"] < 100
    expected = normalize_tiles(cut_tiles(image, gap=3, jitter=False))
    np.testing.assert_allclose(unshuffle(example["tiles"], perms[example["label"]]), expected)
    jittered = jigsaw_example(image, perms, np.random.default_rng(1))  # colour on, gap default
    np.testing.assert_allclose(jittered["tiles"].mean(axis=(1, 2)), 0.0, atol=1e-5)


def test_labels_are_uniform_over_the_set():
    n, draws = 10, 3000
    perms, rng, image = permutation_set(n), np.random.default_rng(0), _image(12, 12)
    labels = [int(jigsaw_example(image, perms, rng, gap=1)["label"]) for _ in range(draws)]
    counts = np.bincount(labels, minlength=n)
    chi2 = float(((counts - draws / n) ** 2 / (draws / n)).sum())
    assert chi2 < 27.9, counts  # the 99.9% quantile of chi-square with 9 dof


def test_bad_inputs_name_the_value():
    image = _image(10, 10)
    with pytest.raises(ValueError, match="grid=3 does not divide"):
        cut_tiles(image, grid=3, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="gap=4"):
        cut_tiles(_image(12, 12), grid=3, gap=4, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="tile_size=5"):
        cut_tiles(_image(12, 12), grid=3, tile_size=5, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="needs an rng"):
        cut_tiles(_image(12, 12), grid=3, gap=1)
    with pytest.raises(ValueError, match=r"\[N, grid\*grid=9\]"):
        jigsaw_example(_image(12, 12), permutation_set(6, num_tiles=3),
                       np.random.default_rng(0))
    with pytest.raises(ValueError, match="must be \\[H, W, C\\]"):
        cut_tiles(np.zeros((12, 12)), grid=3, gap=0, jitter=False)


# ----------------------------------------------------------------- the task on the loop

def test_short_jigsaw_run_is_far_above_chance(tmp_path):
    """100 permutations (chance 1%): 120 steps on the embedded digits solve most held-out
    puzzles; the run writes its probe and its picture of shuffled and re-ordered tiles."""
    import json
    import os

    from ssl_jax import config as config_lib
    from ssl_jax.tasks.jigsaw import JigsawTask
    from ssl_jax.train.loop import train_and_evaluate
    from tests.conftest import ROOT

    config = config_lib.load_config(
        os.path.join(ROOT, "experiments/vision/jigsaw.py:steps=120,batch=32"),
        [("model.channels", "[16, 32, 64]"), ("data_threads", "1")])
    task = JigsawTask(config, str(tmp_path))
    assert (task.tile_size, task.gap, len(task.perms)) == (10, 2, 100)
    labels = np.array([e["label"] for e in task.eval_examples()])
    assert len(np.unique(labels)) > 90  # held-out puzzles use the whole set
    summary = train_and_evaluate(config, str(tmp_path), task=task, progress=False)
    assert summary["eval_jigsaw_accuracy"] > 0.5, summary  # 50x chance
    assert summary["eval_jigsaw_loss"] < 0.5 * math.log(100)
    assert (tmp_path / "jigsaw_examples.png").exists() and (tmp_path / "probe.json").exists()
    assert 0.5 < summary["probe_accuracy"] <= 1.0
    saved = json.loads((tmp_path / "probe.json").read_text())  # the numbers and the protocol
    assert saved["probe_accuracy"] == summary["probe_accuracy"] and saved["layer"] == -1
