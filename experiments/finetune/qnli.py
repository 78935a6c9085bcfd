"""GLUE QNLI (question/sentence entailment; accuracy): fine-tune a pre-trained BERT with the paper's recipe.

    python launch.py --config experiments/finetune/qnli.py:init=runs/quickstart/pretrain,path=glue_data/QNLI --workdir runs/qnli --sweep

Without `path` the prepared TFDS dataset glue/qnli is read (--config.finetune.data_dir=...).
See experiments/finetune/common.py for every arg.
"""
from experiments.finetune import common


def get_config(arg=None):
    return common.config("glue/qnli", arg)


def get_sweep(arg=None):
    return common.sweep(arg)
