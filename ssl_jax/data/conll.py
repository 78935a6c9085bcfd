"""CoNLL-2003 named entities: the released text files or TFDS's `conll2003`, and the
word <-> WordPiece alignment a token classifier needs (label on each word's first sub-word).

    sentences = load_conll2003("validation", path="data/conll2003")  # train.txt/valid.txt/...
    encoded = encode_words(wordpiece, s["words"], [NER_TAGS.index(t) for t in s["ner"]], 128)
    tags = [NER_TAGS[i] for i in word_predictions(argmax, encoded, len(s["words"]), fallback=0)]
"""
from __future__ import annotations

import os

import numpy as np

from ssl_jax.data import corpora
from ssl_jax.data.tokenizer import WordPiece
from ssl_jax.files import read_text

# TFDS's conll2003 ClassLabel orders (tensorflow_datasets/core/dataset_builders/conll/
# conll_dataset_builder_utils.py), so ids agree whichever source a model was trained on.
NER_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
POS_TAGS = ('"', "''", "#", "$", "(", ")", ",", ".", ":", "``", "CC", "CD", "DT", "EX", "FW",
            "IN", "JJ", "JJR", "JJS", "LS", "MD", "NN", "NNP", "NNPS", "NNS", "NN|SYM", "PDT",
            "POS", "PRP", "PRP$", "RB", "RBR", "RBS", "RP", "SYM", "TO", "UH", "VB", "VBD",
            "VBG", "VBN", "VBP", "VBZ", "WDT", "WP", "WP$", "WRB")
CHUNK_TAGS = ("O", "B-ADJP", "I-ADJP", "B-ADVP", "I-ADVP", "B-CONJP", "I-CONJP", "B-INTJ",
              "I-INTJ", "B-LST", "I-LST", "B-NP", "I-NP", "B-PP", "I-PP", "B-PRT", "I-PRT",
              "B-SBAR", "I-SBAR", "B-UCP", "I-UCP", "B-VP", "I-VP")

SPLITS = ("train", "validation", "test")
# Released file names: the common train/valid/test.txt, or the original eng.* of the shared task.
SPLIT_FILES = {"train": ("train.txt", "eng.train"), "validation": ("valid.txt", "eng.testa"),
               "test": ("test.txt", "eng.testb")}
TFDS_SPLITS = {"train": "train", "validation": "dev", "test": "test"}
_FIELDS = (("pos", POS_TAGS), ("chunk", CHUNK_TAGS), ("ner", NER_TAGS))
IGNORE_LABEL = -1  # on sub-words after a word's first, specials and padding


def _empty_sentence() -> dict[str, list[str]]:
    return {"words": [], "pos": [], "chunk": [], "ner": []}


def _parse_line(line: str, where: str) -> tuple[str, ...]:
    fields = line.split()
    if len(fields) != 4:
        raise ValueError(f"{where}: expected 4 space-separated fields (word POS chunk NER), "
                         f"found {len(fields)}: {line.strip()!r}")
    for value, (name, tags) in zip(fields[1:], _FIELDS):
        if value not in tags:
            raise ValueError(f"{where}: unknown {name} tag {value!r}; CoNLL-2003 {name} tags "
                             f"are {list(tags)}")
    return tuple(fields)


def read_conll(path: str) -> list[dict]:
    """Sentences of a CoNLL-2003 file: {"words", "pos", "chunk", "ner"}, lists of strings.

    One `word POS chunk NER` line per token, blank lines between sentences, -DOCSTART- lines
    between documents (skipped)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CoNLL file {path!r} does not exist")
    lines = read_text(path, "CoNLL file").splitlines()
    sentences, current = [], _empty_sentence()
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("-DOCSTART-"):
            if current["words"]:
                sentences.append(current)
                current = _empty_sentence()
            continue
        for key, value in zip(current, _parse_line(line, f"{path}:{n}")):
            current[key].append(value)
    if current["words"]:
        sentences.append(current)
    if not sentences:
        raise ValueError(f"CoNLL file {path!r} holds no sentence")
    return sentences


def document_starts(path: str) -> set[int]:
    """Indices (as read_conll numbers them) of the sentences that follow a -DOCSTART- line,
    so a writer can mark documents as the released file does."""
    starts, sentence, in_sentence, pending = set(), 0, False, False
    for line in read_text(path, "CoNLL file").splitlines():
        if line.startswith("-DOCSTART-") or not line.strip():
            sentence += in_sentence
            in_sentence = False
            pending = pending or line.startswith("-DOCSTART-")
            continue
        if not in_sentence and pending:
            starts.add(sentence)
            pending = False
        in_sentence = True
    return starts


def split_file(split: str, path: str) -> str:
    """The released file of `split` in directory `path` (train.txt or eng.train style)."""
    if split not in SPLITS:
        raise ValueError(f"CoNLL-2003 has no split {split!r}; expected one of {list(SPLITS)}")
    candidates = [os.path.join(path, name) for name in SPLIT_FILES[split]]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"CoNLL-2003 {split}: neither {candidates[0]!r} nor "
                            f"{candidates[1]!r} exists")


def _tfds_source(split: str, data_dir: str):
    return corpora.prepared_source(
        "conll2003", TFDS_SPLITS[split], data_dir, f"CoNLL-2003 {split}",
        ", pass data_dir, or pass path= a directory with the released "
        "train.txt/valid.txt/test.txt")



def _from_record(record: dict, names: dict[str, tuple[str, ...]], i: int) -> dict:
    missing = [f for f in ("tokens", *names) if f not in record]
    if missing:
        raise ValueError(f"TFDS dataset 'conll2003' has no feature(s) {missing}; it has "
                         f"{sorted(record)}")
    sentence = {"words": [corpora.record_text(w) for w in record["tokens"]]}
    for feature, key in (("pos", "pos"), ("chunks", "chunk"), ("ner", "ner")):
        sentence[key] = [names[feature][int(t)] for t in record[feature]]
        if len(sentence[key]) != len(sentence["words"]):
            raise ValueError(f"TFDS conll2003 example {i} has {len(sentence['words'])} tokens "
                             f"but {len(sentence[key])} {feature} tags")
    return sentence


def read_tfds(split: str, data_dir: str) -> list[dict]:
    """Sentences of a locally prepared TFDS conll2003 split, tags as strings (TFDS's order,
    not the file's: TFDS shuffles). Empty examples (TFDS's CoNLL reader yields one when a
    file ends with a blank line) are dropped."""
    source = _tfds_source(split, data_dir)
    features = source.dataset_info.features
    names = {f: tuple(features[f].feature.names) for f in ("pos", "chunks", "ner")}
    sentences = [_from_record(source[i], names, i) for i in range(len(source))]
    return [s for s in sentences if s["words"]]


def load_conll2003(split: str, path: str | None = None,
                   data_dir: str | None = None) -> list[dict]:
    """CoNLL-2003 sentences of `split` (train, validation, test): from the released files in
    directory `path` if given, else from TFDS."""
    if split not in SPLITS:
        raise ValueError(f"CoNLL-2003 has no split {split!r}; expected one of {list(SPLITS)}")
    if path is not None:
        return read_conll(split_file(split, path))
    return read_tfds(split, data_dir or corpora.default_data_dir())


# ----------------------------------------------------------------------------- alignment

def word_pieces(wordpiece: WordPiece, words: list[str]) -> list[list[int]]:
    """Each word tokenised on its own; a word with no piece (e.g. only control characters,
    which the normaliser removes) becomes [UNK], so every word keeps a position."""
    encodings = wordpiece.tokenizer.encode_batch(list(words), add_special_tokens=False)
    return [e.ids or [wordpiece.unk_id] for e in encodings]


def encode_words(wordpiece: WordPiece, words: list[str], labels: list[int],
                 max_seq_len: int) -> dict[str, np.ndarray]:
    """`[CLS] pieces [SEP]` padded to max_seq_len; each word's label on its first sub-word.

    Returns int32 arrays: input_ids, segment_ids, input_mask, labels [max_seq_len] (-1 off
    first sub-words), first_token [max_seq_len] (position of word i's first sub-word, -1 past
    the kept words) and num_words [] (words kept: only whole words that fit are kept).
    """
    if len(words) != len(labels):
        raise ValueError(f"{len(words)} words but {len(labels)} labels")
    if max_seq_len < 2:
        raise ValueError(f"max_seq_len={max_seq_len} leaves no room for [CLS] and [SEP]")
    bad = [label for label in labels if int(label) < 0]
    if bad:
        raise ValueError(f"labels must be class ids >= 0; found {bad[0]}")
    ids, token_labels, first_token = [wordpiece.cls_id], [IGNORE_LABEL], []
    for pieces, label in zip(word_pieces(wordpiece, words), labels):
        if len(ids) + len(pieces) > max_seq_len - 1:  # keep room for [SEP]
            break
        first_token.append(len(ids))
        ids += pieces
        token_labels += [int(label)] + [IGNORE_LABEL] * (len(pieces) - 1)
    ids.append(wordpiece.sep_id)
    token_labels.append(IGNORE_LABEL)
    length = len(ids)
    pad = max_seq_len - length
    return {
        "input_ids": np.asarray(ids + [wordpiece.pad_id] * pad, np.int32),
        "segment_ids": np.zeros(max_seq_len, np.int32),
        "input_mask": np.asarray([1] * length + [0] * pad, np.int32),
        "labels": np.asarray(token_labels + [IGNORE_LABEL] * pad, np.int32),
        "first_token": np.asarray(first_token + [-1] * (max_seq_len - len(first_token)),
                                  np.int32),
        "num_words": np.asarray(len(first_token), np.int32),
    }


def word_predictions(token_predictions: np.ndarray, encoded: dict, num_words: int,
                     fallback: int) -> list[int]:
    """Per-word predictions from per-token ones [max_seq_len]: each word's first sub-word;
    words cut by truncation get `fallback` (e.g. the id of "O"), so every word is scored."""
    predictions = np.asarray(token_predictions)
    if predictions.shape != encoded["input_ids"].shape:
        raise ValueError(f"token_predictions have shape {predictions.shape}; expected one "
                         f"prediction per token, shape {encoded['input_ids'].shape}")
    kept = int(encoded["num_words"])
    if num_words < kept:
        raise ValueError(f"num_words={num_words} but the encoding kept {kept} words")
    first = encoded["first_token"][:kept]
    return [int(p) for p in predictions[first]] + [int(fallback)] * (num_words - kept)
