"""The workdir contract: re-running on a workdir resumes only the same run.

A workdir holds one run. Re-running with a config that defines another run (a different
model, data, task, optimizer, pretext, probe, fine-tuning, seed, parallel mode, ... field)
is refused before anything is written, naming the fields that differ. Only the run-control
fields below may change; a change of them is appended to `config_history.jsonl` (when, at
which step, old -> new) and config.json keeps the current config, so the previous record is
not lost:

  num_train_steps, num_train_epochs   the run's length: growing it extends a finished or
                                      interrupted run (the learning-rate schedule is the one
                                      of the new length); below the step already reached
                                      (the latest checkpoint) it is refused
  log_every_steps, eval_every_steps,  how often it logs, evaluates, checkpoints (derived
  checkpoint_every_steps,             from the run's length, so they change with it)
  checkpoint_keep
  num_eval_batches, data_threads      how much of the held-out data an eval reads; host
                                      threads of the input pipeline

A call that fails before its first training step (e.g. the task's constructor refusing a
missing corpus file) leaves the workdir as it found it: what this call created is removed
(the whole workdir if it did not exist) and config.json / config_history.jsonl are restored.

Multi-host: every process checks (the same files, on a shared filesystem), and waits for
the others before process 0 writes anything; only process 0 (`is_primary`) writes the
workdir's own files (config.json, its history, metrics, TensorBoard, report, summary) and
undoes a failed start. Checkpoints are written by every process (ssl_jax.train.checkpoint).
"""
from __future__ import annotations

import datetime
import json
import os
import shutil

import jax

from ssl_jax.files import read_json, write_atomic

RUN_CONTROL = ("num_train_steps", "num_train_epochs", "log_every_steps", "eval_every_steps",
               "checkpoint_every_steps", "checkpoint_keep", "num_eval_batches", "data_threads",
               # the layout: a run saved on one mesh resumes on another with the same losses
               "parallel", "mesh.data", "mesh.fsdp", "mesh.tensor", "sharding_rules",
               "grad_accum_steps", "model.attention_impl")
CONFIG = "config.json"
HISTORY = "config_history.jsonl"
_MAX_LISTED = 8  # fields named in a refusal; the rest are counted


def is_primary() -> bool:
    """Whether this process writes the workdir's files: process 0 of a multi-host run (the
    only process of any other)."""
    return jax.process_index() == 0


def sync_processes(name: str) -> None:
    """Waits until every process of a multi-host run gets here (nothing to wait for in a
    single-process run)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def config_dict(config) -> dict:
    """The config as config.json stores it (JSON types: tuples become lists, ...)."""
    return json.loads(config.to_json_best_effort(sort_keys=True))


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


_ABSENT = object()


def differences(old: dict, new: dict) -> dict[str, tuple]:
    """{dotted field: (old value, new value)} of every field that differs (_ABSENT where a
    field is missing on one side), sorted by name."""
    a, b = _flatten(old), _flatten(new)
    return {k: (a.get(k, _ABSENT), b.get(k, _ABSENT)) for k in sorted(set(a) | set(b))
            if a.get(k, _ABSENT) != b.get(k, _ABSENT)}


def _show(value) -> str:
    return "(absent)" if value is _ABSENT else json.dumps(value)


def write_config(config, workdir: str) -> None:
    """workdir/config.json: the run's config (what a tool loading the workdir reads)."""
    write_atomic(os.path.join(workdir, CONFIG),
                 json.dumps(config_dict(config), indent=2, sort_keys=True) + "\n")


def saved_config(workdir: str) -> dict | None:
    """The config.json a previous call wrote to `workdir`, or None (a new workdir)."""
    path = os.path.join(workdir, CONFIG)
    if not os.path.exists(path):
        return None
    return read_json(path, "the workdir's config")


def check_resume(config, workdir: str) -> None:
    """Refuses (ValueError, one line) a workdir that holds another run: a field outside
    RUN_CONTROL differs from its config.json. Writes nothing."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"workdir {workdir!r} is a file; expected a directory (new or a run's)")
    old = saved_config(workdir)
    if old is None:
        if os.path.isdir(os.path.join(workdir, "checkpoints")):
            raise ValueError(f"workdir {workdir!r} has checkpoints/ but no {CONFIG}: not a run "
                             f"this loop wrote; use a new --workdir")
        return
    changed = {k: v for k, v in differences(old, config_dict(config)).items()
               if k not in RUN_CONTROL}
    if not changed:
        return
    listed = [f"{k}: {_show(a)} -> {_show(b)}" for k, (a, b) in changed.items()][:_MAX_LISTED]
    more = len(changed) - len(listed)
    raise ValueError(
        f"workdir {workdir!r} holds another run: {', '.join(listed)}"
        + (f" (and {more} more fields)" if more > 0 else "")
        + f"; only {', '.join(RUN_CONTROL)} may change on a resume. Use a new --workdir (or "
        f"remove this one to start over)")


class RunDir:
    """A training call's hold on its workdir (a context manager).

    Entering refuses another run's workdir (check_resume) and creates the directory; `record`
    checks the final config's length and writes config.json (+ the history of changes);
    `started()` marks the first training step done. Leaving by an exception before
    `started()` undoes what this call did to the workdir. In a multi-host run, every process
    checks and only process 0 writes or undoes; entering waits for every process's check."""

    def __init__(self, config, workdir: str):
        self.workdir = workdir
        check_resume(config, workdir)
        self._started = False
        self._primary = is_primary()

    def __enter__(self) -> RunDir:
        if self._primary:
            path = os.path.abspath(self.workdir)
            self._created = None  # the topmost directory this call creates
            while not os.path.exists(path):
                self._created, path = path, os.path.dirname(path)
            self._before = set() if self._created else set(os.listdir(self.workdir))
            self._saved = {name: _read_bytes(os.path.join(self.workdir, name))
                           for name in (CONFIG, HISTORY)}
            os.makedirs(self.workdir, exist_ok=True)
        sync_processes("ssl_jax:workdir_checked")  # no process checks what process 0 writes
        return self

    def record(self, config, reached_step: int | None) -> None:
        """Writes config.json; a change of a run-control field is appended to the history.
        A num_train_steps below `reached_step` (the latest checkpoint) is refused."""
        total = config.num_train_steps
        if reached_step is not None and total < reached_step:
            raise ValueError(f"config.num_train_steps={total} is below step {reached_step}, "
                             f"which workdir {self.workdir!r} already reached; a run can grow, "
                             f"not shrink (use a new --workdir to train a shorter run)")
        if not self._primary:
            return
        new = config_dict(config)
        old = saved_config(self.workdir)
        if old is not None:
            changed = differences(old, new)
            if changed:
                entry = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds"), "step": reached_step or 0,
                         "changed": {k: [None if a is _ABSENT else a, None if b is _ABSENT
                                         else b] for k, (a, b) in changed.items()}}
                history = _read_bytes(os.path.join(self.workdir, HISTORY)) or b""
                write_atomic(os.path.join(self.workdir, HISTORY),
                             history.decode("utf-8") + json.dumps(entry) + "\n")
        write_config(config, self.workdir)

    def started(self) -> None:
        self._started = True

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None or self._started or not self._primary:
            return
        if self._created is not None:
            shutil.rmtree(self._created, ignore_errors=True)
            return
        for name in set(os.listdir(self.workdir)) - self._before:
            path = os.path.join(self.workdir, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)
        for name, content in self._saved.items():
            if content is not None:
                with open(os.path.join(self.workdir, name), "wb") as f:
                    f.write(content)


def _read_bytes(path: str) -> bytes | None:
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return f.read()


def read_history(workdir: str) -> list[dict]:
    """The workdir's recorded config changes, oldest first."""
    path = os.path.join(workdir, HISTORY)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
