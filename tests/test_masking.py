"""MLM masking statistics (BERT's 15% / 80-10-10) and whole-word masking."""
import numpy as np
import pytest

from ssl_jax.data.masking import MaskingSpec, mask_tokens
from ssl_jax.data.tokenizer import load_vocab, train_wordpiece

CORPUS = ["the quick brown fox jumps over the lazy dog near the riverbank",
          "unbelievably, tokenization splits rarely-seen words into pieces"] * 50


@pytest.fixture(scope="module")
def wordpiece():
    return train_wordpiece(CORPUS, vocab_size=200, min_frequency=1)


def _sequences(wordpiece, n, rng):
    """[CLS] A [SEP] B [SEP] with random non-special ids."""
    pool = np.flatnonzero(~wordpiece.is_special)
    out = []
    for _ in range(n):
        a, b = rng.integers(5, 60, size=2)
        out.append(np.concatenate([[wordpiece.cls_id], rng.choice(pool, a), [wordpiece.sep_id],
                                   rng.choice(pool, b), [wordpiece.sep_id]]).astype(np.int32))
    return out


def test_rates_on_a_large_batch(wordpiece):
    rng = np.random.default_rng(0)
    spec = MaskingSpec(mask_rate=0.15, max_predictions=40)
    selected = candidates = masked = randomised = kept = 0
    for tokens in _sequences(wordpiece, 4000, rng):
        ids, pos, tgt, w = mask_tokens(tokens, spec, wordpiece, rng)
        k = int(w.sum())
        p, t = pos[:k], tgt[:k]
        np.testing.assert_array_equal(tokens[p], t)
        assert not wordpiece.is_special[tokens[p]].any(), "a special token was selected"
        untouched = np.setdiff1d(np.arange(len(tokens)), p)
        np.testing.assert_array_equal(ids[untouched], tokens[untouched])
        candidates += int((~wordpiece.is_special[tokens]).sum())
        selected += k
        masked += int((ids[p] == wordpiece.mask_id).sum())
        kept += int((ids[p] == t).sum())
        randomised += int(((ids[p] != wordpiece.mask_id) & (ids[p] != t)).sum())
    assert abs(selected / candidates - 0.15) < 0.005
    assert abs(masked / selected - 0.8) < 0.01
    # a random replacement equal to the original counts as kept: ~1/vocab of 10%
    assert abs(randomised / selected - 0.1) < 0.01
    assert abs(kept / selected - 0.1) < 0.01


def test_mix_and_rate_are_config_driven(wordpiece):
    rng = np.random.default_rng(1)
    spec = MaskingSpec(mask_rate=0.4, mask_token_prob=1.0, random_token_prob=0.0,
                       max_predictions=64)
    sel = cand = 0
    for tokens in _sequences(wordpiece, 500, rng):
        ids, pos, tgt, w = mask_tokens(tokens, spec, wordpiece, rng)
        k = int(w.sum())
        assert (ids[pos[:k]] == wordpiece.mask_id).all()
        sel += k
        cand += int((~wordpiece.is_special[tokens]).sum())
    assert abs(sel / cand - 0.4) < 0.01


def test_max_predictions_caps_the_selection(wordpiece):
    rng = np.random.default_rng(2)
    spec = MaskingSpec(mask_rate=0.5, max_predictions=5)
    for tokens in _sequences(wordpiece, 50, rng):
        _, _, _, w = mask_tokens(tokens, spec, wordpiece, rng)
        assert w.shape == (5,) and w.sum() <= 5


def test_whole_word_masking_selects_whole_words(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "un", "##believ", "##ably",
             "token", "##ization", "##s", "split", "words", "rare", "##ly", ",", "into"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    wordpiece = load_vocab(str(tmp_path / "vocab.txt"))
    rng = np.random.default_rng(3)
    spec = MaskingSpec(mask_rate=0.3, max_predictions=30, whole_word=True)
    text = "unbelievably, tokenizations split the words rarely into tokenization"
    ids = wordpiece.encode_batch([text])[0]
    assert wordpiece.decode(ids).startswith("un ##believ ##ably , token ##ization ##s")
    tokens = np.concatenate([[wordpiece.cls_id], ids, [wordpiece.sep_id]]).astype(np.int32)
    assert wordpiece.is_continuation[tokens].any(), "fixture needs ## pieces"
    for _ in range(200):
        _, pos, _, w = mask_tokens(tokens, spec, wordpiece, rng)
        chosen = set(pos[:int(w.sum())].tolist())
        for i in chosen:  # each selected piece's whole word is selected
            j = i
            while wordpiece.is_continuation[tokens[j]]:
                j -= 1
                assert j in chosen
            k = i + 1
            while k < len(tokens) and wordpiece.is_continuation[tokens[k]]:
                assert k in chosen
                k += 1


def test_bad_rates_are_rejected():
    with pytest.raises(ValueError, match="mask_rate=1.5"):
        MaskingSpec(mask_rate=1.5)
    with pytest.raises(ValueError, match="exceeds 1"):
        MaskingSpec(mask_token_prob=0.9, random_token_prob=0.2)
