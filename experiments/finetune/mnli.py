"""GLUE MNLI (entailment; matched and mismatched accuracy): fine-tune a pre-trained BERT with the paper's recipe.

    python launch.py --config experiments/finetune/mnli.py:init=runs/quickstart/pretrain,path=glue_data/MNLI --workdir runs/mnli --sweep

Without `path` the prepared TFDS dataset glue/mnli is read (--config.finetune.data_dir=...).
See experiments/finetune/common.py for every arg.
"""
from experiments.finetune import common


def get_config(arg=None):
    return common.config("glue/mnli", arg)


def get_sweep(arg=None):
    return common.sweep(arg)
