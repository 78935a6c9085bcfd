"""The metrics fine-tuning tasks report, computed by the reference libraries:

  * GLUE classification: accuracy, F1 of the positive class 1 (MRPC, QQP) and Matthews
    correlation (CoLA), from scikit-learn;
  * STS-B: Pearson and Spearman correlation, from scipy.stats;
  * CoNLL-2003: entity-level precision/recall/F1 (conlleval's chunking, seqeval's default
    mode) and token accuracy.

Every function returns python floats and refuses empty, mismatched or unlabelled input.
"""
from __future__ import annotations

import re
import warnings
from typing import Sequence

import numpy as np
import scipy.stats
import seqeval.metrics
from sklearn import metrics as sk_metrics

CLASSIFICATION_METRICS = ("accuracy", "f1", "mcc")
_TAG = re.compile(r"^(O|[BIES]-.+)$")


def _pair(predictions, labels, what: str) -> tuple[np.ndarray, np.ndarray]:
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.ndim != 1 or labels.ndim != 1:
        raise ValueError(f"{what} need 1-D predictions and labels; got shapes "
                         f"{predictions.shape} and {labels.shape}")
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError(f"{what} of no examples: predictions and labels are empty")
    return predictions, labels


def _class_ids(values: np.ndarray, what: str) -> np.ndarray:
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{what} must be integer class ids; got dtype {values.dtype}")
    if (values < 0).any():
        raise ValueError(f"{what} contain {int(values.min())}: class ids are >= 0 (-1 marks a "
                         f"test example without a label, which cannot be scored)")
    return values


def _binary_f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    outside = sorted(set(np.unique(np.concatenate([predictions, labels])).tolist()) - {0, 1})
    if outside:
        raise ValueError(f"f1 is the F1 of class 1 in a binary task; found class ids {outside}")
    return float(sk_metrics.f1_score(labels, predictions, pos_label=1, average="binary",
                                     zero_division=0.0))


def _mcc(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation; 0 when one class fills both (sklearn warns there, harmlessly)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="A single label was found")
        return float(sk_metrics.matthews_corrcoef(labels, predictions))


def classification_metrics(names: Sequence[str], predictions: Sequence[int],
                           labels: Sequence[int]) -> dict[str, float]:
    """The requested metrics among accuracy, f1 (binary, positive class 1) and mcc."""
    unknown = [n for n in names if n not in CLASSIFICATION_METRICS]
    if unknown or not names:
        raise ValueError(f"unknown classification metric(s) {unknown or list(names)}; expected "
                         f"names among {list(CLASSIFICATION_METRICS)}")
    predictions, labels = _pair(predictions, labels, "classification metrics")
    predictions = _class_ids(predictions, "predictions")
    labels = _class_ids(labels, "labels")
    compute = {
        "accuracy": lambda: float(sk_metrics.accuracy_score(labels, predictions)),
        "f1": lambda: _binary_f1(predictions, labels),
        "mcc": lambda: _mcc(predictions, labels),
    }
    return {name: compute[name]() for name in names}


def regression_metrics(predictions: Sequence[float],
                       labels: Sequence[float]) -> dict[str, float]:
    """Pearson and Spearman correlation (STS-B). A constant input has no correlation: NaN."""
    predictions, labels = _pair(predictions, labels, "regression metrics")
    predictions, labels = predictions.astype(np.float64), labels.astype(np.float64)
    if len(labels) < 2:
        raise ValueError(f"a correlation needs at least 2 examples; got {len(labels)}")
    for what, values in (("predictions", predictions), ("labels", labels)):
        if not np.isfinite(values).all():
            raise ValueError(f"{what} contain {values[~np.isfinite(values)][0]} (a test split "
                             f"without scores cannot be scored)")
    return {"pearson": float(scipy.stats.pearsonr(predictions, labels)[0]),
            "spearman": float(scipy.stats.spearmanr(predictions, labels)[0])}


def _check_sequences(true: Sequence[Sequence], pred: Sequence[Sequence]) -> None:
    if len(true) != len(pred):
        raise ValueError(f"{len(true)} true sentences but {len(pred)} predicted")
    if not true:
        raise ValueError("no sentences to score")
    for i, (t, p) in enumerate(zip(true, pred)):
        if isinstance(t, str) or isinstance(p, str):
            raise ValueError(f"sentence {i} is a string; expected a list of tags per sentence")
        if len(t) != len(p):
            raise ValueError(f"sentence {i} has {len(t)} true tags but {len(p)} predicted")
    if not any(len(t) for t in true):
        raise ValueError("no tokens to score: every sentence is empty")


def entity_metrics(true_tags: list[list[str]], pred_tags: list[list[str]]) -> dict[str, float]:
    """Entity-level precision, recall and F1 (micro over chunks, as conlleval counts them)."""
    _check_sequences(true_tags, pred_tags)
    for what, sentences in (("true", true_tags), ("predicted", pred_tags)):
        for i, sentence in enumerate(sentences):
            bad = [t for t in sentence if not isinstance(t, str) or not _TAG.match(t)]
            if bad:
                raise ValueError(f"{what} sentence {i} has tag {bad[0]!r}; expected 'O' or "
                                 f"B-/I-/E-/S- followed by a type, e.g. 'B-PER'")
    true_tags, pred_tags = [list(s) for s in true_tags], [list(s) for s in pred_tags]
    return {name: float(fn(true_tags, pred_tags, zero_division=0))
            for name, fn in (("precision", seqeval.metrics.precision_score),
                             ("recall", seqeval.metrics.recall_score),
                             ("f1", seqeval.metrics.f1_score))}


def token_accuracy(true: list[list], pred: list[list]) -> float:
    """The fraction of tokens whose tag (or id) is right, over all sentences."""
    _check_sequences(true, pred)
    correct = sum(t == p for ts, ps in zip(true, pred) for t, p in zip(ts, ps))
    return float(correct / sum(len(ts) for ts in true))
