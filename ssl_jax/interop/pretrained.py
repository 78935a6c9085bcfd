"""One loader for any pre-trained model: an HF-format directory (BERT or GPT-2) or one of
our training workdirs (bert_pretrain / gpt_pretrain).

    pretrained = load_pretrained("runs/quickstart/pretrain")  # or "all-MiniLM-L6-v2/"
    pretrained.kind                                           # "bert" | "gpt"
    encoder = pretrained.params["encoder"]                    # BERT: fine-tune from this

Fine-tuning, embeddings and export all start here, so the model is loaded one way.
"""
from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp

from ssl_jax.models.partitioning import init_unboxed
from ssl_jax.data import bpe as bpe_lib
from ssl_jax.data.model_dir import read_model_config
from ssl_jax.data.tokenizer import WordPiece
from ssl_jax.interop import hf_bert, hf_gpt2
from ssl_jax.interop.hf_format import to_numpy, with_layout
from ssl_jax.models.bert import BertConfig, BertForPreTraining
from ssl_jax.models.gpt import GptConfig, GptLM


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """A pre-trained model with its tokenizer.

    params (numpy arrays), in the layout `config.scan_layers` says:
      bert: {"encoder": BertEncoder's tree} plus "mlm"/"nsp" when the source has those heads
            (BertForPreTraining's tree when both are there);
      gpt:  GptLM's tree.
    description: where it came from, in words (for logs and reports)."""

    kind: str
    config: BertConfig | GptConfig
    params: dict
    tokenizer: WordPiece | bpe_lib.BpeTokenizer
    description: str
    head: dict | None = None  # a fine-tuned BERT: {"head", "labels", "regression", "pooling"}
                              # and params["classifier"] (see ssl_jax/interop/finetuned.py)


def load_pretrained(path: str, *, step: int | None = None,
                    scan_layers: bool | None = None) -> Pretrained:
    """The model at `path`: an HF directory (config.json with model_type bert/gpt2 +
    model.safetensors) or a training workdir (config.json with task bert_pretrain/
    gpt_pretrain; its best checkpoint, else its latest, or `step`).
    scan_layers: convert the layers to this layout (None: keep the source's)."""
    config = read_model_config(path)
    if "model_type" in config:
        pretrained = _from_hf(path, config, step)
    else:
        pretrained = _from_workdir(path, config["task"], step)
    return pretrained if scan_layers is None else _with_layout(pretrained, scan_layers)


def _from_hf(path: str, hf_config: dict, step: int | None) -> Pretrained:
    model_type = hf_config["model_type"]
    if step is not None:
        raise ValueError(f"{path!r} is an HF checkpoint: it has no steps (step={step})")
    if model_type == "bert":
        config, params, tokenizer = hf_bert.load(path)
        head = hf_bert.head_of(hf_config)
        heads = [h for h in hf_bert.HEADS if h in params] or [
            hf_bert.HEAD_CLASSES[head["head"]] if head else "none"]
        what = f"BERT {_size(config)}, heads: {', '.join(heads)}"
        return Pretrained("bert", config, params, tokenizer, f"HF checkpoint {path} ({what})",
                          head)
    if model_type == "gpt2":
        config, params, tokenizer = hf_gpt2.load(path)
        return Pretrained("gpt", config, params, tokenizer,
                          f"HF checkpoint {path} (GPT-2 {_size(config)})")
    raise ValueError(f"{path!r} is an HF {model_type!r} checkpoint; expected model_type "
                     f"'bert' or 'gpt2'")


def _from_workdir(workdir: str, task: str, step: int | None) -> Pretrained:
    if task == "finetune":  # a fine-tuned BERT: its encoder and head
        from ssl_jax.interop.finetuned import load_finetuned

        return load_finetuned(workdir, step)
    if task == "bert_pretrain":
        config, params, tokenizer, step = _bert_run(workdir, step)
    elif task == "gpt_pretrain":
        config, params, tokenizer, step = _gpt_run(workdir, step)
    else:
        stage = os.path.join(workdir, "pretrain")
        hint = f"; its pre-training run is {stage!r}" if os.path.isdir(stage) else ""
        raise ValueError(f"{workdir!r} is a {task!r} run; expected a 'bert_pretrain', "
                         f"'gpt_pretrain' or 'finetune' run (or an HF checkpoint "
                         f"directory){hint}")
    kind = "bert" if task == "bert_pretrain" else "gpt"
    which = f"step {step}" if step is not None else "best checkpoint, else the latest"
    return Pretrained(kind, config, params, tokenizer,
                      f"{task} run {workdir} ({which}; {kind.upper()} {_size(config)})")


def _bert_run(workdir: str, step: int | None):
    """A bert_pretrain run's config, params (best checkpoint by eval loss, else the latest),
    tokenizer and the step restored. A run trained without NSP has an untrained NSP head:
    it is left out."""
    from ssl_jax.config import read_config
    from ssl_jax.models.bert import bert_config

    run = read_config(workdir)
    tokenizer = bpe_lib.load_tokenizer(os.path.join(workdir, "tokenizer"))
    if not isinstance(tokenizer, WordPiece):
        raise ValueError(f"{workdir!r}: its tokenizer/ holds a {type(tokenizer).__name__}; a "
                         "BERT run needs a WordPiece vocabulary")
    config = bert_config(run.model, tokenizer.vocab_size)
    ids = jnp.zeros((1, 1), jnp.int32)
    params, step = _restore(workdir, BertForPreTraining(config), (ids, ids, ids), step)
    if not run.get("data", {}).get("nsp", True):
        params = {k: v for k, v in params.items() if k != "nsp"}
    return config, params, tokenizer, step


def _gpt_run(workdir: str, step: int | None):
    """A gpt_pretrain run's config, params (best checkpoint by eval loss, else the latest),
    tokenizer and the step restored."""
    from ssl_jax.config import read_config
    from ssl_jax.models.gpt import gpt_config

    run = read_config(workdir)
    tokenizer = bpe_lib.load_tokenizer(os.path.join(workdir, "tokenizer"))
    if not isinstance(tokenizer, bpe_lib.BpeTokenizer):
        raise ValueError(f"{workdir!r}: its tokenizer/ holds a {type(tokenizer).__name__}; a "
                         "GPT run needs a byte-level BPE")
    config = gpt_config(run.model, tokenizer.vocab_size)
    params, step = _restore(workdir, GptLM(config), (jnp.zeros((1, 1), jnp.int32),), step)
    return config, params, tokenizer, step


def _restore(workdir: str, model, inputs: tuple, step: int | None,
             **selection) -> tuple[dict, int]:
    """(params as numpy, the step restored) of `model` from the run's checkpoint at `step`
    (None: the best by eval loss, or by Checkpointer's `selection` (best_metric, best_mode),
    else the latest). Restored onto one device of this process
    (every process of a multi-host run restores its own copy)."""
    from ssl_jax.train.checkpoint import Checkpointer

    _check_checkpoints(workdir)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    shapes = jax.eval_shape(lambda: init_unboxed(model, jax.random.PRNGKey(0), *inputs))
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                            shapes["params"])
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), **selection)
    try:
        step = step if step is not None else (checkpointer.best_step()
                                              or checkpointer.latest_step())
        if step is None:
            raise FileNotFoundError(f"{workdir!r} has no checkpoint yet")
        if step not in checkpointer.all_steps():
            raise ValueError(f"{workdir!r} has no checkpoint at step {step}; it has "
                             f"{checkpointer.all_steps()}")
        return to_numpy(checkpointer.restore_params(abstract, step)), step
    finally:
        checkpointer.close()


def _check_checkpoints(workdir: str) -> None:
    """Before orbax, which would create an empty checkpoints/ in a wrong directory."""
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise FileNotFoundError(f"{workdir!r} has no checkpoints/ directory")


def _with_layout(pretrained: Pretrained, scan_layers: bool) -> Pretrained:
    """The same model with its layers per-layer (False) or stacked (True)."""
    c = pretrained.config
    params = dict(pretrained.params)
    if pretrained.kind == "bert":
        params["encoder"] = dict(params["encoder"], stack=with_layout(
            params["encoder"]["stack"], c.num_layers, scan_layers))
    else:
        params["stack"] = with_layout(params["stack"], c.num_layers, scan_layers)
    return dataclasses.replace(pretrained, config=dataclasses.replace(c, scan_layers=scan_layers),
                               params=params)


def _size(config: BertConfig | GptConfig) -> str:
    return (f"{config.num_layers} layers, hidden {config.hidden_size}, {config.num_heads} "
            f"heads, vocab {config.vocab_size}")
