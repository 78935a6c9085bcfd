"""SQuAD v1.1 / v2.0 for span extraction (Rajpurkar et al. 2016, 2018; BERT section 4.2-4.3).

Three steps, all host-side numpy:
  * read: the released JSON files or the TFDS `squad/v1.1`, `squad/v2.0` datasets -> examples
    {"id", "title", "question", "context", "answers": [{"text", "answer_start"}],
    "is_impossible"}; every gold answer is checked against its context characters;
  * featurize: BERT's recipe, `[CLS] question [SEP] passage-window [SEP]`, with windows every
    `doc_stride` passage tokens; gold spans are mapped to tokens through the tokenizer's
    character offsets into the ORIGINAL context, so nothing depends on detokenisation;
  * decode: start/end logits of all windows of an example -> the best valid span, cut from
    the original context characters (v2.0: or "" when the null span scores higher).
"""
from __future__ import annotations

import unicodedata
from typing import Sequence

import numpy as np

from ssl_jax.data import corpora
from ssl_jax.data.tokenizer import WordPiece
from ssl_jax.files import read_json

VERSIONS = ("1.1", "2.0")
SPLITS = ("train", "validation")


# ----------------------------------------------------------------------------- reading

def _check_answers(example: dict, source: str) -> dict:
    """Every gold answer must be exactly the context characters it points at; an answerable
    question needs one, an impossible one has none."""
    context, qid = example["context"], example["id"]
    for answer in example["answers"]:
        start, text = answer["answer_start"], answer["text"]
        if start < 0 or context[start:start + len(text)] != text:
            raise ValueError(
                f"{source}: question {qid!r}: answer {text!r} is not at answer_start={start} "
                f"of its context (found {context[max(start, 0):max(start, 0) + len(text)]!r})")
    if example["is_impossible"] and example["answers"]:
        raise ValueError(f"{source}: question {qid!r} is_impossible but has answers")
    if not example["is_impossible"] and not example["answers"]:
        raise ValueError(f"{source}: question {qid!r} has no answer and is not is_impossible")
    return example


def _read_json(path: str) -> dict:
    data = read_json(path, "SQuAD file")
    if not isinstance(data.get("data"), list):
        raise ValueError(f"SQuAD file {path!r} has no 'data' list (not the SQuAD JSON layout)")
    return data


def _json_examples(data: dict, path: str) -> list[dict]:
    examples, seen = [], set()
    for article in data["data"]:
        for paragraph in article.get("paragraphs", []):
            for qa in paragraph.get("qas", []):
                example = _json_example(qa, article, paragraph, path)
                if example["id"] in seen:
                    raise ValueError(f"{path}: question id {example['id']!r} occurs twice")
                seen.add(example["id"])
                examples.append(_check_answers(example, path))
    if not examples:
        raise ValueError(f"SQuAD file {path!r} holds no question")
    return examples


def _json_example(qa: dict, article: dict, paragraph: dict, path: str) -> dict:
    try:
        return {"id": str(qa["id"]), "title": article.get("title", ""),
                "question": qa["question"], "context": paragraph["context"],
                "answers": [{"text": a["text"], "answer_start": int(a["answer_start"])}
                            for a in qa["answers"]],
                "is_impossible": bool(qa.get("is_impossible", False))}
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: question {qa.get('id', '?')!r} lacks field {e} (a SQuAD "
                         f"question needs id, question, answers [text, answer_start])") from None



def _tfds_example(record: dict, name: str) -> dict:
    """A TFDS squad record (bytes text, answers as parallel sequences) -> our example."""
    answers, text = record["answers"], corpora.record_text
    example = {"id": text(record["id"]), "title": text(record["title"]),
               "question": text(record["question"]), "context": text(record["context"]),
               "answers": [{"text": text(t), "answer_start": int(s)}
                           for t, s in zip(answers["text"], answers["answer_start"])],
               "is_impossible": bool(record.get("is_impossible", False))}
    return _check_answers(example, f"TFDS {name}")


def read_tfds(version: str, split: str, data_dir: str) -> list[dict]:
    """Examples of a prepared TFDS `squad/v{version}` split, read through a data source."""
    name = f"squad/v{version}"
    source = corpora.prepared_source(name, split, data_dir, f"SQuAD v{version} {split}",
                                     ", or pass path= to a released SQuAD JSON file")
    return [_tfds_example(source[i], name) for i in range(len(source))]


def load_squad(version: str, split: str, path: str | None = None,
               data_dir: str | None = None) -> list[dict]:
    """SQuAD examples of `version` ("1.1" | "2.0") and `split` ("train" | "validation"), from
    the released JSON file at `path`, or else from TFDS under `data_dir`."""
    if version not in VERSIONS:
        raise ValueError(f"SQuAD version {version!r} is not one of {list(VERSIONS)}")
    if split not in SPLITS:
        raise ValueError(f"SQuAD split {split!r} is not one of {list(SPLITS)}")
    if path is None:
        return read_tfds(version, split, data_dir or corpora.default_data_dir())
    data = _read_json(path)
    file_version = str(data.get("version", "")).lstrip("v")
    if file_version in VERSIONS and file_version != version:
        raise ValueError(f"SQuAD file {path!r} is version {file_version}, not the requested "
                         f"{version}")
    examples = _json_examples(data, path)
    impossible = [e["id"] for e in examples if e["is_impossible"]]
    if version == "1.1" and impossible:
        raise ValueError(f"SQuAD file {path!r} has unanswerable questions (e.g. "
                         f"{impossible[0]!r}): that is v2.0, not the requested 1.1")
    return examples


# ----------------------------------------------------------------------------- windows

def _windows(num_tokens: int, room: int, doc_stride: int) -> list[tuple[int, int]]:
    """(first passage token, length) of each window: a new one every `doc_stride` tokens
    until one reaches the passage end (BERT's doc spans)."""
    windows, start = [], 0
    while True:
        length = min(num_tokens - start, room)
        windows.append((start, length))
        if start + length >= num_tokens:
            return windows
        start += min(length, doc_stride)


def max_context(windows: Sequence[tuple[int, int]], num_tokens: int) -> np.ndarray:
    """[windows, num_tokens] bool: the one window in which each passage token has the most
    context, min(tokens left, tokens right) + 0.01 * window length; ties go to the first."""
    position = np.arange(num_tokens)
    scores = np.full((len(windows), num_tokens), -np.inf)
    for w, (start, length) in enumerate(windows):
        inside = (position >= start) & (position < start + length)
        context = np.minimum(position - start, start + length - 1 - position)
        scores[w] = np.where(inside, context + 0.01 * length, -np.inf)
    best = np.argmax(scores, axis=0)  # [num_tokens]; argmax takes the first maximum
    return best[None, :] == np.arange(len(windows))[:, None]


def char_span_to_tokens(offsets: np.ndarray, char_start: int, char_end: int) -> tuple[int, int]:
    """First and last token overlapping characters [char_start, char_end); a boundary inside
    a token takes the whole token. `offsets` [tokens, 2] are (start, end) characters."""
    overlap = (offsets[:, 1] > char_start) & (offsets[:, 0] < char_end)
    overlap &= offsets[:, 1] > offsets[:, 0]  # tokens of no characters cover nothing
    hits = np.flatnonzero(overlap)
    if not len(hits):
        raise ValueError(f"characters [{char_start}, {char_end}) cover no token")
    return int(hits[0]), int(hits[-1])


def _gold_tokens(example: dict, offsets: np.ndarray, train: bool) -> tuple[int, int] | None:
    """Passage tokens of the first gold answer, or None (impossible, or no gold at eval)."""
    if example["is_impossible"]:
        return None
    if not example["answers"]:
        if train:
            raise ValueError(f"training example {example['id']!r} has no answer and is not "
                             f"is_impossible")
        return None
    answer = example["answers"][0]
    start, text = answer["answer_start"], answer["text"]
    if example["context"][start:start + len(text)] != text:
        raise ValueError(f"example {example['id']!r}: answer {text!r} is not at "
                         f"answer_start={start} of its context")
    try:
        return char_span_to_tokens(offsets, start, start + len(text))
    except ValueError:
        raise ValueError(f"example {example['id']!r}: answer {text!r} at {start} covers no "
                         f"token of the passage") from None


def featurize(examples: Sequence[dict], wordpiece: WordPiece, *, max_seq_len: int = 384,
              doc_stride: int = 128, max_query_len: int = 64,
              train: bool) -> tuple[list[dict[str, np.ndarray]], list[dict]]:
    """Model features and host-side meta, one pair per window of each example.

    feature: input_ids, segment_ids, input_mask [max_seq_len] int32; start_position,
      end_position int32 scalars: the first gold answer's first/last token in the window,
      0 ([CLS]) when it is not wholly inside the window, the question is impossible, or
      (train=False only) the example has no gold answer. train=True requires gold answers.
    meta: example_index, example_id, window_index, doc_start (the window's first token within
      the passage tokens), passage_start (its position in the feature), passage_len,
      token_to_char [max_seq_len, 2] int32 (start, end) characters of the ORIGINAL context
      for passage tokens, -1 elsewhere; is_max_context [max_seq_len] bool (False elsewhere).
    """
    _check_sizes(max_seq_len, doc_stride, max_query_len)
    tokenizer = wordpiece.tokenizer
    if tokenizer.truncation is not None or tokenizer.padding is not None:
        raise ValueError("the tokenizer truncates or pads; featurize needs whole passages "
                         "(call tokenizer.no_truncation() and tokenizer.no_padding())")
    questions = tokenizer.encode_batch([e["question"] for e in examples],
                                       add_special_tokens=False)
    contexts = list(dict.fromkeys(e["context"] for e in examples))  # ~5 questions per passage
    passages = {c: (np.asarray(p.ids, np.int32), np.asarray(p.offsets, np.int32).reshape(-1, 2))
                for c, p in zip(contexts, tokenizer.encode_batch(contexts,
                                                                 add_special_tokens=False))}
    features, metas = [], []
    for index, (example, question) in enumerate(zip(examples, questions)):
        query = np.asarray(question.ids[:max_query_len], np.int32)
        passage_ids, offsets = passages[example["context"]]
        if not len(passage_ids):
            raise ValueError(f"example {example['id']!r}: its context has no token")
        gold = _gold_tokens(example, offsets, train)
        for feature, meta in _example_windows(index, example["id"], query, passage_ids,
                                              offsets, gold, wordpiece, max_seq_len,
                                              doc_stride):
            features.append(feature)
            metas.append(meta)
    return features, metas


def _check_sizes(max_seq_len: int, doc_stride: int, max_query_len: int) -> None:
    if max_query_len < 1 or doc_stride < 1 or max_seq_len < 4:
        raise ValueError(f"max_query_len={max_query_len} and doc_stride={doc_stride} must be "
                         f">= 1, max_seq_len={max_seq_len} >= 4")


def _example_windows(index: int, example_id: str, query: np.ndarray, passage_ids: np.ndarray,
                     offsets: np.ndarray, gold: tuple[int, int] | None, wordpiece: WordPiece,
                     max_seq_len: int, doc_stride: int):
    """(feature, meta) for each window of one example."""
    passage_start = len(query) + 2  # after [CLS] question [SEP]
    if max_seq_len - passage_start - 1 < 1:
        raise ValueError(
            f"max_seq_len={max_seq_len} leaves no room for the passage of example "
            f"{example_id!r}: [CLS], its {len(query)} question tokens (at most max_query_len) "
            f"and two [SEP] take {len(query) + 3}; raise max_seq_len or lower max_query_len")
    windows = _windows(len(passage_ids), max_seq_len - passage_start - 1, doc_stride)
    best = max_context(windows, len(passage_ids))  # [windows, passage tokens]
    for w, (start, length) in enumerate(windows):
        used = passage_start + length + 1
        input_ids = np.full(max_seq_len, wordpiece.pad_id, np.int32)  # [max_seq_len]
        input_ids[:used] = np.concatenate([[wordpiece.cls_id], query, [wordpiece.sep_id],
                                           passage_ids[start:start + length],
                                           [wordpiece.sep_id]])
        segment_ids = np.zeros(max_seq_len, np.int32)
        segment_ids[passage_start:used] = 1
        input_mask = (np.arange(max_seq_len) < used).astype(np.int32)
        first = last = 0
        if gold is not None and start <= gold[0] and gold[1] < start + length:
            first, last = (g - start + passage_start for g in gold)
        token_to_char = np.full((max_seq_len, 2), -1, np.int32)
        token_to_char[passage_start:passage_start + length] = offsets[start:start + length]
        is_max_context = np.zeros(max_seq_len, bool)
        is_max_context[passage_start:passage_start + length] = best[w, start:start + length]
        yield ({"input_ids": input_ids, "segment_ids": segment_ids, "input_mask": input_mask,
                "start_position": np.int32(first), "end_position": np.int32(last)},
               {"example_index": index, "example_id": example_id, "window_index": w,
                "doc_start": start, "passage_start": passage_start, "passage_len": length,
                "token_to_char": token_to_char, "is_max_context": is_max_context})


# ----------------------------------------------------------------------------- decoding

def _logit_rows(logits, metas: Sequence[dict], name: str) -> np.ndarray:
    rows = np.asarray(logits, np.float64)  # [features, max_seq_len]
    if rows.ndim != 2 or len(rows) != len(metas) or (
            len(metas) and rows.shape[1] != len(metas[0]["token_to_char"])):
        raise ValueError(f"{name} has shape {rows.shape}; expected [features={len(metas)}, "
                         f"max_seq_len={len(metas[0]['token_to_char']) if metas else '?'}]")
    return rows


def _window_spans(meta: dict, start_logits: np.ndarray, end_logits: np.ndarray, n_best: int,
                  max_answer_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and end tokens [pairs] of the valid pairs among the window's n_best starts x
    n_best ends: both in the passage, start <= end, at most max_answer_len tokens, and the
    start token has its max context in this window."""
    starts = np.argsort(-start_logits, kind="stable")[:n_best][:, None]  # [n_best, 1]
    ends = np.argsort(-end_logits, kind="stable")[:n_best][None, :]  # [1, n_best]
    in_passage = meta["token_to_char"][:, 0] >= 0  # [max_seq_len]
    valid = (in_passage[starts] & in_passage[ends] & meta["is_max_context"][starts]
             & (starts <= ends) & (ends - starts + 1 <= max_answer_len))  # [n_best, n_best]
    return tuple(np.broadcast_to(a, valid.shape)[valid] for a in (starts, ends))


def _span_text(context: str, meta: dict, start: int, end: int) -> tuple[str, int, int]:
    """The original context characters from token `start` to token `end` (inclusive), with
    any combining marks that follow (the tokenizer's offsets drop a stripped accent)."""
    char_start, char_end = int(meta["token_to_char"][start, 0]), int(meta["token_to_char"][end, 1])
    while char_end < len(context) and unicodedata.combining(context[char_end]):
        char_end += 1
    return context[char_start:char_end], char_start, char_end


def _softmax(scores: list[float]) -> list[float]:
    if not scores:
        return []
    x = np.exp(np.asarray(scores) - max(scores))
    return (x / x.sum()).tolist()


def decode(examples: Sequence[dict], features_meta: Sequence[dict], start_logits, end_logits,
           *, n_best: int = 20, max_answer_len: int = 30, version_2: bool = False,
           null_score_diff_threshold: float = 0.0, return_nbest: bool = False):
    """Predicted answer text per example id from the windows' logits [features, max_seq_len].

    v2.0: the null score is the lowest start_logits[0] + end_logits[0] over the example's
    windows; the prediction is "" when null score - best span score > the threshold.
    With return_nbest, also {id: [{"text", "score", "start_logit", "end_logit",
    "probability", "char_start", "char_end"}, ...]}: up to n_best distinct texts best first,
    plus for v2.0 always the null entry (text "", char_start = char_end = -1);
    probabilities are a softmax over the listed scores.
    """
    if n_best < 1 or max_answer_len < 1:
        raise ValueError(f"n_best={n_best} and max_answer_len={max_answer_len} must be >= 1")
    start_rows = _logit_rows(start_logits, features_meta, "start_logits")
    end_rows = _logit_rows(end_logits, features_meta, "end_logits")
    windows_of: dict[int, list[int]] = {}
    for f, meta in enumerate(features_meta):
        if not 0 <= meta["example_index"] < len(examples):
            raise ValueError(f"feature {f} belongs to example {meta['example_index']}, but "
                             f"decode was given {len(examples)} examples")
        windows_of.setdefault(meta["example_index"], []).append(f)
    predictions, nbests = {}, {}
    for index, example in enumerate(examples):
        if index not in windows_of:
            raise ValueError(f"example {example['id']!r} (index {index}) has no feature; "
                             f"decode takes the examples featurize was given")
        rows = windows_of[index]
        nbest = _example_nbest(example, [features_meta[f] for f in rows], start_rows[rows],
                               end_rows[rows], n_best, max_answer_len)
        predictions[example["id"]] = nbest[0]["text"] if nbest else ""
        if version_2:
            null = _null_entry(start_rows[rows], end_rows[rows])
            if not nbest or null["score"] - nbest[0]["score"] > null_score_diff_threshold:
                predictions[example["id"]] = ""
            nbest = sorted(nbest + [null], key=lambda c: -c["score"])
        for entry, p in zip(nbest, _softmax([c["score"] for c in nbest])):
            entry["probability"] = p
        nbests[example["id"]] = nbest
    return (predictions, nbests) if return_nbest else predictions


def _null_entry(start_rows: np.ndarray, end_rows: np.ndarray) -> dict:
    """v2.0's "no answer": [CLS] as start and end, in the window where that scores lowest."""
    scores = start_rows[:, 0] + end_rows[:, 0]  # [windows]
    w = int(np.argmin(scores))
    return {"text": "", "score": float(scores[w]), "start_logit": float(start_rows[w, 0]),
            "end_logit": float(end_rows[w, 0]), "char_start": -1, "char_end": -1}


def _example_nbest(example: dict, metas: list[dict], start_rows: np.ndarray,
                   end_rows: np.ndarray, n_best: int, max_answer_len: int) -> list[dict]:
    """The n_best distinct span texts over all windows of one example, best first."""
    pairs = [_window_spans(m, s, e, n_best, max_answer_len)
             for m, s, e in zip(metas, start_rows, end_rows)]
    window = np.concatenate([np.full(len(p[0]), w) for w, p in enumerate(pairs)])  # [spans]
    starts, ends = (np.concatenate([p[i] for p in pairs]) for i in (0, 1))  # [spans]
    start_logits, end_logits = start_rows[window, starts], end_rows[window, ends]  # [spans]
    order = np.argsort(-(start_logits + end_logits), kind="stable")  # earlier windows win ties
    nbest, seen = [], set()
    for k in order.tolist():
        text, char_start, char_end = _span_text(example["context"], metas[window[k]],
                                                starts[k], ends[k])
        if text in seen:
            continue
        seen.add(text)
        nbest.append({"text": text, "score": float(start_logits[k] + end_logits[k]),
                      "start_logit": float(start_logits[k]), "end_logit": float(end_logits[k]),
                      "char_start": char_start, "char_end": char_end})
        if len(nbest) == n_best:
            break
    return nbest
