"""The image pretexts judged by transfer: each is pre-trained on the embedded digits
and its frozen encoder linearly probed on labelled digits, next to the same encoder left at
its random initialisation (same architecture, same probe inputs, same protocol).

    python launch.py --config experiments/vision/compare.py --workdir runs/vision --sweep

writes runs/vision/<point>/ (each run, its probe.json and pictures), sweep.csv (name,
probe_accuracy, finetune_accuracy, ...), sweep.md and sweep.png (probe accuracy per point).
Each point's encoder is also fine-tuned whole (finetune_steps, AdamW) with a fresh linear
layer on the labelled images. arg: key=value: pretext (a vision pretext of the task table
ssl_jax.tasks.TASKS: jigsaw | inpainting | mae | rotation), random_init (False), steps (0 = the
pretext's compare_steps in the table), probe_labels (labelled images per class; 0 = all),
finetune_steps (100).
"""
import importlib

from experiments import common
from ssl_jax.config import Args
from ssl_jax.tasks import tasks_of

# every vision pretext of the task table, by its config's name, with its step budget
PRETEXTS = {e.name: e for e in tasks_of("vision_pretext").values()}
STEPS = {name: e.compare_steps for name, e in PRETEXTS.items()}
ARGS = Args(pretext="jigsaw", random_init=False, steps=0, probe_labels=0, finetune_steps=100)
derived_fields = common.step_intervals


def get_config(arg=None):
    a = ARGS.parse(arg)
    if a["pretext"] not in PRETEXTS:
        raise ValueError(f"pretext={a['pretext']!r}; expected one of {sorted(PRETEXTS)}")
    steps = 0 if a["random_init"] else a["steps"] or STEPS[a["pretext"]]
    module = importlib.import_module(PRETEXTS[a["pretext"]].config[:-3].replace("/", "."))
    return module.get_config(
        f"steps={steps},probe_labels={a['probe_labels']},finetune_steps={a['finetune_steps']}")


def get_sweep():
    """name -> the config args (":key") of each pretext and its random-init encoder: a pretext
    is a whole config, not fields of one."""
    points = {}
    for name in PRETEXTS:
        for random_init in (False, True):
            point = f"{name}_random_init" if random_init else name
            points[point] = {":pretext": name, ":random_init": random_init}
    return points
