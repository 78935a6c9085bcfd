"""BERT's masked-LM corruption: select a fraction of the non-special tokens (optionally whole
words), replace 80% of those with [MASK], 10% with a random token, keep 10%."""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class MaskingSpec:
    mask_rate: float = 0.15  # fraction of non-special tokens selected for prediction
    mask_token_prob: float = 0.8  # of the selected: replaced by [MASK]
    random_token_prob: float = 0.1  # of the selected: replaced by a random token (rest kept)
    max_predictions: int = 20  # P: the gathered MLM head's width
    whole_word: bool = False

    def __post_init__(self):
        if not 0.0 < self.mask_rate < 1.0:
            raise ValueError(f"data.mask_rate={self.mask_rate} must be in (0, 1)")
        for name in ("mask_token_prob", "random_token_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"data.{name}={value} must be in [0, 1]")
        if self.mask_token_prob + self.random_token_prob > 1.0 + 1e-9:
            raise ValueError(f"data.mask_token_prob + data.random_token_prob = "
                             f"{self.mask_token_prob + self.random_token_prob} exceeds 1")
        if self.max_predictions < 1:
            raise ValueError(f"data.max_predictions_per_seq={self.max_predictions} must be >= 1")


def mask_tokens(tokens: np.ndarray, spec: MaskingSpec, wordpiece, rng: np.random.Generator):
    """tokens [len] (with [CLS]/[SEP], unpadded) -> (input_ids [len], positions [P],
    target_ids [P], weights [P]); unused prediction slots have weight 0."""
    candidates = np.flatnonzero(~wordpiece.is_special[tokens])
    if spec.whole_word:
        # A "##" piece joins the word before it when the two are adjacent.
        starts = ~wordpiece.is_continuation[tokens[candidates]]
        starts[1:] |= np.diff(candidates) != 1
        groups = np.split(candidates, np.flatnonzero(starts)[1:] if len(starts) else [])
    else:
        groups = candidates  # each token its own group
    num_to_predict = min(spec.max_predictions,
                         max(1, int(round(len(candidates) * spec.mask_rate))))
    order = rng.permutation(len(groups)) if len(candidates) else np.zeros(0, int)
    if not spec.whole_word:  # one token per group: the first num_to_predict of the order
        selected = candidates[order[:num_to_predict]]
    else:
        selected = []
        for g in order:
            if len(selected) >= num_to_predict:
                break
            if len(selected) + len(groups[g]) > num_to_predict:
                continue  # as in BERT: skip a word that would overflow the budget
            selected.extend(groups[g].tolist())
    positions = np.sort(np.asarray(selected, dtype=np.int32))
    input_ids = tokens.copy()
    draw = rng.random(len(positions))
    to_mask = draw < spec.mask_token_prob
    to_random = (~to_mask) & (draw < spec.mask_token_prob + spec.random_token_prob)
    input_ids[positions[to_mask]] = wordpiece.mask_id
    if to_random.any():
        pool = np.flatnonzero(~wordpiece.is_special)
        input_ids[positions[to_random]] = rng.choice(pool, size=int(to_random.sum()))
    P = spec.max_predictions
    out_positions = np.zeros(P, np.int32)
    out_targets = np.zeros(P, np.int32)
    weights = np.zeros(P, np.float32)
    out_positions[:len(positions)] = positions
    out_targets[:len(positions)] = tokens[positions]
    weights[:len(positions)] = 1.0
    return input_ids, out_positions, out_targets, weights
