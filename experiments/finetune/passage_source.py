"""The label-free transfer task on the embedded corpus: which of its N longest documents a
sentence comes from (every 5th sentence of each held out). The quickstart's fine-tuning stage.

    python launch.py --config experiments/finetune/passage_source.py:init=runs/quickstart/pretrain --workdir runs/passages
    python launch.py --config experiments/finetune/passage_source.py:init=path/to/hf_bert,random_init=True --workdir runs/passages_random

Defaults: 8 documents, 64 tokens, batch 32, 120 steps at lr 3e-4 (10% warm-up, linear
decay). Extra arg: num_documents. See experiments/finetune/common.py for the others.
"""
from experiments.finetune import common

ARGS = common.ARGS.updated(variant="mini", seq_len=64, steps=120, lr=3e-4, num_documents=8)


def get_config(arg=None):
    a = ARGS.parse(arg)
    c = common.config("embedded/passage_source", a)
    c.finetune.num_documents = a["num_documents"]
    return c


def derived_fields(c, explicit=frozenset()) -> dict:
    """common.derived_fields; with steps, 5 evaluations and one checkpoint at the end."""
    out = common.derived_fields(c, explicit)
    if out.get("num_train_epochs", c.num_train_epochs) == 0:
        out.update(eval_every_steps=max(1, c.num_train_steps // 5),
                   checkpoint_every_steps=c.num_train_steps)
    return out


def get_sweep():
    return common.sweep()
