"""The three image pretexts judged by transfer: each is pre-trained on the embedded digits
and its frozen encoder linearly probed on labelled digits, next to the same encoder left at
its random initialisation (same architecture, same probe inputs, same protocol).

    python launch.py --config experiments/vision/compare.py --workdir runs/vision --sweep

writes runs/vision/<point>/ (each run, its probe.json and pictures), sweep.csv (name,
probe_accuracy, finetune_accuracy, ...), sweep.md and sweep.png (probe accuracy per point).
Each point's encoder is also fine-tuned whole (finetune_steps, AdamW) with a fresh linear
layer on the labelled images. arg: key=value: pretext (jigsaw | inpainting | mae),
random_init (False), steps (0 = each pretext's budget below), probe_labels (labelled
images per class; 0 = all), finetune_steps (100).
"""
from experiments import common
from experiments.vision import inpainting, jigsaw, mae
from ssl_jax.config import Args

PRETEXTS = {"jigsaw": jigsaw, "inpainting": inpainting, "mae": mae}
# pre-training steps per pretext: the whole sweep (3 pretexts + 3 random-init encoders,
# probes included) fits in 20 minutes on 2 CPU cores
STEPS = {"jigsaw": 400, "inpainting": 300, "mae": 3000}
ARGS = Args(pretext="jigsaw", random_init=False, steps=0, probe_labels=0, finetune_steps=100)
derived_fields = common.step_intervals


def get_config(arg=None):
    a = ARGS.parse(arg)
    if a["pretext"] not in PRETEXTS:
        raise ValueError(f"pretext={a['pretext']!r}; expected one of {sorted(PRETEXTS)}")
    steps = 0 if a["random_init"] else a["steps"] or STEPS[a["pretext"]]
    return PRETEXTS[a["pretext"]].get_config(
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
