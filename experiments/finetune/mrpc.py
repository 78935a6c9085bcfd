"""GLUE MRPC (paraphrase pairs; accuracy and F1): fine-tune a pre-trained BERT with the paper's recipe.

    python launch.py --config experiments/finetune/mrpc.py:init=runs/quickstart/pretrain,path=glue_data/MRPC --workdir runs/mrpc --sweep

Without `path` the prepared TFDS dataset glue/mrpc is read (--config.finetune.data_dir=...).
See experiments/finetune/common.py for every arg.
"""
from experiments.finetune import common


def get_config(arg=None):
    return common.config("glue/mrpc", arg)


def get_sweep(arg=None):
    return common.sweep(arg)
