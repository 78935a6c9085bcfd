"""Runs the points of a config's get_sweep() into DIR/<point>/ and compares them.

get_sweep() returns {name: point}; a point is data: {"data.mask_rate": 0.1, ...} (dotted
config keys -> values) applied to the base config (FILE.py:arg) with the command line's
parser (each value as its command-line text), and, where a point is another config rather
than other fields of one (a vision pretext), {":pretext": "mae"}: config args joined to the
base arg. A command-line override of a field (or arg) that the points vary is refused; points
whose resolved configs are equal are trained once. A re-run of the same sweep trains only
what has not ended (ssl_jax.sweep.state); `python -m ssl_jax.sweep status DIR` shows where
each point is.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
import traceback
from types import ModuleType
from typing import Any, Callable

import ml_collections

from ssl_jax import config as config_lib
from ssl_jax.ignored import IgnoredField
from ssl_jax.sweep import state
from ssl_jax.sweep.tables import (best_rows, metric_columns, plot_sweep, selection_key,
                                  write_tables)
from ssl_jax.train.workdir import is_primary

__all__ = ["Point", "plan_sweep", "run_sweep", "stopped_signal", "point_dirname", "best_rows",
           "metric_columns", "plot_sweep", "selection_key", "write_tables"]


@dataclasses.dataclass
class Point:
    """One run of a sweep: its names (the first names it; the others resolve to the same
    config), its config arg and overrides (the point's, then the command line's)."""
    names: list[str]
    arg: str | None
    overrides: list[tuple[str, str]]
    own: list[tuple[str, str]]  # the point's overrides alone (for the table)
    config: ml_collections.ConfigDict
    hash: str  # of the resolved config (state.config_hash): equal points share it

    @property
    def name(self) -> str:
        return self.names[0]

    def spec(self) -> str:
        """The point as command-line text: its config arg and --config flags."""
        flags = [f"--config.{k}={shlex.quote(v)}" for k, v in self.own]
        return " ".join(([self.arg] if self.arg else []) + flags)

    def dir(self, workdir: str) -> str:
        return os.path.join(workdir, point_dirname(self.name))

    def entry(self) -> dict[str, Any]:
        """The point in sweep.json: names, directory, config hash, its row's first cells."""
        row = {"name": self.name, "arg": self.spec()}
        if len(self.names) > 1:
            row["same_run"] = " ".join(self.names[1:])
        return {"name": self.name, "names": self.names, "dir": point_dirname(self.name),
                "config_hash": self.hash, "row": row}


def point_dirname(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", name)


def sweep_points(module: ModuleType) -> dict[str, dict[str, Any]]:
    if not hasattr(module, "get_sweep"):
        raise ValueError(f"{module.__file__} has no get_sweep(); it cannot run with --sweep")
    points = module.get_sweep()
    if not points:
        raise ValueError(f"{module.__file__}: get_sweep() returned no points")
    for name, point in points.items():
        if not isinstance(point, dict):
            raise ValueError(f"{module.__file__}: sweep point {name!r} is {point!r}; expected "
                             f"a dict of overrides")
    return dict(points)


def _select(points: dict, only: list[str] | None) -> dict:
    if only is None:
        return points
    unknown = [n for n in only if n not in points]
    if unknown:
        raise ValueError(f"--sweep-points: unknown point {', '.join(map(repr, unknown))}; "
                         f"expected names from {', '.join(points)}")
    return {n: p for n, p in points.items() if n in only}


def _refuse_conflicts(points: dict, arg: str | None, overrides) -> None:
    """A field (or arg) the points vary that the command line also sets would make the
    points equal (the command line is applied last): refused, naming it."""
    varied = {k for p in points.values() for k in p}
    for key, _ in overrides:
        if key in varied:
            raise ValueError(f"--config.{key} conflicts with the sweep, whose points set {key}; "
                             f"drop it (or pick points with --sweep-points)")
    for key in sorted(config_lib.arg_keys(arg) & {k[1:] for k in varied if k[:1] == ":"}):
        raise ValueError(f"config arg {key} conflicts with the sweep, whose points set it; "
                         f"drop it from the config arg")


def plan_sweep(module: ModuleType, arg: str | None, overrides=(),
               only: list[str] | None = None) -> list[Point]:
    """Every selected point built (and validated) before anything trains; points with equal
    resolved configs merged into one Point, named by the first."""
    overrides = list(overrides)
    points = _select(sweep_points(module), only)
    _refuse_conflicts(points, arg, overrides)
    plan: dict[str, Point] = {}
    for name, point in points.items():
        point_arg = config_lib.join_arg(arg, {k[1:]: v for k, v in point.items() if k[:1] == ":"})
        own = [(k, config_lib.format_value(v)) for k, v in point.items() if k[:1] != ":"]
        try:
            config = config_lib.build_config(module, point_arg, own + overrides)
        except IgnoredField as e:  # the command line's setting, in this point
            raise IgnoredField(f"sweep point {name!r}: {e} (pick points with "
                               f"--sweep-points)") from None
        key = state.config_hash(config)
        if key in plan:
            plan[key].names.append(name)
        else:
            plan[key] = Point([name], point_arg, own + overrides, own, config, key)
    return list(plan.values())


def run_sweep(module: ModuleType, arg: str | None, overrides, workdir: str, train_fn,
              workers: int = 1, only: list[str] | None = None, *, retry_failed: bool = False,
              submit: Callable[[list[Point], str], None] | None = None) -> list[dict]:
    """Each point is built (and validated) first; the ones a re-run still needs (not done
    with the same config; failed ones only with `retry_failed`) are then trained: in this
    process one after another (workers=1, `train_fn(config, point_dir) -> summary`), as
    `workers` concurrent `launch.py` processes, or by `submit(points, workdir)` (scheduler
    jobs, ssl_jax.cluster.executors, which record their own point.json). The tables are
    rebuilt from every ended point after each one; -> the ended points' rows."""
    if workers < 1:
        raise ValueError(f"--sweep-workers={workers} must be >= 1")
    plan = plan_sweep(module, arg, overrides, only)
    if is_primary():
        state.write_plan(workdir, [p.entry() for p in plan],
                         None if only is None else list(sweep_points(module)))
    todo = [p for p in plan if state.needs_run(p.dir(workdir), p.hash, retry_failed)]
    for point in list(todo):
        record = state.read_point(point.dir(workdir))
        if state.busy_here(record):
            print(f"sweep: {point.name} is being trained by process {record['pid']} on this "
                  f"host; skipped", file=sys.stderr)
            todo.remove(point)
    if len(todo) < len(plan) and is_primary():
        print(f"sweep: {len(plan) - len(todo)} of {len(plan)} points ended earlier (done, or "
              f"failed: --retry-failed re-runs those); training {len(todo)}", file=sys.stderr)

    def finish(point: Point, run) -> dict:
        point_dir, base = point.dir(workdir), point.entry()["row"]
        if is_primary():
            state.mark_running(point_dir, point.hash)
        try:
            row = state.summary_row(base, run(), point_dir)
        except Exception as e:  # a failed point is reported, the sweep goes on
            traceback.print_exc()
            row = state.failed_row(base, e)
        if is_primary():  # a multi-host sweep: process 0 writes the tables
            state.record_end(workdir, point_dir, row)
        return row

    if submit is not None:
        submit(todo, workdir)
    elif workers == 1:
        for point in todo:
            row = finish(point, lambda: train_fn(point.config, point.dir(workdir)))
            if state.state_of(row) == "stopped":
                break  # pre-empted: the later points must not start
    else:
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            futures = {pool.submit(_run_point_process, module.__file__, point,
                                   point.dir(workdir)): point for point in todo}
            for future in concurrent.futures.as_completed(futures):
                finish(futures[future], future.result)
    if is_primary():
        return state.rebuild_tables(workdir)
    return state.ended_rows(workdir)


def stopped_signal(rows: list[dict]) -> str | None:
    """The signal that stopped a point of the sweep ("SIGTERM", ...), or None."""
    return next((row["signal"] for row in rows if "signal" in row), None)


def _run_point_process(path: str, point: Point, point_dir: str) -> dict:
    """`launch.py` on the point: its arg and overrides as command-line flags."""
    launch = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "launch.py")
    spec = path if point.arg is None else f"{path}:{point.arg}"
    cmd = [sys.executable, launch, "--config", spec, "--workdir", point_dir,
           "--no-progress"] + [f"--config.{k}={v}" for k, v in point.overrides]
    os.makedirs(point_dir, exist_ok=True)
    with open(os.path.join(point_dir, "launch.log"), "w") as log:
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    lines = done.stdout.strip().splitlines()
    summary = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    if done.returncode != 0 and "signal" not in summary:  # stopped by a signal: 128 + its number
        raise RuntimeError(f"exit code {done.returncode}; see {point_dir}/launch.log")
    return summary
