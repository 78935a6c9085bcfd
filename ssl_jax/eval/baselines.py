"""Context-free baselines a pre-trained model must beat."""
from __future__ import annotations

import numpy as np


def unigram_log_probs(counts: np.ndarray, is_special: np.ndarray,
                      smoothing: float = 1.0) -> np.ndarray:
    """log p(token) from training-token frequencies `counts` [vocab] (add-`smoothing`),
    specials excluded."""
    counts = np.asarray(counts, np.float64).copy()
    counts[is_special] = 0.0
    counts[~is_special] += smoothing
    with np.errstate(divide="ignore"):
        return np.log(counts / counts.sum())


def unigram_mlm_loss(task) -> float:
    """Cross-entropy of the held-out masked targets under the unigram distribution of the
    training text (`task.train_counts`): the best an MLM that ignores context can do."""
    log_p = unigram_log_probs(task.train_counts, task.wordpiece.is_special)
    return held_out_cross_entropy(log_p, task.eval_examples(), "masked_ids", "masked_weights")


def held_out_cross_entropy(log_p: np.ndarray, examples, targets: str, weights: str) -> float:
    """Mean -log_p over the examples' targets (`e[targets]` where `e[weights]` > 0)."""
    nll = count = 0.0
    for e in examples:
        used = e[weights] > 0
        nll += float(-log_p[e[targets][used]].sum())
        count += float(used.sum())
    return nll / count
