"""Fine-tuning scores: each source's decoded eval predictions scored by hand (pairs per eval
split with the num_eval_batches cut, CoNLL tags, SQuAD answers)."""
import os
import types

import numpy as np
import pytest

from ssl_jax.data.finetune import ConllSource, PairSource, SquadSource
from ssl_jax.data.tokenizer import SPECIAL_TOKENS, load_vocab
from ssl_jax.eval.finetune_scores import score
from tests.conftest import ROOT

FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def _pairs(labels_by_split, label_names=("no", "yes")):
    examples = lambda labels: [{"text_a": "a b", "text_b": None, "label": y} for y in labels]
    return PairSource(examples([0, 1]), {s: examples(y) for s, y in labels_by_split.items()},
                      label_names)


def test_pairs_score_each_split_and_a_cut_eval():
    source = _pairs({"validation_matched": [1, 0, 1, 1], "validation_mismatched": [0, 1, 1]})
    source.metrics = ("accuracy", "f1")
    # matched: 3 of 4 right; f1 of class 1: tp 2, fp 0, fn 1 -> P 1, R 2/3, F1 0.8.
    # mismatched, cut to its first 2 (num_eval_batches): labels [0, 1], predictions [1, 1]
    # -> accuracy 0.5; tp 1, fp 1 -> P 1/2, R 1, F1 2/3.
    got = score(source, {"prediction": np.asarray([1, 0, 0, 1, 1, 1])})
    assert got == pytest.approx({"accuracy": 0.75, "f1": 0.8,
                                 "validation_mismatched_accuracy": 0.5,
                                 "validation_mismatched_f1": 2 / 3})
    # cut inside the first split: the second is left out
    got = score(source, {"prediction": np.asarray([1, 0, 0])})
    assert got == pytest.approx({"accuracy": 2 / 3, "f1": 2 / 3})


def test_regression_pairs_score_correlations():
    source = _pairs({"validation": [1.0, 2.0, 4.0]}, label_names=None)
    assert source.regression
    got = score(source, {"prediction": np.asarray([2.0, 4.0, 8.0])})
    assert got == pytest.approx({"pearson": 1.0, "spearman": 1.0})
    got = score(source, {"prediction": np.asarray([3.0, 2.0, 1.0])})
    assert got["spearman"] == pytest.approx(-1.0)
    # pearson of (1, 2, 4) and (3, 2, 1): sum of co-deviations -3 over sqrt(14/3 * 2)
    assert got["pearson"] == pytest.approx(-3 / np.sqrt(14 / 3 * 2))


@pytest.fixture(scope="module")
def specials_only(tmp_path_factory):
    """A vocabulary of the special tokens alone: every word is one [UNK] piece."""
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("".join(t + "\n" for t in SPECIAL_TOKENS))
    return load_vocab(str(path))


def _token_predictions(features, per_word):
    """Per-token predictions: per_word(feature index, word index) on each word's piece."""
    out = []
    for f, feature in enumerate(features):
        tokens = np.full(feature["labels"].shape, 7)  # junk off the words' first pieces
        for w, position in enumerate(np.flatnonzero(feature["labels"] >= 0)):
            tokens[position] = per_word(f, w, feature["labels"][position])
        out.append(tokens)
    return np.stack(out)


@pytest.mark.parametrize("column", ["ner", "pos"])
def test_conll_scores_gold_and_all_outside_tags(column, specials_only):
    source = ConllSource(column, os.path.join(FIXTURES, "conll2003"), None)
    _, features = source.features(specials_only, max_seq_len=64)
    gold = _token_predictions(features, lambda f, w, label: label)
    if column == "pos":
        assert score(source, {"prediction": gold}) == {"accuracy": 1.0}
        return
    assert score(source, {"prediction": gold}) == {"precision": 1.0, "recall": 1.0, "f1": 1.0,
                                                   "token_accuracy": 1.0}
    outside = _token_predictions(features, lambda f, w, label: source.index["O"])
    tags = [t for s in source.eval for t in s["ner"]]
    got = score(source, {"prediction": outside})
    assert got == pytest.approx({"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                 "token_accuracy": tags.count("O") / len(tags)})
    assert 0 < got["token_accuracy"] < 1


def test_squad_scores_the_gold_span_and_an_empty_eval(tmp_path):
    ft = types.SimpleNamespace(doc_stride=32, max_query_len=16, n_best=5, max_answer_len=30,
                               null_score_diff_threshold=0.0)
    source = SquadSource("v1.1", os.path.join(FIXTURES, "squad"), None, ft)
    assert score(source, {"start_logits": np.zeros((0, 64)),
                          "end_logits": np.zeros((0, 64))}) == {}
    words = sorted({w.strip(".,?!'\"()").lower() for e in source.eval + source.train
                    for w in (e["question"] + " " + e["context"]).split()} - {""})
    (tmp_path / "vocab.txt").write_text("\n".join(list(SPECIAL_TOKENS) + words) + "\n")
    _, features = source.features(load_vocab(str(tmp_path / "vocab.txt")), max_seq_len=64)
    start, end = np.zeros((len(features), 64)), np.zeros((len(features), 64))
    for n, meta in enumerate(source.eval_meta):  # 10 on the first gold answer's tokens
        answer = source.eval[meta["example_index"]]["answers"][0]
        first, last = answer["answer_start"], answer["answer_start"] + len(answer["text"])
        chars = meta["token_to_char"]
        inside = np.flatnonzero((chars[:, 0] >= first) & (chars[:, 1] <= last)
                                & (chars[:, 1] > chars[:, 0]))
        if len(inside):
            start[n, inside[0]], end[n, inside[-1]] = 10.0, 10.0
    got = score(source, {"start_logits": start, "end_logits": end})
    assert got == {"exact_match": 100.0, "f1": 100.0}
