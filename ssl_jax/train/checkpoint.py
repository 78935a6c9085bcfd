"""orbax checkpoints: model/optimizer state plus the data iterator's state, written atomically.

Keeps the `keep` latest checkpoints and the best one by the task's metric (eval loss, or
e.g. accuracy for fine-tuning).
"""
from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp
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
        metrics = {k: float(v) for k, v in (metrics or {}).items()} or None
        if metrics is not None and self.best_metric not in metrics:
            metrics = None
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)),
            metrics=metrics, force=force)

    def restore(self, abstract_state, step: int | None = None):
        """-> (state, data_state) of `step` (default: the latest)."""
        step = self._kept(step)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        return restored["state"], restored["data"]

    def restore_params(self, abstract_params, step: int | None = None):
        """Only the parameters (e.g. to fine-tune from a pre-training run)."""
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


def _restore_args(leaf) -> ocp.RestoreArgs:
    """Where a restored array goes: the abstract leaf's sharding when it has one."""
    sharding = getattr(leaf, "sharding", None)
    return ocp.ArrayRestoreArgs(sharding=sharding) if sharding is not None else ocp.RestoreArgs()
