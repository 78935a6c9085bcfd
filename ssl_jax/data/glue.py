"""GLUE tasks: the released TSV files (GLUE's `glue_data/<Task>/`) or TFDS's `glue/<task>`.

Every reader yields the same examples, `{"text_a", "text_b", "label", "idx"}`, with labels as
indices into TFDS's ClassLabel names (so a model fine-tuned on either source agrees), a float
score for STS-B, and -1 (NaN for STS-B) where a test split has no label. `idx` is the row
number in the released file, as TFDS numbers it (except TFDS's MRPC train/validation, which it
builds from msr_paraphrase_train.txt and numbers by row there).

    load_glue("rte", "validation", path="glue_data/RTE")   # the released files
    load_glue("mnli", "validation_matched")                # TFDS, prepared under data_dir
"""
from __future__ import annotations

import csv
import dataclasses
import math
import os

import numpy as np

from ssl_jax.data import corpora

STSB_SCORE_RANGE = (0.0, 5.0)


@dataclasses.dataclass(frozen=True)
class GlueTask:
    """What one GLUE task is, where its data lives, and how it is scored."""

    name: str                                  # "mnli"
    dir_name: str                              # "MNLI": glue_data/MNLI/ of GLUE's script
    text_features: tuple[str, str | None]      # TFDS feature names; None: single sentence
    text_columns: tuple[str, str | None]       # the released TSV header's column names
    label_column: str                          # absent from test files
    label_names: tuple[str, ...] | None        # TFDS ClassLabel order; None: regression
    metrics: tuple[str, ...]                   # names for ssl_jax.eval.task_metrics
    eval_splits: tuple[str, ...]
    files: tuple[tuple[str, str], ...]         # (split, released file name)
    headerless_columns: tuple[str, ...] = ()   # columns of header-less non-test files (CoLA)

    @property
    def tfds_name(self) -> str:
        return f"glue/{self.name}"

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(split for split, _ in self.files)

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    def file_name(self, split: str) -> str:
        return dict(self.files)[split]


def _files(*splits: str) -> tuple[tuple[str, str], ...]:
    names = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv",
             "validation_matched": "dev_matched.tsv", "validation_mismatched": "dev_mismatched.tsv",
             "test_matched": "test_matched.tsv", "test_mismatched": "test_mismatched.tsv"}
    return tuple((split, names[split]) for split in splits)


_STANDARD = _files("train", "validation", "test")
_ENTAILMENT = ("entailment", "not_entailment")

GLUE_TASKS: dict[str, GlueTask] = {t.name: t for t in (
    GlueTask("cola", "CoLA", ("sentence", None), ("sentence", None), "label",
             ("unacceptable", "acceptable"), ("mcc",), ("validation",), _STANDARD,
             headerless_columns=("source", "label", "original_label", "sentence")),
    GlueTask("sst2", "SST-2", ("sentence", None), ("sentence", None), "label",
             ("negative", "positive"), ("accuracy",), ("validation",), _STANDARD),
    GlueTask("mrpc", "MRPC", ("sentence1", "sentence2"), ("#1 String", "#2 String"), "Quality",
             ("not_equivalent", "equivalent"), ("accuracy", "f1"), ("validation",), _STANDARD),
    GlueTask("qqp", "QQP", ("question1", "question2"), ("question1", "question2"),
             "is_duplicate", ("not_duplicate", "duplicate"), ("accuracy", "f1"),
             ("validation",), _STANDARD),
    GlueTask("stsb", "STS-B", ("sentence1", "sentence2"), ("sentence1", "sentence2"), "score",
             None, ("pearson", "spearman"), ("validation",), _STANDARD),
    GlueTask("mnli", "MNLI", ("premise", "hypothesis"), ("sentence1", "sentence2"), "gold_label",
             ("entailment", "neutral", "contradiction"), ("accuracy",),
             ("validation_matched", "validation_mismatched"),
             _files("train", "validation_matched", "validation_mismatched", "test_matched",
                    "test_mismatched")),
    GlueTask("qnli", "QNLI", ("question", "sentence"), ("question", "sentence"), "label",
             _ENTAILMENT, ("accuracy",), ("validation",), _STANDARD),
    GlueTask("rte", "RTE", ("sentence1", "sentence2"), ("sentence1", "sentence2"), "label",
             _ENTAILMENT, ("accuracy",), ("validation",), _STANDARD),
    GlueTask("wnli", "WNLI", ("sentence1", "sentence2"), ("sentence1", "sentence2"), "label",
             ("not_entailment", "entailment"), ("accuracy",), ("validation",), _STANDARD),
)}


def get_task(task: str) -> GlueTask:
    """The table entry of `task` ("mnli"), or a ValueError listing the known tasks."""
    if task not in GLUE_TASKS:
        raise ValueError(f"unknown GLUE task {task!r}; expected one of {sorted(GLUE_TASKS)}")
    return GLUE_TASKS[task]


def _check_split(task: GlueTask, split: str) -> None:
    if split not in task.splits:
        raise ValueError(f"GLUE task {task.name!r} has no split {split!r}; expected one of "
                         f"{list(task.splits)}")


def _no_label(task: GlueTask) -> int | float:
    return math.nan if task.is_regression else -1


def parse_label(task: GlueTask, value: str, where: str) -> int | float:
    """A released label as TFDS stores it: a class index (from a name or an index) or a score."""
    if task.is_regression:
        low, high = STSB_SCORE_RANGE
        try:
            score = float(value)
        except ValueError:
            score = math.nan
        if not low <= score <= high:
            raise ValueError(f"{where}: {task.name} score {value!r} is not a number in "
                             f"[{low}, {high}]")
        return score
    if value in task.label_names:
        return task.label_names.index(value)
    if value.isdigit() and int(value) < len(task.label_names):
        return int(value)
    raise ValueError(f"{where}: {task.name} label {value!r} is not one of {list(task.label_names)} "
                     f"or an index 0..{len(task.label_names) - 1}")


# ----------------------------------------------------------------------------- released files

def task_file(task: GlueTask, split: str, path: str) -> str:
    """The released file of `split` in `path` (the task's directory, or glue_data/ above it)."""
    name = task.file_name(split)
    candidates = [os.path.join(path, name), os.path.join(path, task.dir_name, name)]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"GLUE {task.name} {split}: no file {candidates[0]!r} or "
                            f"{candidates[1]!r}; pass the glue_data/{task.dir_name}/ directory "
                            f"made by GLUE's download script")


def _tsv_rows(file: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank line; quotes are literal (csv.QUOTE_NONE) and a
    UTF-8 byte-order mark (MRPC's files start with one) is dropped."""
    try:
        with open(file, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read GLUE file {file!r}: {e}") from e
    return [(n, row) for n, row in enumerate(rows, 1) if row]


def _header(task: GlueTask, split: str, file: str,
            rows: list[tuple[int, list[str]]]) -> tuple[list[str], list[tuple[int, list[str]]]]:
    if task.headerless_columns and not split.startswith("test"):
        return list(task.headerless_columns), rows
    if not rows:
        raise ValueError(f"GLUE file {file!r} is empty: it has no header line")
    return rows[0][1], rows[1:]


def read_tsv(task: GlueTask, split: str, file: str) -> list[dict]:
    """The examples of one released GLUE file, in file order."""
    header, rows = _header(task, split, file, _tsv_rows(file))
    has_label = task.label_column in header
    needed = [c for c in task.text_columns if c is not None]
    needed += [] if split.startswith("test") else [task.label_column]
    missing = [c for c in needed if c not in header]
    if missing:
        raise ValueError(f"GLUE file {file!r} ({task.name} {split}) lacks the column(s) "
                         f"{missing}; its header is {header}")
    column = {name: i for i, name in enumerate(header)}
    examples = []
    for idx, (line, row) in enumerate(rows):
        where = f"{file}:{line}"
        if len(row) != len(header):
            raise ValueError(f"{where} has {len(row)} tab-separated fields; the header "
                             f"{header} has {len(header)}")
        text_a, text_b = (row[column[c]] if c is not None else None for c in task.text_columns)
        label = (parse_label(task, row[column[task.label_column]], where) if has_label
                 else _no_label(task))
        examples.append({"text_a": text_a, "text_b": text_b, "label": label, "idx": idx})
    if not examples:
        raise ValueError(f"GLUE file {file!r} ({task.name} {split}) holds no example")
    return examples


# ----------------------------------------------------------------------------- TFDS


def _tfds_source(task: GlueTask, split: str, data_dir: str):
    return corpora.prepared_source(
        task.tfds_name, split, data_dir, f"GLUE {task.name}",
        f", pass data_dir, or pass path= the released glue_data/{task.dir_name}/ directory")


def _from_record(task: GlueTask, record: dict) -> dict:
    features = [f for f in task.text_features if f is not None] + ["label", "idx"]
    missing = [f for f in features if f not in record]
    if missing:
        raise ValueError(f"TFDS dataset {task.tfds_name!r} has no feature(s) {missing}; it has "
                         f"{sorted(record)}")
    feature_a, feature_b = task.text_features
    if task.is_regression:
        # TFDS stores scores as float32 and -1 for "no score"; a float32's shortest decimal
        # is the released score ("4.600" -> 4.6, as read from the TSV).
        label = float(str(np.float32(record["label"])))
        label = math.nan if label == -1.0 else label
    else:
        label = int(record["label"])
    return {"text_a": corpora.record_text(record[feature_a]),
            "text_b": None if feature_b is None else corpora.record_text(record[feature_b]),
            "label": label, "idx": int(record["idx"])}


def read_tfds(task: GlueTask, split: str, data_dir: str) -> list[dict]:
    """The examples of a locally prepared TFDS GLUE split, in `idx` order (TFDS shuffles)."""
    source = _tfds_source(task, split, data_dir)
    examples = [_from_record(task, source[i]) for i in range(len(source))]
    return sorted(examples, key=lambda e: e["idx"])


def load_glue(task: str, split: str, path: str | None = None,
              data_dir: str | None = None) -> list[dict]:
    """One split of a GLUE task: from the released TSV files in `path` if given, else TFDS.

    Each example is {"text_a": str, "text_b": str | None, "label": int | float, "idx": int}.
    """
    glue_task = get_task(task)
    _check_split(glue_task, split)
    if path is not None:
        return read_tsv(glue_task, split, task_file(glue_task, split, path))
    return read_tfds(glue_task, split, data_dir or corpora.default_data_dir())
