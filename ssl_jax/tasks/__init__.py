"""Tasks: what is learned (model, batches, loss, metrics). The one task table, keyed by
config.task: every command, benchmark, test and experiment that needs to know which tasks
exist reads TASKS. Each task has two halves (ssl_jax/tasks/base.py): what it computes
(get_compute: built from a config and a few facts, reads no data) and the task with its data
(get_task: what the loop runs).

Task classes are imported on demand, so a run (or a tool loading a workdir) pays only for
its own task's dependencies (fine-tuning pulls in scikit-learn, scipy and seqeval)."""
from __future__ import annotations

import dataclasses
import importlib

from ssl_jax.tasks.base import LoadedTask, Task

FAMILIES = ("text_pretrain", "finetune", "vision_pretext")


@dataclasses.dataclass(frozen=True)
class TaskEntry:
    target: str  # "module:Class" of the task with its data (a LoadedTask), for get_task
    family: str  # one of FAMILIES
    config: str  # the experiments/ file that runs it (relative to the repository root)
    # vision pretexts: pre-training steps in experiments/vision/compare.py, chosen so that the
    # whole comparison (every pretext + its random-init encoder, probes included) fits in
    # 20 minutes on 2 CPU cores
    compare_steps: int = 0
    compute: str = ""  # the class (in target's module) of its compute half, for get_compute

    @property
    def name(self) -> str:
        """The config file's stem: a comparison point's name ("inpainting" for "inpaint")."""
        return self.config.rsplit("/", 1)[-1].removesuffix(".py")


TASKS: dict[str, TaskEntry] = {
    "bert_pretrain": TaskEntry("ssl_jax.tasks.bert_pretrain:BertPretrainTask",
                               "text_pretrain", "experiments/bert/pretrain.py",
                               compute="BertPretrain"),
    "gpt_pretrain": TaskEntry("ssl_jax.tasks.gpt_pretrain:GptPretrainTask",
                              "text_pretrain", "experiments/gpt/pretrain.py",
                              compute="GptPretrain"),
    "finetune": TaskEntry("ssl_jax.tasks.finetune:FinetuneTask", "finetune",
                          "experiments/finetune/passage_source.py", compute="Finetune"),
    "jigsaw": TaskEntry("ssl_jax.tasks.jigsaw:JigsawTask", "vision_pretext",
                        "experiments/vision/jigsaw.py", compare_steps=400, compute="Jigsaw"),
    "inpaint": TaskEntry("ssl_jax.tasks.inpaint:InpaintTask", "vision_pretext",
                         "experiments/vision/inpainting.py", compare_steps=300, compute="Inpaint"),
    "mae": TaskEntry("ssl_jax.tasks.mae:MaeTask", "vision_pretext",
                     "experiments/vision/mae.py", compare_steps=3000, compute="Mae"),
    "rotation": TaskEntry("ssl_jax.tasks.rotation:RotationTask", "vision_pretext",
                          "experiments/vision/rotation.py", compare_steps=100,
                          compute="Rotation"),
}


def tasks_of(family: str) -> dict[str, TaskEntry]:
    """The table's entries of one family, in table order."""
    if family not in FAMILIES:
        raise ValueError(f"task family {family!r}; expected one of {FAMILIES}")
    return {name: e for name, e in TASKS.items() if e.family == family}


def _entry(name: str) -> TaskEntry:
    if name not in TASKS:
        raise ValueError(f"config.task={name!r} is not a known task; expected one of "
                         f"{sorted(TASKS)}")
    return TASKS[name]


def get_task(name: str) -> type[LoadedTask]:
    """The task with its data: cls(config, workdir) reads the data (what the loop runs)."""
    module, _, cls = _entry(name).target.partition(":")
    return getattr(importlib.import_module(module), cls)


def get_compute(name: str) -> type[Task]:
    """The task's compute half: cls(config, **facts) reads nothing (benchmarks, tests)."""
    module, _, _ = _entry(name).target.partition(":")
    return getattr(importlib.import_module(module), TASKS[name].compute)
