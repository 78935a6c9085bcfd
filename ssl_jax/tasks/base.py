"""The contract between a task and the generic train loop."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import grain
import jax
import numpy as np

Stats = dict[str, tuple[jax.Array, jax.Array]]  # name -> (sum over examples, count)


class Task:
    """Subclasses build everything host-side in __init__ (and raise on bad input there,
    before any compute); the loop then only calls the methods below."""

    loss_terms: tuple[str, ...] = ()  # the objective is the sum of these stats' means
    best_metric: str = "eval_loss"  # checkpoints: the best by this ...
    best_mode: str = "min"  # ... lowest ("min") or highest ("max")
    predict_outputs: bool = False  # True: eval also scores predict()'s outputs with score()

    def __init__(self, config, workdir: str):
        self.config = config
        self.workdir = workdir

    def build_model(self, *, train: bool) -> nn.Module:
        raise NotImplementedError

    def dummy_batch(self, batch_size: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def init_params(self, rng: jax.Array) -> Any:
        batch = self.dummy_batch(1)
        return self.build_model(train=False).init(rng, **self.model_inputs(batch))["params"]

    def model_inputs(self, batch: dict) -> dict:
        raise NotImplementedError

    def train_dataset(self, process_index: int, process_count: int) -> grain.MapDataset:
        """An infinite, batched (per process) random-access dataset."""
        raise NotImplementedError

    def eval_examples(self) -> list[dict[str, np.ndarray]]:
        raise NotImplementedError

    def stats(self, params, batch: dict, rng: jax.Array | None, *, train: bool) -> Stats:
        raise NotImplementedError

    def derived_metrics(self, means: dict[str, float]) -> dict[str, float]:
        return {}

    def transfer(self, params):
        """Host-side, once, before a fresh run trains (not on resume): e.g. a pre-trained
        encoder placed under a freshly initialised head."""
        return params

    def update_multipliers(self, params):
        """None, or a tree like `params` of learning-rate multipliers (0 = frozen)."""
        return None

    def predict(self, params, batch: dict) -> dict[str, jax.Array]:
        """Jittable per-example outputs (labels, logits) for score(); see predict_outputs."""
        raise NotImplementedError

    def score(self, outputs: dict[str, np.ndarray]) -> dict[str, float]:
        """Metrics of predict()'s outputs, concatenated in eval_examples() order."""
        raise NotImplementedError

    def finish(self, params, workdir: str) -> dict[str, Any]:
        """Once, when a run completes (process 0, host params): extra measurements (e.g. a
        linear probe) written into workdir; their numbers join the run's summary."""
        return {}

    def tokens_per_example(self) -> int:
        return self.config.max_seq_len

    def describe(self) -> dict[str, Any]:
        """Facts for the report (data sizes, vocab, ...)."""
        return {}

