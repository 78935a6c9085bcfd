"""Tasks: what is learned (model, batches, loss, metrics). The one task table, keyed by
config.task: every command, benchmark, test and experiment that needs to know which tasks
exist reads TASKS.

Task classes are imported on demand, so a run (or a tool loading a workdir) pays only for
its own task's dependencies (fine-tuning pulls in scikit-learn, scipy and seqeval)."""
from __future__ import annotations

import dataclasses
import importlib

from ssl_jax.tasks.base import Task

FAMILIES = ("text_pretrain", "finetune", "vision_pretext")


@dataclasses.dataclass(frozen=True)
class TaskEntry:
    target: str  # "module:Class", imported by get_task
    family: str  # one of FAMILIES
    config: str  # the experiments/ file that runs it (relative to the repository root)
    # vision pretexts: pre-training steps in experiments/vision/compare.py, chosen so that the
    # whole comparison (every pretext + its random-init encoder, probes included) fits in
    # 20 minutes on 2 CPU cores
    compare_steps: int = 0

    @property
    def name(self) -> str:
        """The config file's stem: a comparison point's name ("inpainting" for "inpaint")."""
        return self.config.rsplit("/", 1)[-1].removesuffix(".py")


TASKS: dict[str, TaskEntry] = {
    "bert_pretrain": TaskEntry("ssl_jax.tasks.bert_pretrain:BertPretrainTask",
                               "text_pretrain", "experiments/bert/pretrain.py"),
    "gpt_pretrain": TaskEntry("ssl_jax.tasks.gpt_pretrain:GptPretrainTask",
                              "text_pretrain", "experiments/gpt/pretrain.py"),
    "finetune": TaskEntry("ssl_jax.tasks.finetune:FinetuneTask", "finetune",
                          "experiments/finetune/passage_source.py"),
    "jigsaw": TaskEntry("ssl_jax.tasks.jigsaw:JigsawTask", "vision_pretext",
                        "experiments/vision/jigsaw.py", compare_steps=400),
    "inpaint": TaskEntry("ssl_jax.tasks.inpaint:InpaintTask", "vision_pretext",
                         "experiments/vision/inpainting.py", compare_steps=300),
    "mae": TaskEntry("ssl_jax.tasks.mae:MaeTask", "vision_pretext",
                     "experiments/vision/mae.py", compare_steps=3000),
}


def tasks_of(family: str) -> dict[str, TaskEntry]:
    """The table's entries of one family, in table order."""
    if family not in FAMILIES:
        raise ValueError(f"task family {family!r}; expected one of {FAMILIES}")
    return {name: e for name, e in TASKS.items() if e.family == family}


def get_task(name: str) -> type[Task]:
    if name not in TASKS:
        raise ValueError(f"config.task={name!r} is not a known task; expected one of "
                         f"{sorted(TASKS)}")
    module, _, cls = TASKS[name].target.partition(":")
    return getattr(importlib.import_module(module), cls)
