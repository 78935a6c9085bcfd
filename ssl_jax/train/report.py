"""report.md at the end of a run: final metrics, data facts and learning-curve plots."""
from __future__ import annotations

import json
import os
from typing import Callable

from ssl_jax.files import pyplot, save_figure, write_atomic
from ssl_jax.train.metrics import read_metrics


def plot_curves(series: dict[str, list[tuple[int, float]]], path: str, title: str, *,
                baselines: dict[str, float] | None = None, xlabel: str = "step",
                marked: Callable[[str], bool] = lambda label: label.startswith("eval_")) -> bool:
    """One line per label ((step, value) points; `marked` labels get dots: eval points are
    sparse), dashed annotated baselines; False (no file) when every series is empty."""
    plt = pyplot()

    series = {k: v for k, v in series.items() if v}
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, points in series.items():
        steps, values = zip(*points)
        ax.plot(steps, values, marker="o" if marked(label) else None, markersize=3, label=label)
    for name, value in (baselines or {}).items():
        ax.axhline(value, linestyle="--", color="gray", linewidth=1)
        ax.annotate(name, (0, value), xycoords=("axes fraction", "data"),  # left edge
                    textcoords="offset points", xytext=(2, 2), fontsize=8, color="gray")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    return True


def _plot(records: list[dict], keys: list[str], path: str, title: str,
          baselines: dict[str, float] | None = None) -> bool:
    return plot_curves({k: [(r["step"], r[k]) for r in records if k in r] for k in keys},
                       path, title, baselines=baselines)


def write_report(workdir: str, config, facts: dict, summary: dict) -> str:
    records = read_metrics(os.path.join(workdir, "metrics.jsonl"))
    loss_keys = sorted({k for r in records for k in r if k.endswith("loss")})
    acc_keys = sorted({k for r in records for k in r if k.endswith("accuracy")})
    lines = [f"# Run report: {config.task}", "",
             f"workdir: `{os.path.abspath(workdir)}`  ", f"ended: {summary['ended']} at step "
             f"{summary['step']} of {config.num_train_steps}", "", "## Final metrics", "",
             "| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {v:.4f} |" for k, v in sorted(summary.items())
              if isinstance(v, float)]
    baselines = facts.get("baselines", {})
    if baselines:
        lines += ["", "Baselines (dashed in the plot): " + ", ".join(
            f"{k} = {v:.4f}" for k, v in baselines.items())]
    if _plot(records, loss_keys, os.path.join(workdir, "loss.png"), "loss", baselines):
        lines += ["", "## Loss", "", "![loss](loss.png)"]
    if _plot(records, acc_keys, os.path.join(workdir, "accuracy.png"), "accuracy"):
        lines += ["", "## Accuracy", "", "![accuracy](accuracy.png)"]
    lines += ["", "## Data and model", "", "```json", json.dumps(facts, indent=2), "```",
              "", "## Config", "", "```json", config.to_json_best_effort(indent=2), "```", ""]
    write_atomic(os.path.join(workdir, "facts.json"), json.dumps(facts, indent=2) + "\n")
    path = os.path.join(workdir, "report.md")
    write_atomic(path, "\n".join(lines))
    return path
