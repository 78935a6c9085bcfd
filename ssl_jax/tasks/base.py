"""The contract between a task and the generic train loop: what a task computes (Task,
built from a config and a few facts, no data) and what it loads (LoadedTask, which the loop
runs)."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import grain
import jax
import numpy as np

from ssl_jax.models.partitioning import unbox

Stats = dict[str, tuple[jax.Array, jax.Array]]  # name -> (sum over examples, count)


def mixture_stats(batch: dict, names: list[str]) -> Stats:
    """With data.mixture: the fraction of the (weighted) examples each source gave."""
    if not names or "data_source" not in batch:
        return {}
    weight = batch["example_weight"]
    total = weight.sum()
    return {f"mix_fraction_{name}": ((weight * (batch["data_source"] == k)).sum(), total)
            for k, name in enumerate(names)}


class Task:
    """What a task computes: its model, the model's inputs in a batch, its loss and metrics as
    (sum, count) stats, a dummy batch. Built by `Cls(config, **facts)` from the config and the
    few facts its data would give (a vocabulary size, image channels, ...), reading no file,
    so benchmarks and tests use the real task without its data. Checks that need no data are
    `check(config)`, which __init__ runs first.

    Every batch a task sees carries `example_weight` [batch] (1 for a real example, 0 for the
    padding of the last eval batch): stats weight by it, with no special case."""

    loss_terms: tuple[str, ...] = ()  # the objective is the sum of these stats' means
    best_metric: str = "eval_loss"  # checkpoints: the best by this ...
    best_mode: str = "min"  # ... lowest ("min") or highest ("max")
    predict_outputs: bool = False  # True: eval also scores predict()'s outputs with score()

    def __init__(self, config):
        self.config = config
        self.check(config)

    @classmethod
    def check(cls, config) -> None:
        """Raises ValueError on a bad config value that needs no data to see."""

    def build_model(self, *, train: bool) -> nn.Module:
        raise NotImplementedError

    def dummy_batch(self, batch_size: int) -> dict[str, np.ndarray]:
        """A batch of the right shapes and dtypes (its values mean nothing)."""
        raise NotImplementedError

    def init_boxed(self, rng: jax.Array) -> Any:
        """The initial parameters with their logical axis names (nn.LogicallyPartitioned
        leaves): what the train loop reads the sharding from (ssl_jax.train.sharding)."""
        batch = self.dummy_batch(1)
        return self.build_model(train=False).init(rng, **self.model_inputs(batch))["params"]

    def init_params(self, rng: jax.Array) -> Any:
        """The initial parameters as plain arrays."""
        return unbox(self.init_boxed(rng))

    def model_inputs(self, batch: dict) -> dict:
        raise NotImplementedError

    def stats(self, params, batch: dict, rng: jax.Array | None, *, train: bool) -> Stats:
        raise NotImplementedError

    def derived_metrics(self, means: dict[str, float]) -> dict[str, float]:
        return {}

    def update_multipliers(self, params):
        """None, or a tree like `params` of learning-rate multipliers (0 = frozen)."""
        return None

    def predict(self, params, batch: dict) -> dict[str, jax.Array]:
        """Jittable per-example outputs (labels, logits) for score(); see predict_outputs."""
        raise NotImplementedError

    def tokens_per_example(self) -> int:
        return self.config.max_seq_len


class LoadedTask(Task):
    """A task with its data: `Cls(config, workdir)` runs the compute half's data-free checks,
    then `load` (reads the datasets, raises on bad data, returns the facts the compute half
    is built from), then the compute half's __init__ with those facts. What the loop runs.

    A task is `class XTask(LoadedTask, X)`: X (a Task) computes, XTask adds `load` and the
    methods below."""

    def __init__(self, config, workdir: str):
        self.config, self.workdir = config, workdir
        self.check(config)  # before any file is read or written
        self.facts = self.load(config, workdir)
        super().__init__(config, **self.facts)

    def load(self, config, workdir: str) -> dict[str, Any]:
        """Reads the data; returns the facts (keyword arguments) of the compute half."""
        raise NotImplementedError

    def train_dataset(self, process_index: int, process_count: int) -> grain.MapDataset:
        """An infinite, batched (per process) random-access dataset."""
        raise NotImplementedError

    def eval_examples(self) -> list[dict[str, np.ndarray]]:
        raise NotImplementedError

    def transfer(self, params):
        """Host-side, once, before a fresh run trains (not on resume): e.g. a pre-trained
        encoder placed under a freshly initialised head."""
        return params

    def score(self, outputs: dict[str, np.ndarray]) -> dict[str, float]:
        """Metrics of predict()'s outputs, concatenated in eval_examples() order."""
        raise NotImplementedError

    def finish(self, params, workdir: str) -> dict[str, Any]:
        """Once, when a run completes (process 0, host params): extra measurements (e.g. a
        linear probe) written into workdir; their numbers join the run's summary."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Facts for the report (data sizes, vocab, ...)."""
        return {}

