"""A fine-tuned model's predictions in each benchmark's submission format.

  GLUE        <Task>.tsv, header `index<TAB>prediction`, one row per row of the split's file
              in file order, named as the GLUE server wants (MNLI-m.tsv / MNLI-mm.tsv for
              matched / mismatched); labels as the server wants them: MNLI, QNLI and RTE by
              name, CoLA, SST-2, MRPC, QQP and WNLI by their 0/1 index, STS-B a score clipped
              to [0, 5]
  SQuAD       predictions.json {question id: answer text}; v2.0 also null_odds.json {question
              id: null score - best span score} (the official evaluate-v2.0.py's na_prob file)
  CoNLL-2003  predictions.txt: `word gold predicted` per token, a blank line after each
              sentence, `-DOCSTART- O O` + a blank line where the released file starts a
              document (the layout conlleval reads)
  others      predictions.tsv, `index<TAB>prediction` with the task's label names

Each writer takes the source (ssl_jax/data/finetune.py) and the model's predict() outputs
in eval feature order, and returns {file name: text}.
"""
from __future__ import annotations

import json

import numpy as np

from ssl_jax.data import conll, glue, squad
from ssl_jax.data.finetune import ConllSource, GlueSource, PairSource, Source, SquadSource

GLUE_FILES = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qqp": "QQP", "stsb": "STS-B",
              "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}
MNLI_FILES = {"matched": "MNLI-m", "mismatched": "MNLI-mm"}
GLUE_NAMED_LABELS = ("mnli", "qnli", "rte")  # the server wants label names; others 0/1
NO_SPAN_ODDS = 1e9  # null_odds of a question with no valid span (its prediction is "")


def submission_files(source: Source, outputs: dict[str, np.ndarray], *,
                     data_path: str | None = None, split: str = "test") -> dict[str, str]:
    """{file name: text} of `source`'s eval split; `data_path`: the released files (CoNLL's
    document starts are read from there)."""
    if isinstance(source, GlueSource):
        return glue_files(source, outputs["prediction"])
    if isinstance(source, PairSource):
        return {"predictions.tsv": _tsv(source, source.evals[next(iter(source.evals))],
                                        outputs["prediction"])}
    if isinstance(source, ConllSource):
        starts = (conll.document_starts(conll.split_file(split, data_path))
                  if data_path else set())
        return {"predictions.txt": conll_text(source, outputs, starts)}
    if isinstance(source, SquadSource):
        return squad_files(source, outputs)
    raise TypeError(f"no submission format for the fine-tuning source {type(source).__name__}")


def glue_file_name(task: str, split: str) -> str:
    """The GLUE server's file name of a task's predictions on `split` (test or dev)."""
    if task == "mnli":
        return MNLI_FILES[split.rsplit("_", 1)[1]] + ".tsv"
    return GLUE_FILES[task] + ".tsv"


def _label_text(source: PairSource, prediction, named: bool) -> str:
    if source.regression:
        low, high = glue.STSB_SCORE_RANGE
        return f"{float(np.clip(prediction, low, high)):.3f}"
    return source.label_names[int(prediction)] if named else str(int(prediction))


def _tsv(source: PairSource, examples: list[dict], predictions: np.ndarray,
         named: bool = True) -> str:
    rows = ["index\tprediction"] + [f"{e.get('idx', n)}\t{_label_text(source, p, named)}"
                                    for n, (e, p) in enumerate(zip(examples, predictions))]
    return "\n".join(rows) + "\n"


def glue_files(source: GlueSource, predictions: np.ndarray) -> dict[str, str]:
    """One TSV per eval split (MNLI: matched and mismatched), rows in the file's order."""
    task = source.name.split("/", 1)[1]
    files, start = {}, 0
    for split, examples in source.evals.items():
        files[glue_file_name(task, split)] = _tsv(
            source, examples, predictions[start:start + len(examples)],
            named=task in GLUE_NAMED_LABELS)
        start += len(examples)
    if start != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {start} examples")
    return files


def conll_text(source: ConllSource, outputs: dict[str, np.ndarray],
               document_starts: set[int] = frozenset()) -> str:
    """CoNLL column text of every eval sentence: word, gold tag, predicted tag."""
    true, pred = source.decode_tags(outputs)
    lines = []
    for n, (sentence, gold, got) in enumerate(zip(source.eval, true, pred)):
        if n in document_starts:
            lines += ["-DOCSTART- O O", ""]
        lines += [f"{w} {g} {p}" for w, g, p in zip(sentence["words"], gold, got)] + [""]
    return "\n".join(lines) + "\n"


def squad_files(source: SquadSource, outputs: dict[str, np.ndarray]) -> dict[str, str]:
    """predictions.json (+ null_odds.json for v2.0), decoded as the run's eval decodes."""
    ft = source.ft
    predictions, nbests = squad.decode(
        source.eval, source.eval_meta, outputs["start_logits"], outputs["end_logits"],
        n_best=ft.n_best, max_answer_len=ft.max_answer_len, version_2=source.version_2,
        null_score_diff_threshold=ft.null_score_diff_threshold, return_nbest=True)
    files = {"predictions.json": json.dumps(predictions, indent=2, ensure_ascii=False) + "\n"}
    if source.version_2:
        odds = {}
        for qid, nbest in nbests.items():
            null = next(c["score"] for c in nbest if c["char_start"] == -1)
            spans = [c["score"] for c in nbest if c["char_start"] != -1]
            odds[qid] = null - spans[0] if spans else NO_SPAN_ODDS
        files["null_odds.json"] = json.dumps(odds, indent=2) + "\n"
    return files
