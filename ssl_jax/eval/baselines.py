"""Context-free baselines a pre-trained model must beat."""
from __future__ import annotations

import numpy as np


def unigram_log_probs(token_arrays, vocab_size: int, is_special: np.ndarray,
                      smoothing: float = 1.0) -> np.ndarray:
    """log p(token) from training-token frequencies (add-`smoothing`), specials excluded."""
    counts = np.zeros(vocab_size, np.float64)
    for tokens in token_arrays:
        counts += np.bincount(tokens, minlength=vocab_size)[:vocab_size]
    counts[is_special] = 0.0
    counts[~is_special] += smoothing
    with np.errstate(divide="ignore"):
        return np.log(counts / counts.sum())


def unigram_mlm_loss(task) -> float:
    """Cross-entropy of the held-out masked targets under the training unigram distribution:
    the best an MLM that ignores context can do."""
    wp = task.wordpiece
    log_p = unigram_log_probs((i.tokens for i in task.train_instances), wp.vocab_size,
                              wp.is_special)
    nll = weight = 0.0
    for e in task.eval_examples():
        used = e["masked_weights"] > 0
        nll += float(-log_p[e["masked_ids"][used]].sum())
        weight += float(used.sum())
    return nll / weight
