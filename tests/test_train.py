"""The generic loop: learning, exact resume, NaN stop, pre-emption, workdir contents."""
import json
import math
import os
import signal
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import config as config_lib
from ssl_jax.tasks.bert_pretrain import BertPretrainTask
from ssl_jax.train.checkpoint import Checkpointer
from ssl_jax.train.loop import train_and_evaluate
from ssl_jax.train.metrics import read_metrics
from tests.conftest import ROOT, stopped_by_signal, tiny_config


def _losses(workdir):
    return {r["step"]: r["loss"] for r in read_metrics(os.path.join(workdir, "metrics.jsonl"))}


def test_short_run_learns_and_beats_the_unigram_baseline(pretrained_tiny):
    workdir, summary, baseline = pretrained_tiny
    losses = _losses(workdir)
    assert losses[20] > losses[600] + 1.0, losses  # clearly falling
    # context helps: held-out MLM loss below the best context-free (unigram) predictor
    assert summary["eval_mlm_loss"] < baseline - 0.25, (summary["eval_mlm_loss"], baseline)


def test_resume_is_exact(tmp_path):
    config = tiny_config(num_train_steps=6, checkpoint_every_steps=3, eval_every_steps=3,
                         **{"data.masking": "dynamic"})
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    train_and_evaluate(config, straight, BertPretrainTask, progress=False)
    first = train_and_evaluate(config, resumed, BertPretrainTask, progress=False, stop_after=3)
    assert first["ended"] == "paused at step 3"
    second = train_and_evaluate(config, resumed, BertPretrainTask, progress=False)
    assert second["resumed_from"] == 3 and second["ended"] == "completed"
    a, b = _losses(straight), _losses(resumed)
    assert sorted(a) == sorted(b) == list(range(1, 7))
    for step in a:  # identical losses: same batches, same dropout, same optimizer state
        assert a[step] == b[step], (step, a[step], b[step])


class _NanAfter(BertPretrainTask):
    """Poisons the batches from step `nan_step` on (test only)."""

    nan_step = 4

    def train_dataset(self, process_index=0, process_count=1):
        ds = super().train_dataset(process_index, process_count)

        def poison(i, batch):
            if i + 1 >= self.nan_step:
                batch = dict(batch, masked_weights=batch["masked_weights"] * np.nan)
            return batch

        return ds.map_with_index(poison)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    config = tiny_config(num_train_steps=8, checkpoint_every_steps=2)
    task = _NanAfter(config, str(tmp_path))
    with pytest.raises(FloatingPointError, match="at step 4"):
        train_and_evaluate(config, str(tmp_path), task=task, progress=False)
    steps = Checkpointer(str(tmp_path / "checkpoints")).all_steps()
    assert steps and max(steps) == 2, steps


def test_the_loop_builds_its_task_with_the_callable_it_is_given(tmp_path):
    """train_and_evaluate(config, workdir, task): a callable task is called inside the loop
    with (config, workdir), after the shared config checks."""
    calls = []

    def build(config, workdir):
        calls.append((config.batch_size, workdir))
        raise ValueError("bad task input")

    workdir = str(tmp_path / "run")
    with pytest.raises(ValueError, match="bad task input"):
        train_and_evaluate(tiny_config(), workdir, build, progress=False)
    assert calls == [(8, workdir)]
    with pytest.raises(ValueError, match="config.batch_size=0"):
        train_and_evaluate(tiny_config(batch_size=0), workdir, build, progress=False)
    assert len(calls) == 1  # refused before the task was built


def test_sigterm_saves_and_the_same_command_resumes(tmp_path):
    workdir = str(tmp_path / "run")
    cmd = [sys.executable, os.path.join(ROOT, "launch.py"), "--config",
           os.path.join(ROOT, "experiments/bert/pretrain.py:tiny,steps=400"), "--workdir",
           workdir, "--no-progress", "--config.max_seq_len=32", "--config.batch_size=4",
           "--config.data.vocab_size=1000", "--config.data.dupe_factor=1",
           "--config.log_every_steps=1", "--config.checkpoint_every_steps=1000",
           "--config.eval_every_steps=1000", "--config.num_eval_batches=1"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    stopped_run = stopped_by_signal(cmd, os.path.join(workdir, "metrics.jsonl"), 5, env)
    # 128 + SIGTERM's number, as a shell reports a killed process: a scheduler sees a
    # pre-emption, not a success; summary.json says where it stopped
    assert stopped_run.returncode == 128 + signal.SIGTERM, stopped_run.stderr[-2000:]
    summary = json.loads(stopped_run.stdout.strip().splitlines()[-1])
    assert summary["ended"].startswith("stopped by signal SIGTERM") and summary["signal"] == "SIGTERM"
    with open(os.path.join(workdir, "summary.json")) as f:
        assert json.load(f)["step"] == summary["step"]
    stopped = summary["step"]
    assert 5 <= stopped < 400
    assert Checkpointer(os.path.join(workdir, "checkpoints")).latest_step() == stopped
    cmd[cmd.index("--config") + 1] = os.path.join(ROOT, f"experiments/bert/pretrain.py:tiny,steps={stopped + 3}")
    # the same run, with fewer total steps so it finishes quickly
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["resumed_from"] == stopped
    assert sorted(_losses(workdir)) == list(range(1, stopped + 4))


# launch.py with the report's writer replaced by Ctrl-C: a signal while the report is written
_CTRL_C_IN_REPORT = """
import signal, sys
from ssl_jax.train import report
report.write_report = lambda *args, **kwargs: signal.raise_signal(signal.SIGINT)
import launch
sys.exit(launch.main(sys.argv[1:]))
"""


def test_ctrl_c_while_the_report_is_written_leaves_a_workdir_the_next_run_completes(tmp_path):
    workdir = str(tmp_path / "run")
    args = ["--config", os.path.join(ROOT, "experiments/bert/pretrain.py:tiny,steps=2"),
            "--workdir", workdir, "--no-progress", "--config.max_seq_len=32",
            "--config.batch_size=4", "--config.data.vocab_size=1000",
            "--config.data.dupe_factor=1", "--config.num_eval_batches=1"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    stopped = subprocess.run([sys.executable, "-c", _CTRL_C_IN_REPORT, *args], env=env,
                             capture_output=True, text=True, timeout=300)
    assert stopped.returncode == 130 and "Traceback" not in stopped.stderr, stopped.stderr[-2000:]
    with open(os.path.join(workdir, "summary.json")) as f:
        summary = json.load(f)
    assert summary["signal"] == "SIGINT" and summary["step"] == 2
    assert "while writing the report; re-run the same command" in summary["ended"]
    assert not os.path.exists(os.path.join(workdir, "report.md"))
    done = subprocess.run([sys.executable, os.path.join(ROOT, "launch.py"), *args], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["ended"] == "completed" and summary["resumed_from"] == 2
    assert os.path.exists(os.path.join(workdir, "report.md"))
    assert sorted(_losses(workdir)) == [1, 2]  # nothing trained twice


def test_workdir_has_every_artifact(tmp_path):
    summary = train_and_evaluate(tiny_config(), str(tmp_path), BertPretrainTask, progress=False)
    assert summary["ended"] == "completed"
    for name in ("config.json", "metrics.jsonl", "report.md", "loss.png", "accuracy.png",
                 "tokenizer/vocab.txt", "tokenizer/tokenizer.json", "summary.json"):
        assert (tmp_path / name).is_file(), name
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tb"))
    records = read_metrics(str(tmp_path / "metrics.jsonl"))
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert {"loss", "mlm_loss", "nsp_loss", "mlm_accuracy", "learning_rate",
            "tokens_per_s"} <= set(records[0])
    assert {"eval_loss", "eval_mlm_perplexity", "eval_nsp_accuracy"} <= set(records[1])
    assert np.isclose(records[1]["eval_mlm_perplexity"], np.exp(records[1]["eval_mlm_loss"]))
    assert json.load(open(tmp_path / "config.json"))["task"] == "bert_pretrain"
    report = (tmp_path / "report.md").read_text()
    assert "![loss](loss.png)" in report and "unigram MLM loss (held-out) = " in report
    again = train_and_evaluate(tiny_config(), str(tmp_path), BertPretrainTask, progress=False)
    assert again["resumed_from"] == 4 and again["loss"] == summary["loss"]


def test_checkpointer_keeps_latest_and_best(tmp_path):
    ckpt = Checkpointer(str(tmp_path), keep=2)
    state = {"w": jnp.arange(3.0)}
    for step, eval_loss in zip(range(1, 6), [5.0, 1.0, 4.0, 3.0, 2.0]):
        ckpt.save(step, {"w": state["w"] + step}, {"next_index": step}, {"eval_loss": eval_loss})
    ckpt.manager.wait_until_finished()  # the saves are asynchronous
    assert ckpt.all_steps() == [2, 4, 5] and ckpt.best_step() == 2
    restored, data = ckpt.restore({"w": state["w"]}, step=2)
    np.testing.assert_array_equal(restored["w"], state["w"] + 2)
    assert data == {"next_index": 2}
    ckpt.close()
    again = Checkpointer(str(tmp_path), keep=2)  # after a restart the best is still known
    again.save(6, {"w": state["w"]}, {"next_index": 6}, {"eval_loss": 9.0})
    again.close()
    assert again.all_steps() == [2, 5, 6] and again.best_step() == 2


def test_zero_steps_evaluates_and_keeps_the_initial_parameters(tmp_path):
    """num_train_steps=0: the random-init baseline of a comparison. The initial parameters
    are evaluated at step 0, checkpointed and measured (a vision task's probe); nothing trains."""
    import jax

    from ssl_jax.tasks.jigsaw import JigsawTask

    config = config_lib.load_config(
        os.path.join(ROOT, "experiments/vision/jigsaw.py:steps=0,batch=8"),
        [("model.channels", "[8, 8, 8]"), ("data_threads", "1"), ("data.limit", "300")])
    summary = train_and_evaluate(config, str(tmp_path), JigsawTask, progress=False)
    assert summary["step"] == 0 and summary["ended"] == "completed"
    assert abs(summary["eval_jigsaw_loss"] - math.log(100)) < 0.1  # untrained: ~log N
    assert "probe_accuracy" in summary and (tmp_path / "probe.json").exists()
    task = JigsawTask(config, str(tmp_path))
    init = task.init_params(jax.random.PRNGKey(config.seed))
    abstract = jax.eval_shape(lambda: init)
    saved = Checkpointer(str(tmp_path / "checkpoints")).restore_params(abstract, step=0)
    jax.tree_util.tree_map(np.testing.assert_array_equal, saved, init)
    with pytest.raises(ValueError, match="num_train_steps=-1"):
        train_and_evaluate(config_lib.load_config(
            os.path.join(ROOT, "experiments/vision/jigsaw.py:steps=-1")), str(tmp_path / "x"),
            JigsawTask)
