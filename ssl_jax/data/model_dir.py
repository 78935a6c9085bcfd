"""What a `--model PATH` directory is, read without its weights: an HF checkpoint (config.json
with a model_type) or one of our training workdirs (config.json with a task), and its
tokenizer.

    add_model_argument(parser, "a GPT: a gpt_pretrain run or an HF GPT-2 directory")
    config = read_model_config("gpt2/")            # {"model_type": "gpt2", ...}
    tokenizer = model_tokenizer("runs/gpt_mini")   # its tokenizer/: BPE or WordPiece

Every command that reads a model names it the same way; the weights are loaded above this
layer (ssl_jax.interop.pretrained), the tokenizer alone here (ssl_jax.data.tokenize --model).
"""
from __future__ import annotations

import argparse
import os

from ssl_jax.data import bpe
from ssl_jax.data import tokenizer as wordpiece_lib
from ssl_jax.files import read_json

HF_MODEL_NAMES = {"bert": "BERT", "gpt2": "GPT-2"}  # the model_types we read


def add_model_argument(parser: argparse.ArgumentParser, help: str, *,
                       workdir_alias: bool = True) -> None:
    """`--model PATH` (args.model), required; `--workdir` the same argument under its older
    name where a command had it (giving both is an argparse error)."""
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--model", dest="model", metavar="PATH", help=help)
    if workdir_alias:
        group.add_argument("--workdir", dest="model", metavar="PATH",
                           help="the same as --model (its older name)")


def read_model_config(path: str) -> dict:
    """`path`/config.json, checked to be an HF checkpoint's (model_type) or a training run's
    (task); a missing directory or file is a FileNotFoundError naming what was expected."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"model {path!r} is not a directory (expected a training "
                                "workdir or an HF model directory)")
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        stage = os.path.join(path, "pretrain")
        hint = (f"; its pre-training run is {stage!r}"
                if os.path.isfile(os.path.join(stage, "config.json")) else
                " (a training workdir and an HF model directory both have one)")
        raise FileNotFoundError(f"model {path!r} has no config.json{hint}")
    config = read_json(config_path, "model config")
    if "model_type" not in config and "task" not in config:
        raise ValueError(f"{path!r} holds a config.json with neither 'model_type' (an HF "
                         "checkpoint) nor 'task' (a training workdir)")
    return config


def describe(config: dict) -> str:
    """What a config.json says its directory is, in words: "an HF BERT checkpoint", "a
    'bert_pretrain' run"."""
    if "model_type" in config:
        name = HF_MODEL_NAMES.get(config["model_type"], repr(config["model_type"]))
        return f"an HF {name} checkpoint"
    return f"a {config['task']!r} run"


def model_tokenizer(path: str) -> bpe.BpeTokenizer | wordpiece_lib.WordPiece:
    """The tokenizer of a model directory, its weights unread: an HF GPT-2's vocab.json +
    merges.txt or tokenizer.json, an HF BERT's vocab.txt, or a training run's tokenizer/."""
    config = read_model_config(path)
    model_type = config.get("model_type")
    if model_type == "gpt2":
        return bpe.hf_gpt2_tokenizer(path, config.get("eos_token_id"))
    if model_type == "bert":
        return wordpiece_lib.load_hf_vocab(path)
    if model_type is not None:
        raise ValueError(f"{path!r} is an HF {model_type!r} checkpoint; expected model_type "
                         f"{' or '.join(map(repr, HF_MODEL_NAMES))}")
    directory = os.path.join(path, "tokenizer")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{path!r} is {describe(config)} without a tokenizer/ directory")
    return bpe.load_tokenizer(directory)


def model_kind(config: dict) -> str | None:
    """"gpt" or "bert": the model family a config.json describes (None: neither, e.g. a
    vision run)."""
    if config.get("model_type") == "gpt2" or config.get("task") == "gpt_pretrain":
        return "gpt"
    if config.get("model_type") == "bert" or config.get("task") in ("bert_pretrain",
                                                                    "finetune"):
        return "bert"
    return None


def read_config_of_kind(path: str, kind: str, purpose: str) -> dict:
    """read_model_config of a `kind` model; anything else is refused, naming what it is and
    what `purpose` needs, before a weight is read."""
    config = read_model_config(path)
    if model_kind(config) != kind:
        wanted = ("a GPT (a gpt_pretrain run or an HF GPT-2 directory)" if kind == "gpt" else
                  "a BERT (a bert_pretrain run or an HF BERT directory)")
        raise ValueError(f"{path!r} is {describe(config)}; {purpose} need {wanted}")
    return config


def read_gpt_config(path: str) -> dict:
    """read_config_of_kind for generation and scoring."""
    return read_config_of_kind(path, "gpt", "generation and scoring")
