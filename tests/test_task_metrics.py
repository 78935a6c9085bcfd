"""Task metrics against hand-computed values (and the bad inputs they refuse)."""
import math

import numpy as np
import pytest

from ssl_jax.eval import task_metrics


def test_classification_by_hand():
    labels = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    predictions = [1, 1, 1, 0, 1, 1, 0, 0, 0, 0]
    # TP = 3 (items 0-2), FN = 1 (item 3), FP = 2 (items 4, 5), TN = 4 (items 6-9)
    # accuracy = (TP + TN) / 10 = 7/10
    # F1 = 2 TP / (2 TP + FP + FN) = 6/9 = 2/3   (P = 3/5, R = 3/4)
    # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))
    #     = (12 - 2) / sqrt(5 * 4 * 6 * 5) = 10 / sqrt(600) = 0.4082483
    scores = task_metrics.classification_metrics(("accuracy", "f1", "mcc"), predictions, labels)
    assert scores == pytest.approx({"accuracy": 0.7, "f1": 2 / 3, "mcc": 10 / math.sqrt(600)})
    assert all(type(v) is float for v in scores.values())
    assert list(task_metrics.classification_metrics(["mcc"], predictions, labels)) == ["mcc"]
    # three classes (MNLI): accuracy = 4 right of 6
    mnli = task_metrics.classification_metrics(["accuracy"], np.array([0, 1, 2, 2, 1, 0]),
                                               np.array([0, 1, 2, 0, 0, 0]))
    assert mnli == {"accuracy": pytest.approx(4 / 6)}
    # no positive predicted or true: F1 is 0 by convention, MCC 0 (no correlation)
    none = task_metrics.classification_metrics(["f1", "mcc"], [0, 0, 0], [0, 0, 0])
    assert none == {"f1": 0.0, "mcc": 0.0}


def test_regression_by_hand():
    predictions = [1, 2, 3, 4, 5]
    labels = [2, 4, 5, 4, 5]
    # Pearson: means 3 and 4; deviations x = (-2, -1, 0, 1, 2), y = (-2, 0, 1, 0, 1)
    #   sum xy = 4 + 0 + 0 + 0 + 2 = 6; sum x^2 = 10; sum y^2 = 6; r = 6 / sqrt(60) = 0.7745967
    # Spearman: ranks of y (ties averaged) = (1, 2.5, 4.5, 2.5, 4.5), mean 3
    #   deviations (-2, -0.5, 1.5, -0.5, 1.5); sum xy = 4 + 0.5 + 0 - 0.5 + 3 = 7
    #   sum y^2 = 4 + 0.25 + 2.25 + 0.25 + 2.25 = 9; rho = 7 / sqrt(10 * 9) = 0.7378648
    scores = task_metrics.regression_metrics(predictions, labels)
    assert scores == pytest.approx({"pearson": 6 / math.sqrt(60), "spearman": 7 / math.sqrt(90)})
    assert all(type(v) is float for v in scores.values())
    # a monotone but non-linear prediction: Spearman 1, Pearson below 1
    curved = task_metrics.regression_metrics([1, 4, 9, 16], [1, 2, 3, 4])
    assert curved["spearman"] == pytest.approx(1.0) and curved["pearson"] < 0.99


TRUE = [["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O"],  # EU rejects German call ...
        ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC"]]         # Peter Blackburn lives in NY
PRED = [["B-ORG", "O", "B-MISC", "O", "O", "O", "O", "O"],      # misses British (MISC)
        ["B-PER", "O", "O", "O", "B-LOC", "I-LOC"]]             # Peter alone: a wrong chunk


def test_entities_by_hand():
    # true chunks: ORG(0), MISC(2), MISC(6) | PER(0-1), LOC(4-5)      = 5
    # predicted:   ORG(0), MISC(2)          | PER(0),   LOC(4-5)      = 4
    # right (same type and span): ORG, MISC(2), LOC                   = 3
    # precision = 3/4, recall = 3/5, F1 = 2 * 0.75 * 0.6 / 1.35 = 2/3
    scores = task_metrics.entity_metrics(TRUE, PRED)
    assert scores == pytest.approx({"precision": 0.75, "recall": 0.6, "f1": 2 / 3})
    assert all(type(v) is float for v in scores.values())
    # conlleval chunking: an I- tag after O starts a chunk (IOB1, as in the original eng.*)
    iob1 = task_metrics.entity_metrics([["B-PER", "I-PER", "O"]], [["I-PER", "I-PER", "O"]])
    assert iob1 == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    # a type change inside I- tags ends the chunk: I-PER I-LOC is two chunks, both wrong here
    # precision = 0/2, recall = 0/1
    split = task_metrics.entity_metrics([["B-PER", "I-PER"]], [["I-PER", "I-LOC"]])
    assert split == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_token_accuracy_by_hand():
    # sentence 1: 7 of 8 tags right; sentence 2: 5 of 6; (7 + 5) / 14 = 6/7
    assert task_metrics.token_accuracy(TRUE, PRED) == pytest.approx(6 / 7)
    assert task_metrics.token_accuracy([[0, 1], [2]], [[0, 2], [2]]) == pytest.approx(2 / 3)
    assert type(task_metrics.token_accuracy([[0]], [[0]])) is float


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"unknown classification metric\(s\) \['pearson'\]"):
        task_metrics.classification_metrics(["accuracy", "pearson"], [0], [0])
    with pytest.raises(ValueError, match="3 predictions but 2 labels"):
        task_metrics.classification_metrics(["accuracy"], [0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="predictions and labels are empty"):
        task_metrics.classification_metrics(["accuracy"], [], [])
    with pytest.raises(ValueError, match="labels contain -1: .* without a label"):
        task_metrics.classification_metrics(["accuracy"], [0, 1], [-1, -1])
    with pytest.raises(ValueError, match=r"F1 of class 1 in a binary task; found class ids \[2\]"):
        task_metrics.classification_metrics(["f1"], [0, 1, 2], [0, 1, 1])
    with pytest.raises(ValueError, match="integer class ids; got dtype float64"):
        task_metrics.classification_metrics(["accuracy"], [0.3, 0.7], [0, 1])
    with pytest.raises(ValueError, match="labels contain nan"):
        task_metrics.regression_metrics([1.0, 2.0], [float("nan"), 3.0])
    with pytest.raises(ValueError, match="at least 2 examples; got 1"):
        task_metrics.regression_metrics([1.0], [2.0])
    with pytest.raises(ValueError, match="sentence 1 has 6 true tags but 5 predicted"):
        task_metrics.entity_metrics(TRUE, [PRED[0], PRED[1][:5]])
    with pytest.raises(ValueError, match="2 true sentences but 1 predicted"):
        task_metrics.token_accuracy(TRUE, PRED[:1])
    with pytest.raises(ValueError, match="no sentences to score"):
        task_metrics.entity_metrics([], [])
    with pytest.raises(ValueError, match="predicted sentence 0 has tag 'PER'"):
        task_metrics.entity_metrics([["B-PER"]], [["PER"]])
    with pytest.raises(ValueError, match="sentence 0 is a string"):
        task_metrics.entity_metrics(["B-PER O"], ["B-PER O"])
