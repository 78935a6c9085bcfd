"""GLUE STS-B (similarity regression; Pearson and Spearman): fine-tune a pre-trained BERT with the paper's recipe.

    python launch.py --config experiments/finetune/stsb.py:init=runs/quickstart/pretrain,path=glue_data/STS-B --workdir runs/stsb --sweep

Without `path` the prepared TFDS dataset glue/stsb is read (--config.finetune.data_dir=...).
See experiments/finetune/common.py for every arg.
"""
from experiments.finetune import common


def get_config(arg=None):
    return common.config("glue/stsb", arg)


def get_sweep(arg=None):
    return common.sweep(arg)
