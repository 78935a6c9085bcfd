"""Masked autoencoders (He et al. 2021) on the embedded digits (32 x 32, 4 x 4 patches).

    python launch.py --config experiments/vision/mae.py --workdir runs/mae
    python launch.py --config experiments/vision/mae.py:mask_ratio=0.5 --workdir runs/mae50
    python launch.py --config experiments/vision/mae.py:steps=300 --workdir runs/mae_sweep --sweep

arg: a ViT size (vit-tiny vit-mini vit-s/16 ...) and key=value: pooling (mean | cls: the
features the probe reads; MAE's [CLS] gets no direct training signal), position (learned |
sincos: the paper's fixed 2-D sine-cosine table in encoder and decoder; learned trained
better here: 62.8% vs 45.9% probe after 500 steps on 5,000 MNIST digits), mask_ratio (0.75),
norm_pix_loss (True), decoder (hidden size, 64), decoder_layers (2), steps, batch, lr,
source (digits or a prepared TFDS image dataset), image_size, probe_layer (-1), probe_labels
(0 = all), finetune_steps (0) for the measurement at the end (see experiments/common.probe).
get_sweep: the paper's mask-ratio ablation (0.5, 0.75, 0.9) and pixel targets with and
without per-patch normalisation.
"""
from experiments import common
from ssl_jax.config import Args

ARGS = Args(bare="variant", variant="vit-tiny", pooling="mean", position="learned",
            mask_ratio=0.75, norm_pix_loss=True, decoder=64, decoder_layers=2, steps=1000,
            batch=64, lr=1e-3, source="digits", image_size=32, **common.PROBE_ARGS)
derived_fields = common.step_intervals


def get_config(arg=None):
    a = ARGS.parse(arg)
    model = common.vit_model(a["variant"])
    model.pooling = a["pooling"]
    model.position = a["position"]
    return common.vision_pretext(
        "mae", a, model, (a["image_size"] // model.patch_size) ** 2,
        pretext=dict(mask_ratio=a["mask_ratio"], norm_pix_loss=a["norm_pix_loss"],
                     decoder_hidden_size=a["decoder"], decoder_layers=a["decoder_layers"],
                     decoder_heads=4),
        # MAE's recipe: AdamW b2 0.95, weight decay 0.05, warm-up then cosine
        optimizer=dict(name="adamw", learning_rate=a["lr"], end_learning_rate=0.0,
                       warmup_steps=0.05, decay="cosine", b1=0.9, b2=0.95, eps=1e-8,
                       weight_decay=0.05, grad_clip_norm=0.0))


def get_sweep():
    """name -> overrides: the mask ratios and unnormalised pixel targets."""
    points = {f"mask_ratio={r}": {"pretext.mask_ratio": r} for r in (0.5, 0.75, 0.9)}
    points["norm_pix_loss=False"] = {"pretext.norm_pix_loss": False}
    return points
