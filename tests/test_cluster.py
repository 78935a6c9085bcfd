"""Runs on schedulers (ssl_jax.cluster): sweep points and single runs as submitit jobs (its
`local` executor starts real job processes here; Slurm's submission file is checked as text
through a stand-in `sbatch`), multi-task jobs equal to one process with the same devices,
pre-emption (SIGUSR2) that saves, exits 128 + 12 and is requeued to resume exactly,
resumable sweeps and their status, the TPU pod command, and bad options as one line."""
import csv
import importlib
import json
import os
import shlex
import signal
import subprocess
import sys

import pytest

import launch
from ssl_jax import config as config_lib
# submitit, imported here rather than inside a test: its logging handler binds the sys.stderr
# of the moment it is imported, and a test's captured stream is closed when the test ends
importlib.import_module("ssl_jax.cluster.job")
from ssl_jax.sweep import __main__ as sweep_command
from ssl_jax.sweep import run_sweep, state
from ssl_jax.train.metrics import read_metrics
from tests.conftest import ROOT, stopped_by_signal
from tests.test_sweep import StubTrain

TINY = ["--config.model.num_layers=1", "--config.model.hidden_size=32",
        "--config.model.num_heads=2", "--config.model.mlp_dim=64", "--config.max_seq_len=32",
        "--config.batch_size=8", "--config.num_eval_batches=1", "--config.data.vocab_size=1000",
        "--config.data.dupe_factor=1", "--config.data_threads=1", "--config.log_every_steps=1"]
TWO_POINTS = ('"""python launch.py --config two.py --workdir w --sweep"""\n'
              "from experiments.bert import pretrain\n"
              "derived_fields = pretrain.derived_fields\n"
              "def get_config(arg=None):\n    return pretrain.get_config(arg)\n"
              "def get_sweep():\n"
              "    return {'mask_rate=0.15': {}, 'nsp=False': {'data.nsp': False}}\n")
# what differs between two runs of the same point: speed
TIMING = ("tokens_per_s", "steps_per_s")


def _env(**extra) -> dict:
    return dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", **extra)


def _launch(*args, env=None, timeout=400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(ROOT, "launch.py"), *args],
                          env=env or _env(), capture_output=True, text=True, timeout=timeout)


def _table(workdir) -> list[dict]:
    with open(os.path.join(workdir, "sweep.csv")) as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def _losses(point_dir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(os.path.join(point_dir, "metrics.jsonl"))}


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """The same 2-point sweep inline and as local submitit jobs (2 at a time)."""
    root = tmp_path_factory.mktemp("sweeps")
    (root / "two.py").write_text(TWO_POINTS)
    out = {}
    for executor in ("inline", "local"):
        workdir = str(root / executor)
        done = _launch("--config", f"{root / 'two.py'}:tiny,steps=2", "--workdir", workdir,
                       "--sweep", "--no-progress", "--executor", executor,
                       "--sweep-workers", "2" if executor == "local" else "1", *TINY)
        assert done.returncode == 0, done.stderr[-3000:]
        out[executor] = (workdir, done)
    out["config"] = str(root / "two.py")
    return out


def test_local_jobs_give_the_inline_sweep_table(sweeps):
    inline, _ = sweeps["inline"]
    local, done = sweeps["local"]
    assert _table(local) == _table(inline)
    rows = open(os.path.join(inline, "sweep.csv")).read().splitlines()
    assert rows[0].startswith("name,arg,status,step,selection,eval_loss") and len(rows) == 3
    assert rows[2].startswith('nsp=False,"tiny,steps=2 --config.data.nsp=false",completed,2,')
    for workdir in (inline, local):
        assert os.path.exists(os.path.join(workdir, "nsp=False", "report.md"))
        assert "| mask_rate=0.15 | completed |" in open(os.path.join(workdir, "sweep.md")).read()
        assert os.path.getsize(os.path.join(workdir, "sweep.png")) > 0  # a bar per point
    # each point its own job, announced with its log
    submitted = [line for line in done.stdout.splitlines() if line.startswith("submitted")]
    assert len(submitted) == 2
    for line, name in zip(submitted, ("mask_rate=0.15", "nsp=False")):
        job_id = state.read_point(os.path.join(local, name))["job_id"]
        assert line.startswith(f"submitted {name}: job {job_id}, log ")
        assert os.path.exists(line.split(", log ")[1])
    assert "Best point by eval_loss" in (open(os.path.join(local, "sweep.md")).read())


def test_status_prints_a_row_per_point_and_a_rerun_trains_nothing(sweeps, capsys):
    local, _ = sweeps["local"]
    assert sweep_command.main(["status", local]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "state", "step", "eval_loss", "attempts", "job_id",
                                "status"]
    table = {r["name"]: r for r in _table(local)}
    for line in lines[1:]:
        name, st, step, loss, attempts, job_id, status = line.split()
        assert (st, step, attempts, status) == ("done", "2", "1", "completed")
        assert loss == f"{float(table[name]['eval_loss']):.4f}"
        assert job_id == state.read_point(os.path.join(local, name))["job_id"]
    before = os.path.getmtime(os.path.join(local, "nsp=False", "metrics.jsonl"))
    again = _launch("--config", f"{sweeps['config']}:tiny,steps=2", "--workdir", local,
                    "--sweep", "--no-progress", *TINY)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "2 of 2 points ended earlier" in again.stderr and "training 0" in again.stderr
    assert os.path.getmtime(os.path.join(local, "nsp=False", "metrics.jsonl")) == before
    assert state.read_point(os.path.join(local, "nsp=False"))["attempts"] == 1


def test_status_of_a_directory_without_a_sweep_is_one_line(tmp_path, capsys):
    assert sweep_command.main(["status", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no sweep.json" in err


class Flaky(StubTrain):
    """A StubTrain whose named points stop (SIGTERM) or fail on their first call."""

    def __init__(self, stop=(), fail=()):
        super().__init__(lambda c: {"eval_loss": c.optimizer.learning_rate})
        self.stop, self.fail = set(stop), set(fail)

    def __call__(self, config, workdir):
        name = os.path.basename(workdir)
        summary = super().__call__(config, workdir)
        if name in self.fail:
            self.fail.discard(name)
            raise RuntimeError("out of memory")
        if name in self.stop:
            self.stop.discard(name)
            return dict(summary, ended="stopped by signal SIGTERM at step 1", step=1,
                        signal="SIGTERM")
        return summary


def _lr_sweep(tmp_path, points):
    path = tmp_path / "lrs.py"
    path.write_text("from experiments.bert import pretrain\n"
                    "derived_fields = pretrain.derived_fields\n"
                    "def get_config(arg=None):\n    return pretrain.get_config(arg)\n"
                    f"def get_sweep():\n    return {points!r}\n")
    return config_lib.load_module(str(path))


def test_a_rerun_trains_only_what_is_missing(tmp_path):
    lrs = {f"lr={lr}": {"optimizer.learning_rate": lr} for lr in (1e-4, 2e-4, 3e-4, 4e-4)}
    module, workdir = _lr_sweep(tmp_path, lrs), str(tmp_path / "sweep")
    first = Flaky(fail=["lr=0.0002"], stop=["lr=0.0003"])
    rows = run_sweep(module, "tiny", [], workdir, first)
    # the stop (a pre-emption) ends the sweep: the last point never started
    assert [c[0] for c in first.calls] == ["lr=0.0001", "lr=0.0002", "lr=0.0003"]
    assert [r["status"].split(":")[0] for r in rows] == [
        "completed", "failed", "stopped by signal SIGTERM at step 1"]
    states = {e["name"]: (state.read_point(os.path.join(workdir, e["dir"])) or {}).get("state")
              for e in state.read_plan(workdir)}
    assert states == {"lr=0.0001": "done", "lr=0.0002": "failed", "lr=0.0003": "stopped",
                      "lr=0.0004": None}
    second = Flaky()
    rows = run_sweep(module, "tiny", [], workdir, second)
    # done and failed points are kept; the stopped one resumes, the missing one trains
    assert [c[0] for c in second.calls] == ["lr=0.0003", "lr=0.0004"]
    assert [r["status"].split(":")[0] for r in rows] == ["completed", "failed", "completed",
                                                         "completed"]
    assert "| lr=0.0004 | completed | 0.0004 |" in (tmp_path / "sweep" / "sweep.md").read_text()
    third = Flaky()
    rows = run_sweep(module, "tiny", [], workdir, third, retry_failed=True)
    assert [c[0] for c in third.calls] == ["lr=0.0002"]
    assert all(r["status"] == "completed" for r in rows)
    # a changed config (here the steps) is another run: every point trains again
    fourth = Flaky()
    run_sweep(module, "tiny", [("num_train_steps", "3")], workdir, fourth)
    assert len(fourth.calls) == 4
    assert state.read_point(os.path.join(workdir, "lr=0.0004"))["attempts"] == 1


def test_a_preempted_job_is_requeued_and_resumes_exactly(sweeps, tmp_path):
    """SIGUSR2 to the job's task (what Slurm sends before pre-emption or the time limit):
    the loop saves, submitit requeues the job, the requeued job resumes; its losses are the
    uninterrupted run's."""
    args = ["--config", f"{sweeps['config']}:tiny,steps=24", "--sweep", "--sweep-points",
            "nsp=False", "--no-progress", *TINY, "--config.checkpoint_every_steps=1000"]
    reference = str(tmp_path / "inline")
    done = _launch(*args, "--workdir", reference)
    assert done.returncode == 0, done.stderr[-2000:]
    workdir = str(tmp_path / "jobs")
    point = os.path.join(workdir, "nsp=False")
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "launch.py"), *args,
                             "--workdir", workdir, "--executor", "local"],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    import time
    deadline = time.time() + 240
    while len(read_metrics(os.path.join(point, "metrics.jsonl"))) < 3 and time.time() < deadline:
        time.sleep(0.2)
    task_pid = state.read_point(point)["pid"]  # the job's task (not the launcher)
    os.kill(task_pid, signal.SIGUSR2)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    record = state.read_point(point)
    assert record["state"] == "done" and record["attempts"] == 2 and record["pid"] != task_pid
    logs = open(os.path.join(workdir, "jobs", record["job_id"],
                             f"{record['job_id']}_0_log.err")).read()
    assert "Requeued job" in logs
    summary = json.load(open(os.path.join(point, "summary.json")))
    assert summary["resumed_from"] is not None and 3 <= summary["resumed_from"] < 24
    assert _losses(point) == _losses(os.path.join(reference, "nsp=False"))
    assert _table(workdir) == _table(reference)


def test_sigusr2_stops_a_plain_run_with_status_140(tmp_path):
    workdir = str(tmp_path / "run")
    cmd = [sys.executable, os.path.join(ROOT, "launch.py"), "--config",
           os.path.join(ROOT, "experiments/bert/pretrain.py:tiny,steps=400"), "--workdir",
           workdir, "--no-progress", *TINY, "--config.checkpoint_every_steps=1000",
           "--config.eval_every_steps=1000"]
    done = stopped_by_signal(cmd, os.path.join(workdir, "metrics.jsonl"), 3, _env(),
                             sig=signal.SIGUSR2)
    assert done.returncode == 128 + signal.SIGUSR2 == 140, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["signal"] == "SIGUSR2" and summary["ended"].startswith("stopped by signal")
    assert os.path.isdir(os.path.join(workdir, "checkpoints", str(summary["step"])))


def test_a_two_task_job_equals_one_process_with_the_same_devices(tmp_path):
    """tasks_per_node=2, 4 fake CPU devices each (jax.distributed from submitit's job
    environment, gloo collectives) vs one process with 8, on a data x fsdp x tensor mesh."""
    args = ["--config", os.path.join(ROOT, "experiments/bert/pretrain.py:tiny,steps=3"),
            "--no-progress", *TINY, "--config.mesh.data=2", "--config.mesh.fsdp=2",
            "--config.mesh.tensor=2"]
    one = _launch(*args, "--workdir", str(tmp_path / "one"),
                  env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=8"))
    assert one.returncode == 0, one.stderr[-2000:]
    two = _launch(*args, "--workdir", str(tmp_path / "two"), "--executor", "local",
                  "--slurm.tasks_per_node=2",
                  env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"))
    assert two.returncode == 0, two.stderr[-3000:]
    jobs = os.listdir(tmp_path / "two" / "jobs" / two.stdout.split("job ")[1].split(",")[0])
    assert {"0_log.err", "1_log.err"} <= {j.split("_", 1)[1] for j in jobs}  # two tasks
    a, b = _losses(str(tmp_path / "one")), _losses(str(tmp_path / "two"))
    assert a.keys() == b.keys() == {1, 2, 3}
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-5)
    summary_one = json.loads(one.stdout.strip().splitlines()[-1])
    summary_two = json.loads(two.stdout.strip().splitlines()[-1])
    assert summary_two["eval_loss"] == pytest.approx(summary_one["eval_loss"], rel=1e-5)


@pytest.fixture
def fake_sbatch(tmp_path, monkeypatch):
    """An `sbatch` on PATH that keeps the submission file and answers as Slurm does, an
    `squeue` that lists the ids in tmp_path/queued, and an `srun` (submitit looks for it)."""
    bin_dir, kept = tmp_path / "bin", tmp_path / "submitted.sh"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {kept}\necho "Submitted batch job 4242"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "squeue").write_text(f"#!/bin/sh\ncat {tmp_path / 'queued'} 2>/dev/null\nexit 0\n")
    for tool in ("sbatch", "srun", "squeue"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return kept


SLURM = ["--executor", "slurm", "--slurm.partition", "gpu", "--slurm.nodes=2",
         "--slurm.gpus_per_node=8", "--slurm.tasks_per_node=8", "--slurm.time_min=240",
         "--slurm.array_parallelism=1", "--slurm.mem_gb=64", "--slurm.account=abc"]


def test_a_sweep_is_one_slurm_job_array(fake_sbatch, tmp_path, capsys):
    (tmp_path / "two.py").write_text(TWO_POINTS)
    workdir = str(tmp_path / "sweep")
    code = launch.main(["--config", f"{tmp_path / 'two.py'}:tiny", "--workdir", workdir,
                        "--sweep", *SLURM])
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    jobs = os.path.join(workdir, "jobs")
    assert out == [f"submitted mask_rate=0.15: job 4242_0, log {jobs}/4242_0/4242_0_0_log.out",
                   f"submitted nsp=False: job 4242_1, log {jobs}/4242_1/4242_1_0_log.out"]
    text = fake_sbatch.read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --nodes=2", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --ntasks-per-node=8", "#SBATCH --time=240", "#SBATCH --mem=64GB",
                 "#SBATCH --account=abc", "#SBATCH --array=0-1%1", "#SBATCH --signal=USR2@90",
                 "#SBATCH --job-name=ssl_jax", f"#SBATCH --output={jobs}/%A_%a/%A_%a_0_log.out",
                 f"export PYTHONPATH={shlex.quote(ROOT)}${{PYTHONPATH:+:$PYTHONPATH}}"):
        assert line in text.splitlines(), line
    assert "srun" in text and "-m submitit.core._submit" in text
    assert os.path.exists(os.path.join(jobs, "4242_0", "4242_0_submitted.pkl"))
    rows = state.status_rows(workdir)
    assert [(r["name"], r["state"], r["job_id"]) for r in rows] == [
        ("mask_rate=0.15", "pending", "4242_0"), ("nsp=False", "pending", "4242_1")]
    # the same command again while 4242_1 is still queued: only the other point is submitted
    (tmp_path / "queued").write_text("4242_1\n999\n")
    fake_sbatch.unlink()
    assert launch.main(["--config", f"{tmp_path / 'two.py'}:tiny", "--workdir", workdir,
                        "--sweep", *SLURM]) == 0
    captured = capsys.readouterr()
    assert "nsp=False is still queued or running as job 4242_1; skipped" in captured.err
    assert captured.out.splitlines() == [
        f"submitted mask_rate=0.15: job 4242, log {jobs}/4242/4242_0_log.out"]  # one job
    assert "--array" not in fake_sbatch.read_text()


def test_a_single_run_is_one_slurm_job(fake_sbatch, tmp_path, capsys):
    workdir = str(tmp_path / "run")
    code = launch.main(["--config", os.path.join(ROOT, "experiments/bert/pretrain.py:tiny"),
                        "--workdir", workdir, *SLURM[:-4], "--slurm.time_min=30"])
    assert code == 0
    assert capsys.readouterr().out == (f"submitted {workdir}: job 4242, log "
                                       f"{workdir}/jobs/4242/4242_0_log.out\n")
    text = fake_sbatch.read_text().splitlines()
    assert "#SBATCH --time=30" in text and not any("--array" in t for t in text)


def test_the_tpu_command_line(capsys, tmp_path):
    argv = ["--config", "experiments/gpt/pretrain.py:small", "--workdir", "/mnt/runs/gpt",
            "--tpu", "my-v4-32", "--zone=us-central2-b", "--project", "proj",
            "--config.batch_size=512"]
    assert launch.main(argv) == 0
    assert shlex.split(capsys.readouterr().out) == [
        "gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-v4-32", "--zone=us-central2-b",
        "--project=proj", "--worker=all",
        "--command=cd ~/ssl_jax && python3 launch.py --config experiments/gpt/pretrain.py:small "
        "--workdir /mnt/runs/gpt --config.batch_size=512 --distributed"]
    assert not os.path.exists("/mnt/runs/gpt")


@pytest.mark.parametrize("argv,message", [
    (["--slurm.partition=gpu"], "--slurm.partition needs --executor slurm (or local)"),
    (["--executor", "slurm", "--slurm.time_min=10", "--slurm.gpus=2"],
     "--slurm.gpus: unknown option; expected one of partition, nodes,"),
    (["--executor", "slurm", "--slurm.time_min=ten"],
     "--slurm.time_min='ten': expected an integer >= 1"),
    (["--executor", "slurm", "--slurm.nodes=0", "--slurm.time_min=5"],
     "--slurm.nodes='0': expected an integer >= 1"),
    (["--executor", "slurm"], "--executor slurm needs --slurm.time_min MINUTES"),
    (["--executor", "local", "--slurm.partition=gpu"],
     "--slurm.partition is a Slurm option; the local executor runs on this machine"),
    (["--executor", "local", "--slurm.nodes=2"], "--slurm.nodes is a Slurm option"),
    (["--executor", "slurm", "--slurm.time_min=5", "--sweep", "--sweep-workers=2"],
     "--sweep-workers=2 with --executor slurm"),
    (["--executor", "local", "--distributed"], "--executor local with --distributed"),
    (["--executor", "bogus"], None),
    (["--wait"], "--wait needs --executor slurm"),
    (["--retry-failed"], "--retry-failed needs --sweep"),
    (["--slurm.partition"], "--slurm.partition: expected a value"),
    (["--tpu", "pod"], "--tpu pod needs --zone ZONE"),
    (["--zone", "z"], "--zone needs --tpu NAME"),
    (["--tpu", "pod", "--zone", "z", "--executor", "local"], "--tpu with --executor local"),
])
def test_bad_executor_options_are_one_line(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no sbatch reached: refused before it
    workdir = str(tmp_path / "never")
    base = ["--config", os.path.join(ROOT, "experiments/bert/pretrain.py:tiny"), "--workdir",
            workdir if "--tpu" not in argv else "/abs/never"]
    if message is None:  # argparse's own usage error
        with pytest.raises(SystemExit) as e:
            launch.main(base + argv)
        assert e.value.code == 2
        return
    assert launch.main(base + argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {message}"), err
    assert not os.path.exists(workdir)


def test_slurm_without_sbatch_and_tpu_with_a_relative_workdir_are_refused(tmp_path, capsys,
                                                                         monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    base = ["--config", os.path.join(ROOT, "experiments/bert/pretrain.py:tiny")]
    assert launch.main(base + ["--workdir", str(tmp_path / "w"), "--executor", "slurm",
                               "--slurm.time_min=5"]) == 2
    assert "--executor slurm: sbatch and srun and squeue not on PATH" in capsys.readouterr().err
    assert launch.main(base + ["--workdir", "runs/x", "--tpu", "pod", "--zone", "z"]) == 2
    assert "--workdir runs/x: with --tpu it must be a path every host" in capsys.readouterr().err


def test_a_point_another_live_process_trains_is_skipped_and_a_dead_one_resumed(tmp_path):
    lrs = {f"lr={lr}": {"optimizer.learning_rate": lr} for lr in (1e-4, 2e-4)}
    module, workdir = _lr_sweep(tmp_path, lrs), str(tmp_path / "sweep")
    run_sweep(module, "tiny", [], workdir, Flaky(stop=["lr=0.0002"]))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # another sweep command of this host is training the stopped point now
        point = os.path.join(workdir, "lr=0.0002")
        state.update_point(point, state="running", pid=other.pid)
        assert [r["state"] for r in state.status_rows(workdir)] == ["done", "running"]
        train = Flaky()
        run_sweep(module, "tiny", [], workdir, train)
        assert train.calls == []
    finally:
        other.kill()
        other.wait()
    # that process is gone (killed): the point shows as interrupted, and a re-run resumes it
    assert [r["state"] for r in state.status_rows(workdir)] == ["done", "interrupted"]
    train = Flaky()
    rows = run_sweep(module, "tiny", [], workdir, train)
    assert [c[0] for c in train.calls] == ["lr=0.0002"]
    assert [r["status"] for r in rows] == ["completed", "completed"]


def test_running_some_points_keeps_the_others_in_the_report(tmp_path):
    lrs = {f"lr={lr}": {"optimizer.learning_rate": lr} for lr in (1e-4, 2e-4, 3e-4)}
    module, workdir = _lr_sweep(tmp_path, lrs), str(tmp_path / "sweep")
    run_sweep(module, "tiny", [], workdir, Flaky(), only=["lr=0.0003"])
    rows = run_sweep(module, "tiny", [], workdir, Flaky(), only=["lr=0.0001"])
    assert [r["name"] for r in rows] == ["lr=0.0001", "lr=0.0003"]  # the sweep's order
    assert [r["name"] for r in state.status_rows(workdir)] == ["lr=0.0001", "lr=0.0003"]
