"""Tasks: what is learned (model, batches, loss, metrics). Registry keyed by config.task.

Imported on demand, so a run (or a tool loading a workdir) pays only for its own task's
dependencies (fine-tuning pulls in scikit-learn, scipy and seqeval)."""
from __future__ import annotations

import importlib

from ssl_jax.tasks.base import Task

REGISTRY: dict[str, str] = {
    "bert_pretrain": "ssl_jax.tasks.bert_pretrain:BertPretrainTask",
    "gpt_pretrain": "ssl_jax.tasks.gpt_pretrain:GptPretrainTask",
    "finetune": "ssl_jax.tasks.finetune:FinetuneTask",
    "mae": "ssl_jax.tasks.mae:MaeTask",
    "jigsaw": "ssl_jax.tasks.jigsaw:JigsawTask",
    "inpaint": "ssl_jax.tasks.inpaint:InpaintTask",
}


def get_task(name: str) -> type[Task]:
    if name not in REGISTRY:
        raise ValueError(f"config.task={name!r} is not a known task; expected one of "
                         f"{sorted(REGISTRY)}")
    module, _, cls = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), cls)
