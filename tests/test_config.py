"""Configs: every experiment trains a step, every sweep point builds (and, with -m slow,
trains a step); bad input fails fast."""
import glob
import os

import pytest

import launch
from ssl_jax import config as config_lib
from tests.conftest import ROOT

CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, "experiments", "**", "*.py"),
                                      recursive=True)
                 if os.path.basename(p) not in ("__init__.py", "common.py"))
TINY = [("model.num_layers", "1"), ("model.hidden_size", "32"), ("model.num_heads", "2"),
        ("model.mlp_dim", "64"), ("max_seq_len", "32"), ("batch_size", "4"),
        ("num_train_steps", "1"), ("num_eval_batches", "1"), ("data.vocab_size", "1000"),
        ("data.dupe_factor", "1"), ("probe.finetune_steps", "2"), ("data.limit", "300")]


# Fine-tuning configs read their task's fixture files (in the released formats).
FIXTURE_PATHS = {"glue/cola": "glue/CoLA", "glue/sst2": "glue/SST-2", "glue/mrpc": "glue/MRPC",
                 "glue/qqp": "glue/QQP", "glue/stsb": "glue/STS-B", "glue/mnli": "glue/MNLI",
                 "glue/qnli": "glue/QNLI", "glue/rte": "glue/RTE", "glue/wnli": "glue/WNLI",
                 "squad/v1.1": "squad", "squad/v2.0": "squad", "conll2003/ner": "conll2003",
                 "conll2003/pos": "conll2003"}


def _points(sweeps: bool):
    for path in CONFIGS:
        module = config_lib.load_module(path)
        yield os.path.relpath(path, ROOT), None
        if sweeps:
            for name, arg in (getattr(module, "get_sweep", lambda: {})() or {}).items():
                yield os.path.relpath(path, ROOT), arg


def tiny(module, arg):
    """The config at test size: TINY's fields wherever the config (or its stages) has them;
    fine-tuning reads the task's fixture files and counts steps, not epochs."""
    config = config_lib.build_config(module, arg)
    keys = set(config_lib.all_keys(config))
    prefixes = ("pretrain.", "finetune.") if config.task == "transfer" else ("",)
    overrides = [(p + k, v) for p in prefixes for k, v in TINY if p + k in keys]
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


def _train_one_step(path, arg, tmp_path):
    from ssl_jax.transfer import run

    config = tiny(config_lib.load_module(os.path.join(ROOT, path)), arg)
    assert config.is_locked
    summary = run(config, str(tmp_path), progress=False)
    if config.task == "transfer":
        assert set(summary) >= {"pretrained", "random_init"}
        assert (tmp_path / "report.md").exists() and (tmp_path / "transfer.json").exists()
        summary = summary["runs"]["pretrained"]
    assert summary["ended"] == "completed" and summary["step"] == 1
    assert 0 < summary["loss"] < 20


# GLUE configs that are the shared experiments/finetune/common.py with another fixture and
# nothing of their own (their parsers are tested in test_glue): one step each under -m slow.
# cola (MCC), stsb (regression), mnli (two dev splits) keep their step in the default run.
SAME_PATH_AS_COLA = {f"experiments/finetune/{t}.py" for t in ("sst2", "mrpc", "qqp", "qnli",
                                                               "rte", "wnli")}


@pytest.mark.parametrize("path,arg", [
    pytest.param(path, arg, marks=[pytest.mark.slow] if path in SAME_PATH_AS_COLA else [])
    for path, arg in _points(sweeps=False)])
def test_every_config_trains_one_step(path, arg, tmp_path):
    _train_one_step(path, arg, tmp_path)


@pytest.mark.parametrize("path,arg", [p for p in _points(sweeps=True) if p[1] is not None])
def test_every_sweep_point_builds(path, arg):
    assert tiny(config_lib.load_module(os.path.join(ROOT, path)), arg).is_locked


@pytest.mark.slow
@pytest.mark.parametrize("path,arg", [p for p in _points(sweeps=True) if p[1] is not None])
def test_every_sweep_point_trains_one_step(path, arg, tmp_path):
    """The full set (`-m slow`, ~5 min): every sweep point of every config trains a step."""
    _train_one_step(path, arg, tmp_path)


def test_every_config_documents_its_command():
    for path in CONFIGS:
        doc = config_lib.load_module(path).__doc__ or ""
        assert "python launch.py --config experiments/" in doc, path


def test_sweep_covers_the_paper_ablations():
    module = config_lib.load_module(os.path.join(ROOT, "experiments/bert/pretrain.py"))
    points = module.get_sweep("tiny,steps=50")
    assert {"mask_rate=0.10", "mask_rate=0.15", "mask_rate=0.20", "mask_rate=0.40",
            "mask_mix=80-10-10", "mask_mix=100-0-0", "mask_mix=80-20-0", "nsp=False",
            "size=tiny", "size=mini"} <= set(points)
    c = config_lib.build_config(module, points["mask_mix=100-0-0"])
    assert (c.data.mask_token_prob, c.data.random_token_prob) == (1.0, 0.0)
    assert c.num_train_steps == 50 and c.model.num_layers == 2
    c = config_lib.build_config(module, points["mask_rate=0.40"])
    assert c.data.mask_rate == 0.4
    assert config_lib.build_config(module, points["nsp=False"]).data.nsp is False
    assert config_lib.build_config(module, points["size=mini"]).model.hidden_size == 256


def test_config_args_and_overrides():
    c = config_lib.load_config(os.path.join(ROOT, "experiments/bert/pretrain.py:base,wwm=True"),
                               [("optimizer.learning_rate", "3e-4"), ("data.nsp", "false"),
                                ("data.files", "/x/*.txt")])
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


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_launch_sweep_writes_the_comparison(tmp_path, workers):
    (tmp_path / "two.py").write_text(
        '"""python launch.py --config experiments/two.py --workdir w --sweep"""\n'
        "from experiments.bert import pretrain\n"
        "def get_config(arg=None):\n    return pretrain.get_config(arg)\n"
        "def get_sweep(arg=None):\n"
        "    return {'mask_rate=0.15': 'tiny,steps=2', 'nsp=False': 'tiny,steps=2,nsp=False'}\n")
    workdir = tmp_path / "sweep"
    code = launch.main(["--config", str(tmp_path / "two.py"), "--workdir", str(workdir),
                        "--sweep", "--no-progress", "--sweep-workers", str(workers)]
                       + [f"--config.{k}={v}" for k, v in TINY[:-5]])
    assert code == 0
    rows = (workdir / "sweep.csv").read_text().splitlines()
    assert rows[0].startswith("name,arg,status,step,selection,eval_loss") and len(rows) == 3
    assert rows[2].startswith("nsp=False,") and ",completed," in rows[2]
    assert (workdir / "nsp=False" / "report.md").exists()
    table = (workdir / "sweep.md").read_text()
    assert "| mask_rate=0.15 | completed |" in table and "Best point by eval_loss" in table
    assert (workdir / "sweep.png").stat().st_size > 0  # a bar per point of its eval_loss


def test_best_sweep_point_follows_the_selection_metric():
    from ssl_jax.sweep import best_row

    rows = [{"name": "lr=5e-05", "selection": "eval_accuracy:max", "eval_accuracy": 0.61},
            {"name": "lr=3e-05", "selection": "eval_accuracy:max", "eval_accuracy": 0.66},
            {"name": "lr=2e-05", "status": "failed: ValueError"}]
    assert best_row(rows)["name"] == "lr=3e-05"
    rows = [{"name": "a", "selection": "eval_loss:min", "eval_loss": 2.0},
            {"name": "b", "selection": "eval_loss:min", "eval_loss": 1.5}]
    assert best_row(rows)["name"] == "b"
    assert best_row([{"name": "x", "status": "failed"}]) is None
