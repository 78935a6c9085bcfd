"""CoNLL-2003 tagging: NER (entity F1 by seqeval) or the POS column (token accuracy); labels
on each word's first sub-word.

    python launch.py --config experiments/finetune/conll2003.py:init=runs/quickstart/pretrain,column=ner,path=conll2003 --workdir runs/ner --sweep

`path` holds train.txt/valid.txt/test.txt (or eng.train/eng.testa/eng.testb); without it the
prepared TFDS conll2003 is read. See experiments/finetune/common.py for the other args.
"""
from experiments.finetune import common

ARGS = common.ARGS.updated(column="ner")
derived_fields = common.derived_fields


def get_config(arg=None):
    a = ARGS.parse(arg)
    return common.config(f"conll2003/{a['column']}", a)


def get_sweep():
    return common.sweep()
