"""A sweep's comparison: sweep.csv (every column), sweep.md (the metrics, the best point or a
tie), sweep.png (a bar per point of the selection metric), from the points' rows."""
from __future__ import annotations

import csv
import io
import os

from ssl_jax.files import pyplot, save_figure, write_atomic


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
