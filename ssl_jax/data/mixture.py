"""Training on several prepared directories at once (`data.mixture`, e.g. 0.8 wiki + 0.2
books), and the held-out examples of a prepared directory read lazily.

The mixture interleaves the sources deterministically in the given proportions (grain's
MapDataset.mix: the k-th example's source is a function of k alone), each source shuffled
and repeated on its own, so the whole thing stays random access: the iterator's state is a
position, and a resumed run continues exactly. Every example carries `data_source` (the
source's index) for the per-source counts in the metrics.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

import grain
import numpy as np


def mixture_batches(sources: list[tuple[Sequence, float, Callable]], *, seed: int,
                    batch_size: int, process_index: int = 0,
                    process_count: int = 1) -> grain.MapDataset:
    """sources: (records, weight, example_fn(record, rng) -> example dict) -> infinite
    per-process batches, split over processes as `batching.training_batches` does."""
    parts = []
    for k, (records, _, example_fn) in enumerate(sources):
        ds = grain.MapDataset.source(records).shuffle(seed=seed + 1000 * k).repeat()
        ds = ds.random_map(_tagged(example_fn, k), seed=seed + 1000 * k + 1)
        parts.append(ds)
    mixed = grain.MapDataset.mix(parts, [weight for _, weight, _ in sources])
    mixed = mixed.batch(batch_size, drop_remainder=True)
    return mixed[process_index::process_count]


def _tagged(example_fn: Callable, index: int) -> Callable:
    def fn(record, rng):
        return dict(example_fn(record, rng), data_source=np.int32(index))
    return fn


class LazyExamples(Sequence):
    """A random-access source's first `limit` records (all if None), decoded when read."""

    def __init__(self, records, decode: Callable, limit: int | None = None):
        self.records, self.decode = records, decode
        self.length = len(records) if limit is None else min(limit, len(records))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.length))]
        if not -self.length <= index < self.length:
            raise IndexError(index)
        return self.decode(self.records[index % self.length])
