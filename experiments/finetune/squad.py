"""SQuAD v1.1 / v2.0 extractive QA: windows of 384 tokens, stride 128, n-best span decoding;
exact match and F1 with the official answer normalisation (the version is an arg).

    python launch.py --config experiments/finetune/squad.py:init=runs/quickstart/pretrain,version=v1.1,path=squad_data --workdir runs/squad --sweep

`path` holds the released train-v1.1.json and dev-v1.1.json (or the v2.0 pair); without it
the prepared TFDS squad/v1.1 (squad/v2.0) is read. The paper trained SQuAD for 2-3 epochs
at lr 3e-5/5e-5 and batch 32 (v2.0: lr 5e-5, 2 epochs, batch 48); the sweep covers the four
GLUE rates. See experiments/finetune/common.py for the other args.
"""
from experiments.finetune import common

ARGS = common.ARGS.updated(version="v1.1", seq_len=384)
derived_fields = common.derived_fields


def get_config(arg=None):
    a = ARGS.parse(arg)
    return common.config(f"squad/{a['version']}", a)


def get_sweep():
    return common.sweep()
