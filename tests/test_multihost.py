"""Multi-host: two real processes (4 fake CPU devices each, gloo collectives on 127.0.0.1)
train, checkpoint, evaluate and score like one process with 8 devices, and only process 0
writes the workdir's files; bad --distributed arguments fail before any compute."""
import glob
import json
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import launch
from ssl_jax.cluster.distributed import NO_CLUSTER
from ssl_jax.data.batching import training_batches
from ssl_jax.train.checkpoint import Checkpointer
from ssl_jax.train.metrics import read_metrics
from tests.conftest import ROOT
from tests.test_finetune import FIXTURES

MRPC = os.path.join(FIXTURES, "glue", "MRPC")  # dev.tsv: 5 pairs, one eval batch of 8
STEPS = 4
# Fine-tuning on MRPC under data=2 x fsdp=2 x tensor=2 (fsdp_tp: the two processes hold
# different shards of every sharded parameter), dropout on, evaluated (loss and scored
# predictions) and checkpointed at the end
OVERRIDES = {"max_seq_len": "64", "batch_size": "8", "num_eval_batches": "None",
             "data_threads": "1", "log_every_steps": "1", "eval_every_steps": str(STEPS),
             "checkpoint_every_steps": str(STEPS), "mesh.data": "2", "mesh.fsdp": "2",
             "mesh.tensor": "2", "sharding_rules": "fsdp_tp"}


def _pretrained(workdir: str) -> str:
    """A BERT pre-training workdir (config.json, tokenizer/, a checkpoint of its initial
    parameters) to fine-tune from: each process restores its encoder (restore_params)."""
    from ssl_jax.tasks.bert_pretrain import BertPretrainTask
    from ssl_jax.train.step import TrainState
    from ssl_jax.train.workdir import write_config
    from tests.conftest import tiny_config

    config = tiny_config()
    task = BertPretrainTask(config, workdir)  # writes tokenizer/
    write_config(config, workdir)
    params = jax.jit(task.init_params)(jax.random.PRNGKey(7))
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
    checkpointer.save(1, TrainState.create(apply_fn=None, params=params, tx=optax.sgd(0.1)),
                      {}, {"eval_loss": 1.0})
    checkpointer.close()
    return workdir


def _specs(root: str, init: str, pause: bool) -> list[dict]:
    """The fine-tuning run; `pause`: stopped after 2 steps and resumed by a second call (each
    process restores its own data iterator state)."""
    spec = dict(name="finetune", workdir=os.path.join(root, "finetune"), overrides=OVERRIDES,
                config=f"finetune/glue.py:task=mrpc,init={init},path={MRPC},steps={STEPS}")
    return ([dict(spec, name="paused", stop_after=2)] if pause else []) + [spec]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_children(commands: list[list[str]], envs: list[dict], timeout: float) -> list[dict]:
    """Starts every command at once; a failed one stops the others (they would wait for it
    at their next collective). -> each one's last JSON line."""
    children = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for cmd, env in zip(commands, envs)]
    deadline = time.monotonic() + timeout
    try:
        while any(c.poll() is None for c in children):
            failed = [c for c in children if c.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    outs = [c.communicate() for c in children]
    for child, (out, err) in zip(children, outs):
        assert child.returncode == 0, f"exit {child.returncode}:\n{err[-4000:]}"
    return [json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
            for out, _ in outs]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same runs in one process with 8 devices and in two processes with 4 each, side
    by side: {"one": (root, out), "two": (root, [out of process 0, of process 1])}."""
    roots = {k: str(tmp_path_factory.mktemp(k)) for k in ("one", "two")}
    init = _pretrained(str(tmp_path_factory.mktemp("pretrained")))
    child = [sys.executable, os.path.join(ROOT, "tests", "layouts.py")]
    # the resumed call's steps come from the cache its paused call filled
    base = dict(os.environ, JAX_PLATFORMS="cpu", JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax_cache")))
    commands, envs = [], []
    for kind, processes in (("one", 1), ("two", 2)):
        path = os.path.join(roots[kind], "runs.json")
        with open(path, "w") as f:
            json.dump(_specs(roots[kind], init, pause=kind == "two"), f)
        flags = f"--xla_force_host_platform_device_count={8 // processes}"
        port = _free_port()
        for i in range(processes):
            dist = (["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                     "--process-id", str(i)] if processes > 1 else [])
            commands.append(child + [path] + dist)
            envs.append(dict(base, XLA_FLAGS=flags))
    one, *two = _run_children(commands, envs, timeout=400)
    return {"one": (roots["one"], one), "two": (roots["two"], two)}


def _close(a, b, what):
    np.testing.assert_allclose(a, b, rtol=1e-5, err_msg=what)


def test_two_processes_train_evaluate_and_score_like_one(runs):
    _, one = runs["one"]
    _, two = runs["two"]
    assert _same_numbers(two[0], two[1])
    reference = one["finetune"]
    assert len(reference["losses"]) == STEPS
    evals = {k: v for k, v in reference["summary"].items() if k.startswith("eval_")}
    assert {"eval_loss", "eval_accuracy", "eval_f1"} <= set(evals), evals
    for process, out in enumerate(two):
        assert out["paused"]["summary"]["step"] == 2
        # paused at 2, resumed to 4: the losses of the uninterrupted one-process run
        _close(out["finetune"]["losses"], reference["losses"], f"process {process}")
        for k, v in evals.items():
            _close(out["finetune"]["summary"][k], v, f"{k} process {process}")
        # every held-out example scored once: MRPC's dev.tsv has 5 pairs (the batch of 8
        # holds 3 padding rows, on process 1's devices)
        assert out["finetune"]["eval_examples"] == reference["eval_examples"] == 5
        assert out["finetune"]["scored"] == reference["scored"] == [5]


def _same_numbers(a: dict, b: dict) -> bool:
    """Both processes' results, timing aside."""
    drop = lambda out: {name: dict(r, summary={k: v for k, v in r["summary"].items()
                                               if k not in ("tokens_per_s", "steps_per_s")})
                        for name, r in out.items()}
    return drop(a) == drop(b)


def _restored(checkpoint_dir: str, step: int):
    """A checkpoint's state as numpy arrays (whatever mesh and processes wrote it)."""
    path = os.path.join(checkpoint_dir, str(step), "state")
    checkpointer = ocp.PyTreeCheckpointer()
    tree = checkpointer.metadata(path).item_metadata.tree
    args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return checkpointer.restore(path, restore_args=args)


def test_the_checkpoints_hold_the_same_state(runs):
    step = STEPS
    one, two = (os.path.join(runs[k][0], "finetune", "checkpoints") for k in ("one", "two"))
    a, b = _restored(one, step), _restored(two, step)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    leaves = jax.tree_util.tree_leaves_with_path(a)
    assert len(leaves) > 20
    for (path, x), y in zip(leaves, jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7,
                                   err_msg=jax.tree_util.keystr(path))
    # the data iterator's state: one file per process, each process's own position
    data = lambda d: {os.path.basename(p): json.load(open(p))
                      for p in glob.glob(os.path.join(d, str(step), "data", "*.json"))}
    assert data(one) == {"process_0-of-1.json": {"next_index": step}}
    assert data(two) == {f"process_{i}-of-2.json": {"next_index": step} for i in range(2)}


def test_process_zero_is_the_one_writer(runs):
    root, _ = runs["two"]
    workdir = os.path.join(root, "finetune")
    assert glob.glob(os.path.join(root, "**", "metrics.jsonl"), recursive=True) == [
        os.path.join(workdir, "metrics.jsonl")]
    records = read_metrics(os.path.join(workdir, "metrics.jsonl"))
    expected = read_metrics(os.path.join(runs["one"][0], "finetune", "metrics.jsonl"))
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))  # no line twice
    _close([r["loss"] for r in records], [r["loss"] for r in expected], "metrics.jsonl")
    # one TensorBoard event file per training call (the paused one, the resumed one)
    assert len(glob.glob(os.path.join(root, "**", "events.out.tfevents.*"),
                         recursive=True)) == 2, os.listdir(os.path.join(workdir, "tb"))
    for name in ("config.json", "summary.json", "report.md"):
        assert os.path.isfile(os.path.join(workdir, name)), name
    assert not os.path.exists(os.path.join(workdir, "config_history.jsonl"))
    assert not glob.glob(os.path.join(workdir, ".*.tmp"))


def test_a_checkpoint_of_two_processes_is_refused_by_one(runs):
    """Each process reads its own shard of the data, so the iterator states do not carry
    over to another process count: a clear refusal, before any array is read."""
    checkpoints = os.path.join(runs["two"][0], "finetune", "checkpoints")
    ckpt = Checkpointer(checkpoints)
    try:
        with pytest.raises(ValueError, match=r"holds the data iterator states of 2 "
                                             r"process\(es\); this run has 1"):
            ckpt.restore({}, step=STEPS)
    finally:
        ckpt.close()


def test_process_batches_are_blocks_of_the_global_batch():
    """Process p's k-th batch = rows p*b .. (p+1)*b-1 of one process's k-th batch, also
    for a per-example random map (dynamic masking): the same batches and draws."""
    draw = lambda item, rng: {"x": np.int64(item), "r": rng.integers(1 << 30)}
    one = training_batches(list(range(13)), seed=3, batch_size=6, random_map=draw)
    parts = [training_batches(list(range(13)), seed=3, batch_size=2, random_map=draw,
                              process_index=p, process_count=3) for p in range(3)]
    for k in range(5):  # past the first epoch (13 items)
        for key in ("x", "r"):
            np.testing.assert_array_equal(np.concatenate([p[k][key] for p in parts]),
                                          one[k][key])


NO_CLUSTER_ENV = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
                  "SLURM_LOCALID", "OMPI_MCA_orte_hnp_uri", "KUBERNETES_SERVICE_HOST",
                  "JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES")


def test_distributed_without_a_cluster_is_one_line(tmp_path):
    """Auto-detection finds no Slurm, TPU or Open MPI job here: the hint, exit 2, nothing
    written (a fresh process: jax.distributed.initialize comes before any JAX call)."""
    env = {k: v for k, v in os.environ.items() if k not in NO_CLUSTER_ENV}
    workdir = tmp_path / "run"
    done = subprocess.run([sys.executable, os.path.join(ROOT, "launch.py"), "--config",
                           os.path.join(ROOT, "experiments/bert/pretrain.py:tiny"), "--workdir",
                           str(workdir), "--distributed"], env=dict(env, JAX_PLATFORMS="cpu"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr == f"error: {NO_CLUSTER}\n", done.stderr
    assert done.stdout == "" and not workdir.exists()


@pytest.mark.parametrize("args,message", [
    (["--coordinator", "127.0.0.1:1234"],
     "missing --num-processes, --process-id: --coordinator, --num-processes, --process-id "
     "go together"),
    (["--num-processes", "2", "--process-id", "0"], "missing --coordinator"),
    (["--coordinator", "localhost", "--num-processes", "2", "--process-id", "0"],
     "--coordinator='localhost': expected HOST:PORT"),
    (["--coordinator", "10.0.0.1:99999", "--num-processes", "2", "--process-id", "0"],
     "--coordinator='10.0.0.1:99999': expected HOST:PORT"),
    (["--coordinator", "10.0.0.1:1234", "--num-processes", "0", "--process-id", "0"],
     "--num-processes=0: expected an integer >= 1"),
    (["--coordinator", "10.0.0.1:1234", "--num-processes", "two", "--process-id", "0"],
     "--num-processes='two': expected an integer >= 1"),
    (["--coordinator", "10.0.0.1:1234", "--num-processes", "2", "--process-id", "2"],
     "--process-id=2: expected an integer in 0..1 (--num-processes=2)"),
    (["--coordinator", "10.0.0.1:1234", "--num-processes", "2", "--process-id", "-1"],
     "--process-id=-1: expected an integer in 0..1"),
    (["--distributed", "--sweep", "--sweep-workers", "2"],
     "--sweep-workers=2 with --distributed"),
])
def test_bad_distributed_arguments_fail_before_any_compute(args, message, capsys, tmp_path):
    workdir = tmp_path / "run"
    code = launch.main(["--config", os.path.join(ROOT, "experiments/bert/pretrain.py:tiny"),
                        "--workdir", str(workdir), "--no-progress", *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not workdir.exists()
    assert not jax.distributed.is_initialized()
