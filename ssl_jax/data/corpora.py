"""Text corpora as TFDS datasets, read through TFDS data sources (no TensorFlow).

Three sources, chosen by `config.data.corpus`:
  * "embedded": the Python documentation topics that ship inside every CPython install
    (`pydoc_data.topics`): real human-written English, no download;
  * "files":    the user's text files (`config.data.files`, a glob): plain text with blank
    lines between documents, or jsonl with one document per line (`config.data.text_key`);
  * any other name: a TFDS catalog text dataset already prepared under `config.data.data_dir`.

Each document is stored one sentence per line; both of our builders write a `train` and a
held-out `validation` split (every 20th document, counted from the last), after
exact-duplicate documents are dropped.
"""
from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import logging
import os
import re
import sys
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from ssl_jax.files import read_text

VALIDATION_EVERY = 20
_HEADING_RULE = re.compile(r"^[*=\-~^]{3,}\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def default_data_dir() -> str:
    return os.environ.get("SSL_JAX_DATA_DIR",
                          os.path.join(os.path.expanduser("~"), ".cache", "ssl_jax", "tfds"))


def split_sentences(text: str) -> list[str]:
    """Paragraphs are separated by blank lines; an indented paragraph (code, grammar) is one
    unit; prose paragraphs are re-joined and split at sentence ends."""
    sentences = []
    for paragraph in re.split(r"\n\s*\n", text):
        lines = [line for line in paragraph.split("\n") if line.strip()]
        if not lines:
            continue
        if all(line.startswith((" ", "\t")) for line in lines):
            sentences.append(" ".join(line.strip() for line in lines))
            continue
        joined = " ".join(line.strip() for line in lines)
        sentences.extend(s.strip() for s in _SENTENCE_END.split(joined) if s.strip())
    return sentences


def pydoc_documents() -> list[str]:
    """The CPython documentation topics, one document per section, one sentence per line."""
    try:
        from pydoc_data import topics
    except ImportError as e:  # pragma: no cover - every CPython ships it
        raise RuntimeError("the embedded corpus needs pydoc_data, which ships with CPython") from e
    documents = []
    for name in sorted(topics.topics):
        lines = topics.topics[name].split("\n")
        sections, current = [], []
        for i, line in enumerate(lines):
            # A heading is a line followed by a rule of * = - ~ ^ characters.
            if i + 1 < len(lines) and _HEADING_RULE.match(lines[i + 1]) and line.strip():
                if current:
                    sections.append(current)
                current = [line]
            elif not _HEADING_RULE.match(line):
                current.append(line)
        if current:
            sections.append(current)
        for section in sections:
            sentences = split_sentences("\n".join(section[1:]))
            if len(sentences) < 2 and documents:  # a stub: fold into the previous section
                documents[-1] += "\n" + "\n".join([section[0].strip()] + sentences)
            elif sentences:
                documents.append("\n".join([section[0].strip()] + sentences))
    return documents


def jsonl_records(path: str, content: str) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) for each non-blank line of a jsonl file's `content`."""
    for n, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n} is not valid JSON: {e}") from e


def matched_files(pattern: str) -> list[str]:
    """The files (not directories) a config.data.files glob matches, sorted; an error when
    there are none, or when all of them are empty (a corpus with no text)."""
    paths = sorted(p for p in glob.glob(os.path.expanduser(pattern), recursive=True)
                   if os.path.isfile(p))
    if not paths:
        raise FileNotFoundError(f"config.data.files={pattern!r} matches no file")
    if all(os.path.getsize(p) == 0 for p in paths):
        what = f"{paths[0]!r} is" if len(paths) == 1 else f"all {len(paths)} files it matches are"
        raise ValueError(f"config.data.files={pattern!r}: {what} empty (no text to train on)")
    return paths


def read_text_files(pattern: str, text_key: str = "text") -> list[str]:
    """Documents from a glob of .txt (blank-line separated) or .jsonl files."""
    paths = matched_files(pattern)
    documents = []
    for path in paths:
        content = read_text(path, "corpus file")
        if path.endswith((".jsonl", ".json")):
            for n, record in jsonl_records(path, content):
                if not isinstance(record, dict) or not isinstance(record.get(text_key), str):
                    raise ValueError(f"{path}:{n} has no string field {text_key!r} "
                                     f"(set config.data.text_key)")
                documents.append(record[text_key])
        else:
            documents.extend(d for d in re.split(r"\n\s*\n\s*\n|\n\s*\n(?=\S)", content)
                             if d.strip())
    documents = ["\n".join(split_sentences(d)) for d in documents]
    return [d for d in documents if d]


def _split_indices(n: int) -> dict[str, list[int]]:
    validation = set(range(n - 1, -1, -VALIDATION_EVERY)) if n >= 2 else set()
    return {"train": [i for i in range(n) if i not in validation],
            "validation": sorted(validation)}


class _DocumentBuilder(tfds.core.GeneratorBasedBuilder):
    """Shared body: documents -> train/validation splits of {"text": one sentence per line}."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "first release", "1.1.0": "drops exact-duplicate documents"}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self,
                                     features=tfds.features.FeaturesDict({"text": tfds.features.Text()}))

    def _documents(self) -> list[str]:
        raise NotImplementedError

    def _source(self) -> str:
        return self.name

    def _split_generators(self, dl_manager):
        documents = list(dict.fromkeys(self._documents()))  # exact duplicates would leak
        if not documents:
            raise ValueError(f"corpus {self._source()} is empty: it holds no text")
        if len(documents) < 2:
            raise ValueError(f"corpus {self._source()} has 1 document; it needs at least 2 "
                             f"(one is held out for validation)")

        return {split: self._generate_examples(documents, indices)
                for split, indices in _split_indices(len(documents)).items()}

    def _generate_examples(self, documents, indices):
        for i in indices:
            yield i, {"text": documents[i]}


class PydocTopics(_DocumentBuilder):
    """The embedded default corpus (CPython's documentation topics)."""

    BUILDER_CONFIGS = [tfds.core.BuilderConfig(
        name=f"py{sys.version_info.major}{sys.version_info.minor}",
        description="pydoc_data.topics of this Python version")]

    def _documents(self) -> list[str]:
        return pydoc_documents()


@dataclasses.dataclass(eq=False)
class TextFilesConfig(tfds.core.BuilderConfig):
    pattern: str = ""
    text_key: str = "text"


class TextFiles(_DocumentBuilder):
    """The user's own text/jsonl files; the config name fingerprints their paths and sizes."""

    def _documents(self) -> list[str]:
        return read_text_files(self.builder_config.pattern, self.builder_config.text_key)

    def _source(self) -> str:
        return f"config.data.files={self.builder_config.pattern!r}"


def _fingerprint(pattern: str, text_key: str) -> str:
    paths = matched_files(pattern)
    h = hashlib.sha256(text_key.encode())
    for p in paths:
        if not os.access(p, os.R_OK):
            raise PermissionError(f"corpus file {p!r} is not readable")
        st = os.stat(p)
        h.update(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return "f" + h.hexdigest()[:16]


def _prepared(builder: tfds.core.DatasetBuilder) -> tfds.core.DatasetBuilder:
    """Prepares once (into data_dir); TFDS's chatter goes to stderr, stdout stays clean.
    Processes preparing at once (a multi-host run's, sweep workers) each write a temporary
    directory; the first to rename it into place wins, the others read that one."""
    if not builder.is_prepared():
        tfds.disable_progress_bar()
        absl_logger = logging.getLogger("absl")
        level = absl_logger.level
        absl_logger.setLevel(logging.ERROR)
        try:
            with contextlib.redirect_stdout(sys.stderr):
                builder.download_and_prepare(file_format="array_record")
        except FileExistsError:  # another process's preparation got there first
            if not builder.is_prepared():
                raise
        finally:
            absl_logger.setLevel(level)
    return builder


def corpus_id(data_config) -> str:
    """Names the exact corpus contents (for caches keyed by corpus)."""
    if data_config.corpus == "embedded":
        return f"pydoc_topics/{PydocTopics.BUILDER_CONFIGS[0].name}/{PydocTopics.VERSION}"
    if data_config.corpus == "files":
        return "text_files/" + _fingerprint(data_config.files, data_config.text_key)
    return f"tfds/{data_config.corpus}/{data_config.text_key}"


class Documents:
    """One split of a corpus as a random-access sequence: [i] -> document i's sentences (a
    list of str, empty for a record with no text). Reads one record at a time, so a worker
    can hold a whole corpus's split open and read any document of it (a random-next NSP
    segment). Picklable: a worker re-opens it from the data config."""

    def __init__(self, data_config, split: str):
        self.data_config, self.split = data_config, split
        self.corpus = data_config.corpus
        self.key = "text" if self.corpus in ("embedded", "files") else data_config.text_key
        self._source = _open_source(data_config, split)

    def __getstate__(self):
        return {"data_config": self.data_config, "split": self.split}

    def __setstate__(self, state):
        self.__init__(state["data_config"], state["split"])

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, i: int) -> list[str]:
        record = self._source[i]
        if self.key not in record:
            raise ValueError(f"TFDS dataset {self.corpus!r} has no feature {self.key!r}; it "
                             f"has {sorted(record)} (set config.data.text_key)")
        text = record_text(record[self.key])
        if self.corpus in ("embedded", "files"):
            return text.split("\n") if text else []
        return split_sentences(text)


def _open_source(data_config, split: str):
    corpus = data_config.corpus
    data_dir = data_config.get("data_dir") or default_data_dir()
    if corpus == "embedded":
        source = _prepared(PydocTopics(data_dir=data_dir, file_format="array_record"))
        return source.as_data_source(split=split)
    if corpus == "files":
        if not data_config.get("files"):
            raise ValueError("config.data.corpus='files' needs config.data.files (a glob)")
        name = _fingerprint(data_config.files, data_config.text_key)
        builder = TextFiles(config=TextFilesConfig(name=name, pattern=data_config.files,
                                                   text_key=data_config.text_key),
                            data_dir=data_dir, file_format="array_record")
        return _prepared(builder).as_data_source(split=split)
    return prepared_source(corpus, split, data_dir,
                           f"config.data.corpus={corpus!r} (not 'embedded', not 'files')",
                           " or set config.data.data_dir")


def load_documents(data_config, split: str) -> list[list[str]]:
    """Documents of one split that have text, each a list of sentences."""
    source = Documents(data_config, split)
    return [d for d in (source[i] for i in range(len(source))) if d]


def record_text(value) -> str:
    """A TFDS text feature as str (data sources return bytes)."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def prepared_source(name: str, split: str, data_dir: str, what: str, otherwise: str = ""):
    """The random-access TFDS data source of a dataset prepared under `data_dir` (no download,
    no TensorFlow). A missing dataset or split is a ValueError that starts with `what`, names
    both, gives the command that prepares it and ends with `otherwise` (the alternatives)."""
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as e:  # TFDS raises several types for "not prepared"/"unknown"/"bad split"
        first = str(e).splitlines()[0] if str(e) else ""
        raise ValueError(
            f"{what}: no TFDS dataset {name!r} with split {split!r} is prepared under "
            f"{data_dir!r} ({type(e).__name__}: {first}). Prepare it first (tfds build {name} "
            f"--data_dir {data_dir} --file_format array_record){otherwise}.") from None


def corpus_stats(documents: list[list[str]]) -> dict:
    return {"documents": len(documents),
            "sentences": int(sum(len(d) for d in documents)),
            "characters": int(np.sum([len(s) for d in documents for s in d]))}
