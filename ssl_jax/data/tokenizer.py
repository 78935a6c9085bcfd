"""WordPiece tokenizers (HF `tokenizers`): train on a corpus, or load a bert-style vocab.txt."""
from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Iterable

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from ssl_jax.files import publish_dir, read_json, read_text, write_atomic

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclasses.dataclass(frozen=True)
class WordPiece:
    """A tokenizer plus the ids and per-id facts the pre-training pipeline needs."""

    tokenizer: Tokenizer
    pad_id: int
    unk_id: int
    cls_id: int
    sep_id: int
    mask_id: int
    is_special: np.ndarray  # [vocab] bool: never selected for MLM, never a random replacement
    is_continuation: np.ndarray  # [vocab] bool: "##" sub-word pieces (whole-word masking)

    @property
    def vocab_size(self) -> int:
        return len(self.is_special)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int32) for e in encodings]

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.tokenizer.id_to_token(int(i)) for i in ids)


def _bert_pipeline(model: models.WordPiece, lowercase: bool) -> Tokenizer:
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=None,
                                                      clean_text=True, handle_chinese_chars=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer


def wrap(tokenizer: Tokenizer, source: str) -> WordPiece:
    """A WordPiece over any HF WordPiece `tokenizer` (trained, vocab.txt or tokenizer.json)."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise ValueError(f"vocabulary {source} lacks the special tokens {missing}; a BERT "
                         f"vocab needs all of {list(SPECIAL_TOKENS)}")
    size = tokenizer.get_vocab_size()
    if max(vocab.values()) >= size:
        raise ValueError(f"vocabulary {source} has ids up to {max(vocab.values())} but "
                         f"{size} tokens; ids must be 0..{size - 1} without gaps")
    is_special = np.zeros(size, bool)
    is_continuation = np.zeros(size, bool)
    for token, i in vocab.items():
        # [unused17] and the like are special too: never select or sample them.
        is_special[i] = token in SPECIAL_TOKENS or (token.startswith("[") and token.endswith("]"))
        is_continuation[i] = token.startswith("##")
    return WordPiece(tokenizer, *(vocab[t] for t in SPECIAL_TOKENS),
                     is_special=is_special, is_continuation=is_continuation)


def train_wordpiece(texts: Iterable[str], vocab_size: int = 30000, lowercase: bool = True,
                    min_frequency: int = 2) -> WordPiece:
    """Learns a WordPiece vocabulary with the special tokens at ids 0..4."""
    if vocab_size < len(SPECIAL_TOKENS) + 1:
        raise ValueError(f"data.vocab_size={vocab_size} is too small")
    tokenizer = _bert_pipeline(models.WordPiece(unk_token="[UNK]"), lowercase)
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=list(SPECIAL_TOKENS),
                                        continuing_subword_prefix="##", show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    return wrap(tokenizer, "(trained)")


def load_vocab(path: str, lowercase: bool = True) -> WordPiece:
    """A bert-base-uncased style vocab.txt (one token per line, id = line number)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"vocab file {path!r} does not exist")
    tokens = read_text(path, "vocab file").split("\n")  # id = line number
    if not any(tokens):
        raise ValueError(f"vocab file {path!r} is empty")
    if tokens[-1] == "":  # the final newline ends the last line
        tokens.pop()
    vocab = {}
    for i, token in enumerate(tokens):
        if not token:
            raise ValueError(f"vocab file {path!r} line {i + 1} is blank; a token's id is its "
                             f"line number, so every line must hold one token")
        if token in vocab:
            raise ValueError(f"vocab file {path!r} line {i + 1} repeats the token {token!r} "
                             f"(first on line {vocab[token] + 1}); every token must be distinct")
        vocab[token] = i
    return wrap(_bert_pipeline(models.WordPiece(vocab, unk_token="[UNK]"), lowercase), repr(path))


def load_hf_vocab(directory: str) -> WordPiece:
    """An HF BERT directory's vocab.txt, lower-cased as its tokenizer_config.json's
    do_lower_case says (default True, as BertTokenizer)."""
    path = os.path.join(directory, "tokenizer_config.json")
    settings = read_json(path, "tokenizer config") if os.path.exists(path) else {}
    lowercase = settings.get("do_lower_case", True)
    strip_accents = settings.get("strip_accents")
    if strip_accents is not None and strip_accents != lowercase:
        raise ValueError(f"{path!r}: strip_accents={strip_accents} with do_lower_case="
                         f"{lowercase} is not supported (accents are stripped iff lower-casing)")
    if settings.get("tokenize_chinese_chars", True) is False:
        raise ValueError(f"{path!r}: tokenize_chinese_chars=false is not supported")
    return load_vocab(os.path.join(directory, "vocab.txt"), bool(lowercase))


def save(wordpiece: WordPiece, directory: str) -> None:
    """Writes vocab.txt (bert format) and tokenizer.json, each atomically."""
    os.makedirs(directory, exist_ok=True)
    id_to_token = sorted(wordpiece.tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    write_atomic(os.path.join(directory, "vocab.txt"), "".join(t + "\n" for t, _ in id_to_token))
    write_atomic(os.path.join(directory, "tokenizer.json"), wordpiece.tokenizer.to_str())


def load_or_train(data_config, directory: str, texts_fn, corpus_id: str,
                  cache_root: str | None = None) -> WordPiece:
    """The vocabulary of a run, kept in `directory` (its workdir's tokenizer/):

    1. `data.vocab_path` if set; 2. the vocab already kept in `directory` (a resumed run);
    3. else the one trained earlier on this machine for the same corpus and settings (cached
       under `cache_root`), or trained now and cached. HF's WordPiece trainer breaks count
       ties in hash order, so two trainings can differ by a few tokens: the cache keeps every
       run on one corpus (sweep points, re-runs) on the very same vocabulary.
    """
    lowercase = data_config.lowercase
    kept = os.path.join(directory, "vocab.txt")
    if data_config.get("vocab_path"):
        wordpiece = load_vocab(data_config.vocab_path, lowercase)
    elif os.path.exists(kept):
        return load_vocab(kept, lowercase)
    elif cache_root is None:
        wordpiece = train_wordpiece(texts_fn(), data_config.vocab_size, lowercase)
    else:
        key = hashlib.sha256(f"{corpus_id}|{data_config.vocab_size}|{lowercase}".encode())
        cached = os.path.join(cache_root, "wordpiece", key.hexdigest()[:16])
        if not os.path.exists(os.path.join(cached, "vocab.txt")):
            _train_into(cached, texts_fn(), data_config.vocab_size, lowercase)
        wordpiece = load_vocab(os.path.join(cached, "vocab.txt"), lowercase)
    save(wordpiece, directory)
    return wordpiece


def _train_into(cached: str, texts, vocab_size: int, lowercase: bool) -> None:
    """Trains and publishes `cached` atomically; a concurrent trainer that got there first
    wins, and its vocabulary is the one every run then loads."""
    publish_dir(cached, lambda tmp: save(train_wordpiece(texts, vocab_size, lowercase), tmp))
