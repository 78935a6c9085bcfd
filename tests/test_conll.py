"""CoNLL-2003: the released text format, TFDS (stand-in builder), word <-> sub-word alignment."""
import os
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core.dataset_builders.conll import conll_dataset_builder_utils as tfds_tags
from tensorflow_datasets.text.conll2003 import conll2003 as tfds_conll2003

from ssl_jax.data import conll
from ssl_jax.data.tokenizer import load_vocab

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "conll2003")


def test_tag_sets_are_tfds_class_label_orders():
    assert conll.NER_TAGS == tfds_tags.NER_TAGS and len(conll.NER_TAGS) == 9
    assert conll.POS_TAGS == tfds_tags.POS_TAGS and len(conll.POS_TAGS) == 47
    assert conll.CHUNK_TAGS == tfds_tags.CHUNK_TAGS


# ----------------------------------------------------------------------------- files

def test_read_released_files():
    train = conll.load_conll2003("train", path=FIXTURES)
    assert len(train) == 5  # two documents; -DOCSTART- lines are not sentences
    assert train[0] == {
        "words": ["Germany", "beat", "Brazil", "2-1", "in", "Rio", "de", "Janeiro", "on",
                  "Sunday", "."],
        "pos": ["NNP", "VBD", "NNP", "CD", "IN", "NNP", "NNP", "NNP", "IN", "NNP", "."],
        "chunk": ["B-NP", "B-VP", "B-NP", "I-NP", "B-PP", "B-NP", "I-NP", "I-NP", "B-PP",
                  "B-NP", "O"],
        "ner": ["B-LOC", "O", "B-LOC", "O", "O", "B-LOC", "I-LOC", "I-LOC", "O", "O", "O"]}
    assert train[2]["words"] == ["LONDON", "1996-08-30"]
    quotes = train[3]
    assert quotes["words"][9:12] == ['"', "strong", '"'] and quotes["pos"][9] == '"'
    assert quotes["ner"][2:5] == ["B-ORG", "I-ORG", "I-ORG"]  # Reuters Holdings Plc
    assert train[4]["ner"][3:6] == ["B-MISC", "I-MISC", "I-MISC"]  # English Premier League
    assert [len(s["words"]) for s in conll.load_conll2003("validation", path=FIXTURES)] == [
        5, 2, 14]
    test = conll.load_conll2003("test", path=FIXTURES)  # its last line has no blank after it
    assert [len(s["words"]) for s in test] == [6, 2, 17]
    assert test[2]["words"][-5:] == ["Asian", "Football", "Confederation", "said", "."]
    for sentence in train + test:
        assert len({len(v) for v in sentence.values()}) == 1


def test_original_eng_file_names(tmp_path):
    for released, original in [("train.txt", "eng.train"), ("valid.txt", "eng.testa"),
                               ("test.txt", "eng.testb")]:
        shutil.copy(os.path.join(FIXTURES, released), tmp_path / original)
    for split in conll.SPLITS:
        assert (conll.load_conll2003(split, path=str(tmp_path))
                == conll.load_conll2003(split, path=FIXTURES))


def test_bad_input_messages(tmp_path):
    bad = tmp_path / "train.txt"
    bad.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP\n")
    with pytest.raises(ValueError, match=r"train.txt:4: expected 4 space-separated fields "
                                         r"\(word POS chunk NER\), found 3: 'rejects VBZ B-VP'"):
        conll.read_conll(str(bad))
    bad.write_text("EU NNP B-NP B-ORG\n\nPeter NNP B-NP B-PERSON\n")
    with pytest.raises(ValueError, match=r"train.txt:3: unknown ner tag 'B-PERSON'; CoNLL-2003 "
                                         r"ner tags are \['O', 'B-PER'"):
        conll.read_conll(str(bad))
    bad.write_text("-DOCSTART- -X- -X- O\n\n")
    with pytest.raises(ValueError, match="train.txt' holds no sentence"):
        conll.read_conll(str(bad))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        conll.read_conll(str(tmp_path / "none.txt"))
    with pytest.raises(FileNotFoundError, match=r"valid.txt'? nor .*eng.testa"):
        conll.load_conll2003("validation", path=str(tmp_path))
    with pytest.raises(ValueError, match=r"no split 'dev'; expected one of \['train', "
                                         r"'validation', 'test'\]"):
        conll.load_conll2003("dev", path=FIXTURES)


# ----------------------------------------------------------------------------- TFDS

class Conll2003StandIn(tfds_conll2003.Conll2003, skip_registration=True):
    """TFDS's own conll2003 builder (its CoNLL parser) run on the fixture files."""

    name = "conll2003"

    def _info(self):  # the packaged metadata files live beside TFDS's module, not this one
        return tfds.core.DatasetInfo(builder=self, features=self.builder_config.features_dict)

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(os.path.join(FIXTURES, name))
                for split, name in [("train", "train.txt"), ("dev", "valid.txt"),
                                    ("test", "test.txt")]}


def test_tfds_prepared_by_tfds_conll_parser_matches_released_reader(tmp_path):
    tfds.disable_progress_bar()
    Conll2003StandIn(data_dir=str(tmp_path)).download_and_prepare(file_format="array_record")
    # TFDS's reader yields an empty example at the end of a file ending in a blank line
    assert len(tfds.data_source("conll2003", split="train", data_dir=str(tmp_path))) == 6
    for split in conll.SPLITS:
        from_tfds = conll.load_conll2003(split, data_dir=str(tmp_path))
        from_files = conll.load_conll2003(split, path=FIXTURES)
        assert len(from_tfds) == len(from_files)  # the empty one is dropped
        key = lambda s: s["words"]  # noqa: E731 - TFDS shuffles sentences
        assert sorted(from_tfds, key=key) == sorted(from_files, key=key)
        assert all(isinstance(w, str) for s in from_tfds for w in s["words"])
    with pytest.raises(ValueError, match=r"split 'dev' is prepared under .*Prepare it first "
                                         r"\(tfds build conll2003"):
        conll.load_conll2003("validation", data_dir=str(tmp_path / "empty"))


# ----------------------------------------------------------------------------- alignment

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "play", "##ing", "u", "s", ".", "new",
         "york", "the"]


@pytest.fixture(scope="module")
def wordpiece(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("".join(t + "\n" for t in VOCAB))
    return load_vocab(str(path))


def _ids(*tokens):
    return [VOCAB.index(t) for t in tokens]


def test_label_on_first_sub_word_only(wordpiece):
    words = ["Playing", "in", "U.S.", "\x00", "York"]  # "in" is not in the vocabulary
    labels = [0, 0, 5, 0, 6]
    assert conll.word_pieces(wordpiece, words) == [
        _ids("play", "##ing"), _ids("[UNK]"), _ids("u", ".", "s", "."), _ids("[UNK]"),
        _ids("york")]  # "\x00" normalises to nothing: [UNK] keeps its place
    encoded = conll.encode_words(wordpiece, words, labels, max_seq_len=14)
    assert encoded["input_ids"].tolist() == _ids(
        "[CLS]", "play", "##ing", "[UNK]", "u", ".", "s", ".", "[UNK]", "york", "[SEP]",
        "[PAD]", "[PAD]", "[PAD]")
    #                                     CLS play ing  in  u  .  s  .  \0 york SEP pad
    assert encoded["labels"].tolist() == [-1, 0, -1, 0, 5, -1, -1, -1, 0, 6, -1, -1, -1, -1]
    assert encoded["input_mask"].tolist() == [1] * 11 + [0] * 3
    assert encoded["segment_ids"].tolist() == [0] * 14
    assert encoded["first_token"].tolist() == [1, 3, 4, 8, 9] + [-1] * 9
    assert int(encoded["num_words"]) == 5
    assert all(v.dtype == np.int32 for v in encoded.values())


def test_truncation_keeps_whole_words_and_fallback_round_trip(wordpiece):
    words, labels = ["Playing", "in", "U.S.", "York"], [1, 2, 5, 6]
    # 7 tokens: [CLS] play ##ing [UNK] [SEP] fits; U.S. (4 pieces) does not, nor after it York
    encoded = conll.encode_words(wordpiece, words, labels, max_seq_len=7)
    assert encoded["input_ids"].tolist() == _ids("[CLS]", "play", "##ing", "[UNK]", "[SEP]",
                                                 "[PAD]", "[PAD]")
    assert encoded["labels"].tolist() == [-1, 1, -1, 2, -1, -1, -1]
    assert int(encoded["num_words"]) == 2
    # a model that predicts the gold label on every first sub-word (and junk elsewhere)
    token_predictions = np.where(encoded["labels"] >= 0, encoded["labels"], 8)
    assert conll.word_predictions(token_predictions, encoded, len(words), fallback=0) == [
        1, 2, 0, 0]
    full = conll.encode_words(wordpiece, words, labels, max_seq_len=16)
    predictions = np.where(full["labels"] >= 0, full["labels"], 8)
    assert conll.word_predictions(predictions, full, len(words), fallback=0) == labels
    only_specials = conll.encode_words(wordpiece, words, labels, max_seq_len=2)
    assert only_specials["input_ids"].tolist() == _ids("[CLS]", "[SEP]")
    assert conll.word_predictions(np.zeros(2, int), only_specials, 4, fallback=3) == [3] * 4


def test_alignment_errors(wordpiece):
    with pytest.raises(ValueError, match="3 words but 2 labels"):
        conll.encode_words(wordpiece, ["a", "b", "c"], [0, 0], 8)
    with pytest.raises(ValueError, match="max_seq_len=1 leaves no room"):
        conll.encode_words(wordpiece, ["a"], [0], 1)
    with pytest.raises(ValueError, match="class ids >= 0; found -1"):
        conll.encode_words(wordpiece, ["a"], [-1], 8)
    encoded = conll.encode_words(wordpiece, ["the", "york"], [0, 5], 8)
    with pytest.raises(ValueError, match=r"shape \(7,\); expected one prediction per token, "
                                         r"shape \(8,\)"):
        conll.word_predictions(np.zeros(7, int), encoded, 2, fallback=0)
    with pytest.raises(ValueError, match="num_words=1 but the encoding kept 2 words"):
        conll.word_predictions(np.zeros(8, int), encoded, 1, fallback=0)
