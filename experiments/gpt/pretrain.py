"""GPT causal-LM pre-training (next-token prediction on packed documents) and its ablations.

    python launch.py --config experiments/gpt/pretrain.py --workdir runs/gpt_mini
    python launch.py --config experiments/gpt/pretrain.py:gpt-mini,ln=post,attention=sparse ...
    python launch.py --config experiments/gpt/pretrain.py:gpt-tiny,steps=300 --workdir runs/gpt_abl --sweep
    python -m ssl_jax.generate --model runs/gpt_mini --prompt "The for statement"
    # a large corpus: prepare it once into shards, then train on them
    python -m ssl_jax.data.prepare --config experiments/gpt/pretrain.py:gpt-mini,files='corpus/*.txt' --output data/gpt_mini
    python launch.py --config experiments/gpt/pretrain.py:gpt-mini,files='corpus/*.txt' --workdir runs/gpt_mini \\
        --config.data.prepared=data/gpt_mini

arg: a size (gpt-tiny gpt-mini gpt1 gpt2-small ... gpt3-175b) and key=value ablations:
  ln          "pre" (GPT-2/3) or "post" (GPT-1); default: the size's own
  attention   "dense" or "sparse" (GPT-3: every second layer locally banded)
  window      the band's width for attention=sparse (positions seen)
  seq_len     training context (packed window length)
  mask_docs   stop attention across document boundaries inside a packed window (False)
  tokenizer   "bpe" (byte-level BPE trained on the corpus) or a directory holding a GPT-2
              BPE (encoder.json + vocab.bpe) or a tokenizer.json
  vocab       BPE vocabulary size when tokenizer=bpe
  files       a glob of your own .txt/.jsonl files: trains on them (corpus=files)
  corpus      "embedded" (the default) or a prepared TFDS text dataset
  steps, batch, lr, dropout   the usual run knobs
A setting the run would ignore (window with attention=dense, vocab with a tokenizer
directory) is refused (ssl_jax/ignored.py).
"""
from experiments import common
from ssl_jax.config import Args, optional

ARGS = Args(bare="variant", variant="gpt-mini", ln=optional(str), attention="dense", window=32,
            seq_len=128, mask_docs=False, tokenizer="bpe", vocab=8192, steps=400, batch=16,
            lr=1e-3, corpus=optional(str), files=optional(str), dropout=0.1)


def get_config(arg: str | None = None):
    a = ARGS.parse(arg)
    model = common.gpt_model(a["variant"])
    if a["ln"] is not None:
        if a["ln"] not in ("pre", "post"):
            raise ValueError(f"ln={a['ln']!r}; expected 'pre' or 'post'")
        model.pre_ln = a["ln"] == "pre"
    if a["attention"] not in ("dense", "sparse"):
        raise ValueError(f"attention={a['attention']!r}; expected 'dense' or 'sparse'")
    model.sparse_attention = a["attention"] == "sparse"
    model.attention_window = a["window"]
    model.dropout_rate = model.attention_dropout_rate = a["dropout"]
    data = common.corpus_data(a["corpus"], a["files"])
    del data["lowercase"]  # byte-level BPE keeps case
    data.tokenizer_path = None if a["tokenizer"] == "bpe" else a["tokenizer"]
    data.vocab_size = a["vocab"]
    data.mask_documents = a["mask_docs"]
    config = common.training(
        task="gpt_pretrain", model=model, data=data, batch_size=a["batch"],
        max_seq_len=a["seq_len"], num_train_steps=a["steps"],
        # GPT-2/3: Adam(0.9, 0.95), weight decay 0.1, cosine decay to 10%, clip 1.0
        optimizer=dict(name="adamw", learning_rate=a["lr"], end_learning_rate=a["lr"] / 10,
                       warmup_steps=0.05, decay="cosine", b1=0.9, b2=0.95, eps=1e-8,
                       weight_decay=0.1, grad_clip_norm=1.0))
    # python -m ssl_jax.eval.fewshot --model DIR reads these (GPT-3's K = 0, 1, few)
    config.fewshot = dict(tasks=["arithmetic_2d+", "arithmetic_2d-", "cl", "a1", "rw"],
                          shots=[0, 1, 4], num_examples=50, seed=0)
    return config


derived_fields = common.step_intervals

SIZES = ("gpt-tiny", "gpt-mini")
CONTEXTS = (64, 128, 256)


def get_sweep() -> dict[str, dict]:
    """name -> overrides of the base config (the arg, e.g. 'gpt-tiny,steps=300'): size (the
    model's size fields); post-LN vs pre-LN; dense vs sparse; context length."""
    points = {f"size={s}": common.gpt_size(s) for s in SIZES}
    points["ln=post"] = {"model.pre_ln": False}
    points["ln=pre"] = {"model.pre_ln": True}
    points["attention=sparse"] = {"model.sparse_attention": True}
    points.update({f"seq_len={n}": {"max_seq_len": n} for n in CONTEXTS})
    return points
