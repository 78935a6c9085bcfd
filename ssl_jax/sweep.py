"""Runs the points of a config's get_sweep() into DIR/<point>/ and compares them.

get_sweep() returns {name: point}; a point is data: {"data.mask_rate": 0.1, ...} (dotted
config keys -> values) applied to the base config (FILE.py:arg) with the command line's
parser (each value as its command-line text), and, where a point is another config rather
than other fields of one (a vision pretext), {":pretext": "mae"}: config args joined to the
base arg. A command-line override of a field (or arg) that the points vary is refused; points
whose resolved configs are equal are trained once.
"""
from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import io
import json
import os
import re
import shlex
import subprocess
import sys
import traceback
from types import ModuleType
from typing import Any

import ml_collections

from ssl_jax import config as config_lib
from ssl_jax.files import pyplot, save_figure, write_atomic
from ssl_jax.ignored import IgnoredField
from ssl_jax.train.metrics import read_metrics
from ssl_jax.train.workdir import is_primary


@dataclasses.dataclass
class Point:
    """One run of a sweep: its names (the first names it; the others resolve to the same
    config), its config arg and overrides (the point's, then the command line's)."""
    names: list[str]
    arg: str | None
    overrides: list[tuple[str, str]]
    own: list[tuple[str, str]]  # the point's overrides alone (for the table)
    config: ml_collections.ConfigDict

    @property
    def name(self) -> str:
        return self.names[0]

    def spec(self) -> str:
        """The point as command-line text: its config arg and --config flags."""
        flags = [f"--config.{k}={shlex.quote(v)}" for k, v in self.own]
        return " ".join(([self.arg] if self.arg else []) + flags)


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
        key = json.dumps(config.to_dict(), sort_keys=True, default=repr)
        if key in plan:
            plan[key].names.append(name)
        else:
            plan[key] = Point([name], point_arg, own + overrides, own, config)
    return list(plan.values())


def run_sweep(module: ModuleType, arg: str | None, overrides, workdir: str, train_fn,
              workers: int = 1, only: list[str] | None = None) -> list[dict]:
    """Each point is built (and validated) first, then trained: in this process one after
    another (workers=1, `train_fn(config, point_dir) -> summary`), or as `workers`
    concurrent `launch.py` processes. Writes sweep.csv, sweep.md, sweep.png after each."""
    if workers < 1:
        raise ValueError(f"--sweep-workers={workers} must be >= 1")
    plan = plan_sweep(module, arg, overrides, only)
    order = [p.name for p in plan]
    rows: list[dict] = []

    def finish(point: Point, run) -> None:
        row = {"name": point.name, "arg": point.spec()}
        if len(point.names) > 1:
            row["same_run"] = " ".join(point.names[1:])
        point_dir = os.path.join(workdir, point_dirname(point.name))
        try:
            summary = run()
            logged = {k for r in read_metrics(os.path.join(point_dir, "metrics.jsonl"))
                      for k in r}
            row.update(status=summary["ended"], step=summary["step"],
                       **({"signal": summary["signal"]} if "signal" in summary else {}),
                       selection=summary.get("selection", "eval_loss:min"),
                       **{k: summary[k] for k in summary if isinstance(summary[k], float)})
            # measured when the run ended (a probe, ...), not logged during it
            row["_measured"] = sorted(k for k in summary if isinstance(summary[k], float)
                                      and not k.startswith("eval_") and k not in logged)
        except Exception as e:  # a failed point is reported, the sweep goes on
            traceback.print_exc()
            row.update(status=f"failed: {type(e).__name__}: {e}")
        rows.append(row)
        rows.sort(key=lambda r: order.index(r["name"]))
        if is_primary():  # a multi-host sweep: process 0 writes the tables
            write_tables(rows, workdir)

    if workers == 1:
        for point in plan:
            point_dir = os.path.join(workdir, point_dirname(point.name))
            finish(point, lambda: train_fn(point.config, point_dir))
            if stopped_signal(rows):  # pre-empted: the later points must not start
                break
        return rows
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(_run_point_process, module.__file__, point,
                               os.path.join(workdir, point_dirname(point.name))): point
                   for point in plan}
        for future in concurrent.futures.as_completed(futures):
            finish(futures[future], future.result)
    return rows


def stopped_signal(rows: list[dict]) -> str | None:
    """The signal that stopped a point of the sweep ("SIGTERM", ...), or None."""
    return next((row["signal"] for row in rows if "signal" in row), None)


def _run_point_process(path: str, point: Point, point_dir: str) -> dict:
    """`launch.py` on the point: its arg and overrides as command-line flags."""
    launch = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "launch.py")
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


def selection_key(rows: list[dict]) -> tuple[str, str] | None:
    """(metric, "min" | "max") the finished runs' task selects by, e.g. ("eval_f1", "max")."""
    done = [r for r in rows if "selection" in r]
    return tuple(done[0]["selection"].split(":")) if done else None


def best_rows(rows: list[dict]) -> list[dict]:
    """The points with the best value of the selection metric, equal at the table's
    precision (4 decimals): one winner, or the points that tie; [] when none scored."""
    selection = selection_key(rows)
    if selection is None:
        return []
    key, mode = selection
    scored = [r for r in rows if isinstance(r.get(key), float)]
    if not scored:
        return []
    best = (max if mode == "max" else min)(r[key] for r in scored)
    return [r for r in scored if f"{r[key]:.4f}" == f"{best:.4f}"]


def metric_columns(rows: list[dict]) -> list[str]:
    """The metrics the runs reported: the selection metric first, then the other held-out
    (eval_*) metrics, then those measured when a run ended (e.g. a probe's accuracy)."""
    selection = selection_key(rows)
    first = [selection[0]] if selection else []
    evals = sorted({k for r in rows for k in r if k.startswith("eval_")} - set(first))
    measured = sorted({k for r in rows for k in r.get("_measured", ())} - set(first))
    return [k for k in first + evals + measured if any(k in r for r in rows)]


def write_tables(rows: list[dict], workdir: str) -> None:
    os.makedirs(workdir, exist_ok=True)
    metrics = metric_columns(rows)
    rows = [{k: v for k, v in r.items() if k != "_measured"} for r in rows]
    fixed = ["name", "arg"] + (["same_run"] if any("same_run" in r for r in rows) else []) + [
        "status", "step", "selection"]
    others = sorted({k for r in rows for k in r} - set(metrics) - set(fixed))
    table = io.StringIO()
    w = csv.DictWriter(table, fieldnames=fixed + metrics + others)
    w.writeheader()
    w.writerows(rows)
    write_atomic(os.path.join(workdir, "sweep.csv"), table.getvalue())
    shown = ["name", "status"] + metrics
    lines = ["| " + " | ".join(shown) + " |", "|" + " --- |" * len(shown)]
    for r in rows:
        cells = [f"{r[k]:.4f}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in shown]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""] + [f"Same run: {r['name']} = {' = '.join(r['same_run'].split())} (equal "
                     f"resolved configs, trained once)" for r in rows if "same_run" in r]
    best = best_rows(rows)
    if best:
        key = selection_key(rows)[0]
        names = ", ".join(f"**{r['name']}**" for r in best)
        lines.append(f"Best point by {key}: {names} ({key} = {best[0][key]:.4f})"
                     if len(best) == 1 else
                     f"No single best point by {key}: {names} tie at {key} = {best[0][key]:.4f}")
    write_atomic(os.path.join(workdir, "sweep.md"), "# Sweep\n\n" + "\n".join(lines) + "\n")
    plot_sweep(rows, os.path.join(workdir, "sweep.png"))


def plot_sweep(rows: list[dict], path: str) -> bool:
    """A bar per point of the runs' selection metric (eval_loss, a task's dev metric, a
    vision run's probe_accuracy). False (no file) when no point has it."""
    selection = selection_key(rows)
    key = selection[0] if selection else ""
    scored = [r for r in rows if isinstance(r.get(key), float)]
    if not scored:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(scored) + 1.5), 4.0))
    names, values = [r["name"] for r in scored], [r[key] for r in scored]
    # grey: untrained points (num_train_steps=0, e.g. a random-init baseline)
    bars = ax.bar(range(len(scored)), values,
                  color=["gray" if r.get("step") == 0 else "tab:blue" for r in scored])
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_xticks(range(len(scored)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(key)
    low = min(values)
    ax.set_ylim(max(0.0, low - 0.1 * (max(values) - low + 1e-3) - 0.02), None)
    ax.set_title(f"sweep: {key} per point")
    fig.tight_layout()
    save_figure(fig, path)
    return True
