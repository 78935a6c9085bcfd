"""The bytes of one prepared example (an ArrayRecord record): a flat unsigned-integer array,
uint16 where every value fits (vocabulary ids, positions), else uint32.

  BERT  [label, segment_0_length, n_tokens, n_predictions] tokens positions replacements
        tokens are the unmasked instance ([CLS] A [SEP] B [SEP]); a statically masked
        example also holds its masked positions and what the input has there ([MASK], a
        random id or the kept one); a dynamic-masking instance has none (masked when read).
  GPT   [n_valid] tokens[seq_len + 1] documents[seq_len + 1]
        one window of the packed stream; documents restart at 0 in each window; only the
        stream's last window has n_valid < seq_len + 1.
Decoding gives exactly the dict the in-memory path builds (ssl_jax/data/pretraining.py,
ssl_jax/data/packing.py).
"""
from __future__ import annotations

import numpy as np

from ssl_jax.data.pretraining import Instance, pad_example

BERT_HEADER = 4


def record_dtype(vocab_size: int, max_seq_len: int) -> str:
    return "uint16" if max(vocab_size, max_seq_len + 2) <= 65536 else "uint32"


def encode_instance(instance: Instance, dtype: str) -> bytes:
    """An unmasked instance (dynamic masking)."""
    n = len(instance.tokens)
    split = n - int(instance.segment_ids.sum())
    header = [instance.next_sentence_label, split, n, 0]
    return np.concatenate([header, instance.tokens]).astype(dtype).tobytes()


def decode_instance(record: bytes, dtype: str) -> Instance:
    values = np.frombuffer(record, dtype)
    label, split, n, _ = (int(v) for v in values[:BERT_HEADER])
    tokens = values[BERT_HEADER:BERT_HEADER + n].astype(np.int32)
    return Instance(tokens, (np.arange(n) >= split).astype(np.int32), label)


def encode_masked(instance: Instance, input_ids: np.ndarray, positions: np.ndarray,
                  weights: np.ndarray, dtype: str) -> bytes:
    """A statically masked instance: `mask_tokens`'s input_ids [len], positions and
    weights [P] (the used slots first)."""
    n = len(instance.tokens)
    k = int((weights > 0).sum())
    split = n - int(instance.segment_ids.sum())
    header = [instance.next_sentence_label, split, n, k]
    return np.concatenate([header, instance.tokens, positions[:k],
                           input_ids[positions[:k]]]).astype(dtype).tobytes()


def decode_example(record: bytes, dtype: str, max_predictions: int, pad_id: int,
                   max_seq_len: int) -> dict[str, np.ndarray]:
    values = np.frombuffer(record, dtype)
    label, split, n, k = (int(v) for v in values[:BERT_HEADER])
    tokens = values[BERT_HEADER:BERT_HEADER + n].astype(np.int32)
    positions = values[BERT_HEADER + n:BERT_HEADER + n + k].astype(np.int32)
    input_ids = tokens.copy()
    input_ids[positions] = values[BERT_HEADER + n + k:BERT_HEADER + n + 2 * k]
    out_positions = np.zeros(max_predictions, np.int32)
    out_targets = np.zeros(max_predictions, np.int32)
    weights = np.zeros(max_predictions, np.float32)
    out_positions[:k] = positions
    out_targets[:k] = tokens[positions]
    weights[:k] = 1.0
    instance = Instance(tokens, (np.arange(n) >= split).astype(np.int32), label)
    return pad_example(instance, input_ids, out_positions, out_targets, weights, pad_id,
                       max_seq_len)


def encode_window(tokens: np.ndarray, documents: np.ndarray, n_valid: int, dtype: str) -> bytes:
    """tokens, documents [seq_len + 1] (documents relative to the window's first)."""
    return np.concatenate([[n_valid], tokens, documents]).astype(dtype).tobytes()


def decode_window(record: bytes, dtype: str) -> dict[str, np.ndarray]:
    values = np.frombuffer(record, dtype)
    width = (len(values) - 1) // 2
    n_valid = int(values[0])
    tokens = values[1:1 + width].astype(np.int32)
    documents = values[1 + width:].astype(np.int32)
    valid = np.arange(width) < n_valid
    return {"input_ids": tokens[:-1], "target_ids": tokens[1:],
            "segment_ids": documents[:-1], "target_weights": valid[1:].astype(np.float32)}
