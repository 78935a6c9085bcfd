"""Rotation prediction (RotNet, Gidaris et al. 2018) on the embedded digits (32 x 32): every
image of the batch in all four rotations (0/90/180/270 degrees, the paper's recipe), the
small conv-net encoder and a linear classifier over the four rotations.

    python launch.py --config experiments/vision/rotation.py --workdir runs/rotation
    python launch.py --config experiments/vision/rotation.py:all_rotations=False --workdir runs/r1
    python launch.py --config experiments/vision/rotation.py:steps=300 --workdir runs/rsweep --sweep

arg: key=value: encoder (convnet | vit), variant (a ViT size, for encoder=vit),
all_rotations (True: all four rotations of each image per step; False: one random rotation
per image), steps, batch (images; all_rotations feeds 4x as many inputs), lr, source,
image_size, probe_layer (-1), probe_labels (0 = all), finetune_steps (0) for the
measurement at the end (see experiments/common.probe).
get_sweep: the paper's ablation: all four rotations of each image vs one random rotation.
"""
from experiments import common
from ssl_jax.config import Args, optional

ARGS = Args(bare="variant", encoder="convnet", variant=optional(str), all_rotations=True,
            steps=600, batch=64, lr=1e-3, source="digits", image_size=32, **common.PROBE_ARGS)
derived_fields = common.step_intervals


def get_config(arg=None):
    a = ARGS.parse(arg)
    model = common.image_model(a["encoder"], a["variant"])
    return common.vision_pretext(
        "rotation", a, model, 4,
        pretext=dict(all_rotations=a["all_rotations"]),
        optimizer=dict(name="adamw", learning_rate=a["lr"], end_learning_rate=0.0,
                       warmup_steps=0.05, decay="cosine", b1=0.9, b2=0.999, eps=1e-8,
                       weight_decay=1e-4, grad_clip_norm=1.0))


def get_sweep():
    """name -> overrides: all four rotations of each image vs one random rotation."""
    return {f"all_rotations={v}": {"pretext.all_rotations": v} for v in (True, False)}
