"""Context encoders (Pathak et al. 2016) on the embedded digits (32 x 32): the small
conv-net encoder, the channel-wise fully connected bottleneck, up-convolutions back to
pixels; L2 on the hidden region with 10x weight on a 1-pixel overlap band (the paper's 4 of
128 pixels, scaled), a quarter of the area hidden.

    python launch.py --config experiments/vision/inpainting.py --workdir runs/inpaint
    python launch.py --config experiments/vision/inpainting.py:mask=random_region --workdir runs/ir
    python launch.py --config experiments/vision/inpainting.py:adversarial=0.001 --workdir runs/ia
    python launch.py --config experiments/vision/inpainting.py:steps=300 --workdir runs/isweep --sweep

arg: key=value: encoder (convnet | vit), variant (a ViT size, for encoder=vit; vit-tiny),
mask (central | random_blocks | random_region), coverage (0.25), block (8, for
random_blocks), overlap (1), adversarial (0 = off; the paper's 0.001), steps, batch, lr,
source, image_size,
probe_layer (-1), probe_labels (0 = all), finetune_steps (0) for the measurement at the end
(see experiments/common.probe).
get_sweep: the paper's mask-shape ablation (central, random blocks, random region) and the
adversarial term.
"""
from experiments import common
from ssl_jax.config import Args, optional

ARGS = Args(bare="variant", encoder="convnet", variant=optional(str), mask="central",
            coverage=0.25, block=8, overlap=1, adversarial=0.0, steps=600, batch=64, lr=1e-3,
            source="digits", image_size=32, **common.PROBE_ARGS)
derived_fields = common.step_intervals


def get_config(arg=None):
    a = ARGS.parse(arg)
    model = common.image_model(a["encoder"], a["variant"])
    size = a["image_size"]
    return common.vision_pretext(
        "inpaint", a, model, size * size,
        pretext=dict(mask=a["mask"], coverage=a["coverage"], block=a["block"],
                     overlap=a["overlap"], overlap_weight=10.0,
                     adversarial_weight=a["adversarial"], decoder_channels=[32, 16]),
        optimizer=dict(name="adamw", learning_rate=a["lr"], end_learning_rate=0.0,
                       warmup_steps=0.05, decay="cosine", b1=0.5, b2=0.999, eps=1e-8,
                       weight_decay=1e-4, grad_clip_norm=1.0))


def get_sweep():
    """name -> overrides: the mask shapes and the adversarial term."""
    points = {f"mask={m}": {"pretext.mask": m}
              for m in ("central", "random_blocks", "random_region")}
    points["adversarial=0.001"] = {"pretext.adversarial_weight": 0.001}
    return points
