"""WordPiece: trained vocab layout, save/load round trip, bert-base-uncased vocab.txt format."""
import numpy as np
import pytest

from ssl_jax.data import tokenizer

TEXT = ["Hello world, this is a tokenizer test.", "Tokenizers split words into pieces."] * 20


def test_trained_vocab_has_the_special_tokens_first():
    wp = tokenizer.train_wordpiece(TEXT, vocab_size=300, min_frequency=1)
    assert (wp.pad_id, wp.unk_id, wp.cls_id, wp.sep_id, wp.mask_id) == (0, 1, 2, 3, 4)
    assert wp.is_special[:5].all() and not wp.is_special[5:].any()
    ids = wp.encode_batch(["hello WORLD"])[0]
    assert wp.tokenizer.decode(ids.tolist()) == "hello world"  # lower-cased


def test_save_then_load_encodes_identically(tmp_path):
    wp = tokenizer.train_wordpiece(TEXT, vocab_size=300, min_frequency=1)
    tokenizer.save(wp, str(tmp_path))
    again = tokenizer.load_vocab(str(tmp_path / "vocab.txt"))
    for a, b in zip(wp.encode_batch(TEXT), again.encode_batch(TEXT)):
        np.testing.assert_array_equal(a, b)


def test_bert_base_uncased_layout(tmp_path):
    """[PAD]=0, [unused*], [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103 as in Google's vocab."""
    vocab = (["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]",
             "[MASK]"] + ["the", "cat", "sat", "##s", "on", "mat", "."])
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    wp = tokenizer.load_vocab(str(tmp_path / "vocab.txt"))
    assert (wp.pad_id, wp.unk_id, wp.cls_id, wp.sep_id, wp.mask_id) == (0, 100, 101, 102, 103)
    assert wp.is_special[:104].all() and not wp.is_special[104:].any()
    assert wp.encode_batch(["The cats sat on the MAT. dog"])[0].tolist() == [
        104, 105, 107, 106, 108, 104, 109, 110, 100]


def test_vocab_without_special_tokens_is_rejected(tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\nthe\ncat\n")
    with pytest.raises(ValueError, match=r"lacks the special tokens \['\[CLS\]', '\[SEP\]', '\[MASK\]'\]"):
        tokenizer.load_vocab(str(tmp_path / "vocab.txt"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tokenizer.load_vocab(str(tmp_path / "missing.txt"))


def test_one_vocabulary_per_corpus_and_settings(tmp_path):
    """Training is cached by (corpus, vocab_size, lowercase), so runs agree token for token."""
    import ml_collections

    data = ml_collections.ConfigDict(dict(vocab_path=None, vocab_size=120, lowercase=True))
    calls = []

    def texts():
        calls.append(1)
        return iter(TEXT)

    a = tokenizer.load_or_train(data, str(tmp_path / "run_a"), texts, "corpus-1", str(tmp_path))
    b = tokenizer.load_or_train(data, str(tmp_path / "run_b"), texts, "corpus-1", str(tmp_path))
    assert len(calls) == 1  # trained once
    assert (tmp_path / "run_a/vocab.txt").read_text() == (tmp_path / "run_b/vocab.txt").read_text()
    assert a.tokenizer.get_vocab() == b.tokenizer.get_vocab()
    tokenizer.load_or_train(data, str(tmp_path / "run_c"), texts, "corpus-2", str(tmp_path))
    assert len(calls) == 2  # another corpus: trained again
