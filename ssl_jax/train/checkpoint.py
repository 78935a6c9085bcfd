"""orbax checkpoints: model/optimizer state plus the data iterator's state, written atomically.

Keeps the `keep` latest checkpoints and the best one by the task's metric (eval loss, or
e.g. accuracy for fine-tuning).

Multi-host: every process calls save and restore. The state's arrays are written by the
processes that hold their shards; the data iterator's state is one file per process
(`<step>/data/process_<i>-of-<n>.json`, grain's orbax handler), each process restoring its
own, since each reads its own shard of the training set. Checkpoints written before that
(one `data/metadata` JSON) still restore in a single-process run.
"""
from __future__ import annotations

import json
import os

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint.checkpoint_managers import preservation_policy as policy


class Checkpointer:
    def __init__(self, directory: str, keep: int = 3, best_metric: str = "eval_loss",
                 best_mode: str = "min"):
        if keep < 1:
            raise ValueError(f"config.checkpoint_keep={keep} must be >= 1")
        if best_mode not in ("min", "max"):
            raise ValueError(f"best_mode={best_mode!r}; expected 'min' or 'max'")
        self.best_metric = best_metric
        self.directory = directory
        preserve = policy.AnyPreservationPolicy([
            policy.LatestN(n=keep),
            policy.BestN(get_metric_fn=lambda m: m[best_metric], reverse=best_mode == "min",
                         n=1, keep_checkpoints_without_metrics=False),
        ])
        self.manager = ocp.CheckpointManager(
            os.path.abspath(directory),
            # best_fn makes orbax write each checkpoint's metrics to disk, so the best one is
            # still known (and kept) after a restart.
            options=ocp.CheckpointManagerOptions(
                preservation_policy=preserve, create=True,
                best_fn=lambda m: m[best_metric], best_mode=best_mode,
                keep_checkpoints_without_metrics=True),
            item_names=("state", "data"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The kept step with the best `best_metric` (lowest, or highest for best_mode="max")."""
        return self.manager.best_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state, data_state: dict, metrics: dict | None = None,
             force: bool = True) -> None:
        """Every process calls it: `state` (global arrays), this process's `data_state` (its
        data iterator's get_state()), the eval `metrics` the best checkpoint is chosen by."""
        metrics = {k: float(v) for k, v in (metrics or {}).items()} or None
        if metrics is not None and self.best_metric not in metrics:
            metrics = None
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(_DataState(data_state))),
            metrics=metrics, force=force)

    def restore(self, abstract_state, step: int | None = None):
        """-> (state, this process's data_state) of `step` (default: the latest). Every
        process calls it; the arrays land in `abstract_state`'s shardings."""
        step = self._kept(step)
        data_dir = os.path.join(self.directory, str(step), "data")
        own = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        if os.path.exists(os.path.join(data_dir, own)):
            holder = _DataState()
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=grain.checkpoint.CheckpointRestore(holder)))
            return restored["state"], holder.state
        legacy = os.path.join(data_dir, "metadata")  # one JsonSave item: a single process's
        if jax.process_count() == 1 and os.path.exists(legacy):
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state)))
            return restored["state"], ocp.JsonCheckpointHandler().restore(epath.Path(data_dir))
        raise ValueError(self._other_processes(step, data_dir))

    def _other_processes(self, step: int, data_dir: str) -> str:
        """Why this run cannot take `step`'s data iterator states: another process count."""
        names = sorted(os.listdir(data_dir)) if os.path.isdir(data_dir) else []
        counts = sorted({n.rsplit("-of-", 1)[1][:-len(".json")] for n in names
                         if n.startswith("process_") and "-of-" in n})
        saved = (f"{' or '.join(counts)} process(es)" if counts
                 else "1 process" if "metadata" in names else "no process")
        return (f"checkpoint {os.path.join(self.directory, str(step))} holds the data iterator "
                f"states of {saved}; this run has {jax.process_count()}: resume it with the "
                f"process count that saved it (each process reads its own shard of the data)")

    def restore_params(self, abstract_params, step: int | None = None):
        """Only the parameters (e.g. to fine-tune from a pre-training run): in the leaves'
        shardings, or (leaves without one, e.g. from jax.eval_shape) numpy arrays. Every
        process of a multi-host run calls it."""
        step = self._kept(step)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(
                item={"params": abstract_params},
                restore_args=jax.tree_util.tree_map(_restore_args, {"params": abstract_params}),
                partial_restore=True)))
        return restored["state"]["params"]

    def _kept(self, step: int | None) -> int:
        """`step` (default: the latest), refused unless a checkpoint of it is kept."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{self.directory!r} holds no checkpoint yet")
        if step not in self.all_steps():
            raise FileNotFoundError(f"{self.directory!r} has no checkpoint at step {step}; "
                                    f"it has {self.all_steps()}")
        return step

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


class _DataState:
    """A data iterator's state (a JSON dict) as grain's orbax handler saves and restores
    iterators: get_state() -> bytes, set_state(bytes). Saving the dict the loop captured
    (not the live iterator) keeps the state of the step being checkpointed."""

    def __init__(self, state: dict | None = None):
        self.state = state

    def get_state(self) -> bytes:
        return json.dumps(self.state).encode("utf-8")

    def set_state(self, state: bytes) -> None:
        self.state = json.loads(state)

    def start_prefetch(self) -> None:  # called by the handler after set_state
        pass


def _restore_args(leaf) -> ocp.RestoreArgs:
    """Where a restored array goes: the abstract leaf's sharding when it has one, else a
    numpy array on the host, whole on every process (whatever mesh saved it)."""
    sharding = getattr(leaf, "sharding", None)
    if sharding is not None:
        return ocp.ArrayRestoreArgs(sharding=sharding)
    return ocp.RestoreArgs(restore_type=np.ndarray)
