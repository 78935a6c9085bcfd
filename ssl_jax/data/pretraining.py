"""BERT pre-training examples: sentence-pair instances (NSP) and MLM masking, as grain datasets.

Instances follow the BERT paper's recipe: sentences of a document are packed up to
`max_seq_len` (a shorter target with probability `short_seq_prob`), cut at a random sentence
boundary into A and B; with probability `random_next_prob` (1/2) B is replaced by a segment
from a random other document (label 1 = "not next", as in the original code; 0 = "is next").
Masking is static (each of `dupe_factor` copies masked once) or dynamic (re-masked every
time an instance is drawn, i.e. every epoch, from a seed keyed by the global position).

Every random draw is keyed: a document's instances by (seed, copy, document), an instance's
static masking by (seed, copy, document, k). So the in-memory path here and a sharded
preparation (ssl_jax/data/prepare.py, any shard size or worker count) build the same
examples in the same order: document by document, the copies of a document together.
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
    key: tuple[int, ...] = ()  # (copy, document, k): seeds its static masking


def _truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: np.random.Generator):
    """Trims the longer of A and B by one token at a time, at its front or its back (a coin
    per token), until they fit: BERT's truncate_seq_pair. The coins are drawn in one call
    (the same numbers as one call per token)."""
    excess = len(a) + len(b) - max_tokens
    if excess <= 0:
        return
    coins = rng.random(excess) < 0.5
    trim = {"a": [0, 0], "b": [0, 0]}  # [front, back]
    length = {"a": len(a), "b": len(b)}
    for front in coins.tolist():
        side = "a" if length["a"] > length["b"] else "b"
        trim[side][0 if front else 1] += 1
        length[side] -= 1
    for side, tokens in (("a", a), ("b", b)):
        front, back = trim[side]
        del tokens[len(tokens) - back:]
        del tokens[:front]


def document_instances(documents, doc_index: int, wordpiece, max_seq_len: int,
                       short_seq_prob: float, nsp: bool, rng: np.random.Generator,
                       random_next_prob: float = 0.5) -> list[Instance]:
    """The instances of one document. `documents`: len() and [i] -> that document's
    tokenised sentences (a list, or a lazy view of a whole corpus: a random-next B segment
    may come from any document)."""
    cls, sep = wordpiece.cls_id, wordpiece.sep_id
    max_tokens = max_seq_len - (3 if nsp else 2)
    document = documents[doc_index]
    instances = []
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


def keyed_instances(documents, doc_index: int, wordpiece, max_seq_len: int,
                    short_seq_prob: float, nsp: bool, *, seed: int, copies: int = 1,
                    random_next_prob: float = 0.5) -> list[Instance]:
    """`copies` passes over one document (BERT's dupe_factor), each drawn from its own
    generator keyed by (seed, copy, document): a document's instances do not depend on which
    other documents are processed with it, so a sharded preparation (any number of shards
    and workers) builds exactly the instances of one pass over the corpus."""
    out = []
    for copy in range(copies):
        rng = np.random.default_rng((seed, copy, doc_index))
        made = document_instances(documents, doc_index, wordpiece, max_seq_len,
                                  short_seq_prob, nsp, rng, random_next_prob)
        out += [dataclasses.replace(inst, key=(copy, doc_index, k))
                for k, inst in enumerate(made)]
    return out


def create_instances(documents, wordpiece, max_seq_len: int, short_seq_prob: float,
                     nsp: bool, *, seed: int, copies: int = 1,
                     random_next_prob: float = 0.5) -> list[Instance]:
    """Every document's keyed instances, document by document (copies of one document
    together): the order a prepared directory's shards hold them in."""
    out = []
    for doc_index in range(len(documents)):
        out += keyed_instances(documents, doc_index, wordpiece, max_seq_len, short_seq_prob,
                               nsp, seed=seed, copies=copies,
                               random_next_prob=random_next_prob)
    return out


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
        for _ in range(10):  # a document other than this one, with some text
            other = int(rng.integers(len(documents)))
            if other != doc_index and len(documents[other]):
                break
        if other == doc_index or not len(documents[other]):
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


def tokenize_documents(documents, indices, wordpiece) -> list[list[np.ndarray]]:
    """Documents `indices` of `documents` (`corpora.Documents`, or any sequence of sentence
    lists) tokenised in one batch: each its non-empty tokenised sentences (an empty document
    stays, as an empty list, so indices keep the corpus's)."""
    texts = [documents[i] for i in indices]
    flat = wordpiece.encode_batch([s for d in texts for s in d]) if texts else []
    out, start = [], 0
    for d in texts:
        out.append([t for t in flat[start:start + len(d)] if len(t)])
        start += len(d)
    return out


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
    return pad_example(instance, *mask_tokens(instance.tokens, spec, wordpiece, rng),
                       wordpiece.pad_id, max_seq_len)


def masked_example(instance: Instance, spec: MaskingSpec, wordpiece, max_seq_len: int,
                   seed: int) -> dict[str, np.ndarray]:
    """Static masking: the instance masked once by a generator keyed by (seed, its key), so
    it is masked the same wherever (in whichever shard or process) it is built."""
    return to_example(instance, spec, wordpiece, max_seq_len,
                      np.random.default_rng((seed, *instance.key)))


def pad_example(instance: Instance, input_ids, positions, targets, weights, pad_id: int,
                max_seq_len: int) -> dict[str, np.ndarray]:
    """A masked instance (input_ids [len]; positions, targets, weights [P]) padded to
    max_seq_len: the model's input dict."""
    n = len(input_ids)
    ids = np.full(max_seq_len, pad_id, np.int32)
    ids[:n] = input_ids
    segments = np.zeros(max_seq_len, np.int32)
    segments[:n] = instance.segment_ids
    mask = np.zeros(max_seq_len, np.int32)
    mask[:n] = 1
    return {
        "input_ids": ids,
        "segment_ids": segments,
        "input_mask": mask,
        "masked_positions": positions,
        "masked_ids": targets,
        "masked_weights": weights,
        "next_sentence_label": np.int32(instance.next_sentence_label),
    }


def train_dataset(items, spec: MaskingSpec, wordpiece, max_seq_len: int,
                  *, dynamic: bool, seed: int, batch_size: int, process_index: int = 0,
                  process_count: int = 1, decode=None) -> grain.MapDataset:
    """Infinite, reshuffled every epoch, batched per process. Random access, so a grain
    iterator over it is checkpointable. `items`: Instances (in memory), or a random-access
    source of records that `decode` turns into Instances (dynamic) or examples (static)."""
    common = dict(seed=seed, batch_size=batch_size, process_index=process_index,
                  process_count=process_count)
    if dynamic:
        decode = decode or (lambda item: item)
        return training_batches(
            items, random_map=lambda item, rng: to_example(decode(item), spec, wordpiece,
                                                           max_seq_len, rng), **common)
    if decode is not None:  # prepared records: examples masked at preparation
        return training_batches(items, map_fn=decode, **common)
    return training_batches(static_examples(items, spec, wordpiece, max_seq_len, seed),
                            **common)


def static_examples(instances: list[Instance], spec: MaskingSpec, wordpiece,
                    max_seq_len: int, seed: int) -> list[dict[str, np.ndarray]]:
    """The training examples of static masking (dupe_factor copies, each masked once)."""
    return [masked_example(inst, spec, wordpiece, max_seq_len, seed + 1) for inst in instances]


def eval_examples(instances: list[Instance], spec: MaskingSpec, wordpiece, max_seq_len: int,
                  seed: int) -> list[dict[str, np.ndarray]]:
    """The held-out examples, masked once with keyed seeds so every eval sees the same."""
    return [masked_example(inst, spec, wordpiece, max_seq_len, seed) for inst in instances]
