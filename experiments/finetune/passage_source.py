"""The label-free transfer task on the embedded corpus: which of its N longest documents a
sentence comes from (every 5th sentence of each held out). The quickstart's fine-tuning stage.

    python launch.py --config experiments/finetune/passage_source.py:init=runs/quickstart/pretrain --workdir runs/passages
    python launch.py --config experiments/finetune/passage_source.py:init=path/to/hf_bert,random_init=True --workdir runs/passages_random

Defaults: 8 documents, 64 tokens, batch 32, 120 steps at lr 3e-4 (10% warm-up, linear
decay). Extra arg: num_documents. See experiments/finetune/common.py for the others.
"""
from experiments.finetune import common


def _split(arg):
    parts = [p for p in (arg or "").split(",") if p.strip()]
    docs = next((int(p.split("=", 1)[1]) for p in parts if p.startswith("num_documents=")), 8)
    return docs, ",".join(p for p in parts if not p.startswith("num_documents="))


def get_config(arg=None):
    docs, rest = _split(arg)
    c = common.config("embedded/passage_source", rest, variant="mini", seq_len=64, steps=120,
                      lr=3e-4)
    c.finetune.num_documents = docs
    c.log_every_steps = 10
    c.eval_every_steps = max(1, c.num_train_steps // 5)
    c.checkpoint_every_steps = c.num_train_steps
    return c


def get_sweep(arg=None):
    docs, rest = _split(arg)
    return {name: f"num_documents={docs}," + point for name, point in common.sweep(rest).items()}
