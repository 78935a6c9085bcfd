"""SQuAD: reading (JSON, TFDS), BERT windows, n-best span decoding, the official metrics."""
import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.datasets.squad import squad_dataset_builder
from tokenizers import normalizers, pre_tokenizers

from ssl_jax.data import squad
from ssl_jax.data.tokenizer import SPECIAL_TOKENS, load_vocab
from ssl_jax.eval import squad_metrics

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "squad")
TRAIN_V1, DEV_V1, DEV_V2 = (os.path.join(FIXTURES, f) for f in
                            ("train-v1.1.json", "dev-v1.1.json", "dev-v2.0.json"))


def write_vocab(tmp_path, tokens):
    (tmp_path / "vocab.txt").write_text("\n".join(list(SPECIAL_TOKENS) + tokens) + "\n",
                                        encoding="utf-8")
    return load_vocab(str(tmp_path / "vocab.txt"))


def fixture_wordpiece(tmp_path, examples, max_word_len=6):
    """Whole words up to max_word_len characters; longer ones fall apart into ##characters,
    so answers start and end inside multi-piece words. Deterministic (no training)."""
    normalizer, pre = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    texts = [e[k] for e in examples for k in ("question", "context")]
    words = {w for t in texts for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(t))}
    chars = sorted({c for w in words for c in w})
    whole = sorted(w for w in words if 1 < len(w) <= max_word_len)
    return write_vocab(tmp_path, whole + chars + ["##" + c for c in chars])


# ----------------------------------------------------------------------------- reading

def test_read_v11_and_v20_files():
    train = squad.load_squad("1.1", "train", path=TRAIN_V1)
    assert len(train) == 6 and [e["id"] for e in train[:2]] == ["5a1e0001", "5a1e0002"]
    first = train[0]
    assert set(first) == {"id", "title", "question", "context", "answers", "is_impossible"}
    assert first["title"] == "Vesterholm_Lighthouse" and not first["is_impossible"]
    assert first["answers"] == [{"text": "Halvard Ångström", "answer_start": 117}]
    assert first["context"][117:117 + len("Halvard Ångström")] == "Halvard Ångström"
    dev = squad.load_squad("1.1", "validation", path=DEV_V1)
    assert [len(e["answers"]) for e in dev] == [3, 3, 3]  # dev has several gold answers
    v2 = squad.load_squad("2.0", "validation", path=DEV_V2)
    assert [e["is_impossible"] for e in v2] == [False, True, False, True, False]
    assert v2[1]["answers"] == [] and v2[0]["answers"][1]["text"] == "three rivers"


def test_reader_errors(tmp_path):
    with open(DEV_V2, encoding="utf-8") as f:
        data = json.load(f)
    data["data"][0]["paragraphs"][0]["qas"][2]["answers"][1]["answer_start"] += 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match=r"question '5a1e2003': answer 'Since 1950' is not at "
                                         r"answer_start=80"):
        squad.load_squad("2.0", "validation", path=str(bad))
    with pytest.raises(ValueError, match="version 1.1, not the requested 2.0"):
        squad.load_squad("2.0", "validation", path=DEV_V1)
    with pytest.raises(ValueError, match="version 2.0, not the requested 1.1"):
        squad.load_squad("1.1", "validation", path=DEV_V2)
    with pytest.raises(ValueError, match=r"version '3.0' is not one of \['1.1', '2.0'\]"):
        squad.load_squad("3.0", "train", path=DEV_V1)
    with pytest.raises(ValueError, match=r"split 'dev' is not one of \['train', 'validation'\]"):
        squad.load_squad("1.1", "dev", path=DEV_V1)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        squad.load_squad("1.1", "train", path=str(tmp_path / "missing.json"))
    (tmp_path / "other.json").write_text('{"rows": []}')
    with pytest.raises(ValueError, match="has no 'data' list"):
        squad.load_squad("1.1", "train", path=str(tmp_path / "other.json"))


class SquadStandIn(squad_dataset_builder.Builder, skip_registration=True):
    """TFDS's own squad builder (features, v1.1/v2.0 configs, example generation) reading the
    fixture files instead of downloading."""

    name = "squad"
    FILES = {"v1.1": (TRAIN_V1, DEV_V1), "v2.0": (DEV_V2, DEV_V2)}

    @classmethod
    def _get_pkg_dir_path(cls):  # metadata (citation, description) of the real builder
        return epath.Path(squad_dataset_builder.__file__).parent

    def _split_generators(self, dl_manager):
        train, dev = self.FILES[self.builder_config.name]
        return {"train": self._generate_examples(train),
                "validation": self._generate_examples(dev)}


def test_tfds_prepared_locally(tmp_path):
    tfds.disable_progress_bar()
    for config in ("v1.1", "v2.0"):
        SquadStandIn(config=config, data_dir=str(tmp_path)).download_and_prepare(
            file_format="array_record")
    for version, split, path in [("1.1", "train", TRAIN_V1), ("1.1", "validation", DEV_V1),
                                 ("2.0", "validation", DEV_V2)]:
        from_tfds = squad.load_squad(version, split, data_dir=str(tmp_path))
        from_json = squad.load_squad(version, split, path=path)
        assert sorted(from_tfds, key=lambda e: e["id"]) == from_json  # bytes -> str, same fields
    with pytest.raises(ValueError, match=r"no TFDS dataset 'squad/v2.0' with split 'train' is "
                                         r"prepared under .*tfds build squad/v2.0 --data_dir"):
        squad.load_squad("2.0", "train", data_dir=str(tmp_path / "empty"))


def test_tfds_mock_data_answers_are_checked():
    # mock_data's random records place answers anywhere: the reader's check must catch it.
    # (squad is registered: this module imports its builder.)
    with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE):
        with pytest.raises(ValueError, match=r"TFDS squad/v1.1: question '.*': answer .* is "
                                             r"not at answer_start"):
            squad.load_squad("1.1", "train")


# ----------------------------------------------------------------------------- windows

def test_max_context_by_hand():
    # 7 tokens, room 4, stride 2: windows A=[0,4) B=[2,6) C=[4,7). Score = min(left, right)
    # + 0.01 * length: token 2: A 1.04, B 0.04; token 3: A 0.04, B 1.04; token 4: B 1.04,
    # C 0.03; token 5: B 0.04, C 1.03.
    windows = squad._windows(7, 4, 2)
    assert windows == [(0, 4), (2, 4), (4, 3)]
    np.testing.assert_array_equal(squad.max_context(windows, 7), [
        [1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 0, 1, 1]])
    # a tie (token 2: A = min(2, 1), B = min(1, 2), equal lengths) goes to the first window
    assert squad._windows(5, 4, 1) == [(0, 4), (1, 4)]
    np.testing.assert_array_equal(squad.max_context([(0, 4), (1, 4)], 5),
                                  [[1, 1, 1, 0, 0], [0, 0, 0, 1, 1]])


def test_windows_and_gold_tokens_on_the_fixtures(tmp_path):
    examples = squad.load_squad("1.1", "train", path=TRAIN_V1)
    wp = fixture_wordpiece(tmp_path, examples)
    features, metas = squad.featurize(examples, wp, max_seq_len=40, doc_stride=8,
                                      max_query_len=12, train=True)
    assert len(features) == len(metas) > 2 * len(examples)
    inside = outside = 0
    for feature, meta in zip(features, metas):
        example = examples[meta["example_index"]]
        passage = wp.tokenizer.encode(example["context"], add_special_tokens=False)
        question = wp.tokenizer.encode(example["question"], add_special_tokens=False).ids[:12]
        p0, n, d0 = meta["passage_start"], meta["passage_len"], meta["doc_start"]
        used = p0 + n + 1
        assert p0 == len(question) + 2 and meta["example_id"] == example["id"]
        np.testing.assert_array_equal(feature["input_ids"][:used], [wp.cls_id] + question + [
            wp.sep_id] + passage.ids[d0:d0 + n] + [wp.sep_id])
        assert (feature["input_ids"][used:] == wp.pad_id).all()
        np.testing.assert_array_equal(feature["segment_ids"], (np.arange(40) >= p0) & (
            np.arange(40) < used))  # 1 for the passage window and the last [SEP]
        assert feature["input_mask"].sum() == used and feature["input_mask"][:used].all()
        assert all(feature[k].dtype == np.int32 for k in feature)
        np.testing.assert_array_equal(meta["token_to_char"][p0:p0 + n], passage.offsets[d0:d0 + n])
        assert (meta["token_to_char"][:p0] == -1).all()
        assert (meta["token_to_char"][p0 + n:] == -1).all()
        np.testing.assert_array_equal(meta["is_max_context"][:p0], False)
        answer = example["answers"][0]
        a0, a1 = answer["answer_start"], answer["answer_start"] + len(answer["text"])
        covering = [i for i, (s, e) in enumerate(passage.offsets) if s < a1 and e > a0]
        start, end = int(feature["start_position"]), int(feature["end_position"])
        if d0 <= covering[0] and covering[-1] < d0 + n:
            inside += 1
            chars = meta["token_to_char"]
            assert example["context"][chars[start, 0]:chars[end, 1]] == answer["text"]
        else:
            outside += 1
            assert start == end == 0  # [CLS]
    assert inside >= len(examples) and outside > 0
    # windows step by doc_stride, the last reaches the passage end, and every passage token
    # is scored (max context) in exactly one window
    for index, example in enumerate(examples):
        mine = [m for m in metas if m["example_index"] == index]
        total = len(wp.tokenizer.encode(example["context"], add_special_tokens=False).ids)
        assert [m["doc_start"] for m in mine] == [8 * w for w in range(len(mine))]
        assert mine[-1]["doc_start"] + mine[-1]["passage_len"] == total
        counts = np.zeros(total, int)
        for m in mine:
            counts[m["doc_start"]:m["doc_start"] + m["passage_len"]] += m["is_max_context"][
                m["passage_start"]:m["passage_start"] + m["passage_len"]]
        np.testing.assert_array_equal(counts, 1)


def test_answer_boundary_inside_a_token_and_impossible_questions(tmp_path):
    wp = write_vocab(tmp_path, ["the", "1990s", "were", "loud", "when", "?", "."])
    example = {"id": "q", "title": "", "question": "When?", "context": "The 1990s were loud.",
               "answers": [{"text": "1990", "answer_start": 4}], "is_impossible": False}
    (feature,), (meta,) = squad.featurize([example], wp, max_seq_len=16, max_query_len=4,
                                          train=True)
    start, end = int(feature["start_position"]), int(feature["end_position"])
    # [CLS] when ? [SEP] the 1990s: the answer "1990" is the front of the token "1990s"
    assert start == end == 5 and tuple(meta["token_to_char"][5]) == (4, 9)
    impossible = dict(example, answers=[], is_impossible=True)
    (feature,), _ = squad.featurize([impossible], wp, max_seq_len=16, train=True)
    assert int(feature["start_position"]) == int(feature["end_position"]) == 0
    with pytest.raises(ValueError, match="training example 'q' has no answer"):
        squad.featurize([dict(example, answers=[])], wp, max_seq_len=16, train=True)
    (feature,), _ = squad.featurize([dict(example, answers=[])], wp, max_seq_len=16,
                                    train=False)
    assert int(feature["start_position"]) == 0
    long_question = dict(example, question="When? " * 20)  # 40 tokens
    assert len(squad.featurize([long_question], wp, max_seq_len=16, max_query_len=12,
                               train=True)[0]) == 5  # 1 passage token per window
    with pytest.raises(ValueError, match=r"max_seq_len=16 leaves no room for the passage of "
                                         r"example 'q': \[CLS\], its 13 question tokens"):
        squad.featurize([long_question], wp, max_seq_len=16, max_query_len=13, train=True)


# ----------------------------------------------------------------------------- decoding

CONTEXT = "Le Café «Rouge-Noir» opened in the 1990s near Paris, says Zoe\u0308."
QUESTION = "What opened?"
# tokens: le cafe « rouge - noir » opened in the 1990 ##s near paris , says zoe .  (18)
DECODE_VOCAB = ["le", "cafe", "«", "rouge", "-", "noir", "»", "opened", "in", "the", "1990",
                "##s", "near", "paris", ",", "says", "zoe", ".", "what", "?"]


def decode_case(tmp_path, max_seq_len, doc_stride=128, answer=None):
    wp = write_vocab(tmp_path, DECODE_VOCAB)
    answers = [] if answer is None else [{"text": answer, "answer_start": CONTEXT.index(answer)}]
    example = {"id": "q1", "title": "", "question": QUESTION, "context": CONTEXT,
               "answers": answers, "is_impossible": answer is None}
    features, metas = squad.featurize([example], wp, max_seq_len=max_seq_len,
                                      doc_stride=doc_stride, train=True)
    logits = np.full((len(features), max_seq_len), -1000.0)  # [features, max_seq_len]
    return [example], features, metas, logits, logits.copy()


def at(meta, word):
    """The feature position of the passage token starting at `word` (its first occurrence)."""
    char = CONTEXT.index(word)
    return int(np.flatnonzero(meta["token_to_char"][:, 0] == char)[0])


def test_best_valid_span_wins_over_invalid_pairs(tmp_path):
    examples, _, (meta,), start, end = decode_case(tmp_path, max_seq_len=32)
    assert meta["passage_start"] == 5 and meta["passage_len"] == 18  # padding from 24 on
    start[0, 2], end[0, 2] = 100, 100  # inside the question
    start[0, 30], end[0, 31] = 200, 200  # padding
    start[0, at(meta, "Paris")], end[0, at(meta, "opened")] = 50, 60  # end before start
    start[0, at(meta, "Le")] = 40  # Le..opened (8) and Le..» (7) are too long for 6
    start[0, at(meta, "Café")], end[0, at(meta, "»")] = 5, 10  # Café..» is 6 tokens: valid
    prediction, nbest = squad.decode(examples, [meta], start, end, max_answer_len=6,
                                     return_nbest=True)
    assert prediction == {"q1": "Café «Rouge-Noir»"}  # original characters, not "cafe « rouge"
    best = nbest["q1"][0]
    assert (best["text"], best["score"], best["start_logit"], best["end_logit"]) == (
        "Café «Rouge-Noir»", 15.0, 5.0, 10.0)
    assert (best["char_start"], best["char_end"]) == (3, 20)
    assert len(nbest["q1"]) == 20 and sum(e["probability"] for e in nbest["q1"]) == pytest.approx(1)
    # the decomposed ë: the tokenizer's offsets end before the combining mark; decode keeps it
    start[0, at(meta, "says")], end[0, at(meta, "Zoe")] = 500, 500
    assert squad.decode(examples, [meta], start, end)["q1"] == "says Zoe\u0308"


def test_span_crossing_a_window_boundary(tmp_path):
    # room 10, stride 5: windows [0,10) [5,15) [10,18); "in the 1990s" is tokens 8..11
    examples, features, metas, start, end = decode_case(tmp_path, max_seq_len=16, doc_stride=5,
                                                        answer="in the 1990s")
    assert [(m["doc_start"], m["passage_len"]) for m in metas] == [(0, 10), (5, 10), (10, 8)]
    positions = [(int(f["start_position"]), int(f["end_position"])) for f in features]
    in_1 = at(metas[1], "in the")
    assert positions == [(0, 0), (in_1, in_1 + 3), (0, 0)]  # in the 1990 ##s
    # window 0: "the" scores 20 there, but "the" (token 9) has its max context in window 1
    start[0, at(metas[0], "the")], end[0, at(metas[0], "the")] = 10, 10
    # window 2: "1990s near Paris" scores 18, but token 10 has its max context in window 1
    start[2, at(metas[2], "1990")], end[2, at(metas[2], "Paris")] = 9, 9
    start[1, in_1], end[1, in_1 + 3] = 8, 8
    assert squad.decode(examples, metas, start, end) == {"q1": "in the 1990s"}
    assert not metas[0]["is_max_context"][at(metas[0], "the")]


def test_v2_null_score_against_the_threshold(tmp_path):
    examples, _, metas, start, end = decode_case(tmp_path, max_seq_len=16, doc_stride=5)
    start[:, 0], end[:, 0] = [3, 1, 4], [2, 2, 3]  # null scores 5, 3, 7: the minimum is 3
    start[1, at(metas[1], "in the")], end[1, at(metas[1], "1990") + 1] = 1.5, 1.0  # 2.5
    decode = lambda **kw: squad.decode(examples, metas, start, end, version_2=True, **kw)["q1"]
    assert decode() == ""  # 3 - 2.5 = 0.5 > 0
    assert decode(null_score_diff_threshold=0.5) == "in the 1990s"  # not > 0.5
    assert decode(null_score_diff_threshold=1.0) == "in the 1990s"  # (5 - 2.5 = 2.5 > 1)
    assert decode(null_score_diff_threshold=0.4) == ""
    assert squad.decode(examples, metas, start, end)["q1"] == "in the 1990s"  # v1.1
    _, nbest = squad.decode(examples, metas, start, end, version_2=True, return_nbest=True)
    null = [e for e in nbest["q1"] if e["text"] == ""]
    assert nbest["q1"][0] == null[0] and null[0]["score"] == 3.0
    with pytest.raises(ValueError, match=r"start_logits has shape \(3, 8\); expected "
                                         r"\[features=3, max_seq_len=16\]"):
        squad.decode(examples, metas, start[:, :8], end)


def test_oracle_logits_score_100_end_to_end(tmp_path):
    examples = squad.load_squad("2.0", "validation", path=DEV_V2)
    wp = fixture_wordpiece(tmp_path, examples)
    features, metas = squad.featurize(examples, wp, max_seq_len=48, doc_stride=16,
                                      max_query_len=16, train=False)
    assert len(features) > len(examples)
    start = np.full((len(features), 48), -10.0)  # [features, max_seq_len]
    end = start.copy()
    rows = np.arange(len(features))
    start[rows, [f["start_position"] for f in features]] = 10
    end[rows, [f["end_position"] for f in features]] = 10
    predictions = squad.decode(examples, metas, start, end, version_2=True)
    assert predictions == {e["id"]: e["answers"][0]["text"] if e["answers"] else ""
                           for e in examples}
    scores = squad_metrics.squad_scores(examples, predictions)
    assert scores == {"exact_match": 100.0, "f1": 100.0, "HasAns_exact": 100.0,
                      "HasAns_f1": 100.0, "NoAns_exact": 100.0, "NoAns_f1": 100.0}


# ----------------------------------------------------------------------------- metrics

def test_normalisation_exact_match_and_f1_by_hand():
    assert squad_metrics.normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert squad_metrics.normalize_answer("An apple, a day; THE theatre.") == "apple day theatre"
    assert squad_metrics.normalize_answer("  Tromsø\t(Norway) ") == "tromsø norway"
    assert squad_metrics.exact_match("the Eiffel Tower.", "Eiffel tower") == 1.0
    assert squad_metrics.exact_match("Eiffel Towers", "Eiffel tower") == 0.0
    # "cat sat on mat" vs "cat on mat": 3 common; P = 3/4, R = 1, F1 = 1.5 / 1.75 = 6/7
    assert squad_metrics.f1("the cat sat on the mat", "a cat on a mat") == pytest.approx(6 / 7)
    # repeated tokens count min(occurrences): cat 1 + dog 1 = 2; P = R = 2/3
    assert squad_metrics.f1("cat cat dog", "cat dog dog") == pytest.approx(2 / 3)
    assert squad_metrics.f1("red", "blue") == 0.0
    assert squad_metrics.f1("", "") == 1.0 and squad_metrics.f1("The", "") == 1.0  # v2.0
    assert squad_metrics.f1("x", "") == 0.0 and squad_metrics.f1("", "x") == 0.0
    assert squad_metrics.f1("", "", version_2=False) == 0.0  # evaluate-v1.1.py


def test_squad_scores_v11_by_hand():
    examples = squad.load_squad("1.1", "validation", path=DEV_V1)
    predictions = {"5a1e1001": "48 square kilometres",  # EM 1, F1 1
                   # vs "university of tromsø" (3 tokens): P 3/5, R 1, F1 0.75; vs the long
                   # gold (5 tokens, 3 common) 0.6: the max is 0.75; EM 0
                   "5a1e1002": "the University of Tromsø in Norway",
                   # vs "children": P 1/2, R 1, F1 2/3; vs "children under twelve" 0.4
                   "5a1e1003": "young children"}
    scores = squad_metrics.squad_scores(examples, predictions)
    assert scores == pytest.approx({"exact_match": 100 / 3,
                                    "f1": 100 * (1 + 0.75 + 2 / 3) / 3})
    with pytest.raises(ValueError, match="no prediction for question id '5a1e1003'"):
        squad_metrics.squad_scores(examples, {k: predictions[k] for k in list(predictions)[:2]})
    with pytest.raises(ValueError, match="unknown question id 'zzz'"):
        squad_metrics.squad_scores(examples, dict(predictions, zzz=""))
    with pytest.raises(TypeError, match="'5a1e1001' is a list"):
        squad_metrics.squad_scores(examples, dict(predictions, **{"5a1e1001": ["48"]}))


def test_squad_scores_v20_by_hand():
    examples = squad.load_squad("2.0", "validation", path=DEV_V2)
    predictions = {"5a1e2001": "three rivers",  # EM 1, F1 1
                   "5a1e2002": "",  # impossible, abstained: EM 1, F1 1
                   "5a1e2003": "1950 onwards",  # vs "1950": F1 2/3; vs "since 1950" 0.5
                   "5a1e2004": "University of Tromsø",  # impossible, answered: 0, 0
                   "5a1e2005": "The harbour bell."}  # EM 1, F1 1
    scores = squad_metrics.squad_scores(examples, predictions)
    assert scores == pytest.approx({
        "exact_match": 60.0, "f1": 100 * (3 + 2 / 3) / 5,
        "HasAns_exact": 200 / 3, "HasAns_f1": 100 * (2 + 2 / 3) / 3,
        "NoAns_exact": 50.0, "NoAns_f1": 50.0})
    # v2.0 drops gold answers that normalise to "": gold ["The"] becomes [""]
    odd = [{"id": "o", "answers": [{"text": "The", "answer_start": 0}], "is_impossible": False}]
    assert squad_metrics.squad_scores(odd, {"o": ""}, version_2=True)["exact_match"] == 100.0
    assert squad_metrics.squad_scores(odd, {"o": ""}, version_2=False)["f1"] == 0.0
