"""Pre-train, then fine-tune from the pre-trained encoder and from a random one with the same
budget: the claim of self-supervised learning, measured.

A config with task="transfer" holds two run configs: `pretrain` and `finetune` (a fine-tuning
run whose finetune.init is filled in here). Workdir layout:
    pretrain/  finetune_pretrained/  finetune_random_init/  report.md  transfer.json  *.png
Re-running resumes every stage (a finished stage is not trained again); a stage whose config
changed beyond its run-control fields is refused before any stage runs (ssl_jax.train.workdir).
"""
from __future__ import annotations

import copy
import json
import os
from typing import Any, Callable

from ssl_jax.files import write_atomic
from ssl_jax.train.metrics import read_metrics
from ssl_jax.train.report import plot_curves
from ssl_jax.train.workdir import check_resume, is_primary

STAGES = ("pretrained", "random_init")


def run(config, workdir: str, *, progress: bool = True) -> dict[str, Any]:
    """Any config: a transfer experiment, or one run of the generic loop."""
    from ssl_jax.tasks import get_task
    from ssl_jax.train.loop import train_and_evaluate

    train = lambda c, d: train_and_evaluate(c, d, get_task(c.task), progress=progress)
    if config.task == "transfer":
        return run_transfer(config, workdir, train)
    return train(config, workdir)


def run_transfer(config, workdir: str, train: Callable) -> dict[str, Any]:
    if config.finetune.task != "finetune":
        raise ValueError(f"transfer: config.finetune.task={config.finetune.task!r}; expected "
                         f"'finetune'")
    pretrain_dir = os.path.join(workdir, "pretrain")
    stages = {}
    for stage in STAGES:
        run_config = copy.deepcopy(config.finetune)
        run_config.finetune.init = os.path.abspath(pretrain_dir)
        run_config.finetune.random_init = stage == "random_init"
        stages[stage] = run_config, os.path.join(workdir, f"finetune_{stage}")
    # every stage's workdir contract before any stage writes (a changed fine-tuning field is
    # refused before the pre-training stage is touched)
    for run_config, run_dir in [(config.pretrain, pretrain_dir), *stages.values()]:
        check_resume(run_config, run_dir)
    summaries = {}
    for stage, (run_config, run_dir) in [("pretrain", (config.pretrain, pretrain_dir)),
                                         *stages.items()]:
        summaries[stage] = train(run_config, run_dir)
        if "signal" in summaries[stage]:  # stopped (pre-empted): no later stage starts
            return dict(summaries[stage], stage=os.path.basename(run_dir))
    return write_comparison(workdir, summaries.pop("pretrain"), summaries)


def write_comparison(workdir: str, pretrain: dict, summaries: dict[str, dict]) -> dict:
    """transfer.json ({"pretrained": metric, "random_init": metric, ...}), report.md with the
    table and the learning curves of both fine-tuning runs. Written by process 0 of a
    multi-host run."""
    metric_key, _ = summaries["pretrained"]["selection"].split(":")
    metric = metric_key[len("eval_"):]
    facts = _facts(os.path.join(workdir, "finetune_pretrained"))
    result = {stage: summaries[stage].get(metric_key) for stage in STAGES}
    result.update(
        metric=metric, majority_class=facts.get("majority_class_accuracy"),
        dataset=facts.get("dataset"),
        steps=summaries["pretrained"]["step"],
        pretrain={k: v for k, v in pretrain.items() if k.startswith("eval_")},
        runs={stage: {k: v for k, v in summaries[stage].items()
                      if k.startswith("eval_") or k in ("loss", "step", "ended")}
              for stage in STAGES})
    if is_primary():
        write_atomic(os.path.join(workdir, "transfer.json"), json.dumps(result, indent=2) + "\n")
        _report(workdir, result, facts)
    return result


def _facts(run_dir: str) -> dict:
    """The data facts a fine-tuning run's report recorded (dataset, majority class, ...)."""
    path = os.path.join(run_dir, "facts.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {}


def _curves(workdir: str, key: str, path: str, title: str, baseline: float | None = None):
    """`key` of both fine-tuning runs on one plot."""
    series = {}
    for stage in STAGES:
        records = read_metrics(os.path.join(workdir, f"finetune_{stage}", "metrics.jsonl"))
        series[stage] = [(r["step"], r[key]) for r in records if key in r]
    plot_curves(series, path, title, xlabel="fine-tuning step",
                baselines=None if baseline is None else {"majority class": baseline},
                marked=lambda _: key.startswith("eval_"))


def _report(workdir: str, result: dict, facts: dict) -> None:
    metric = result["metric"]
    fmt = lambda v: "" if v is None else f"{v:.4f}"
    lines = ["# Transfer: pre-trained vs random initialisation", "",
             f"Fine-tuning task: `{result['dataset']}` ({result['steps']} steps each, same "
             f"recipe and data order). Metric: held-out {metric}.", "",
             f"| encoder | held-out {metric} | held-out loss |", "| --- | ---: | ---: |"]
    for stage in STAGES:
        run = result["runs"][stage]
        lines.append(f"| {stage.replace('_', ' ')} | {fmt(result[stage])} | "
                     f"{fmt(run.get('eval_loss'))} |")
    if result.get("majority_class") is not None:
        lines.append(f"| majority class | {fmt(result['majority_class'])} | |")
    _curves(workdir, f"eval_{metric}", os.path.join(workdir, "transfer_metric.png"),
            f"held-out {metric}", result.get("majority_class"))
    _curves(workdir, "loss", os.path.join(workdir, "transfer_loss.png"), "training loss")
    lines += ["", f"![held-out {metric}](transfer_metric.png)", "",
              "![training loss](transfer_loss.png)", "",
              "Pre-training run: `pretrain/report.md`; fine-tuning runs: "
              "`finetune_pretrained/report.md`, `finetune_random_init/report.md`.", "",
              "## Fine-tuning data", "", "```json", json.dumps(facts, indent=2), "```", ""]
    write_atomic(os.path.join(workdir, "report.md"), "\n".join(lines))
