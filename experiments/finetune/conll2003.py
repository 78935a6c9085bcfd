"""CoNLL-2003 tagging: NER (entity F1 by seqeval) or the POS column (token accuracy); labels
on each word's first sub-word.

    python launch.py --config experiments/finetune/conll2003.py:init=runs/quickstart/pretrain,column=ner,path=conll2003 --workdir runs/ner --sweep

`path` holds train.txt/valid.txt/test.txt (or eng.train/eng.testa/eng.testb); without it the
prepared TFDS conll2003 is read. See experiments/finetune/common.py for the other args.
"""
from experiments.finetune import common


def _split(arg):
    parts = [p for p in (arg or "").split(",") if p.strip()]
    column = next((p.split("=", 1)[1] for p in parts if p.startswith("column=")), "ner")
    return column, ",".join(p for p in parts if not p.startswith("column="))


def get_config(arg=None):
    column, rest = _split(arg)
    return common.config(f"conll2003/{column}", rest)


def get_sweep(arg=None):
    column, rest = _split(arg)
    return {name: f"column={column}," + point for name, point in common.sweep(rest).items()}
