"""The shape every training set takes: shuffled each epoch, repeated, split per process,
batched. Random access throughout, so the grain iterator's state is checkpointable. And the
shape of every eval set: global batches in order, the last padded (`eval_batches`)."""
from __future__ import annotations

from typing import Callable, Sequence

import grain
import numpy as np


def with_example_weight(batch: dict) -> dict:
    """A training batch with example_weight 1 for every example (eval batches weight their
    padding 0): every batch a task sees carries it."""
    size = len(next(iter(batch.values())))
    return dict(batch, example_weight=np.ones((size,), np.float32))


def training_batches(items: Sequence, *, seed: int, batch_size: int, process_index: int = 0,
                     process_count: int = 1,
                     random_map: Callable[[object, np.random.Generator], dict] | None = None,
                     map_fn: Callable[[object], dict] | None = None) -> grain.MapDataset:
    """items -> infinite per-process batches of `batch_size` (the global batch size over
    `process_count`). `random_map(item, rng)` (e.g. dynamic masking) or `map_fn(item)` turns
    an item into an example dict.

    Process p's k-th batch is rows p*b .. (p+1)*b - 1 of a one-process run's k-th global
    batch (the processes' batches side by side, as the mesh lays them out): a multi-host run
    trains on exactly the batches, and draws the dropout masks, of a one-process run."""
    ds = grain.MapDataset.source(items).shuffle(seed=seed).repeat()
    if random_map is not None:
        ds = ds.random_map(random_map, seed=seed + 1)
    elif map_fn is not None:
        ds = ds.map(map_fn)
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds[process_index::process_count]


def eval_batches(examples: list[dict[str, np.ndarray]], batch_size: int,
                 max_batches: int | None = None):
    """Global eval batches; the last is padded with zero examples of example_weight 0."""
    if not examples:
        return
    keys = examples[0].keys()
    for n, start in enumerate(range(0, len(examples), batch_size)):
        if max_batches is not None and n >= max_batches:
            return
        chunk = examples[start:start + batch_size]
        weight = np.zeros(batch_size, np.float32)
        weight[:len(chunk)] = 1.0
        chunk = chunk + [{k: np.zeros_like(v) for k, v in chunk[0].items()}] * (batch_size - len(chunk))
        batch = {k: np.stack([e[k] for e in chunk]) for k in keys}
        batch["example_weight"] = weight
        yield batch
