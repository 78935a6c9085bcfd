"""ssl_jax.predict: each benchmark's submission files from a tiny fine-tuned run, re-read into
the official metrics (GLUE metrics on the TSV, seqeval on the CoNLL file, SQuAD's evaluation
on predictions.json) equal to the run's own eval; bad input fails with one line. Also the
tiny MRPC run through `interop.export` and `load_pretrained` (here, so that the session's run
is built by one test worker)."""
import csv
import json
import os

import jax
import numpy as np
import pytest

from ssl_jax import predict
from ssl_jax.data import conll, glue, squad
from ssl_jax.eval import squad_metrics, task_metrics
from ssl_jax.interop import export
from ssl_jax.interop.pretrained import load_pretrained
from tests.conftest import finetuned, run_main
from tests.test_finetune import FIXTURES


def _predicted(capsys, workdir, output, split: str | None = None):
    """predict.main on `workdir` into `output` (its default split, or `split`), which must
    succeed."""
    done = run_main(capsys, predict.main, "--model", workdir, "--output", output,
                    *(["--split", split] if split else []))
    assert done.returncode == 0, done.stderr
    return done


def read_submission(path: str) -> list[list[str]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert rows[0] == ["index", "prediction"]
    return rows[1:]


def same_metrics(metrics: dict, eval_metrics: dict):
    for k, v in metrics.items():
        assert eval_metrics[f"eval_{k}"] == pytest.approx(v, abs=1e-6), k


def test_glue_test_and_dev_files(mrpc_run, tmp_path, capsys):
    workdir, eval_metrics = mrpc_run
    _predicted(capsys, workdir, tmp_path / "test")
    assert sorted(os.listdir(tmp_path / "test")) == ["MRPC.tsv"]
    test = glue.load_glue("mrpc", "test", os.path.join(FIXTURES, "glue", "MRPC"))
    rows = read_submission(tmp_path / "test" / "MRPC.tsv")
    assert [int(i) for i, _ in rows] == [e["idx"] for e in test]
    assert {p for _, p in rows} <= {"0", "1"}

    _predicted(capsys, workdir, tmp_path / "dev", "validation")
    dev = glue.load_glue("mrpc", "validation", os.path.join(FIXTURES, "glue", "MRPC"))
    rows = read_submission(tmp_path / "dev" / "MRPC.tsv")
    assert len(rows) == len(dev)
    got = task_metrics.classification_metrics(("accuracy", "f1"),
                                              np.asarray([int(p) for _, p in rows]),
                                              np.asarray([e["label"] for e in dev]))
    same_metrics(got, eval_metrics)
    with open(tmp_path / "dev" / "metrics.json") as f:
        written = json.load(f)
    assert written["split"] == "validation"
    same_metrics({k: written[k] for k in ("accuracy", "f1")}, eval_metrics)


def test_a_finetuned_run_exports_and_loads_as_an_init(mrpc_run, tmp_path, capsys):
    workdir = mrpc_run[0]
    done = run_main(capsys, export.main, "--workdir", workdir, "--output", tmp_path / "hf")
    assert done.returncode == 0, done.stderr
    hf = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert hf["architectures"] == ["BertForSequenceClassification"]
    assert hf["id2label"] == {"0": "not_equivalent", "1": "equivalent"}
    run = load_pretrained(workdir)
    again = load_pretrained(str(tmp_path / "hf"), scan_layers=run.config.scan_layers)
    assert run.head["labels"] == again.head["labels"] and again.head["head"] == "sequence"
    for a, b in zip(jax.tree_util.tree_leaves(run.params), jax.tree_util.tree_leaves(again.params)):
        np.testing.assert_array_equal(a, b)
    assert sorted(run.params) == ["classifier", "encoder"]  # an encoder to fine-tune further


@pytest.mark.slow
def test_conll_file_rereads_into_seqeval(ner_run, tmp_path, capsys):
    workdir, eval_metrics = ner_run
    _predicted(capsys, workdir, tmp_path / "dev", "validation")
    sentences, current = [], []
    with open(tmp_path / "dev" / "predictions.txt") as f:
        text = f.read()
    for line in text.split("\n"):
        if line.startswith("-DOCSTART-") or not line:
            if current:
                sentences.append(current)
            current = []
            continue
        current.append(line.split(" "))
    gold = conll.load_conll2003("validation", os.path.join(FIXTURES, "conll2003"))
    assert [[w for w, _, _ in s] for s in sentences] == [s["words"] for s in gold]
    assert [[g for _, g, _ in s] for s in sentences] == [s["ner"] for s in gold]
    got = task_metrics.entity_metrics([[g for _, g, _ in s] for s in sentences],
                                      [[p for _, _, p in s] for s in sentences])
    same_metrics(got, eval_metrics)
    # the test split (testb) has gold tags and its -DOCSTART- line
    _predicted(capsys, workdir, tmp_path / "test")
    with open(tmp_path / "test" / "predictions.txt") as f:
        assert f.read().startswith("-DOCSTART- O O\n\nSOCCER O ")
    assert "f1" in json.loads((tmp_path / "test" / "metrics.json").read_text())


@pytest.mark.slow
def test_squad_predictions_reread_into_the_official_scores(squad2_run, tmp_path, capsys):
    workdir, eval_metrics = squad2_run
    done = _predicted(capsys, workdir, tmp_path / "dev", "validation")
    assert sorted(os.listdir(tmp_path / "dev")) == ["metrics.json", "null_odds.json",
                                                    "predictions.json"]
    predictions = json.loads((tmp_path / "dev" / "predictions.json").read_text())
    odds = json.loads((tmp_path / "dev" / "null_odds.json").read_text())
    examples = squad.load_squad("2.0", "validation",
                                os.path.join(FIXTURES, "squad", "dev-v2.0.json"))
    assert set(predictions) == set(odds) == {e["id"] for e in examples}
    # the threshold is 0: a question is answered "" exactly when its null odds are > 0
    assert all((predictions[i] == "") == (odds[i] > 0) for i in predictions)
    same_metrics(squad_metrics.squad_scores(examples, predictions, version_2=True),
                 eval_metrics)
    done = run_main(capsys, predict.main, "--model", workdir, "--output", tmp_path / "test")
    assert done.returncode == 2 and "squad/v2.0 has no public test set" in done.stderr
    assert done.stderr.count("\n") == 1 and not (tmp_path / "test").exists()


def test_bad_input_fails_with_one_line(mrpc_run, tmp_path, capsys):
    workdir = mrpc_run[0]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    no_test = tmp_path / "MRPC"  # the released directory without test.tsv
    no_test.mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (no_test / name).write_bytes(open(os.path.join(FIXTURES, "glue", "MRPC", name),
                                          "rb").read())
    empty = tmp_path / "empty"  # a test.tsv with its header only
    empty.mkdir()
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        lines = open(os.path.join(FIXTURES, "glue", "MRPC", name)).readlines()
        (empty / name).write_text("".join(lines[:1] if name == "test.tsv" else lines))
    cases = [
        (["--model", workdir, "--data", str(empty)], "holds no example"),
        (["--model", str(tmp_path / "nowhere")], "does not exist"),
        (["--model", workdir, "--split", "train"], "--split 'train'"),
        (["--model", workdir, "--data", str(tmp_path / "nowhere")], "is not a directory"),
        (["--model", workdir, "--data", str(no_test)], "test.tsv"),
        (["--model", workdir, "--step", "99"], "no checkpoint at step 99"),
        (["--model", workdir, "--output", str(tmp_path / "full")], "already exists"),
    ]
    for argv, message in cases:
        if "--output" not in argv:
            argv = argv + ["--output", str(tmp_path / "out")]
        done = run_main(capsys, predict.main, *argv)
        assert done.returncode == 2 and message in done.stderr, (argv, done.stderr)
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
        assert not (tmp_path / "out").exists()
    pretrain = tmp_path / "pretrain"
    pretrain.mkdir()
    (pretrain / "config.json").write_text(json.dumps({"task": "bert_pretrain"}))
    done = run_main(capsys, predict.main, "--model", pretrain, "--output", tmp_path / "out")
    assert done.returncode == 2 and "expected a 'finetune' run" in done.stderr


@pytest.mark.slow
def test_mnli_and_stsb_files(tmp_path_factory, tmp_path, capsys):
    """MNLI's matched/mismatched dev files with label names; STS-B's clipped floats."""
    from ssl_jax.eval.submissions import glue_file_name

    assert glue_file_name("mnli", "test_matched") == "MNLI-m.tsv"
    assert glue_file_name("mnli", "validation_mismatched") == "MNLI-mm.tsv"
    workdir, eval_metrics = finetuned(tmp_path_factory, "stsb")
    _predicted(capsys, workdir, tmp_path / "s")
    rows = read_submission(tmp_path / "s" / "STS-B.tsv")
    assert all(0.0 <= float(p) <= 5.0 for _, p in rows)
    workdir, eval_metrics = finetuned(tmp_path_factory, "mnli")
    _predicted(capsys, workdir, tmp_path / "m", "validation")
    assert sorted(os.listdir(tmp_path / "m")) == ["MNLI-m.tsv", "MNLI-mm.tsv", "metrics.json"]
    names = glue.GLUE_TASKS["mnli"].label_names
    for file, split, prefix in (("MNLI-m.tsv", "validation_matched", ""),
                                ("MNLI-mm.tsv", "validation_mismatched",
                                 "validation_mismatched_")):
        rows = read_submission(tmp_path / "m" / file)
        dev = glue.load_glue("mnli", split, os.path.join(FIXTURES, "glue", "MNLI"))
        assert {p for _, p in rows} <= set(names)
        accuracy = np.mean([names.index(p) == e["label"] for (_, p), e in zip(rows, dev)])
        assert eval_metrics[f"eval_{prefix}accuracy"] == pytest.approx(accuracy)


@pytest.mark.slow
def test_a_run_from_a_pretrained_init(pretrained_tiny, tmp_path, capsys):
    """The quickstart's passage task fine-tuned from the tiny pre-trained BERT: the task is
    rebuilt from finetune.init; predictions.tsv re-reads into the run's eval accuracy."""
    from ssl_jax.tasks.finetune import FinetuneTask
    from ssl_jax.train.loop import train_and_evaluate
    from tests.test_finetune import passage_config

    config = passage_config(pretrained_tiny[0], 4, **{"finetune.num_documents": 4})
    summary = train_and_evaluate(config, str(tmp_path / "run"), FinetuneTask, progress=False)
    done = _predicted(capsys, tmp_path / "run", tmp_path / "out", "validation")
    rows = read_submission(tmp_path / "out" / "predictions.tsv")
    task = FinetuneTask(config, str(tmp_path / "again"))
    labels = [e["label"] for e in task.source.evals["validation"]]
    accuracy = np.mean([p == f"doc{y}" for (_, p), y in zip(rows, labels)])
    assert summary["eval_accuracy"] == pytest.approx(accuracy)
    done = run_main(capsys, predict.main, "--model", tmp_path / "run", "--output",
                    tmp_path / "test")
    assert done.returncode == 2 and "no test split" in done.stderr
