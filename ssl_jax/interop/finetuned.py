"""A `finetune` run's model without its data: encoder, head and label names from the run's
config.json, params from its best checkpoint (by the selection metric), else the latest.

    pretrained = load_pretrained("runs/mnli")   # Pretrained with head {"head": "sequence",
                                                # "labels": [...], ...}, params["classifier"]

The head's facts come from the dataset's tables (GLUE's label names, CoNLL's tag sets), so
export and further fine-tuning need no data files. The encoder's architecture is the run's
finetune.init's (which must still be readable) or config.model's for a random encoder.
"""
from __future__ import annotations

import dataclasses
import os

import jax.numpy as jnp

from ssl_jax.data import bpe as bpe_lib
from ssl_jax.data import conll, glue
from ssl_jax.data.tokenizer import WordPiece
from ssl_jax.models.bert import bert_config
from ssl_jax.models.heads import BertWithHead


def head_facts(ft) -> dict:
    """{"head", "labels", "regression", "metric"} of config.finetune's dataset."""
    family, _, name = ft.dataset.partition("/")
    if family == "glue":
        spec = glue.get_task(name)
        return {"head": "sequence", "labels": list(spec.label_names or []) or None,
                "regression": spec.is_regression, "metric": spec.metrics[0]}
    if family == "conll2003" and name in ("ner", "pos"):
        tags = conll.NER_TAGS if name == "ner" else conll.POS_TAGS
        return {"head": "token", "labels": list(tags), "regression": False,
                "metric": "f1" if name == "ner" else "accuracy"}
    if family == "squad":
        return {"head": "span", "labels": None, "regression": False, "metric": "f1"}
    if ft.dataset == "embedded/passage_source":
        return {"head": "sequence", "labels": [f"doc{k}" for k in range(ft.num_documents)],
                "regression": False, "metric": "accuracy"}
    raise ValueError(f"finetune.dataset={ft.dataset!r} has no known head")


def _encoder_config(run, tokenizer):
    """The run's encoder architecture (its init's, or config.model's) in the run's layout."""
    from ssl_jax.interop.pretrained import load_pretrained

    ft = run.finetune
    if not ft.get("init"):
        return bert_config(run.model, tokenizer.vocab_size)
    init = load_pretrained(ft.init, scan_layers=run.model.scan_layers)
    if init.kind != "bert":
        raise ValueError(f"the run fine-tuned a {init.kind} model (finetune.init={ft.init!r}): "
                         f"the GPT-1 recipe (added tokens, a head on [extract]) has no "
                         f"transformers class; only fine-tuned BERT runs export or load here")
    return init.config


def load_finetuned(workdir: str, step: int | None = None):
    """The fine-tuned model of a `finetune` run as a Pretrained (kind "bert")."""
    from ssl_jax.config import read_config
    from ssl_jax.interop.pretrained import Pretrained, _restore, _size

    run = read_config(workdir, "finetune")
    tokenizer = bpe_lib.load_tokenizer(os.path.join(workdir, "tokenizer"))
    if not isinstance(tokenizer, WordPiece):
        raise ValueError(f"{workdir!r}: its tokenizer/ holds a {type(tokenizer).__name__} (a "
                         f"GPT fine-tuned run?): the GPT-1 recipe has no transformers class; "
                         f"only fine-tuned BERT runs export or load here")
    facts = head_facts(run.finetune)
    head = dict(facts, pooling=run.finetune.get("pooling", "pooler"))
    del head["metric"]
    config = dataclasses.replace(_encoder_config(run, tokenizer),
                                 scan_layers=run.model.scan_layers)
    outputs = 2 if head["head"] == "span" else 1 if head["regression"] else len(head["labels"])
    model = BertWithHead(config, head["head"], outputs, pooling=head["pooling"])
    ids = jnp.zeros((1, 1), jnp.int32)
    params, step = _restore(workdir, model, (ids, ids, ids), step,
                            best_metric=f"eval_{facts['metric']}", best_mode="max")
    return Pretrained("bert", config, params, tokenizer,
                      f"finetune run {workdir} ({run.finetune.dataset}, step {step}; BERT "
                      f"{_size(config)}, {head['head']} head)", head)
