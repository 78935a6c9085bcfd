"""BERT pre-training examples: sentence-pair instances (NSP) and MLM masking, as grain datasets.

Instances follow the BERT paper's recipe: sentences of a document are packed up to
`max_seq_len` (a shorter target with probability `short_seq_prob`), cut at a random sentence
boundary into A and B; with probability `random_next_prob` (1/2) B is replaced by a segment
from a random other document (label 1 = "not next", as in the original code; 0 = "is next").
Masking is static (each of `dupe_factor` copies masked once) or dynamic (re-masked every
time an instance is drawn, i.e. every epoch, from a seed keyed by the global position).
"""
from __future__ import annotations

import dataclasses
import math

import grain
import numpy as np

from ssl_jax.data.batching import training_batches
from ssl_jax.data.masking import MaskingSpec, mask_tokens


@dataclasses.dataclass
class Instance:
    tokens: np.ndarray  # [len] int32: [CLS] A [SEP] B [SEP] (or [CLS] A [SEP] without NSP)
    segment_ids: np.ndarray  # [len] int32
    next_sentence_label: int  # 0 = B follows A, 1 = B is random


def _truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: np.random.Generator):
    while len(a) + len(b) > max_tokens:
        longer = a if len(a) > len(b) else b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def create_instances(documents: list[list[np.ndarray]], wordpiece, max_seq_len: int,
                     short_seq_prob: float, nsp: bool, rng: np.random.Generator,
                     random_next_prob: float = 0.5) -> list[Instance]:
    """documents: each a list of tokenised sentences. One pass over every document."""
    cls, sep = wordpiece.cls_id, wordpiece.sep_id
    max_tokens = max_seq_len - (3 if nsp else 2)
    instances = []
    for doc_index, document in enumerate(documents):
        target = max_tokens
        if rng.random() < short_seq_prob:
            target = int(rng.integers(2, max_tokens + 1))
        chunk: list[np.ndarray] = []
        length = 0
        i = 0
        while i < len(document):
            chunk.append(document[i])
            length += len(document[i])
            if i == len(document) - 1 or length >= target:
                if chunk:
                    instance, unused = _make_instance(chunk, documents, doc_index, target,
                                                      max_tokens, nsp, cls, sep, rng,
                                                      random_next_prob)
                    i -= unused
                    if instance is not None:
                        instances.append(instance)
                chunk, length = [], 0
                target = max_tokens
                if rng.random() < short_seq_prob:
                    target = int(rng.integers(2, max_tokens + 1))
            i += 1
    return instances


def _make_instance(chunk, documents, doc_index, target, max_tokens, nsp, cls, sep, rng,
                   random_next_prob):
    if not nsp:
        a = [t for s in chunk for t in s.tolist()][:max_tokens]
        if not a:
            return None, 0
        tokens = [cls] + a + [sep]
        return Instance(np.asarray(tokens, np.int32), np.zeros(len(tokens), np.int32), 0), 0
    is_random = rng.random() < random_next_prob  # tossed first, so the ratio holds
    if len(chunk) >= 2:
        a_end = int(rng.integers(1, len(chunk)))
        a = [t for s in chunk[:a_end] for t in s.tolist()]
        rest = [t for s in chunk[a_end:] for t in s.tolist()]
    else:  # one long sentence: cut it at a random token for an actual-next pair
        tokens = chunk[0].tolist()
        if len(tokens) < 2:
            is_random = True
        cut = int(rng.integers(1, len(tokens))) if len(tokens) >= 2 else len(tokens)
        a, rest = (tokens, []) if is_random else (tokens[:cut], tokens[cut:])
        a_end = 1
    unused = 0
    if is_random:
        label = 1
        b_target = max(1, target - len(a))
        other = doc_index
        for _ in range(10):  # a document other than this one
            other = int(rng.integers(len(documents)))
            if other != doc_index:
                break
        if other == doc_index:
            return None, 0
        start = int(rng.integers(len(documents[other])))
        b: list[int] = []
        for sentence in documents[other][start:]:
            b.extend(sentence.tolist())
            if len(b) >= b_target:
                break
        unused = len(chunk) - a_end  # put the unused segments back
    else:
        label = 0
        b = rest
    _truncate_pair(a, b, max_tokens, rng)
    if not a or not b:
        return None, unused
    tokens = [cls] + a + [sep] + b + [sep]
    segment_ids = [0] * (len(a) + 2) + [1] * (len(b) + 1)
    return Instance(np.asarray(tokens, np.int32), np.asarray(segment_ids, np.int32), label), unused


def masking_spec(data_config, max_seq_len: int) -> MaskingSpec:
    max_predictions = data_config.get("max_predictions_per_seq") or math.ceil(
        data_config.mask_rate * max_seq_len)
    return MaskingSpec(mask_rate=data_config.mask_rate,
                       mask_token_prob=data_config.mask_token_prob,
                       random_token_prob=data_config.random_token_prob,
                       max_predictions=int(max_predictions),
                       whole_word=data_config.whole_word_masking)


def to_example(instance: Instance, spec: MaskingSpec, wordpiece, max_seq_len: int,
               rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Masks one instance and pads it to max_seq_len: the model's input dict."""
    input_ids, positions, targets, weights = mask_tokens(instance.tokens, spec, wordpiece, rng)
    n = len(input_ids)
    pad = lambda x: np.pad(x, (0, max_seq_len - n)).astype(np.int32)
    return {
        "input_ids": pad(input_ids) + (np.arange(max_seq_len) >= n) * wordpiece.pad_id,
        "segment_ids": pad(instance.segment_ids),
        "input_mask": pad(np.ones(n, np.int32)),
        "masked_positions": positions,
        "masked_ids": targets,
        "masked_weights": weights,
        "next_sentence_label": np.int32(instance.next_sentence_label),
    }


def train_dataset(instances: list[Instance], spec: MaskingSpec, wordpiece, max_seq_len: int,
                  *, dynamic: bool, seed: int, batch_size: int, process_index: int = 0,
                  process_count: int = 1) -> grain.MapDataset:
    """Infinite, reshuffled every epoch, batched per process. Random access, so a grain
    iterator over it is checkpointable."""
    common = dict(seed=seed, batch_size=batch_size, process_index=process_index,
                  process_count=process_count)
    if dynamic:
        return training_batches(
            instances, random_map=lambda inst, rng: to_example(inst, spec, wordpiece,
                                                               max_seq_len, rng), **common)
    rng = np.random.default_rng(seed + 1)
    return training_batches([to_example(inst, spec, wordpiece, max_seq_len, rng)
                             for inst in instances], **common)


def eval_examples(instances: list[Instance], spec: MaskingSpec, wordpiece, max_seq_len: int,
                  seed: int) -> list[dict[str, np.ndarray]]:
    """The held-out examples, masked once with a fixed seed so every eval sees the same."""
    rng = np.random.default_rng(seed)
    return [to_example(inst, spec, wordpiece, max_seq_len, rng) for inst in instances]
