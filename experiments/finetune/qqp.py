"""GLUE QQP (duplicate questions; accuracy and F1): fine-tune a pre-trained BERT with the paper's recipe.

    python launch.py --config experiments/finetune/qqp.py:init=runs/quickstart/pretrain,path=glue_data/QQP --workdir runs/qqp --sweep

Without `path` the prepared TFDS dataset glue/qqp is read (--config.finetune.data_dir=...).
See experiments/finetune/common.py for every arg.
"""
from experiments.finetune import common


def get_config(arg=None):
    return common.config("glue/qqp", arg)


def get_sweep(arg=None):
    return common.sweep(arg)
