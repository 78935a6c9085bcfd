"""GLUE readers: the released TSV formats (fixtures), TFDS (stand-in builder, mock data)."""
import importlib
import math
import os
import shutil

import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.text import glue as tfds_glue

from ssl_jax.data import glue

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "glue")


def _dir(task):
    return os.path.join(FIXTURES, glue.GLUE_TASKS[task].dir_name)


# ----------------------------------------------------------------------------- the task table

def test_table_agrees_with_the_tfds_glue_builder():
    configs = {c.name: c for c in tfds_glue.Glue.BUILDER_CONFIGS}
    assert sorted(glue.GLUE_TASKS) == sorted(
        ["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"])
    for name, task in glue.GLUE_TASKS.items():
        config = configs[name]
        assert task.tfds_name == f"glue/{name}"
        assert task.label_names == (tuple(config.label_classes) if config.label_classes
                                    else None)
        assert [f for f in task.text_features if f] == list(config.text_features)
        assert task.dir_name == config.data_dir
        if name not in ("mrpc", "cola"):  # TFDS reads MRPC from other files, CoLA by position
            assert [c for c in task.text_columns if c] == list(config.text_features.values())
            assert task.label_column == config.label_column
    assert glue.GLUE_TASKS["mnli"].label_names == ("entailment", "neutral", "contradiction")
    assert glue.GLUE_TASKS["mnli"].eval_splits == ("validation_matched", "validation_mismatched")
    assert glue.GLUE_TASKS["mnli"].file_name("validation_mismatched") == "dev_mismatched.tsv"
    assert glue.GLUE_TASKS["mnli"].file_name("test_matched") == "test_matched.tsv"
    assert glue.GLUE_TASKS["cola"].metrics == ("mcc",)
    assert glue.GLUE_TASKS["qqp"].metrics == ("accuracy", "f1")
    assert glue.GLUE_TASKS["stsb"].metrics == ("pearson", "spearman")
    assert glue.GLUE_TASKS["stsb"].is_regression and glue.GLUE_TASKS["stsb"].label_names is None
    assert len(glue.GLUE_TASKS["mnli"].label_names) == 3
    assert glue.GLUE_TASKS["sst2"].text_features[1] is None
    assert glue.GLUE_TASKS["rte"].file_name("validation") == "dev.tsv"


# ----------------------------------------------------------------------------- released files

# task, split, number of rows, a row's idx, its text_a, text_b and label
CASES = [
    ("cola", "train", 8, 6, '"Leave now," she told him.', None, 1),
    ("cola", "train", 8, 1, "The children laughed the clown.", None, 0),
    ("cola", "validation", 5, 4, 'It was the teacher who said "no" to the plan.', None, 1),
    ("cola", "test", 5, 2, '"Why?" asked the boy.', None, -1),
    ("sst2", "train", 6, 5, 'a " comedy " that forgets to be funny ', None, 0),
    ("sst2", "validation", 6, 2, "an absorbing and unsettling psychological drama . ", None, 1),
    ("mrpc", "train", 5, 2, '"We are very pleased with the result," the minister said.',
     "The minister said he was very pleased with the result.", 1),
    ("mrpc", "validation", 5, 1, "The network will air the final episode in May.",
     "Ratings for the show dropped sharply last season.", 0),
    ("mrpc", "test", 2, 0, "The plant employs about 500 workers.",
     "About 500 people work at the plant.", -1),
    ("qqp", "train", 6, 2, 'What does "carpe diem" mean?',
     'What is the meaning of the phrase "carpe diem"?', 1),
    ("qqp", "validation", 5, 3, "Who will win the next World Cup?",
     "How many teams play in the World Cup?", 0),
    ("qqp", "test", 2, 1, 'What is the best way to learn "Python"?',
     "Is Java harder than Python?", -1),
    ("stsb", "train", 6, 1, "A woman is slicing an onion.", "A woman is cutting an onion.", 4.6),
    ("stsb", "validation", 5, 3, 'Storm "Ida" hits the coast', "Storm heads toward the coast",
     3.2),
    ("mnli", "train", 6, 2, '"Stay here," she said, and closed the door behind her.',
     "She was angry with him.", 1),
    ("mnli", "validation_matched", 5, 1, "Fewer than half of the offices reported on time.",
     "Every office reported on time.", 2),
    ("mnli", "validation_mismatched", 5, 1, "\"Ain't\" was once common in polite speech.",
     "Nobody has ever used the word ain't.", 2),
    ("qnli", "train", 5, 3, "How many moons does Mars have?",
     'Mars is often called the "Red Planet".', 1),
    ("qnli", "validation", 5, 0, "What is the capital of Kenya?",
     "Nairobi is the capital and largest city of Kenya.", 0),
    ("rte", "train", 5, 2, '"We will rebuild," the mayor told reporters after the flood.',
     "The mayor spoke to reporters.", 0),
    ("rte", "validation", 5, 3, "The museum's \"Night Watch\" exhibit opened to the public in "
     "March.", "The exhibit closed in March.", 1),
    ("wnli", "train", 5, 0, "The trophy doesn't fit into the suitcase because it is too large.",
     "The trophy is too large.", 1),  # WNLI's file label 1 is TFDS's class 1, entailment
    ("wnli", "validation", 5, 0, "The city councilmen refused the demonstrators a permit "
     "because they feared violence.", "The demonstrators feared violence.", 0),
]


@pytest.mark.parametrize("task,split,rows,idx,text_a,text_b,label", CASES)
def test_released_formats(task, split, rows, idx, text_a, text_b, label):
    examples = glue.load_glue(task, split, path=_dir(task))
    assert len(examples) == rows
    assert [e["idx"] for e in examples] == list(range(rows))
    assert examples[idx] == {"text_a": text_a, "text_b": text_b, "label": label, "idx": idx}
    for e in examples:
        assert isinstance(e["text_a"], str) and e["text_a"]
        assert (e["text_b"] is None) == (glue.GLUE_TASKS[task].text_features[1] is None)


def test_label_names_map_to_tfds_order():
    # MNLI's file says gold_label strings; TFDS order is entailment, neutral, contradiction.
    train = glue.load_glue("mnli", "train", path=_dir("mnli"))
    assert [e["label"] for e in train] == [0, 2, 1, 2, 1, 0]
    # RTE/QNLI names: entailment 0, not_entailment 1; CoLA/SST-2 file ids are TFDS ids.
    assert [e["label"] for e in glue.load_glue("rte", "validation", path=_dir("rte"))] == [
        0, 1, 0, 1, 0]
    assert [e["label"] for e in glue.load_glue("cola", "train", path=_dir("cola"))] == [
        1, 0, 1, 0, 1, 0, 1, 0]
    # STS-B: float scores; its test file has no score column, so NaN.
    scores = [e["label"] for e in glue.load_glue("stsb", "train", path=_dir("stsb"))]
    assert scores == [5.0, 4.6, 0.4, 4.2, 1.0, 0.8]
    test = glue.load_glue("stsb", "test", path=_dir("stsb"))
    assert len(test) == 2 and all(math.isnan(e["label"]) for e in test)


def test_quotes_are_literal_and_mrpc_byte_order_mark_is_dropped():
    with open(os.path.join(_dir("mrpc"), "train.tsv"), encoding="utf-8") as f:
        assert f.read(8) == "\ufeffQuality"  # as in the released MRPC files
    # A field that starts with a quote would swallow the following tabs under csv's default
    # quoting; every row above kept its own columns.
    sst2 = glue.load_glue("sst2", "validation", path=_dir("sst2"))
    assert sst2[4]["text_a"] == ('" the ring " is pretty much an english-language copy of the '
                                 'film that inspired it ')


def test_path_may_be_the_glue_data_directory(tmp_path):
    shutil.copytree(_dir("rte"), tmp_path / "RTE")
    assert (glue.load_glue("rte", "train", path=str(tmp_path))
            == glue.load_glue("rte", "train", path=_dir("rte")))


def _write(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join(line) + "\n" for line in lines), encoding="utf-8")
    return str(path.parent)


def test_bad_input_messages(tmp_path):
    with pytest.raises(ValueError, match=r"unknown GLUE task 'mnli_m'; expected one of \['cola'"):
        glue.load_glue("mnli_m", "train", path=FIXTURES)
    with pytest.raises(ValueError, match=r"'mnli' has no split 'validation'; expected one of "
                                         r"\['train', 'validation_matched'"):
        glue.load_glue("mnli", "validation", path=_dir("mnli"))
    with pytest.raises(FileNotFoundError, match=r"no file .*test.tsv.*glue_data/RTE/"):
        glue.load_glue("rte", "test", path=_dir("rte"))

    header = ("index", "sentence1", "sentence2", "label")
    bad_label = _write(tmp_path / "a" / "dev.tsv", [header, ("0", "A.", "B.", "maybe")])
    with pytest.raises(ValueError, match=r"dev.tsv:2: rte label 'maybe' is not one of "
                                         r"\['entailment', 'not_entailment'\] or an index 0..1"):
        glue.load_glue("rte", "validation", path=bad_label)
    bad_index = _write(tmp_path / "b" / "dev.tsv", [header, ("0", "A.", "B.", "2")])
    with pytest.raises(ValueError, match="wnli label '2' is not one of"):
        glue.load_glue("wnli", "validation", path=bad_index)
    short_row = _write(tmp_path / "c" / "dev.tsv", [header, ("0", "A.", "B.", "1"),
                                                    ("1", "A sentence without a pair.", "0")])
    with pytest.raises(ValueError, match=r"dev.tsv:3 has 3 tab-separated fields; the header "
                                         r".* has 4"):
        glue.load_glue("wnli", "validation", path=short_row)
    no_label = _write(tmp_path / "d" / "dev.tsv", [("index", "sentence1", "sentence2"),
                                                   ("0", "A.", "B.")])
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['label'\]; its header is"):
        glue.load_glue("rte", "validation", path=no_label)
    stsb = [("index", "genre", "filename", "year", "old_index", "source1", "source2",
             "sentence1", "sentence2", "score")]
    high = _write(tmp_path / "e" / "dev.tsv", stsb + [("0", "g", "f", "y", "1", "none", "none",
                                                       "A.", "B.", "5.5")])
    with pytest.raises(ValueError, match=r"stsb score '5.5' is not a number in \[0.0, 5.0\]"):
        glue.load_glue("stsb", "validation", path=high)
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "dev.tsv").write_text("")
    with pytest.raises(ValueError, match="is empty: it has no header line"):
        glue.load_glue("qnli", "validation", path=str(tmp_path / "f"))
    header_only = _write(tmp_path / "g" / "dev.tsv", [("index", "question", "sentence", "label")])
    with pytest.raises(ValueError, match=r"dev.tsv' \(qnli validation\) holds no example"):
        glue.load_glue("qnli", "validation", path=header_only)


# ----------------------------------------------------------------------------- TFDS

class GlueStandIn(tfds_glue.Glue, skip_registration=True):
    """TFDS's own GLUE builder (its TSV parser) run on the fixture files instead of downloads."""

    name = "glue"

    def _split_generators(self, dl_manager):
        task = glue.GLUE_TASKS[self.builder_config.name]
        kind = {"train": "train", "validation": "dev", "validation_matched": "dev",
                "validation_mismatched": "dev", "test": "test"}
        return {split: self._generate_examples(os.path.join(_dir(task.name), name), kind[split])
                for split, name in task.files
                if os.path.isfile(os.path.join(_dir(task.name), name))}


def _same(a, b):
    return (a["text_a"], a["text_b"], a["idx"]) == (b["text_a"], b["text_b"], b["idx"]) and (
        a["label"] == b["label"] or (math.isnan(a["label"]) and math.isnan(b["label"])))


@pytest.mark.parametrize("task", ["cola", "sst2", "stsb", "mnli", "wnli"])
def test_tfds_prepared_by_tfds_glue_parser_matches_released_reader(task, tmp_path):
    tfds.disable_progress_bar()
    GlueStandIn(config=task, data_dir=str(tmp_path)).download_and_prepare(
        file_format="array_record")
    splits = set(GlueStandIn(config=task, data_dir=str(tmp_path)).info.splits)
    assert splits == {s for s, name in glue.GLUE_TASKS[task].files
                      if os.path.isfile(os.path.join(_dir(task), name))}
    assert len(splits) >= 2
    for split in splits:
        from_tfds = glue.load_glue(task, split, data_dir=str(tmp_path))
        from_files = glue.load_glue(task, split, path=_dir(task))
        assert len(from_tfds) == len(from_files) > 0
        assert all(_same(a, b) for a, b in zip(from_tfds, from_files)), (task, split)
        assert all(isinstance(e["text_a"], str) for e in from_tfds)  # bytes decoded


def test_tfds_not_prepared(tmp_path):
    with pytest.raises(ValueError, match=r"no TFDS dataset 'glue/rte' with split 'validation' is "
                                         r"prepared under .*Prepare it first \(tfds build "
                                         r"glue/rte --data_dir"):
        glue.load_glue("rte", "validation", data_dir=str(tmp_path))


def test_tfds_mock_data():
    importlib.import_module("tensorflow_datasets.text.glue")  # registers glue (lazy imports)
    with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE):
        for task, split, (feature_a, feature_b) in [
                ("mrpc", "validation", ("sentence1", "sentence2")),
                ("mnli", "validation_mismatched", ("premise", "hypothesis"))]:
            source = tfds.data_source(f"glue/{task}", split=split)
            records = sorted((source[i] for i in range(len(source))), key=lambda r: r["idx"])
            examples = glue.load_glue(task, split)
            assert examples == [{"text_a": str(r[feature_a]), "text_b": str(r[feature_b]),
                                 "label": int(r["label"]), "idx": int(r["idx"])}
                                for r in records]
            labels = glue.GLUE_TASKS[task].label_names
            assert all(0 <= e["label"] < len(labels) for e in examples)
        with pytest.raises(ValueError, match="'mrpc' has no split 'validation_matched'"):
            glue.load_glue("mrpc", "validation_matched")  # mock data would serve any split
