"""The GPT task end to end on the embedded corpus: it learns (beats the unigram baseline),
and generation, few-shot and summarisation work from its checkpoint."""
import json
import os

import numpy as np
import pytest

from ssl_jax import config as config_lib
from tests.conftest import ROOT, run_main

STEPS = 300


def gpt_config(arg: str = "gpt-tiny", **fields):
    overrides = {"num_eval_batches": "4", "data_threads": "1"}
    overrides.update({k: str(v) for k, v in fields.items()})
    return config_lib.load_config(
        os.path.join(ROOT, "experiments/gpt/pretrain.py:" + arg), list(overrides.items()))


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory):
    """gpt-tiny (2 x 128), BPE vocab 2000, 64-token windows, 300 steps (~1 min)."""
    from ssl_jax.tasks import get_task
    from ssl_jax.train.loop import train_and_evaluate

    workdir = str(tmp_path_factory.mktemp("gpt_run"))
    config = gpt_config(f"gpt-tiny,steps={STEPS},vocab=2000,seq_len=64,batch=16,lr=2e-3")
    task = get_task("gpt_pretrain")(config, workdir)
    summary = train_and_evaluate(config, workdir, task=task, progress=False)
    return workdir, task, summary


def test_held_out_loss_beats_the_unigram_baseline(gpt_run):
    workdir, task, summary = gpt_run
    unigram = task.unigram_loss()
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    evals = [r["eval_lm_loss"] for r in records if "eval_lm_loss" in r]
    assert summary["ended"] == "completed" and summary["step"] == STEPS
    # measured: unigram 6.44 nats, the model 5.69 after 300 steps
    assert evals[-1] < unigram - 0.4, (evals, unigram)
    assert summary["eval_lm_perplexity"] == pytest.approx(np.exp(summary["eval_lm_loss"]), rel=1e-6)
    report = open(os.path.join(workdir, "report.md")).read()
    assert "unigram LM loss (held-out)" in report and os.path.exists(os.path.join(workdir, "loss.png"))


def test_unigram_baseline_by_hand(gpt_run):
    _, task, _ = gpt_run
    # every stream token once: the windows' first tokens and each window's valid targets
    stream = np.concatenate([task.train.tokens[:1, 0]] + [
        task.train.tokens[i, 1:][task.train.valid[i, 1:]] for i in range(len(task.train))])
    counts = np.bincount(stream, minlength=task.tokenizer.vocab_size)
    p = (counts + 1.0) / (counts + 1.0).sum()
    targets = task.held_out.tokens[:, 1:][task.held_out.valid[:, 1:]]
    assert task.unigram_loss() == pytest.approx(float(-np.log(p[targets]).mean()), rel=1e-9)


def test_generate_command_from_the_checkpoint(gpt_run, tmp_path, capsys):
    from ssl_jax import generate
    from ssl_jax.eval.generation import LanguageModel
    workdir, _, _ = gpt_run
    _run = lambda *args: run_main(capsys, generate.main, *args)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The class statement\nA\n")
    done = _run("--workdir", workdir, "--prompts", str(prompts), "--max-new-tokens", "12")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["prompts"] == ["The class statement", "A"]
    lm = LanguageModel.from_workdir(workdir)  # the best checkpoint, greedy: same text
    assert result["completions"] == lm.generate(result["prompts"], max_new_tokens=12,
                                                stop="<|endoftext|>")
    assert all(result["completions"])
    sampled = _run("--workdir", workdir, "--prompt", "The", "--top-k", "5", "--temperature",
                   "0.8", "--max-new-tokens", "8")
    assert sampled.returncode == 0, sampled.stderr
    bad = _run("--workdir", workdir, "--prompt", "x", "--max-new-tokens", "5000")
    assert bad.returncode == 2 and "exceeds the model's context of 512" in bad.stderr


def test_the_trained_model_prefers_real_text(gpt_run, tmp_path):
    """Multiple choice on held-out text: the true continuation vs the same words reversed.
    A model that learned anything about word order picks the true one."""
    from ssl_jax.eval import fewshot
    from ssl_jax.eval.generation import LanguageModel
    workdir, task, _ = gpt_run
    lm = LanguageModel.from_workdir(workdir)
    lines = []
    for window in task.held_out.tokens[:20]:
        words = task.tokenizer.decode(window[1:-1]).split()[:16]
        if len(words) < 12:
            continue
        cont = words[6:12]
        lines.append(json.dumps({"context": " ".join(words[:6]),
                                 "choices": [" " + " ".join(cont), " " + " ".join(cont[::-1])],
                                 "label": 0}))
    path = tmp_path / "order.jsonl"
    path.write_text("\n".join(lines) + "\n")
    task, = fewshot.load_tasks([str(path)], shots=[0], num_examples=len(lines), seed=0)
    row = fewshot.evaluate_task(lm, task, shots=[0], seed=0)
    acc = row["results"][0]["acc"]
    assert len(lines) >= 10 and acc >= 0.7, row  # chance: 0.5


def test_fewshot_and_summarize_commands(gpt_run, capsys):
    from ssl_jax.eval import fewshot, summarize
    workdir, _, _ = gpt_run
    done = run_main(capsys, fewshot.main, "--workdir", workdir, "--tasks", "arithmetic_2d+,rw",
                    "--shots", "0,1", "--num-examples", "4")
    assert done.returncode == 0, done.stderr
    assert "| arithmetic_2d+ |" in done.stdout and os.path.exists(os.path.join(workdir, "fewshot.md"))
    done = run_main(capsys, summarize.main, "--workdir", workdir, "--data",
                    os.path.join(ROOT, "tests/fixtures/summaries.jsonl"), "--num-articles", "5",
                    "--max-new-tokens", "20")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(result["scores"]) == {"TL;DR", "no hint", "random-3", "lead-3"}
    assert result["scores"]["lead-3"]["rouge1"] > 0.2  # lead-3 shares words with highlights


@pytest.mark.parametrize("arg,fields,message", [
    ("gpt-tiny,seq_len=1024", {}, "max_seq_len=1024 exceeds the model's context (model.max_len=512)"),
    ("gpt-tiny,ln=mid", {}, "ln='mid'; expected 'pre' or 'post'"),
    ("gpt-tiny,attention=strided", {}, "attention='strided'; expected 'dense' or 'sparse'"),
    ("gpt-tiny,tokenizer=/no/such/dir", {}, "/no/such/dir"),
    ("gpt-tiny,attention=sparse", {"model.attention_window": 0},
     "model.attention_window=0 must be >= 1"),
    ("gpt-tiny", {"model.num_heads": 3}, "model.num_heads=3"),
])
def test_bad_gpt_input_fails_before_training(arg, fields, message, tmp_path, capsys):
    import launch
    overrides = [f"--config.{k}={v}" for k, v in fields.items()]
    code = launch.main(["--config", os.path.join(ROOT, "experiments/gpt/pretrain.py:" + arg),
                        "--workdir", str(tmp_path / "w"), "--no-progress", *overrides])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not os.path.exists(tmp_path / "w" / "checkpoints")
