"""GLUE (cola sst2 mrpc qqp stsb mnli qnli rte wnli): fine-tune a pre-trained BERT with the
paper's recipe on the task named by `task`, one of ssl_jax.data.glue.GLUE_TASKS (that table
holds each task's columns, labels, metrics and dev splits).

    python launch.py --config experiments/finetune/glue.py:task=mrpc,init=runs/quickstart/pretrain,path=glue_data/MRPC --workdir runs/mrpc --sweep

`path` is the task's released directory (glue_data/CoLA, SST-2, MRPC, QQP, STS-B, MNLI,
QNLI, RTE, WNLI); without it the prepared TFDS dataset glue/<task> is read
(--config.finetune.data_dir=...). See experiments/finetune/common.py for every other arg.
"""
from experiments.finetune import common
from ssl_jax.config import optional
from ssl_jax.data.glue import GLUE_TASKS

ARGS = common.ARGS.updated(task=optional(str))
derived_fields = common.derived_fields


def get_config(arg=None):
    a = ARGS.parse(arg)
    if a["task"] not in GLUE_TASKS:
        raise ValueError(f"config arg task={a['task']!r}: expected one of {sorted(GLUE_TASKS)}")
    return common.config(f"glue/{a['task']}", a)


def get_sweep():
    return common.sweep()
