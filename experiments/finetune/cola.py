"""GLUE CoLA (acceptability; Matthews correlation): fine-tune a pre-trained BERT with the paper's recipe.

    python launch.py --config experiments/finetune/cola.py:init=runs/quickstart/pretrain,path=glue_data/CoLA --workdir runs/cola --sweep

Without `path` the prepared TFDS dataset glue/cola is read (--config.finetune.data_dir=...).
See experiments/finetune/common.py for every arg.
"""
from experiments.finetune import common


def get_config(arg=None):
    return common.config("glue/cola", arg)


def get_sweep(arg=None):
    return common.sweep(arg)
