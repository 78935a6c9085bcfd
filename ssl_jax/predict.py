"""Predictions of a fine-tuned run on a benchmark split, in the benchmark's submission format.

    python -m ssl_jax.predict --model runs/mnli --output preds/mnli               # test
    python -m ssl_jax.predict --model runs/squad --output preds/squad --split validation
    python -m ssl_jax.predict --model runs/ner --output preds/ner --data data/conll2003

--model is a `finetune` workdir: its best checkpoint by the selection metric, else the
latest (or --step). The run's task is rebuilt from its config.json (finetune.init, if any,
must still be readable: it gives the encoder's architecture) with its tokenizer/, and reads
the split from --data (the released files; default: the run's finetune.path / data_dir).
The files written (ssl_jax/eval/submissions.py): GLUE <Task>.tsv, SQuAD predictions.json
(+ null_odds.json), CoNLL-2003 predictions.txt. Where the split has labels (validation;
CoNLL-2003's test) the metrics, computed as the run's eval computes them, are printed and
written to metrics.json. SQuAD has no public test set: --split test is an error there.
OUTPUT must not exist (or be empty); it appears whole or not at all.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

import jax
import numpy as np

from ssl_jax.config import read_config
from ssl_jax.data.batching import eval_batches
from ssl_jax.data.finetune import ConllSource, EVAL_SPLITS
from ssl_jax.eval.submissions import submission_files
from ssl_jax.interop.hf_format import check_new_directory, json_text, publish
from ssl_jax.train.checkpoint import Checkpointer


def _steps(run: str) -> list[int]:
    directory = os.path.join(run, "checkpoints")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{run!r} has no checkpoints/ directory")
    steps = sorted(int(d) for d in os.listdir(directory) if d.isdigit())
    if not steps:
        raise FileNotFoundError(f"{run!r} holds no checkpoint yet")
    return steps


def load_run(run: str, split: str, data: str | None, step: int | None):
    """(the run's task, reading `split` from `data`, and the checkpoint's params, step)."""
    from ssl_jax.tasks import get_task

    config = read_config(run, "finetune")
    if split not in EVAL_SPLITS:
        raise ValueError(f"--split {split!r}; expected one of {list(EVAL_SPLITS)}")
    steps = _steps(run)
    if step is not None and step not in steps:
        raise ValueError(f"{run!r} has no checkpoint at step {step}; it has {steps}")
    if not os.path.isdir(os.path.join(run, "tokenizer")):
        raise FileNotFoundError(f"{run!r} has no tokenizer/ directory")
    if data is not None:
        if not os.path.isdir(data):
            raise FileNotFoundError(f"--data {data!r} is not a directory")
        config.finetune.path = data
    config.finetune.eval_split = split
    with tempfile.TemporaryDirectory() as scratch:  # the task writes its tokenizer/ here
        shutil.copytree(os.path.join(run, "tokenizer"), os.path.join(scratch, "tokenizer"))
        task = get_task(config.task)(config, scratch)
        _check_tokenizer(run, os.path.join(scratch, "tokenizer"))
    if not len(task.eval_examples()):
        raise ValueError(f"the {split} split of {config.finetune.dataset} in "
                         f"{config.finetune.get('path') or config.finetune.get('data_dir')!r} "
                         f"has no rows to predict")
    checkpointer = Checkpointer(os.path.join(run, "checkpoints"), best_metric=task.best_metric,
                                best_mode=task.best_mode)
    try:
        step = step if step is not None else (checkpointer.best_step()
                                              or checkpointer.latest_step())
        abstract = jax.eval_shape(task.init_params, jax.random.PRNGKey(0))
        params = checkpointer.restore_params(abstract, step)
    finally:
        checkpointer.close()
    return task, params, step


def _check_tokenizer(run: str, rebuilt: str) -> None:
    """The rebuilt task must tokenize as the run did (its init may have changed since): the
    tokenizer files it wrote equal the run's."""
    kept = os.path.join(run, "tokenizer")
    for name in sorted(os.listdir(kept)):
        with open(os.path.join(kept, name), "rb") as a, open(os.path.join(rebuilt, name),
                                                               "rb") as b:
            if a.read() != b.read():
                raise ValueError(f"{run!r}: the rebuilt task's tokenizer/{name} differs from "
                                 f"the run's (has finetune.init changed since?)")


def predict_outputs(task, params) -> dict[str, np.ndarray]:
    """task.predict over its eval examples (in order, the last batch's padding dropped)."""
    predict = jax.jit(task.predict)
    outputs: dict[str, list] = {}
    for batch in eval_batches(task.eval_examples(), task.config.batch_size):
        real = batch["example_weight"] > 0
        for k, v in jax.device_get(predict(params, batch)).items():
            outputs.setdefault(k, []).append(np.asarray(v)[real])
    return {k: np.concatenate(v) for k, v in outputs.items()}


def has_labels(source, split: str) -> bool:
    return split == "validation" or isinstance(source, ConllSource)  # CoNLL's test has gold


def predict(model: str, output: str, split: str = "test", data: str | None = None,
            step: int | None = None) -> tuple[list[str], dict[str, float], int]:
    """Writes `output`; returns (files written, metrics (empty without labels), step)."""
    check_new_directory(output)  # before anything is read
    task, params, step = load_run(model, split, data, step)
    outputs = predict_outputs(task, params)
    ft = task.config.finetune
    files = submission_files(task.source, outputs, data_path=ft.get("path") or None,
                             split=split)
    metrics = task.score(outputs) if has_labels(task.source, split) else {}
    if metrics:
        files["metrics.json"] = json_text({"split": split, "step": step, **metrics})
    publish(output, files)
    return sorted(files), metrics, step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a finetune run's workdir")
    parser.add_argument("--output", required=True, help="the directory to create")
    parser.add_argument("--split", default="test", help="test (default) or validation")
    parser.add_argument("--data", help="the benchmark's released files (default: the run's)")
    parser.add_argument("--step", type=int, help="checkpoint step (default: the best)")
    args = parser.parse_args(argv)
    try:
        files, metrics, step = predict(args.model, args.output, args.split, args.data,
                                       args.step)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if metrics:
        print(json.dumps({"split": args.split, **metrics}))
    print(f"wrote {args.output}: {', '.join(files)} (step {step})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
