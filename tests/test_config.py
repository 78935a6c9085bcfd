"""Configs: typed args, overrides, derived fields, the GLUE table; every experiment trains a
step; bad input fails fast. (Sweeps: tests/test_sweep.py.)"""
import glob
import json
import os

import pytest

import launch
from ssl_jax import config as config_lib
from ssl_jax.config import Args, optional
from ssl_jax.ignored import why_ignored
from tests.conftest import ROOT

CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, "experiments", "**", "*.py"),
                                      recursive=True)
                 if os.path.basename(p) not in ("__init__.py", "common.py"))
TINY = [("model.num_layers", "1"), ("model.hidden_size", "32"), ("model.num_heads", "2"),
        ("model.mlp_dim", "64"), ("max_seq_len", "32"), ("batch_size", "4"),
        ("num_train_steps", "1"), ("num_eval_batches", "1"), ("data.vocab_size", "1000"),
        ("data.dupe_factor", "1"), ("probe.finetune_steps", "2"), ("data.limit", "300")]
GLUE = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")


# Fine-tuning configs read their task's fixture files (in the released formats).
FIXTURE_PATHS = {"glue/cola": "glue/CoLA", "glue/sst2": "glue/SST-2", "glue/mrpc": "glue/MRPC",
                 "glue/qqp": "glue/QQP", "glue/stsb": "glue/STS-B", "glue/mnli": "glue/MNLI",
                 "glue/qnli": "glue/QNLI", "glue/rte": "glue/RTE", "glue/wnli": "glue/WNLI",
                 "squad/v1.1": "squad", "squad/v2.0": "squad", "conll2003/ner": "conll2003",
                 "conll2003/pos": "conll2003", "swag/regular": "swag"}


def config_args():
    """(path, arg) of every config at its defaults; glue.py once per task."""
    for path in CONFIGS:
        rel = os.path.relpath(path, ROOT)
        if rel == "experiments/finetune/glue.py":
            yield from ((rel, f"task={t}") for t in GLUE)
        else:
            yield rel, None


def tiny(module, arg, point=()):
    """The config (with a sweep point's overrides) at test size: TINY's fields wherever the
    config (or its stages) has them, reads them and the point does not set them; fine-tuning
    reads the task's fixture files and counts steps, not epochs."""
    point = list(point)
    config = config_lib.build_config(module, arg, point)
    keys = set(config_lib.all_keys(config)) - {k for k, _ in point}
    prefixes = ("pretrain.", "finetune.") if config.task == "transfer" else ("",)
    overrides = point + [(p + k, v) for p in prefixes for k, v in TINY
                         if p + k in keys and why_ignored(config, p + k) is None]
    for p in prefixes:
        stage = config[p.rstrip(".")] if p else config
        if stage.task == "finetune":
            if stage.finetune.dataset in FIXTURE_PATHS:
                overrides.append((p + "finetune.path", os.path.join(
                    ROOT, "tests", "fixtures", FIXTURE_PATHS[stage.finetune.dataset])))
            overrides.append((p + "num_train_epochs", "0"))
            if stage.finetune.dataset.startswith("squad/"):  # room for question + passage
                overrides += [(p + "max_seq_len", "96"), (p + "finetune.max_query_len", "32"),
                              (p + "finetune.doc_stride", "32")]
    return config_lib.build_config(module, arg, overrides)


def _train_one_step(path, arg, tmp_path, point=()):
    from ssl_jax.transfer import run

    config = tiny(config_lib.load_module(os.path.join(ROOT, path)), arg, point)
    assert config.is_locked
    summary = run(config, str(tmp_path), progress=False)
    if config.task == "transfer":
        assert set(summary) >= {"pretrained", "random_init"}
        assert (tmp_path / "report.md").exists() and (tmp_path / "transfer.json").exists()
        summary = summary["runs"]["pretrained"]
    assert summary["ended"] == "completed" and summary["step"] == 1
    assert 0 < summary["loss"] < 20


# GLUE tasks that take cola's code path with another fixture (their parsers are tested in
# test_glue): one step each under -m slow. cola (MCC), stsb (regression), mnli (two dev
# splits) keep their step in the default run.
SAME_PATH_AS_COLA = {f"task={t}" for t in ("sst2", "mrpc", "qqp", "qnli", "rte", "wnli")}
# the quickstart's transfer path with a GPT pre-training stage: three runs, under -m slow
SLOW_CONFIGS = {"experiments/gpt/transfer.py"}


@pytest.mark.parametrize("path,arg", [
    pytest.param(path, arg, marks=[pytest.mark.slow]
                 if arg in SAME_PATH_AS_COLA or path in SLOW_CONFIGS else [])
    for path, arg in config_args()])
def test_every_config_trains_one_step(path, arg, tmp_path):
    _train_one_step(path, arg, tmp_path)


def test_every_config_documents_its_command():
    for path in CONFIGS:
        doc = config_lib.load_module(path).__doc__ or ""
        assert "python launch.py --config experiments/" in doc, path


def test_config_args_and_overrides():
    c = config_lib.load_config(os.path.join(ROOT, "experiments/bert/pretrain.py:base,wwm=True"),
                               [("optimizer.learning_rate", "3e-4"), ("data.nsp", "false"),
                                ("data.corpus", "files"), ("data.files", "/x/*.txt")])
    assert (c.model.num_layers, c.model.hidden_size, c.model.num_heads) == (12, 768, 12)
    assert c.data.whole_word_masking and c.optimizer.learning_rate == 3e-4
    assert c.data.nsp is False and c.data.files == "/x/*.txt"
    large = config_lib.load_config(os.path.join(ROOT, "experiments/bert/pretrain.py:large"))
    assert (large.model.num_layers, large.model.hidden_size, large.model.num_heads) == (24, 1024, 16)


def _launch(capsys, workdir, *args):
    code = launch.main(["--config", os.path.join(ROOT, "experiments/bert/pretrain.py:tiny"),
                        "--workdir", str(workdir), "--no-progress", *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--config.model.num_hedas=2"], "unknown config key 'model.num_hedas'; did you mean model.num_heads"),
    (["--config.batch_size=abc"], "bad value for config key 'batch_size': 'abc'"),
    (["--config.model.num_heads=3"], "model.num_heads=3 does not divide model.hidden_size=128"),
    (["--config.max_seq_len=1024"], "max_seq_len=1024 exceeds the position table"),
    (["--config.data.mask_rate=0"], "data.mask_rate=0.0 must be in (0, 1)"),
    (["--config.data.random_next_prob=1.5"], "data.random_next_prob=1.5 must be in [0, 1]"),
    (["--config.parallel=dp"], "config.parallel='dp'"),
    (["--config.batch_size=0"], "config.batch_size=0 must be a positive integer"),
    (["--config.data.corpus=files", "--config.data.files=/nonexistent/*.txt"],
     "config.data.files='/nonexistent/*.txt' matches no file"),
    (["--config.data.vocab_path=/nonexistent/vocab.txt"], "vocab file '/nonexistent/vocab.txt' does not exist"),
])
def test_bad_input_fails_before_any_compute(args, message, capsys, tmp_path):
    code, err = _launch(capsys, tmp_path / "run", *args)
    assert code == 2 and message in err, err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_bad_config_arg(capsys, tmp_path):
    code = launch.main(["--config", os.path.join(ROOT, "experiments/bert/pretrain.py:tiny,mask_rat=0.2"),
                        "--workdir", str(tmp_path), "--no-progress"])
    assert code == 2 and "unknown config arg 'mask_rat'" in capsys.readouterr().err
    code = launch.main(["--config", os.path.join(ROOT, "experiments/bert/pretrain.py:huge"),
                        "--workdir", str(tmp_path), "--no-progress"])
    assert code == 2 and "unknown BERT variant 'huge'" in capsys.readouterr().err


def test_empty_corpus_and_bad_vocab(capsys, tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n   \n")
    code, err = _launch(capsys, tmp_path / "a", "--config.data.corpus=files",
                        f"--config.data.files={tmp_path / 'empty.txt'}")
    assert code == 2 and "is empty" in err, err
    (tmp_path / "one.txt").write_text("Only one document. It is short.\n")
    code, err = _launch(capsys, tmp_path / "b", "--config.data.corpus=files",
                        f"--config.data.files={tmp_path / 'one.txt'}")
    assert code == 2 and "needs at least 2" in err, err
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\nthe\n")
    code, err = _launch(capsys, tmp_path / "c", f"--config.data.vocab_path={tmp_path / 'vocab.txt'}")
    assert code == 2 and "lacks the special tokens" in err, err


# --- typed args ---------------------------------------------------------------------------

ARGS = Args(bare="variant", variant="mini", steps=10000, lr=1e-4, nsp=True,
            files=optional(str), mask_mix="80-10-10")


def test_args_parse_to_their_declared_types():
    assert ARGS.parse(None) == dict(variant="mini", steps=10000, lr=1e-4, nsp=True, files=None,
                                    mask_mix="80-10-10")
    a = ARGS.parse("tiny,steps=30,lr=3,nsp=False,files=/x/*.txt,mask_mix=100-0-0")
    assert a == dict(variant="tiny", steps=30, lr=3.0, nsp=False, files="/x/*.txt",
                     mask_mix="100-0-0")
    assert type(a["lr"]) is float and type(a["steps"]) is int  # an int is a float field's
    assert ARGS.parse("nsp=TRUE,files=None") == dict(ARGS.parse(None), nsp=True, files=None)
    assert ARGS.updated(steps=50, column="ner").parse("column=pos") == dict(
        ARGS.parse(None), steps=50, column="pos")
    with pytest.raises(TypeError, match="arg steps: default 0.5 is not a int"):
        ARGS.updated(steps=0.5)


@pytest.mark.parametrize("arg,message", [
    ("steps=abc", "config arg steps='abc': expected int"),
    ("steps=1.5", "config arg steps='1.5': expected int"),
    ("steps=None", "config arg steps='None': expected int"),
    ("lr=fast", "config arg lr='fast': expected float"),
    ("nsp=1", "config arg nsp='1': expected true or false"),
    ("nsp=yes", "config arg nsp='yes': expected true or false"),
    ("mask_rat=0.2", "unknown config arg 'mask_rat'; expected one of ['files', 'lr', 'mask_mix'"),
])
def test_bad_arg_values_are_named_with_the_expected_type(arg, message):
    with pytest.raises(ValueError) as e:
        ARGS.parse(arg)
    assert str(e.value).startswith(message), str(e.value)


@pytest.mark.parametrize("spec,message", [
    ("experiments/bert/pretrain.py:tiny,steps=abc", "config arg steps='abc': expected int"),
    ("experiments/gpt/pretrain.py:gpt-tiny,mask_docs=0", "config arg mask_docs='0': expected true or false"),
    ("experiments/vision/mae.py:mask_ratio=most", "config arg mask_ratio='most': expected float"),
    ("experiments/finetune/glue.py:task=mrpc,freeze_layers=two", "config arg freeze_layers='two': expected int"),
    ("experiments/finetune/glue.py:init=/d", "config arg task=None: expected one of ['cola', 'mnli'"),
    ("experiments/finetune/glue.py:task=colaa", "config arg task='colaa': expected one of"),
    ("experiments/vision/compare.py:mae", "config arg 'mae' needs a key (key=value)"),
])
def test_launch_refuses_a_bad_typed_arg_in_one_line(spec, message, capsys, tmp_path):
    code = launch.main(["--config", os.path.join(ROOT, spec), "--workdir", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "w").exists()


def test_overrides_parse_to_the_field_type():
    spec = os.path.join(ROOT, "experiments/bert/pretrain.py:tiny")
    c = config_lib.load_config(spec, [("optimizer.learning_rate", "3"), ("data.nsp", "False"),
                                      ("num_eval_batches", "4"), ("data.files", "None")])
    assert c.optimizer.learning_rate == 3.0 and type(c.optimizer.learning_rate) is float
    assert c.data.nsp is False and c.num_eval_batches == 4 and c.data.files is None
    for key, raw, expected in [("batch_size", "abc", "expected int"),
                               ("batch_size", "None", "expected int"),
                               ("data.nsp", "1", "expected true or false"),
                               ("optimizer.learning_rate", "fast", "expected float"),
                               ("num_eval_batches", "2.5", "expected int or None")]:
        with pytest.raises(ValueError) as e:
            config_lib.load_config(spec, [(key, raw)])
        assert str(e.value) == f"bad value for config key {key!r}: {raw!r} ({expected})"


# --- derived fields ---------------------------------------------------------------------

def _intervals(c):
    return c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps


@pytest.mark.parametrize("spec,default,at_30", [
    # max(1, min(50, steps // 20)), max(1, steps // 5), max(1, steps // 5)
    ("experiments/bert/pretrain.py", (50, 2000, 2000), (1, 6, 6)),
    ("experiments/gpt/pretrain.py", (20, 80, 80), (1, 6, 6)),  # 400 steps
    ("experiments/vision/mae.py", (50, 200, 200), (1, 6, 6)),  # 1,000 steps
    ("experiments/vision/compare.py", (20, 80, 80), (1, 6, 6)),  # its jigsaw budget: 400
    # steps // 3 (fine-tuning counted in steps); the default counts epochs (placeholders)
    ("experiments/finetune/glue.py:task=rte", (10, 1000, 1000), (10, 10, 10)),
    ("experiments/finetune/squad.py", (10, 1000, 1000), (10, 10, 10)),
    # passage_source: 120 steps, 5 evaluations, one checkpoint at the end
    ("experiments/finetune/passage_source.py", (10, 24, 120), (10, 6, 30)),
])
def test_intervals_are_derived_after_the_step_override(spec, default, at_30):
    assert _intervals(config_lib.load_config(os.path.join(ROOT, spec))) == default
    c = config_lib.load_config(os.path.join(ROOT, spec), [("num_train_steps", "30")])
    assert c.num_train_steps == 30 and _intervals(c) == at_30
    if c.task == "finetune":  # an explicit step count replaces the epochs
        assert c.num_train_epochs == 0.0


def test_an_explicit_interval_override_wins():
    spec = os.path.join(ROOT, "experiments/bert/pretrain.py:tiny")
    c = config_lib.load_config(spec, [("num_train_steps", "30"), ("eval_every_steps", "7")])
    assert _intervals(c) == (1, 7, 6)
    c = config_lib.load_config(spec, [("eval_every_steps", "7"), ("num_train_steps", "30"),
                                      ("log_every_steps", "3")])
    assert _intervals(c) == (3, 7, 6)


def test_the_quickstart_derives_each_stage():
    spec = os.path.join(ROOT, "experiments/quickstart.py")
    c = config_lib.load_config(spec)
    assert _intervals(c.pretrain) == (10, 100, 100) and _intervals(c.finetune) == (10, 24, 120)
    c = config_lib.load_config(spec, [("pretrain.num_train_steps", "30"),
                                      ("finetune.num_train_steps", "10"),
                                      ("finetune.checkpoint_every_steps", "4")])
    assert _intervals(c.pretrain) == (1, 10, 10) and _intervals(c.finetune) == (10, 2, 4)


@pytest.mark.parametrize("overrides,message", [
    ([("eval_every_steps", "5")], "eval_every_steps cannot be set with num_train_epochs=3.0"),
    ([("num_train_steps", "5"), ("num_train_epochs", "2")],
     "num_train_steps and num_train_epochs=2.0 are both set"),
])
def test_finetune_epochs_conflicts_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        config_lib.load_config(os.path.join(ROOT, "experiments/finetune/glue.py:task=rte"),
                               overrides)
    c = config_lib.load_config(os.path.join(ROOT, "experiments/finetune/glue.py:task=rte"),
                               [("num_train_epochs", "0"), ("num_train_steps", "9"),
                                ("eval_every_steps", "5")])
    assert (c.num_train_epochs, c.num_train_steps, _intervals(c)) == (0.0, 9, (10, 5, 3))


def test_a_short_run_uses_and_records_the_derived_intervals(tmp_path, capsys):
    """--config.num_train_steps=10 on a 10,000-step config: 10 metrics lines and 5 evals (with
    the default's intervals, 2,000 steps apart: one line, the final one)."""
    workdir = tmp_path / "run"
    code = launch.main(["--config", os.path.join(ROOT, "experiments/bert/pretrain.py:tiny"),
                        "--workdir", str(workdir), "--no-progress", "--config.num_train_steps=10"]
                       + [f"--config.{k}={v}" for k, v in TINY if k not in (
                           "num_train_steps", "probe.finetune_steps", "data.limit")])
    assert code == 0, capsys.readouterr().err
    recorded = json.loads((workdir / "config.json").read_text())
    assert [recorded[k] for k in ("num_train_steps", "log_every_steps", "eval_every_steps",
                                  "checkpoint_every_steps")] == [10, 1, 2, 2]
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 11))
    assert [r["step"] for r in lines if "eval_loss" in r] == [2, 4, 6, 8, 10]


@pytest.mark.parametrize("argv,message", [
    (["--config.num_train_steps"], "--config.num_train_steps needs a value"),
    (["--config.num_train_steps", "--no-progress"], "--config.num_train_steps needs a value"),
    (["--config.num_train_steps=ten"], "bad value for config key 'num_train_steps': 'ten' (expected int)"),
    (["--sweep-points", "size=tiny"], "--sweep-points needs --sweep"),
])
def test_command_line_errors_are_one_line(argv, message, capsys, tmp_path):
    code = launch.main(["--config", os.path.join(ROOT, "experiments/bert/pretrain.py:tiny"),
                        "--workdir", str(tmp_path / "w"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and err == f"error: {message}" + err[len(f"error: {message}"):], err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "w").exists()


# --- GLUE: one table-driven config --------------------------------------------------------

with open(os.path.join(ROOT, "tests", "fixtures", "glue_configs_before.json")) as f:
    GLUE_BEFORE = json.load(f)["configs"]  # experiments/finetune/cola.py's output, per arg
# key fields of the old per-task files' default configs (identical for the nine tasks)
GLUE_DEFAULTS = {"model.variant": "base", "model.num_layers": 12, "batch_size": 32,
                 "max_seq_len": 128, "num_train_epochs": 3.0, "num_train_steps": 1,
                 "optimizer.learning_rate": 2e-5, "log_every_steps": 10,
                 "eval_every_steps": 1000, "checkpoint_every_steps": 1000, "finetune.init": ""}


# config.model fields added after the per-task files, at their defaults
MODEL_FIELDS_SINCE = {"attention_impl": "xla"}
FINETUNE_FIELDS_SINCE = {"lm_coef": 0.5}  # issue 14: GPT-1's auxiliary LM loss weight
DATA_FIELDS_SINCE = {"prepared": None, "mixture": None}  # issue 15: prepared ArrayRecord data


def _field(c, key):
    for part in key.split("."):
        c = c[part]
    return c


@pytest.mark.parametrize("task", GLUE)
@pytest.mark.parametrize("arg", sorted(GLUE_BEFORE))
def test_glue_builds_what_the_per_task_file_built(task, arg):
    """glue.py:task=<t>,<arg> == the old experiments/finetune/<t>.py:<arg>, field by field
    (the old files were cola.py's config with finetune.dataset='glue/<t>')."""
    spec = f"task={task}" + ("" if arg == "None" else "," + arg)
    got = config_lib.load_config(os.path.join(ROOT, "experiments/finetune/glue.py:" + spec))
    assert got.finetune.dataset == f"glue/{task}"
    want = json.loads(json.dumps(GLUE_BEFORE[arg]))
    want["finetune"]["dataset"] = f"glue/{task}"
    # fields every config gained since (issue 13's layout), at their defaults
    want.update(mesh=dict(data=-1, fsdp=1, tensor=1), sharding_rules="dp", grad_accum_steps=1)
    want["model"].update(MODEL_FIELDS_SINCE)
    want["finetune"].update(FINETUNE_FIELDS_SINCE)
    want["data"].update(DATA_FIELDS_SINCE)
    assert got.to_dict() == want
    if arg == "None":
        assert {k: _field(got, k) for k in GLUE_DEFAULTS} == GLUE_DEFAULTS
