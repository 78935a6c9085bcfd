"""python -m ssl_jax.embed: MiniLM parity with sentence-transformers' pooling, padding and
batching invariance, one compilation per length bucket, clear errors."""
import dataclasses
import os

import jax
import numpy as np
import pytest

from ssl_jax import embed
from ssl_jax.data import bpe
from ssl_jax.interop import hf_bert, hf_gpt2
from ssl_jax.interop.pretrained import Pretrained
from ssl_jax.models.bert import BertEncoder
from ssl_jax.models.gpt import GptConfig
from tests.conftest import ROOT, run_main
from tests.test_interop import BERT, _bert_params, _gpt_params, _wordpiece

REFERENCE = os.path.join(ROOT, "tests/fixtures/minilm/reference.npz")
SENTENCES = ["the man is playing guitar .", "hello world !", "a", "jax compiles programs with "
             "data , the corner cafe is short text", "the man", "playing with the world ?"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Pretrained:
    """A random tiny BERT (encoder only), also saved as an HF directory (.description)."""
    directory = str(tmp_path_factory.mktemp("tiny") / "hf")
    params = {"encoder": _bert_params(BERT, seed=5)["encoder"]}
    wordpiece = _wordpiece(str(tmp_path_factory.mktemp("vocab")))
    hf_bert.save(directory, BERT, params, wordpiece)
    return Pretrained("bert", BERT, params, wordpiece, directory)


def _write_lines(path, lines) -> str:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def test_cli_reproduces_the_minilm_reference(minilm_dir, tmp_path, capsys):
    """sentence-transformers' embeddings (mean over real tokens, unit length), computed by
    transformers (tests/fixtures/minilm/make_reference.py)."""
    reference = np.load(REFERENCE)
    sentences = _write_lines(tmp_path / "s.txt", [str(s) for s in reference["sentences"]])
    done = run_main(capsys, embed.main, "--model", minilm_dir, "--input", sentences,
                    "--output", tmp_path / "emb.npy", "--normalize", "--batch-size", "4")
    assert done.returncode == 0, done.stderr
    assert "6 x 384 float32" in done.stdout
    embeddings = np.load(tmp_path / "emb.npy")
    assert embeddings.dtype == np.float32 and embeddings.shape == (6, 384)
    assert np.abs(embeddings - reference["embeddings"]).max() < 1e-4


def _unpadded(pretrained: Pretrained, sentence: str, max_seq_len: int = 128) -> np.ndarray:
    """One sentence alone, no padding: the mean of its states, by hand."""
    ids = embed.frame(pretrained.tokenizer, [sentence], max_seq_len)[0][None]
    forward = jax.jit(BertEncoder(pretrained.config).apply)
    sequence, _ = forward({"params": pretrained.params["encoder"]}, ids, np.zeros_like(ids),
                          np.ones_like(ids))
    return np.asarray(sequence)[0].mean(0)


def test_padding_batching_and_order_do_not_matter(tiny):
    """Sorted by length into padded batches of 4, each row still equals its sentence alone."""
    batched = embed.embed_sentences(tiny, SENTENCES, batch_size=4)
    assert batched.shape == (len(SENTENCES), BERT.hidden_size) and batched.dtype == np.float32
    for i in (2, 3):  # the shortest (most padded) and the longest sentence
        np.testing.assert_allclose(batched[i], _unpadded(tiny, SENTENCES[i]), atol=1e-5)
    normalized = embed.embed_sentences(tiny, SENTENCES, batch_size=4, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(normalized, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(normalized * np.linalg.norm(batched, axis=1, keepdims=True),
                               batched, atol=1e-5)


def test_long_sentences_are_cut_to_max_seq_len(tiny):
    long = " ".join(["the man is playing"] * 10)
    cut = embed.embed_sentences(tiny, [long], max_seq_len=8)
    short = embed.embed_sentences(tiny, ["the man is playing the man"])  # [CLS] + 6 + [SEP]
    np.testing.assert_array_equal(cut, short)


def test_one_compilation_per_length_bucket(tiny):
    config = dataclasses.replace(BERT, layer_norm_eps=1e-6)  # a config no other test compiles
    pretrained = dataclasses.replace(tiny, config=config)
    sentences = ["hello"] * 5 + [" ".join(["the man"] * 5)] * 3  # 3 and 12 tokens: buckets 8, 16
    embed.embed_sentences(pretrained, sentences, batch_size=2)
    assert embed.mean_pool_fn(config)._cache_size() == 2
    assert [embed.bucket_length(n, 128) for n in (1, 8, 9, 100, 129)] == [8, 8, 16, 128, 128]


def test_bad_input_is_reported(tiny, tmp_path, capsys):
    out = str(tmp_path / "e.npy")
    blank = _write_lines(tmp_path / "blank.txt", ["hello world", "  ", "the man"])
    empty = _write_lines(tmp_path / "empty.txt", [])
    good = _write_lines(tmp_path / "good.txt", ["hello world"])
    cases = [(["--input", blank], "line 2 is blank"),
             (["--input", empty], "holds no sentence"),
             (["--input", good, "--max-seq-len", "25"], "must be in [3, 24]"),
             (["--input", good, "--batch-size", "0"], "--batch-size=0 must be >= 1"),
             (["--input", good, "--output", str(tmp_path / "nowhere/e.npy")], "does not exist")]
    for args, message in cases:
        assert embed.main(["--model", tiny.description, "--output", out, *args]) == 2
        assert message in capsys.readouterr().err
    assert not os.path.exists(out)
    assert embed.main(["--model", tiny.description, "--input", good, "--output", out]) == 0
    assert np.load(out).shape == (1, BERT.hidden_size)


def test_gpt_models_are_rejected(tmp_path, capsys):
    tokenizer = bpe.train_bpe(["hello world, the man is playing"] * 4, 280)
    config = GptConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_layers=1,
                       num_heads=2, mlp_dim=32, max_len=16)
    hf_gpt2.save(str(tmp_path / "gpt"), config, _gpt_params(config), tokenizer)
    sentences = _write_lines(tmp_path / "s.txt", ["hello world"])
    assert embed.main(["--model", str(tmp_path / "gpt"), "--input", sentences, "--output",
                       str(tmp_path / "e.npy")]) == 2
    assert "is an HF GPT-2 checkpoint; sentence embeddings need a BERT" in capsys.readouterr().err
