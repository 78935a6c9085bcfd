"""Runs every point of a config's get_sweep() into DIR/<point>/ and compares them."""
from __future__ import annotations

import concurrent.futures
import csv
import io
import json
import os
import re
import subprocess
import sys
import traceback
from types import ModuleType

from ssl_jax import config as config_lib
from ssl_jax.files import pyplot, save_figure, write_atomic

_SHOWN = ("eval_loss", "eval_mlm_loss", "eval_mlm_accuracy", "eval_mlm_perplexity",
          "eval_nsp_accuracy", "loss")
_MEASURED = ("probe_accuracy", "finetune_accuracy")  # what a run measures when it ends


def point_dirname(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", name)


def sweep_points(module: ModuleType, arg: str | None) -> dict[str, str]:
    if not hasattr(module, "get_sweep"):
        raise ValueError(f"{module.__file__} has no get_sweep(); it cannot run with --sweep")
    points = module.get_sweep(arg) if arg is not None else module.get_sweep()
    if not points:
        raise ValueError(f"{module.__file__}: get_sweep() returned no points")
    return dict(points)


def run_sweep(module: ModuleType, arg: str | None, overrides, workdir: str, train_fn,
              workers: int = 1) -> list[dict]:
    """Each point is built (and validated) first, then trained: in this process one after
    another (workers=1), or as `workers` concurrent `launch.py` processes."""
    points = sweep_points(module, arg)
    configs = {name: config_lib.build_config(module, point_arg, overrides)
               for name, point_arg in points.items()}
    if workers < 1:
        raise ValueError(f"--sweep-workers={workers} must be >= 1")
    rows: list[dict] = []

    def finish(name: str, run) -> None:
        row = {"name": name, "arg": points[name]}
        try:
            summary = run()
            row.update(status=summary["ended"], step=summary["step"],
                       selection=summary.get("selection", "eval_loss:min"),
                       **{k: summary[k] for k in summary if isinstance(summary[k], float)})
        except Exception as e:  # a failed point is reported, the sweep goes on
            traceback.print_exc()
            row.update(status=f"failed: {type(e).__name__}: {e}")
        rows.append(row)
        rows.sort(key=lambda r: list(points).index(r["name"]))
        write_tables(rows, workdir)

    if workers == 1:
        for name, config in configs.items():
            finish(name, lambda: train_fn(config, os.path.join(workdir, point_dirname(name))))
        return rows
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(_run_point_process, module.__file__, points[name],
                               overrides, os.path.join(workdir, point_dirname(name))): name
                   for name in configs}
        for future in concurrent.futures.as_completed(futures):
            finish(futures[future], future.result)
    return rows


def _run_point_process(path: str, arg: str, overrides, point_dir: str) -> dict:
    launch = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "launch.py")
    cmd = [sys.executable, launch, "--config", f"{path}:{arg}", "--workdir", point_dir,
           "--no-progress"] + [f"--config.{k}={v}" for k, v in overrides]
    os.makedirs(point_dir, exist_ok=True)
    with open(os.path.join(point_dir, "launch.log"), "w") as log:
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"exit code {done.returncode}; see {point_dir}/launch.log")
    return json.loads(done.stdout.strip().splitlines()[-1])


def best_row(rows: list[dict]) -> dict | None:
    """The point with the best value of its runs' selection metric ("eval_f1:max", ...)."""
    done = [r for r in rows if "selection" in r]
    if not done:
        return None
    key, mode = done[0]["selection"].split(":")
    scored = [r for r in done if isinstance(r.get(key), float)]
    if not scored:
        return None
    pick = max if mode == "max" else min
    return pick(scored, key=lambda r: r[key])


def write_tables(rows: list[dict], workdir: str) -> None:
    os.makedirs(workdir, exist_ok=True)
    shown = _SHOWN + tuple(sorted({k for r in rows for k in r if k.startswith("eval_")}
                                  - set(_SHOWN))) + _MEASURED
    metrics = [k for k in shown if any(k in r for r in rows)]
    fixed = ["name", "arg", "status", "step", "selection"]
    others = sorted({k for r in rows for k in r} - set(metrics) - set(fixed))
    columns = fixed + metrics + others
    table = io.StringIO()
    w = csv.DictWriter(table, fieldnames=columns)
    w.writeheader()
    w.writerows(rows)
    write_atomic(os.path.join(workdir, "sweep.csv"), table.getvalue())
    shown = ["name", "status"] + metrics
    lines = ["| " + " | ".join(shown) + " |", "|" + " --- |" * len(shown)]
    for r in rows:
        cells = [f"{r[k]:.4f}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in shown]
        lines.append("| " + " | ".join(cells) + " |")
    best = best_row(rows)
    if best is not None:
        key = best["selection"].split(":")[0]
        lines += ["", f"Best point by {key}: **{best['name']}** ({key} = {best[key]:.4f})"]
    write_atomic(os.path.join(workdir, "sweep.md"), "# Sweep\n\n" + "\n".join(lines) + "\n")
    plot_sweep(rows, os.path.join(workdir, "sweep.png"))


def plot_sweep(rows: list[dict], path: str) -> bool:
    """A bar per point of the runs' selection metric (eval_loss, a task's dev metric, a
    vision run's probe_accuracy). False (no file) when no point has it."""
    plt = pyplot()

    done = [r for r in rows if "selection" in r]
    key = done[0]["selection"].split(":")[0] if done else ""
    scored = [r for r in rows if isinstance(r.get(key), float)]
    if not scored:
        return False
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
