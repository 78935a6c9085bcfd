"""`python -m ssl_jax.data.prepare`: corpus -> ArrayRecord shards, and training on them
(data.prepared / data.mixture) exactly as on the in-memory examples."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ssl_jax import config as config_lib
from ssl_jax.data import prepare, prepared
from ssl_jax.tasks.bert_pretrain import BertPretrainTask
from ssl_jax.tasks.gpt_pretrain import GptPretrainTask
from tests.conftest import ROOT, run_main, stopped_by_signal, tiny_config

BERT = "experiments/bert/pretrain.py:tiny"
GPT = "experiments/gpt/pretrain.py:gpt-tiny,seq_len=64,vocab=2000"


def gpt_config(**fields):
    overrides = {"batch_size": "8", "num_train_steps": "4", "log_every_steps": "1",
                 "eval_every_steps": "2", "checkpoint_every_steps": "2", "num_eval_batches": "2",
                 "data_threads": "1"}
    overrides.update({k: str(v) for k, v in fields.items()})
    return config_lib.load_config(os.path.join(ROOT, GPT), list(overrides.items()))


def _prepare(config, output, **kw):
    return prepare.prepare(config, str(output), log=lambda m: None, **kw)


def _records(directory, config, split="train"):
    source = prepared.Prepared(str(directory), config).source(split)
    return [source[i] for i in range(len(source))]


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    output = tmp_path_factory.mktemp("prep") / "bert"
    _prepare(tiny_config(), output, shard_size=50)
    return output


@pytest.fixture(scope="module")
def gpt_dir(tmp_path_factory):
    output = tmp_path_factory.mktemp("prep") / "gpt"
    _prepare(gpt_config(), output, shard_size=40)
    return output


def _assert_same_examples(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_bert_prepared_examples_equal_the_in_memory_ones(bert_dir, tmp_path):
    """Static masking: the same masked copies in the same order, so the shuffled batches a run
    trains on are the same; the held-out examples too."""
    memory = BertPretrainTask(tiny_config(), str(tmp_path / "a"))
    disk = BertPretrainTask(tiny_config(**{"data.prepared": bert_dir}), str(tmp_path / "b"))
    assert disk.num_train_sequences() == len(memory.train_instances) > 1000
    for a, b in zip(memory.epoch_examples(), disk.epoch_examples()):
        _assert_same_examples(a, b)
    ds_a, ds_b = memory.train_dataset(), disk.train_dataset()
    for i in range(5):
        _assert_same_examples(ds_a[i], ds_b[i])
    assert len(memory.eval_examples()) == len(disk.eval_examples()) > 0
    for a, b in zip(memory.eval_examples(), disk.eval_examples()[:]):
        _assert_same_examples(a, b)
    assert memory.describe()["baselines"] == disk.describe()["baselines"]
    assert (tmp_path / "b" / "tokenizer" / "vocab.txt").read_text() == (
        bert_dir / "tokenizer" / "vocab.txt").read_text()


def test_bert_dynamic_masking_prepares_unmasked_instances(tmp_path):
    config = tiny_config(**{"data.masking": "dynamic", "data.dupe_factor": 2})
    _prepare(config, tmp_path / "dyn", shard_size=80)
    memory = BertPretrainTask(config, str(tmp_path / "a"))
    disk = BertPretrainTask(tiny_config(**{"data.masking": "dynamic", "data.dupe_factor": 2,
                                           "data.prepared": tmp_path / "dyn"}),
                            str(tmp_path / "b"))
    ds_a, ds_b = memory.train_dataset(), disk.train_dataset()
    for i in range(4):  # re-masked when read, from the same position-keyed seeds
        _assert_same_examples(ds_a[i], ds_b[i])


def test_prepared_bert_data_has_the_papers_statistics(tmp_path, capsys):
    """15% of the tokens selected, 80/10/10 of those, 50% is-next (each within 1%), over the
    paper's 10 masked copies (about 15k sequences), prepared by 2 workers."""
    from ssl_jax import preview

    config = tiny_config(**{"data.dupe_factor": 10})
    _prepare(config, tmp_path / "ten", shard_size=60, workers=2)
    out = run_main(capsys, preview.main, "--config", os.path.join(ROOT, BERT), "--num", "0",
                   "--config.max_seq_len=64", "--config.data.vocab_size=2000",
                   "--config.data.dupe_factor=10", f"--config.data.prepared={tmp_path / 'ten'}")
    assert out.returncode == 0, out.stderr[-2000:]
    stats = json.loads(out.stdout.strip().splitlines()[-1])
    assert stats["num_sequences"] == json.loads(
        (tmp_path / "ten" / "manifest.json").read_text())["splits"]["train"]["records"] > 10000
    assert abs(stats["selected_fraction"] - 0.15) < 0.01, stats
    assert abs(stats["mask_fraction"] - 0.8) < 0.01, stats
    assert abs(stats["random_fraction"] - 0.1) < 0.01, stats
    assert abs(stats["kept_fraction"] - 0.1) < 0.01, stats
    assert abs(stats["is_next_fraction"] - 0.5) < 0.01, stats


def test_gpt_windows_cover_every_token_once_in_order(gpt_dir, tmp_path):
    config = gpt_config()
    memory = GptPretrainTask(config, str(tmp_path / "a"))
    disk = GptPretrainTask(gpt_config(**{"data.prepared": gpt_dir}), str(tmp_path / "b"))
    source = disk.sources["prepared"]
    decode = disk.prepared[0][2].gpt_decoder()
    windows = [decode(source[i]) for i in range(len(source))]
    assert len(windows) == len(memory.train) > 10
    # the targets, read window after window, are the whole stream after its first token
    stream = np.concatenate([memory.train.tokens[0, :1]] + [
        w["target_ids"][w["target_weights"] > 0] for w in windows])
    from ssl_jax.data.corpora import load_documents

    docs = memory.tokenizer.encode_batch([" ".join(d) for d in load_documents(config.data,
                                                                              "train")])
    eot = memory.tokenizer.eot_id
    expected = np.concatenate([x for d in docs if len(d) for x in ([eot], d)])
    np.testing.assert_array_equal(stream, expected)
    for i, w in enumerate(windows):  # and each window is the in-memory one
        _assert_same_examples(memory.train.example(i), w)
    json_manifest = json.loads((gpt_dir / "manifest.json").read_text())
    assert json_manifest["splits"]["train"]["targets"] == len(expected) - 1
    assert json_manifest["splits"]["train"]["tokens"] == len(expected)
    assert memory.describe()["baselines"] == disk.describe()["baselines"]


def test_workers_and_shard_size_do_not_change_the_data(gpt_dir, bert_dir, tmp_path):
    _prepare(gpt_config(), tmp_path / "g2", shard_size=17, workers=2)
    assert _records(tmp_path / "g2", gpt_config()) == _records(gpt_dir, gpt_config())
    _prepare(tiny_config(), tmp_path / "b1", shard_size=13)
    assert _records(tmp_path / "b1", tiny_config()) == _records(bert_dir, tiny_config())


def test_manifest_round_trip(bert_dir):
    manifest = json.loads((bert_dir / "manifest.json").read_text())
    config = tiny_config()
    assert manifest["format"] == prepared.FORMAT and manifest["kind"] == "bert_pretrain"
    assert manifest["fields"] == prepared.shaping_fields(config)
    assert manifest["corpus"]["corpus"] == "embedded" and manifest["seed"] == 0
    assert manifest["tokenizer"]["sha256"] == prepared.files_hash(str(bert_dir / "tokenizer"))
    opened = prepared.Prepared(str(bert_dir), config)
    for split in ("train", "validation"):
        shards = manifest["splits"][split]["shards"]
        assert sum(s["records"] for s in shards) == manifest["splits"][split]["records"] == len(
            opened.source(split))
        assert all(os.path.getsize(bert_dir / s["file"]) == s["bytes"] for s in shards)
    counts = opened.token_counts("train")
    assert counts.sum() == manifest["splits"]["train"]["tokens"] > 0
    # a second prepare of the same command finds it done and changes nothing
    before = (bert_dir / "manifest.json").read_text()
    _prepare(tiny_config(), bert_dir, shard_size=50)
    assert (bert_dir / "manifest.json").read_text() == before


def test_an_interrupted_preparation_resumes_without_duplicates(bert_dir, tmp_path):
    """SIGKILL after some shards; the same command finishes it: the finished shards are kept
    (not rewritten), none is duplicated, and the data equal an uninterrupted run's."""
    output = tmp_path / "cut"
    cmd = [sys.executable, "-m", "ssl_jax.data.prepare", "--config", os.path.join(ROOT, BERT),
           "--output", str(output), "--shard-size", "5", "--config.max_seq_len=64",
           "--config.data.vocab_size=2000", "--config.data.dupe_factor=1"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    marker = output / "parts" / "train-00001.json"  # the second shard of examples is done
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert marker.exists() and not (output / "manifest.json").exists()
    with pytest.raises(FileNotFoundError, match="preparation did not finish"):
        prepared.Prepared(str(output), tiny_config())
    finished = [json.loads(p.read_text())["file"] for p in output.glob("parts/train-?????.json")]
    assert len(finished) >= 2  # a shard's record is written once its file is complete
    kept = {name: (output / name).stat().st_mtime_ns for name in finished}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"bert train: {len(finished)} of " in done.stderr  # it skipped the finished shards
    now = {p.name: p.stat().st_mtime_ns for p in output.glob("train-*.array_record")}
    assert {name: now[name] for name in kept} == kept
    assert not list(output.glob(".*tmp*"))
    assert _records(output, tiny_config()) == _records(bert_dir, tiny_config())


def test_processes_read_disjoint_parts_whose_union_is_the_epoch(bert_dir, tmp_path):
    config = tiny_config(**{"data.prepared": bert_dir})
    task = BertPretrainTask(config, str(tmp_path))
    n = task.num_train_sequences()
    steps = n // config.batch_size  # one epoch of global batches
    seen = []
    for p in range(2):
        ds = task.train_dataset(process_index=p, process_count=2)
        seen.append([tuple(ds[i]["input_ids"][j]) for i in range(steps)
                     for j in range(config.batch_size // 2)])
    assert not set(seen[0]) & set(seen[1])
    epoch = {tuple(e["input_ids"]) for e in task.epoch_examples()}
    assert set(seen[0]) | set(seen[1]) <= epoch
    assert len(set(seen[0]) | set(seen[1])) >= steps * config.batch_size - 5  # duplicates
    # and process p's batch is its half of the one-process global batch
    whole = BertPretrainTask(tiny_config(**{"data.prepared": bert_dir}), str(tmp_path / "w"))
    full = whole.train_dataset()
    half = task.train_dataset(process_index=1, process_count=2)
    np.testing.assert_array_equal(full[3]["input_ids"][4:], half[3]["input_ids"])


def test_mixture_proportions_over_10k_examples(bert_dir, gpt_dir, tmp_path):
    other = tmp_path / "other"
    _prepare(tiny_config(seed=1), other, shard_size=50)  # same tokenizer, other instances
    config = tiny_config(**{"data.mixture": f"{bert_dir}:0.8,{other}:0.2"})
    task = BertPretrainTask(config, str(tmp_path / "run"))
    ds = task.train_dataset()
    sources = np.concatenate([ds[i]["data_source"] for i in range(10_000 // 8)])
    assert abs((sources == 0).mean() - 0.8) < 0.01 and abs((sources == 1).mean() - 0.2) < 0.01
    again = BertPretrainTask(config, str(tmp_path / "run2")).train_dataset()
    np.testing.assert_array_equal(ds[77]["input_ids"], again[77]["input_ids"])  # deterministic
    # the metrics carry each source's share of the (weighted) examples
    import jax

    from ssl_jax.data.batching import with_example_weight

    batch = with_example_weight(ds[3])
    stats = jax.device_get(task.stats(task.init_params(jax.random.PRNGKey(0)), batch, None,
                                      train=False))
    names = [os.path.basename(str(bert_dir)), os.path.basename(str(other))]
    for k, name in enumerate(names):
        share, count = stats[f"mix_fraction_{name}"]
        assert count == 8 and share == (batch["data_source"] == k).sum()
    # a source of another tokenizer is refused
    bad = tiny_config(**{"data.mixture": f"{bert_dir}:1,{gpt_dir}:1"})
    with pytest.raises(ValueError, match="prepared with task='gpt_pretrain'"):
        BertPretrainTask(bad, str(tmp_path / "bad"))


def _launch(*args, timeout=300):
    cmd = [sys.executable, os.path.join(ROOT, "launch.py"), "--no-progress", *map(str, args)]
    return subprocess.run(cmd, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("case", ["missing", "empty", "seq_len", "masking", "corrupt"])
def test_bad_prepared_dirs_fail_with_one_line(case, bert_dir, tmp_path):
    workdir = tmp_path / "run"
    extra = []
    if case == "missing":
        target, expect = tmp_path / "nowhere", "does not exist"
    elif case == "empty":
        (tmp_path / "empty").mkdir()
        target, expect = tmp_path / "empty", "has no manifest.json: it is not a prepared"
    elif case == "seq_len":
        target, expect = bert_dir, "prepared with max_seq_len=64 but this run has max_seq_len=32"
        extra = ["--config.max_seq_len=32"]
    elif case == "masking":
        target, expect = bert_dir, "data.masking='static' but this run has data.masking='dynamic'"
        extra = ["--config.data.masking=dynamic"]
    else:
        import shutil

        target = tmp_path / "corrupt"
        shutil.copytree(bert_dir, target)
        shard = sorted(target.glob("train-*.array_record"))[1]
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
        expect = "is corrupt"
    done = _launch("--config", os.path.join(ROOT, BERT), "--workdir", workdir,
                   "--config.max_seq_len=64", "--config.data.vocab_size=2000",
                   "--config.data.dupe_factor=1", f"--config.data.prepared={target}", *extra)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], lines
    assert "Traceback" not in done.stderr
    assert not (workdir / "checkpoints").exists()


def test_prepare_refuses_bad_input_before_writing(tmp_path, capsys):
    def run(*args):
        return run_main(capsys, prepare.main, "--config", *args)

    out = run(os.path.join(ROOT, "experiments/finetune/glue.py:task=sst2"), "--output",
              tmp_path / "a")
    assert out.returncode == 2 and "has no prepared data" in out.stderr
    out = run(os.path.join(ROOT, BERT), "--output", tmp_path / "b", "--workers", "0")
    assert out.returncode == 2 and "--workers=0 must be >= 1" in out.stderr
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    out = run(os.path.join(ROOT, BERT), "--output", tmp_path / "c")
    assert out.returncode == 2 and "is not empty and holds no preparation" in out.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert os.listdir(tmp_path / "c") == ["notes.txt"]


def test_prepare_refuses_to_resume_with_other_settings(bert_dir, capsys):
    out = run_main(capsys, prepare.main, "--config", os.path.join(ROOT, BERT), "--output",
                   bert_dir, "--config.max_seq_len=64", "--config.data.vocab_size=2000",
                   "--config.data.dupe_factor=2")
    assert out.returncode == 2, out.stderr
    assert "data.dupe_factor=1 (this command: 2)" in out.stderr


def test_training_on_prepared_data_resumes_exactly_after_sigterm(bert_dir, tmp_path):
    """A run on prepared data stopped by SIGTERM, then the same command again: bit-identical
    losses to a run that was not stopped (and the in-memory run's: the batches are equal,
    test_bert_prepared_examples_equal_the_in_memory_ones)."""
    from ssl_jax.train.loop import train_and_evaluate
    from ssl_jax.train.metrics import read_metrics

    def losses(workdir):
        return {r["step"]: r["loss"] for r in read_metrics(os.path.join(workdir, "metrics.jsonl"))
                if "loss" in r}

    workdir = tmp_path / "stopped"
    total = 150
    args = ["--config", os.path.join(ROOT, BERT + f",steps={total}"), "--workdir", workdir,
            "--config.max_seq_len=64", "--config.data.vocab_size=2000",
            "--config.data.dupe_factor=1", "--config.batch_size=8",
            f"--config.data.prepared={bert_dir}", "--config.log_every_steps=1",
            "--config.checkpoint_every_steps=1000", "--config.eval_every_steps=1000",
            "--config.num_eval_batches=1", "--config.data_threads=1"]
    stopped_run = stopped_by_signal(
        [sys.executable, os.path.join(ROOT, "launch.py"), "--no-progress", *map(str, args)],
        os.path.join(workdir, "metrics.jsonl"), 4, dict(os.environ, PYTHONPATH=ROOT))
    stopped = json.loads(stopped_run.stdout.strip().splitlines()[-1])["step"]
    assert 4 <= stopped < total, stopped_run.stderr[-2000:]
    done = _launch(*args)  # the same command
    assert json.loads(done.stdout.strip().splitlines()[-1])["resumed_from"] == stopped
    assert done.returncode == 0, done.stderr[-2000:]
    straight = tmp_path / "straight"
    train_and_evaluate(tiny_config(**{"num_train_steps": total, "batch_size": 8,
                                      "checkpoint_every_steps": 1000, "eval_every_steps": 1000,
                                      "num_eval_batches": 1, "log_every_steps": 1,
                                      "data.prepared": bert_dir}),
                       str(straight), BertPretrainTask, progress=False)
    assert losses(workdir) == losses(straight)


@pytest.mark.slow
def test_two_real_processes_on_prepared_data_train_like_one(bert_dir, tmp_path):
    """Two processes (4 fake devices each, gloo on 127.0.0.1) pre-training on a prepared
    directory, each reading its own rows of every global batch, give the losses and eval
    loss of one process with 8 devices; each keeps its own iterator position."""
    from tests.test_multihost import _free_port, _run_children

    overrides = {"max_seq_len": "64", "batch_size": "8", "data.vocab_size": "2000",
                 "data.dupe_factor": "1", "num_train_steps": "4", "log_every_steps": "1",
                 "eval_every_steps": "4", "checkpoint_every_steps": "4",
                 "num_eval_batches": "2", "data_threads": "1", "data.prepared": str(bert_dir)}
    child = [sys.executable, os.path.join(ROOT, "tests", "layouts.py")]
    base = dict(os.environ, JAX_PLATFORMS="cpu")
    commands, envs = [], []
    for kind, processes in (("one", 1), ("two", 2)):
        path = tmp_path / f"{kind}.json"
        path.write_text(json.dumps([dict(name="pretrain", config="bert/pretrain.py:tiny",
                                         overrides=overrides,
                                         workdir=str(tmp_path / kind / "run"))]))
        port = _free_port()
        for i in range(processes):
            dist = (["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                     "--process-id", str(i)] if processes > 1 else [])
            commands.append(child + [str(path)] + dist)
            envs.append(dict(base, XLA_FLAGS="--xla_force_host_platform_device_count="
                                             f"{8 // processes}"))
    one, *two = _run_children(commands, envs, timeout=400)
    reference = one["pretrain"]
    assert len(reference["losses"]) == 4
    for out in two:
        np.testing.assert_allclose(out["pretrain"]["losses"], reference["losses"], rtol=1e-5)
        np.testing.assert_allclose(out["pretrain"]["summary"]["eval_loss"],
                                   reference["summary"]["eval_loss"], rtol=1e-5)
    states = sorted((tmp_path / "two" / "run" / "checkpoints" / "4" / "data").glob("*.json"))
    assert [json.loads(p.read_text()) for p in states] == [{"next_index": 4}] * 2
