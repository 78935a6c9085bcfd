"""Jigsaw puzzles (Noroozi & Favaro 2016) on the embedded digits: 36 x 36 images, a 3 x 3
grid of 12-pixel cells, 10-pixel tiles (the paper's gap, 11/75 of a cell) jittered inside
their cells, colour jitter, per-tile normalisation; the small conv-net reads each tile.

    python launch.py --config experiments/vision/jigsaw.py --workdir runs/jigsaw
    python launch.py --config experiments/vision/jigsaw.py:permutations=1000 --workdir runs/j1000
    python launch.py --config experiments/vision/jigsaw.py:steps=300 --workdir runs/jsweep --sweep

arg: key=value: encoder (convnet | vit), variant (a ViT size, for encoder=vit; its patch
size must divide the tile), permutations (100), gap (-1 = the paper's), jitter (True),
color_jitter (0.4), grayscale (0.3), steps, batch, lr, source, image_size (a multiple of
3), probe_layer (-1), probe_labels (0 = all), finetune_steps (0) for the measurement at the end
(see experiments/common.probe).
get_sweep: the paper's ablations: the number of permutations (10, 100, 1000) and the
shortcut guards (no gap, no jitter, no colour jitter).
"""
from experiments import common
from ssl_jax.config import Args, optional

ARGS = Args(bare="variant", encoder="convnet", variant=optional(str), permutations=100,
            gap=-1, jitter=True, color_jitter=0.4, grayscale=0.3, steps=600, batch=64, lr=1e-3,
            source="digits", image_size=36, **common.PROBE_ARGS)
derived_fields = common.step_intervals


def get_config(arg=None):
    a = ARGS.parse(arg)
    model = common.image_model(a["encoder"], a["variant"])
    if a["encoder"] == "vit":
        model.patch_size = 2  # a 10-pixel tile: 5 x 5 patches
    return common.vision_pretext(
        "jigsaw", a, model, 9,
        pretext=dict(grid=3, num_permutations=a["permutations"], permutation_seed=0,
                     gap=a["gap"], jitter=a["jitter"], color_jitter=a["color_jitter"],
                     grayscale_prob=a["grayscale"], tile_features=256, hidden=512),
        optimizer=dict(name="adamw", learning_rate=a["lr"], end_learning_rate=0.0,
                       warmup_steps=0.05, decay="cosine", b1=0.9, b2=0.999, eps=1e-8,
                       weight_decay=1e-4, grad_clip_norm=1.0))


def get_sweep():
    """name -> overrides: the number of permutations and the shortcut guards."""
    points = {f"permutations={n}": {"pretext.num_permutations": n} for n in (10, 100, 1000)}
    points.update(no_gap={"pretext.gap": 0}, no_jitter={"pretext.jitter": False},
                  no_color_jitter={"pretext.color_jitter": 0.0})
    return points
