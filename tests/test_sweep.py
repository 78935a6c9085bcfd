"""Sweeps: points are override dicts applied by the command line's parser; conflicts with the
command line are refused; equal points run once; --sweep-points; the table's columns come
from the runs; ties are reported. The machinery runs with a stub train function (the
`train_fn` parameter of run_sweep); one launch test (-m slow; test_cluster.py trains the same
sweep by default) trains two tiny points for real."""
import json
import os
import shlex

import pytest

import launch
from ssl_jax import config as config_lib
from ssl_jax import sweep as sweep_lib
from tests.conftest import ROOT
from tests.test_config import TINY, _train_one_step, config_args, tiny

BERT = os.path.join(ROOT, "experiments/bert/pretrain.py")
GPT = os.path.join(ROOT, "experiments/gpt/pretrain.py")


def module(path):
    return config_lib.load_module(os.path.join(ROOT, path))


def point_configs(path, arg=None, overrides=()):
    """name -> resolved config of every point (names of the same run share one config)."""
    return {name: p.config for p in sweep_lib.plan_sweep(module(path), arg, overrides)
            for name in p.names}


class StubTrain:
    """A train_fn for run_sweep that records what it was asked to train and reports
    `metrics(config)` as a finished run's summary."""

    def __init__(self, metrics, selection="eval_loss:min"):
        self.metrics, self.selection, self.calls = metrics, selection, []

    def __call__(self, config, workdir):
        self.calls.append((os.path.basename(workdir), config))
        return {"ended": "completed", "step": config.num_train_steps,
                "selection": self.selection, **self.metrics(config)}


def _all_points():
    """(path, base arg, point name) of every point of every config with a sweep."""
    for path, arg in config_args():
        m = module(path)
        if hasattr(m, "get_sweep"):
            yield from ((path, arg, p.name) for p in sweep_lib.plan_sweep(m, arg))


def _point(path, arg, name):
    return next(p for p in sweep_lib.plan_sweep(module(path), arg) if p.name == name)


@pytest.mark.parametrize("path,arg,name", list(_all_points()))
def test_every_sweep_point_builds(path, arg, name):
    point = _point(path, arg, name)
    assert tiny(module(path), point.arg, point.own).is_locked


@pytest.mark.slow
@pytest.mark.parametrize("path,arg,name", list(_all_points()))
def test_every_sweep_point_trains_one_step(path, arg, name, tmp_path):
    """The full set (`-m slow`, ~5 min): every sweep point of every config trains a step."""
    point = _point(path, arg, name)
    _train_one_step(path, point.arg, tmp_path, point.own)


def test_points_are_overrides_the_command_line_parser_applies():
    """Each point's table spec (its config arg and --config flags), fed to the command line's
    parser, builds exactly the point's config."""
    for path, arg in [("experiments/bert/pretrain.py", "tiny,steps=50"),
                      ("experiments/gpt/pretrain.py", "gpt-tiny"),
                      ("experiments/vision/jigsaw.py", None),
                      ("experiments/vision/compare.py", "finetune_steps=0"),
                      ("experiments/finetune/glue.py", "task=mrpc,init=/d")]:
        m = module(path)
        for point in sweep_lib.plan_sweep(m, arg):
            words = shlex.split(point.spec())
            spec_arg = None if not words or words[0].startswith("--") else words.pop(0)
            overrides, rest = config_lib.parse_override_args(words)
            assert rest == [] and spec_arg == point.arg
            assert config_lib.build_config(m, spec_arg, overrides).to_dict() == \
                point.config.to_dict(), (path, point.name)
    mix = _point("experiments/bert/pretrain.py", "tiny", "mask_mix=100-0-0")
    assert mix.spec() == ("tiny --config.data.mask_token_prob=1.0 "
                          "--config.data.random_token_prob=0.0")
    size = _point("experiments/bert/pretrain.py", "tiny", "size=mini")
    assert size.own == [("model.variant", "mini"), ("model.num_layers", "4"),
                        ("model.hidden_size", "256"), ("model.num_heads", "4"),
                        ("model.mlp_dim", "1024")]
    pretext = _point("experiments/vision/compare.py", "finetune_steps=0", "mae_random_init")
    assert pretext.spec() == "finetune_steps=0,pretext=mae,random_init=true"


def test_sweep_covers_the_paper_ablations():
    points = point_configs("experiments/bert/pretrain.py", "tiny,steps=50")
    assert {"mask_rate=0.10", "mask_rate=0.15", "mask_rate=0.20", "mask_rate=0.40",
            "mask_mix=80-10-10", "mask_mix=100-0-0", "mask_mix=80-20-0", "nsp=False",
            "size=tiny", "size=mini"} <= set(points)
    c = points["mask_mix=100-0-0"]
    assert (c.data.mask_token_prob, c.data.random_token_prob) == (1.0, 0.0)
    assert c.num_train_steps == 50 and c.model.num_layers == 2
    assert points["mask_rate=0.40"].data.mask_rate == 0.4
    assert points["nsp=False"].data.nsp is False
    assert points["size=mini"].model.hidden_size == 256
    # a size point is the size's config: equal to building that size with the same arg
    mini = config_lib.load_config(BERT + ":mini,steps=50")
    assert points["size=mini"].to_dict() == mini.to_dict()


def test_sweep_covers_the_gpt_ablations():
    points = point_configs("experiments/gpt/pretrain.py", "gpt-tiny,steps=50")
    assert {"size=gpt-tiny", "size=gpt-mini", "ln=post", "ln=pre", "attention=sparse",
            "seq_len=64", "seq_len=128", "seq_len=256"} <= set(points)
    assert points["ln=post"].model.pre_ln is False and points["ln=pre"].model.pre_ln is True
    assert points["attention=sparse"].model.sparse_attention is True
    assert points["seq_len=256"].max_seq_len == 256 and points["seq_len=256"].num_train_steps == 50
    assert points["size=gpt-mini"].model.hidden_size == 256
    m = module("experiments/gpt/pretrain.py")
    gpt1 = config_lib.build_config(m, "gpt1")
    assert (gpt1.model.pre_ln, gpt1.model.max_len, gpt1.model.num_layers) == (False, 512, 12)
    big = config_lib.build_config(m, "gpt3-175b")
    assert (big.model.num_layers, big.model.hidden_size, big.model.max_len) == (96, 12288, 2048)
    # from a post-LN base, a size point is that size's own (pre-LN) config, as before
    assert point_configs("experiments/gpt/pretrain.py", "gpt1")[
        "size=gpt-mini"].to_dict() == config_lib.load_config(GPT + ":gpt-mini").to_dict()


def test_equal_points_run_once_and_the_table_says_so(tmp_path):
    """At size tiny, size=tiny, mask_rate=0.15 and mask_mix=80-10-10 are the base config."""
    plan = sweep_lib.plan_sweep(module("experiments/bert/pretrain.py"), "tiny,steps=4")
    names = [p.names for p in plan]
    assert ["mask_rate=0.15", "mask_mix=80-10-10", "size=tiny"] in names
    assert len(plan) == 4 + 6 + 1 + 4 - 2 and sum(map(len, names)) == 15
    train = StubTrain(lambda c: {"eval_loss": 2.0 + c.data.mask_rate})
    rows = sweep_lib.run_sweep(module("experiments/bert/pretrain.py"), "tiny,steps=4", [],
                               str(tmp_path), train)
    trained = [name for name, _ in train.calls]
    assert len(trained) == 13 and "size=tiny" not in trained and "mask_mix=80-10-10" not in trained
    assert [r["name"] for r in rows] == [p.name for p in plan]
    same = next(r for r in rows if r["name"] == "mask_rate=0.15")
    assert same["same_run"] == "mask_mix=80-10-10 size=tiny"
    md = (tmp_path / "sweep.md").read_text()
    assert ("Same run: mask_rate=0.15 = mask_mix=80-10-10 = size=tiny (equal resolved configs, "
            "trained once)") in md
    # eval_loss = 2 + mask_rate: the lowest rate wins (the mask mixes and sizes share 0.15)
    assert "Best point by eval_loss: **mask_rate=0.10** (eval_loss = 2.1000)" in md
    header = (tmp_path / "sweep.csv").read_text().splitlines()[0]
    assert header == "name,arg,same_run,status,step,selection,eval_loss"


def test_sweep_points_runs_a_subset(tmp_path, capsys):
    train = StubTrain(lambda c: {"eval_loss": float(c.model.num_layers)})
    rows = sweep_lib.run_sweep(module("experiments/bert/pretrain.py"), "tiny,steps=4", [],
                               str(tmp_path), train, only=["size=mini", "nsp=False"])
    assert [name for name, _ in train.calls] == ["nsp=False", "size=mini"]  # the sweep's order
    assert [c.model.num_layers for _, c in train.calls] == [2, 4]
    assert [r["name"] for r in rows] == ["nsp=False", "size=mini"]
    # a subset naming two names of one run trains it once
    train = StubTrain(lambda c: {"eval_loss": 1.0})
    sweep_lib.run_sweep(module("experiments/bert/pretrain.py"), "tiny,steps=4", [],
                        str(tmp_path / "b"), train, only=["size=tiny", "mask_rate=0.15"])
    assert [name for name, _ in train.calls] == ["mask_rate=0.15"]
    with pytest.raises(ValueError, match=r"--sweep-points: unknown point 'size=huge'; expected "
                                         r"names from mask_rate=0.10, mask_rate=0.15, .*size=medium"):
        sweep_lib.plan_sweep(module("experiments/bert/pretrain.py"), "tiny",
                             only=["size=huge", "nsp=False"])


@pytest.mark.parametrize("path,arg,argv,message", [
    # the example: every lr point would be the same run
    ("experiments/finetune/glue.py", "task=mrpc,init=/d", ["--config.optimizer.learning_rate=5e-4"],
     "--config.optimizer.learning_rate conflicts with the sweep, whose points set "
     "optimizer.learning_rate"),
    ("experiments/bert/pretrain.py", "tiny", ["--config.model.num_layers=1"],
     "--config.model.num_layers conflicts with the sweep, whose points set model.num_layers"),
    ("experiments/vision/compare.py", "pretext=mae", [],
     "config arg pretext conflicts with the sweep, whose points set it"),
    ("experiments/bert/pretrain.py", "tiny", ["--sweep-points", "nsp=False,size=huge"],
     "--sweep-points: unknown point 'size=huge'; expected names from mask_rate=0.10"),
    ("experiments/bert/pretrain.py", "tiny", ["--sweep-workers", "0"],
     "--sweep-workers=0 must be >= 1"),
])
def test_bad_sweep_command_lines_are_one_line_errors(path, arg, argv, message, capsys, tmp_path):
    code = launch.main(["--config", os.path.join(ROOT, path) + ":" + arg, "--workdir",
                        str(tmp_path / "w"), "--sweep", "--no-progress", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "w").exists()


def test_a_subset_may_fix_a_field_the_other_points_vary(tmp_path):
    """--sweep-points nsp=False,size=mini does not vary the mask rate: setting it is fine."""
    train = StubTrain(lambda c: {"eval_loss": 1.0})
    sweep_lib.run_sweep(module("experiments/bert/pretrain.py"), "tiny,steps=4",
                        [("data.mask_rate", "0.3")], str(tmp_path), train,
                        only=["nsp=False", "size=mini"])
    assert [c.data.mask_rate for _, c in train.calls] == [0.3, 0.3]


def _md_header(workdir):
    return (workdir / "sweep.md").read_text().splitlines()[2]


def test_table_columns_come_from_the_runs(tmp_path):
    # GPT-style runs: no BERT columns; the selection metric first
    rows = [{"name": n, "status": "completed", "selection": "eval_loss:min", "eval_loss": v,
             "eval_perplexity": 2.0 ** v, "eval_accuracy": 0.1 * v, "loss": v}
            for n, v in (("size=gpt-tiny", 3.0), ("size=gpt-mini", 2.5))]
    sweep_lib.write_tables(rows, str(tmp_path / "gpt"))
    assert _md_header(tmp_path / "gpt") == \
        "| name | status | eval_loss | eval_accuracy | eval_perplexity |"
    assert "mlm" not in (tmp_path / "gpt" / "sweep.md").read_text()
    # fine-tuning: the task's dev metric first
    rows = [{"name": "lr=5e-05", "status": "completed", "selection": "eval_f1:max",
             "eval_accuracy": 0.7, "eval_f1": 0.8, "eval_loss": 0.5}]
    sweep_lib.write_tables(rows, str(tmp_path / "ft"))
    assert _md_header(tmp_path / "ft") == \
        "| name | status | eval_f1 | eval_accuracy | eval_loss |"


def test_measured_columns_are_what_a_run_reports_beyond_its_metrics_lines(tmp_path):
    """A vision-style run: probe_accuracy (the selection) first, the logged eval_* next, then
    finetune_accuracy (measured when the run ended); the training loss only in the csv."""
    def train(config, workdir):
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
            f.write(json.dumps({"step": 1, "loss": 0.7, "eval_loss": 0.6,
                                "eval_jigsaw_accuracy": 0.2}) + "\n")
        return {"ended": "completed", "step": 1, "selection": "probe_accuracy:max",
                "loss": 0.7, "eval_loss": 0.6, "eval_jigsaw_accuracy": 0.2,
                "probe_accuracy": 0.9, "finetune_accuracy": 0.85}

    sweep_lib.run_sweep(module("experiments/vision/jigsaw.py"), None, [], str(tmp_path), train,
                        only=["no_gap"])
    assert _md_header(tmp_path) == ("| name | status | probe_accuracy | eval_jigsaw_accuracy | "
                                    "eval_loss | finetune_accuracy |")
    header = (tmp_path / "sweep.csv").read_text().splitlines()[0].split(",")
    assert header == ["name", "arg", "status", "step", "selection", "probe_accuracy",
                      "eval_jigsaw_accuracy", "eval_loss", "finetune_accuracy", "loss"]


def test_best_sweep_point_follows_the_selection_metric():
    rows = [{"name": "lr=5e-05", "selection": "eval_accuracy:max", "eval_accuracy": 0.61},
            {"name": "lr=3e-05", "selection": "eval_accuracy:max", "eval_accuracy": 0.66},
            {"name": "lr=2e-05", "status": "failed: ValueError"}]
    assert [r["name"] for r in sweep_lib.best_rows(rows)] == ["lr=3e-05"]
    rows = [{"name": "a", "selection": "eval_loss:min", "eval_loss": 2.0},
            {"name": "b", "selection": "eval_loss:min", "eval_loss": 1.5}]
    assert [r["name"] for r in sweep_lib.best_rows(rows)] == ["b"]
    assert sweep_lib.best_rows([{"name": "x", "status": "failed"}]) == []


def test_tied_best_points_are_named_as_a_tie(tmp_path):
    """Every lr at the majority class (0.5): no winner is named."""
    rows = [{"name": n, "status": "completed", "selection": "eval_accuracy:max",
             "eval_accuracy": v} for n, v in (("lr=5e-05", 0.5), ("lr=4e-05", 0.5),
                                             ("lr=3e-05", 0.4), ("lr=2e-05", 0.50000001))]
    assert [r["name"] for r in sweep_lib.best_rows(rows)] == ["lr=5e-05", "lr=4e-05", "lr=2e-05"]
    sweep_lib.write_tables(rows, str(tmp_path))
    md = (tmp_path / "sweep.md").read_text()
    assert ("No single best point by eval_accuracy: **lr=5e-05**, **lr=4e-05**, **lr=2e-05** "
            "tie at eval_accuracy = 0.5000") in md
    assert "Best point" not in md


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_launch_sweep_writes_the_comparison(tmp_path, workers):
    """(`-m slow`; the default run trains the same sweep inline and as local jobs in
    test_cluster.py, which checks this table too.)"""
    (tmp_path / "two.py").write_text(
        '"""python launch.py --config experiments/two.py --workdir w --sweep"""\n'
        "from experiments.bert import pretrain\n"
        "derived_fields = pretrain.derived_fields\n"
        "def get_config(arg=None):\n    return pretrain.get_config(arg)\n"
        "def get_sweep():\n"
        "    return {'mask_rate=0.15': {}, 'nsp=False': {'data.nsp': False}}\n")
    workdir = tmp_path / "sweep"
    code = launch.main(["--config", str(tmp_path / "two.py") + ":tiny,steps=2", "--workdir",
                        str(workdir), "--sweep", "--no-progress", "--sweep-workers", str(workers)]
                       + [f"--config.{k}={v}" for k, v in TINY[:-5]])
    assert code == 0
    rows = (workdir / "sweep.csv").read_text().splitlines()
    assert rows[0].startswith("name,arg,status,step,selection,eval_loss") and len(rows) == 3
    assert rows[2].startswith('nsp=False,"tiny,steps=2 --config.data.nsp=false",completed,1,')
    assert (workdir / "nsp=False" / "report.md").exists()
    table = (workdir / "sweep.md").read_text()
    assert "| mask_rate=0.15 | completed |" in table and "Best point by eval_loss" in table
    assert (workdir / "sweep.png").stat().st_size > 0  # a bar per point of its eval_loss
