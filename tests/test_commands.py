"""Every command's bad input: one `error: ...` line on stderr naming the value, exit code 2,
no traceback, nothing written (each command in-process through its main(argv))."""
import json
import os

import jax.numpy as jnp
import pytest

import launch
from ssl_jax import embed, generate
from ssl_jax import preview
from ssl_jax.data import tokenize
from ssl_jax.eval import fewshot, summarize
from ssl_jax.interop import export
from ssl_jax.train.checkpoint import Checkpointer
from tests.conftest import ROOT

SUMMARIES = os.path.join(ROOT, "tests/fixtures/summaries.jsonl")
GPT_RUN = "generation and scoring need a GPT (a gpt_pretrain run or an HF GPT-2 directory)"


def _workdirs(root) -> None:
    """Workdirs a new user might point a command at by mistake (config.json only)."""
    configs = {"bert": {"task": "bert_pretrain", "data": {"corpus": "embedded"}},
               "jigsaw": {"task": "jigsaw"}, "notask": {}, "gpt": {
                   "task": "gpt_pretrain", "data": {"corpus": "embedded"}},
               "hfbert": {"model_type": "bert"}, "hfgpt2": {"model_type": "gpt2"}}
    for name, config in configs.items():
        os.makedirs(root / name)
        (root / name / "config.json").write_text(json.dumps(config))
    os.makedirs(root / "badjson")
    (root / "badjson" / "config.json").write_text("{not json")
    os.makedirs(root / "listjson")
    (root / "listjson" / "config.json").write_text("[1]")
    os.makedirs(root / "empty")
    (root / "empty.txt").write_text("")
    (root / "one.txt").write_text("one sentence\n")
    os.makedirs(root / "dupvocab")
    (root / "dupvocab" / "vocab.txt").write_text(
        "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\nhello\n")
    os.makedirs(root / "gapvocab")
    (root / "gapvocab" / "vocab.txt").write_text("[PAD]\n[UNK]\n\n[CLS]\n[SEP]\n[MASK]\n")


CASES = [  # (command, argv with {d} = the scratch directory, expected part of the message)
    (generate, "--workdir {d}/bert --prompt hi", "'{d}/bert' is a 'bert_pretrain' run; "
     + GPT_RUN),
    (generate, "--model {d}/hfbert --prompt hi", "'{d}/hfbert' is an HF BERT checkpoint; "
     + GPT_RUN),
    (generate, "--workdir {d}/notask --prompt hi", "neither 'model_type' (an HF checkpoint) nor"),
    (generate, "--workdir {d}/nowhere --prompt hi", "model '{d}/nowhere' is not a directory"),
    (generate, "--model {d}/empty --prompt hi", "model '{d}/empty' has no config.json"),
    (generate, "--workdir {d}/badjson --prompt hi", "cannot read model config"),
    (generate, "--workdir {d}/listjson --prompt hi", "config.json' is not a JSON object"),
    (generate, "--workdir {d}/gpt --prompts {d}/empty.txt", "holds no prompt"),
    (generate, "--workdir {d}/gpt --prompt hi --top-p 2", "top_p=2.0 must be in (0, 1]"),
    (fewshot, "--workdir {d}/bert", "is a 'bert_pretrain' run; " + GPT_RUN),
    (fewshot, "--workdir {d}/jigsaw", "is a 'jigsaw' run; " + GPT_RUN),
    (fewshot, "--workdir {d}/listjson", "is not a JSON object"),
    (fewshot, "--model {d}/hfbert", "is an HF BERT checkpoint; " + GPT_RUN),
    (fewshot, "--model {d}/nowhere", "model '{d}/nowhere' is not a directory"),
    (fewshot, "--model {d}/hfgpt2 --tasks cl", "give --words FILE"),
    (fewshot, "--workdir {d}/gpt --num-examples 0", "--num-examples=0 must be >= 1"),
    (fewshot, "--workdir {d}/gpt --seed -1", "--seed=-1 must be >= 0"),
    (fewshot, "--workdir {d}/gpt --tasks , --shots 0", "--tasks ',' names no task"),
    (fewshot, "--workdir {d}/gpt --tasks arithmetic_2d+ --output {d}/nowhere/out.json",
     "--output '{d}/nowhere/out.json': its directory does not exist"),
    (summarize, "--workdir {d}/bert --data " + SUMMARIES + " --num-articles 5",
     "is a 'bert_pretrain' run; " + GPT_RUN),
    (summarize, "--workdir {d}/gpt --data {d}/empty.txt", "neither tfds:NAME[:SPLIT] nor"),
    (summarize, "--model {d}/hfbert --data " + SUMMARIES, "is an HF BERT checkpoint; " + GPT_RUN),
    (summarize, "--model {d}/empty --data " + SUMMARIES, "model '{d}/empty' has no config.json"),
    (embed, "--model {d}/jigsaw --input {d}/one.txt --output {d}/e.npy", "is a 'jigsaw' run"),
    (embed, "--model {d}/bert --input {d}/one.txt --output {d}/empty",
     "--output '{d}/empty' is a directory; expected a .npy file name"),
    (embed, "--model {d}/bert --input {d}/empty.txt --output {d}/e.npy", "holds no sentence"),
    (export, "--workdir {d}/notask --output {d}/hf", "neither 'model_type'"),
    (export, "--workdir {d}/jigsaw --output {d}/hf", "is a 'jigsaw' run"),
    (tokenize, "--tokenizer {d}/dupvocab", "line 8 repeats the token 'hello' (first on line 6)"),
    (tokenize, "--tokenizer {d}/gapvocab", "vocab.txt' line 3 is blank"),
    (tokenize, "--tokenizer {d}/empty", "holds none of: encoder.json"),
    (tokenize, "--model {d}/gpt", "is a 'gpt_pretrain' run without a tokenizer/ directory"),
    (tokenize, "--model {d}/hfgpt2", "has no tokenizer: expected vocab.json + merges.txt or "
     "tokenizer.json"),
    (tokenize, "--model {d}/nowhere", "model '{d}/nowhere' is not a directory"),
    (preview, "--config " + os.path.join(ROOT, "experiments/gpt/pretrain.py:gpt-tiny"),
     "is a 'gpt_pretrain' config; the preview shows BERT pre-training data"),
    (preview, "--config " + os.path.join(ROOT, "experiments/bert/pretrain.py:tiny") +
     " --num -1", "--num=-1 must be >= 0"),
    (preview, "--config " + os.path.join(ROOT, "experiments/bert/pretrain.py:tiny") +
     " --config.max_seq_len", "--config.max_seq_len needs a value"),
]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    root = tmp_path_factory.mktemp("commands")
    _workdirs(root)
    return root


def _snapshot(directory) -> dict[str, bytes]:
    out = {}
    for base, _, files in os.walk(directory):
        for name in files:
            with open(os.path.join(base, name), "rb") as f:
                out[os.path.relpath(os.path.join(base, name), directory)] = f.read()
    return out


@pytest.mark.parametrize("command,argv,message", CASES,
                         ids=[f"{c.__name__.split('.')[-1]}:{a.split()[1].split('/')[-1]}"
                              f":{i}" for i, (c, a, _) in enumerate(CASES)])
def test_bad_input_is_one_line_exit_2_nothing_written(command, argv, message, scratch,
                                                      capsys, monkeypatch):
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'"text"\n')))
    before = _snapshot(scratch)
    code = command.main(argv.format(d=scratch).split())
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message.format(d=scratch) in lines[0], (message, lines[0])
    assert _snapshot(scratch) == before


def test_a_missing_checkpoint_step_names_the_kept_steps(tmp_path):
    ckpt = Checkpointer(str(tmp_path / "checkpoints"))
    with pytest.raises(FileNotFoundError, match="holds no checkpoint yet"):
        ckpt.restore_params({"w": jnp.zeros(2)})
    ckpt.save(3, {"params": {"w": jnp.ones(2)}}, {"next_index": 3})
    ckpt.close()
    ckpt = Checkpointer(str(tmp_path / "checkpoints"))  # a reader, as the commands open it
    for step in (5, -1):
        with pytest.raises(FileNotFoundError, match=rf"has no checkpoint at step {step}; it "
                                                    rf"has \[3\]"):
            ckpt.restore_params({"w": jnp.zeros(2)}, step=step)
    assert float(ckpt.restore_params({"w": jnp.zeros(2)}, step=3)["w"][0]) == 1.0
    ckpt.close()


def test_a_transfer_stage_stopped_by_a_signal_starts_no_later_stage(tmp_path):
    """A pre-empted pre-training stage returns its summary (with the signal, so launch.py
    exits 128 + its number); fine-tuning from a half-trained encoder must not start."""
    from ssl_jax import config as config_lib
    from ssl_jax.transfer import run_transfer

    config = config_lib.load_config(os.path.join(ROOT, "experiments/quickstart.py"), [])
    calls = []

    def train(run_config, run_dir):
        calls.append(os.path.basename(run_dir))
        return {"ended": "stopped by signal SIGTERM at step 3", "step": 3, "signal": "SIGTERM"}

    out = run_transfer(config, str(tmp_path), train)
    assert calls == ["pretrain"] and out["stage"] == "pretrain"
    assert launch.exit_status(out) == 143 and launch.exit_status({"ended": "completed"}) == 0
