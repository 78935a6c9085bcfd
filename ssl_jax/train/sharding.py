"""Device meshes and the two ways to run one step function: jit over a mesh, or pmap."""
from __future__ import annotations

from typing import Callable

import jax
import numpy as np
from flax import jax_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
PARALLEL_MODES = ("jit", "pmap")


def make_mesh() -> Mesh:
    """A 1-D data-parallel mesh over every device of every process."""
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def check_batch_size(batch_size: int) -> None:
    devices, processes = jax.device_count(), jax.process_count()
    if batch_size % devices:
        raise ValueError(f"batch_size={batch_size} is not divisible by the {devices} devices")
    if batch_size % processes:
        raise ValueError(f"batch_size={batch_size} is not divisible by {processes} processes")


class Parallel:
    """Places state and batches and wraps step functions for one `config.parallel` mode."""

    def __init__(self, mode: str):
        if mode not in PARALLEL_MODES:
            raise ValueError(f"config.parallel={mode!r}; expected one of {PARALLEL_MODES}")
        self.mode = mode
        self.mesh = make_mesh()
        self.replicated = NamedSharding(self.mesh, P())
        self.batch_sharding = NamedSharding(self.mesh, P(DATA_AXIS))
        self.axis_name = DATA_AXIS if mode == "pmap" else None

    # --- state -----------------------------------------------------------------------------
    def put_state(self, state):
        """Host/global state -> the layout the step wants."""
        if self.mode == "pmap":
            return jax_utils.replicate(state)
        return jax.device_put(state, self.replicated)

    def get_state(self, state):
        """The step's layout -> one global copy (for checkpoints and eval)."""
        return jax_utils.unreplicate(state) if self.mode == "pmap" else state

    # --- batches ---------------------------------------------------------------------------
    def put_batch(self, batch: dict[str, np.ndarray]):
        """A process-local numpy batch -> arrays sharded along the batch dimension."""
        if self.mode == "pmap":
            n = jax.local_device_count()
            return jax.tree_util.tree_map(
                lambda x: x.reshape((n, x.shape[0] // n) + x.shape[1:]), batch)
        return jax.tree_util.tree_map(
            lambda x: jax.make_array_from_process_local_data(self.batch_sharding, x), batch)

    # --- steps -----------------------------------------------------------------------------
    def wrap_train_step(self, step_fn: Callable) -> Callable:
        if self.mode == "pmap":
            fn = jax.pmap(step_fn, axis_name=DATA_AXIS, donate_argnums=(0,))
            return lambda state, batch: _first(fn(state, batch))
        return jax.jit(step_fn, in_shardings=(self.replicated, self.batch_sharding),
                       out_shardings=(self.replicated, self.replicated), donate_argnums=(0,))

    def wrap_eval_step(self, eval_fn: Callable) -> Callable:
        if self.mode == "pmap":
            fn = jax.pmap(eval_fn, axis_name=DATA_AXIS)
            return lambda params, batch: jax.tree_util.tree_map(lambda x: x[0], fn(params, batch))
        return jax.jit(eval_fn, in_shardings=(self.replicated, self.batch_sharding),
                       out_shardings=self.replicated)


    def wrap_predict_step(self, predict_fn: Callable) -> Callable:
        """predict_fn(params, batch) -> per-example arrays, left split like the batch."""
        if self.mode == "pmap":
            return jax.pmap(predict_fn, axis_name=DATA_AXIS)
        return jax.jit(predict_fn, in_shardings=(self.replicated, self.batch_sharding),
                       out_shardings=self.batch_sharding)

    def get_batch(self, outputs) -> dict[str, np.ndarray]:
        """Per-example outputs (split over devices) -> numpy arrays in batch order."""
        if self.mode == "pmap":
            return {k: np.asarray(v).reshape((-1,) + v.shape[2:]) for k, v in outputs.items()}
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            outputs = multihost_utils.process_allgather(outputs, tiled=True)
        return {k: np.asarray(jax.device_get(v)) for k, v in outputs.items()}


def _first(out):
    state, metrics = out
    return state, jax.tree_util.tree_map(lambda x: x[0], metrics)
