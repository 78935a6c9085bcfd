"""The metrics of a fine-tuning run's eval predictions, for each kind of data source.

The source (ssl_jax/data/finetune.py) decodes the model's outputs into its own terms (labels
per eval split, tags per word, answer strings); here they are scored:
  * text (pair) classification / regression: task_metrics, each eval split on its own (MNLI
    matched is `<metric>`, mismatched `validation_mismatched_<metric>`);
  * CoNLL-2003: POS token accuracy; NER seqeval entity precision/recall/F1 + token accuracy;
  * SQuAD: exact match and F1 (and the v2.0 HasAns/NoAns splits).
"""
from __future__ import annotations

import numpy as np

from ssl_jax.data.finetune import ConllSource, PairSource, Source, SquadSource
from ssl_jax.eval import squad_metrics, task_metrics


def score(source: Source, outputs: dict[str, np.ndarray]) -> dict[str, float]:
    """The task's metrics of predict()'s outputs, concatenated in eval feature order."""
    if isinstance(source, PairSource):
        return score_pairs(source, outputs["prediction"])
    if isinstance(source, ConllSource):
        return score_tags(source, outputs)
    if isinstance(source, SquadSource):
        return score_answers(source, outputs)
    raise TypeError(f"no scorer for the fine-tuning source {type(source).__name__}")


def score_pairs(source: PairSource, predictions: np.ndarray) -> dict[str, float]:
    """The first eval split's metrics unprefixed, every later split's as `<split>_<metric>`."""
    scores = {}
    for n, (split, got, labels) in enumerate(source.split_predictions(predictions)):
        if source.regression:
            metrics = task_metrics.regression_metrics(got, labels)
        else:
            metrics = task_metrics.classification_metrics(source.metrics, got, labels)
        prefix = "" if n == 0 else f"{split}_"
        scores.update({prefix + k: v for k, v in metrics.items()})
    return scores


def score_tags(source: ConllSource, outputs: dict[str, np.ndarray]) -> dict[str, float]:
    true, pred = source.decode_tags(outputs)
    if source.column == "pos":
        return {"accuracy": task_metrics.token_accuracy(true, pred)}
    scores = task_metrics.entity_metrics(true, pred)
    scores["token_accuracy"] = task_metrics.token_accuracy(true, pred)
    return scores


def score_answers(source: SquadSource, outputs: dict[str, np.ndarray]) -> dict[str, float]:
    examples, predictions = source.decode_answers(outputs)
    if not examples:
        return {}
    return squad_metrics.squad_scores(examples, predictions, version_2=source.version_2)
