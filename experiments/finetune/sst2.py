"""GLUE SST-2 (sentiment; accuracy): fine-tune a pre-trained BERT with the paper's recipe.

    python launch.py --config experiments/finetune/sst2.py:init=runs/quickstart/pretrain,path=glue_data/SST-2 --workdir runs/sst2 --sweep

Without `path` the prepared TFDS dataset glue/sst2 is read (--config.finetune.data_dir=...).
See experiments/finetune/common.py for every arg.
"""
from experiments.finetune import common


def get_config(arg=None):
    return common.config("glue/sst2", arg)


def get_sweep(arg=None):
    return common.sweep(arg)
