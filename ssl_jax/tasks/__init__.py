"""Tasks: what is learned (model, batches, loss, metrics). Registry keyed by config.task."""
from __future__ import annotations

from ssl_jax.tasks.base import Task
from ssl_jax.tasks.bert_pretrain import BertPretrainTask
from ssl_jax.tasks.finetune import FinetuneTask
from ssl_jax.tasks.gpt_pretrain import GptPretrainTask

REGISTRY: dict[str, type[Task]] = {
    "bert_pretrain": BertPretrainTask,
    "gpt_pretrain": GptPretrainTask,
    "finetune": FinetuneTask,
}


def get_task(name: str) -> type[Task]:
    if name not in REGISTRY:
        raise ValueError(f"config.task={name!r} is not a known task; expected one of "
                         f"{sorted(REGISTRY)}")
    return REGISTRY[name]
