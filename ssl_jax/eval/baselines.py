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
    wp = task.wordpiece
    log_p = unigram_log_probs(task.train_counts, wp.is_special)
    nll = weight = 0.0
    for e in task.eval_examples():
        used = e["masked_weights"] > 0
        nll += float(-log_p[e["masked_ids"][used]].sum())
        weight += float(used.sum())
    return nll / weight
