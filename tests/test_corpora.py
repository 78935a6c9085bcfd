"""Corpora as TFDS datasets: embedded, the user's files, a locally prepared catalog dataset."""
import json

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from ssl_jax.data import corpora


def _data(**kw):
    base = dict(corpus="embedded", files=None, text_key="text", data_dir=None)
    base.update(kw)
    return ml_collections.ConfigDict(base)


def test_sentence_splitting():
    text = ("The quick fox jumps. It lands (softly)! Does it? Yes:\nit does, e.g. here.\n\n"
            "    x = 1\n    y = 2\n\nVersion 3.11 is out.")
    assert corpora.split_sentences(text) == [
        "The quick fox jumps.", "It lands (softly)!", "Does it?", "Yes: it does, e.g. here.",
        "x = 1 y = 2", "Version 3.11 is out."]


def test_embedded_corpus_is_real_english_split_into_documents():
    train = corpora.load_documents(_data(), "train")
    validation = corpora.load_documents(_data(), "validation")
    assert len(train) > 150 and len(validation) >= 8
    stats = corpora.corpus_stats(train)
    assert stats["characters"] > 300_000 and stats["sentences"] > 2000
    words = " ".join(s for d in train for s in d).lower().split()
    assert words.count("the") / len(words) > 0.03  # English, not code or noise
    train_text = {"\n".join(d) for d in train}
    assert not any("\n".join(d) in train_text for d in validation)  # held-out documents


def test_text_files_plain_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("First doc. It has two sentences.\n\n"
                                    "Second doc here. Short.\n")
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({"body": f"Doc {i}. Line two."})
                                                for i in range(3)) + "\n")
    plain = corpora.read_text_files(str(tmp_path / "*.txt"))
    assert plain == ["First doc.\nIt has two sentences.", "Second doc here.\nShort."]
    assert corpora.read_text_files(str(tmp_path / "*.jsonl"), "body")[0] == "Doc 0.\nLine two."
    config = _data(corpus="files", files=str(tmp_path / "*.jsonl"), text_key="body")
    train = corpora.load_documents(config, "train")
    validation = corpora.load_documents(config, "validation")
    assert len(train) + len(validation) == 3 and len(validation) == 1
    assert train[0] == ["Doc 0.", "Line two."]


def test_changed_files_are_prepared_again(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("One. Two.\n\nThree. Four.\n")
    config = _data(corpus="files", files=str(path))
    before = corpora.load_documents(config, "train")
    path.write_text("Five. Six.\n\nSeven. Eight.\n\nNine. Ten.\n")
    after = corpora.load_documents(config, "train")
    assert before != after and after[0] == ["Five.", "Six."]


class LocalNews(tfds.core.GeneratorBasedBuilder):
    """A stand-in for a catalog text dataset prepared on this machine."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
            {"article": tfds.features.Text(), "id": np.int32}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(5), "test": self._generate_examples(2)}

    def _generate_examples(self, n):
        for i in range(n):
            yield i, {"article": f"Story {i} begins. It ends well.\n\nA new paragraph.", "id": i}


def test_catalog_dataset_by_name_when_prepared(tmp_path):
    LocalNews(data_dir=str(tmp_path)).download_and_prepare(file_format="array_record")
    config = _data(corpus="local_news", data_dir=str(tmp_path), text_key="article")
    docs = corpora.load_documents(config, "test")
    assert sorted(d[0] for d in docs) == ["Story 0 begins.", "Story 1 begins."]
    assert docs[0][1:] == ["It ends well.", "A new paragraph."]
    with pytest.raises(ValueError, match="no feature 'text'"):
        corpora.load_documents(_data(corpus="local_news", data_dir=str(tmp_path)), "test")


def test_missing_and_bad_sources_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match=r"\(not 'embedded', not 'files'\): no TFDS dataset "
                                         r"'wikipedia_not_here' with split 'train' is prepared"):
        corpora.load_documents(_data(corpus="wikipedia_not_here", data_dir=str(tmp_path)), "train")
    with pytest.raises(FileNotFoundError, match="matches no file"):
        corpora.load_documents(_data(corpus="files", files=str(tmp_path / "none*.txt")), "train")
    with pytest.raises(ValueError, match="needs config.data.files"):
        corpora.load_documents(_data(corpus="files"), "train")
    (tmp_path / "folder.txt").mkdir()  # a directory is not a corpus file
    with pytest.raises(FileNotFoundError, match="matches no file"):
        corpora.load_documents(_data(corpus="files", files=str(tmp_path / "*.txt")), "train")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "empty2.txt").write_text("")
    with pytest.raises(ValueError, match=r"empty.txt' is empty \(no text to train on\)"):
        corpora.read_text_files(str(tmp_path / "empty.txt"))
    with pytest.raises(ValueError, match="all 2 files it matches are empty"):
        corpora.load_documents(_data(corpus="files", files=str(tmp_path / "*.txt")), "train")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2 is not valid JSON"):
        corpora.read_text_files(str(tmp_path / "bad.jsonl"))
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match="cannot read corpus file"):
        corpora.read_text_files(str(tmp_path / "bin.txt"))
