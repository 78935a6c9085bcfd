"""Causal-LM examples: documents joined with an end-of-text token, packed into fixed-length
windows with no padding waste.

The token stream is `EOT doc_0 EOT doc_1 EOT ... doc_n` (GPT-2: "<|endoftext|>" between
documents; the leading one makes the first document start like every other). Window i is
stream[i*S : i*S + S + 1]: inputs its first S tokens, targets its last S, so consecutive
windows share one token and every stream token after the first is a target exactly once.
Only the last window is padded (weight 0). Each token also carries the index of its
document (an EOT belongs to the document it starts), for optional attention masking
across document boundaries.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Packed:
    """Windows of the stream: `tokens` and `documents` [windows, seq_len + 1], `valid`
    [windows, seq_len + 1] (False only in the last window's padding)."""

    tokens: np.ndarray
    documents: np.ndarray
    valid: np.ndarray

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def num_targets(self) -> int:
        return int(self.valid[:, 1:].sum())

    def example(self, i: int) -> dict[str, np.ndarray]:
        """The model's input dict for window i."""
        tokens, documents, valid = self.tokens[i], self.documents[i], self.valid[i]
        return {"input_ids": tokens[:-1], "target_ids": tokens[1:],
                # document ids restart at 0 in each window (small numbers, same meaning)
                "segment_ids": (documents[:-1] - documents[0]).astype(np.int32),
                "target_weights": valid[1:].astype(np.float32)}


def pack(documents: list[np.ndarray], eot_id: int, seq_len: int) -> Packed:
    """Token arrays of documents -> windows of seq_len inputs (+ 1 shifted target)."""
    if seq_len < 2:
        raise ValueError(f"max_seq_len={seq_len} must be >= 2 for next-token prediction")
    documents = [np.asarray(d, np.int32) for d in documents if len(d)]
    if not documents:
        raise ValueError("no document has any token to pack")
    pieces, doc_ids = [], []
    for i, doc in enumerate(documents):
        pieces += [np.array([eot_id], np.int32), doc]
        doc_ids.append(np.full(len(doc) + 1, i, np.int32))
    stream = np.concatenate(pieces)
    stream_docs = np.concatenate(doc_ids)
    windows = max(1, -(-(len(stream) - 1) // seq_len))  # ceil((L - 1) / S)
    padded = windows * seq_len + 1
    valid = np.arange(padded) < len(stream)
    stream = np.pad(stream, (0, padded - len(stream)))
    stream_docs = np.pad(stream_docs, (0, padded - len(stream_docs)), mode="edge")
    starts = np.arange(windows)[:, None] * seq_len + np.arange(seq_len + 1)[None]
    return Packed(tokens=stream[starts], documents=stream_docs[starts], valid=valid[starts])
