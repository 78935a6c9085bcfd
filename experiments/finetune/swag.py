"""SWAG multiple choice (BERT section 4.4; GPT-1's multiple-choice transform): a context and
four endings, one sequence per ending, a shared scorer and a softmax over the four.

    python launch.py --config experiments/finetune/swag.py:init=runs/gpt_mini,path=swagaf/data --workdir runs/swag_gpt
    python launch.py --config experiments/finetune/swag.py:init=runs/quickstart/pretrain,path=swagaf/data --workdir runs/swag_bert

`path` holds SWAG's released train.csv and val.csv (swagaf/data, the `regular` config). BERT's
recipe: lr 2e-5, batch 16, 3 epochs. See experiments/finetune/common.py for every other arg.
"""
from experiments.finetune import common

ARGS = common.ARGS.updated(lr=2e-5, batch=16)
derived_fields = common.derived_fields


def get_config(arg=None):
    return common.config("swag/regular", ARGS.parse(arg))


def get_sweep():
    return common.sweep()
