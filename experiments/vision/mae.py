"""Masked autoencoders (He et al. 2021) on the embedded digits (32 x 32, 4 x 4 patches).

    python launch.py --config experiments/vision/mae.py --workdir runs/mae
    python launch.py --config experiments/vision/mae.py:mask_ratio=0.5 --workdir runs/mae50
    python launch.py --config experiments/vision/mae.py:steps=300 --workdir runs/mae_sweep --sweep

arg: a ViT size (vit-tiny vit-mini vit-s/16 ...) and key=value: mask_ratio (0.75),
norm_pix_loss (True), decoder (hidden size, 64), decoder_layers (2), steps, batch, lr,
source (digits or a prepared TFDS image dataset), image_size.
get_sweep: the paper's mask-ratio ablation (0.5, 0.75, 0.9) and pixel targets with and
without per-patch normalisation.
"""
from experiments import common

DEFAULTS = dict(variant="vit-tiny", mask_ratio=0.75, norm_pix_loss=True, decoder=64,
                decoder_layers=2, steps=1000, batch=64, lr=1.5e-3, source="digits",
                image_size=32)


def get_config(arg=None):
    a = common.parse_arg(arg, DEFAULTS)
    steps = int(a["steps"])
    model = common.vit_model(a["variant"])
    return common.training(
        task="mae", model=model, data=common.image_data(a["source"], int(a["image_size"])),
        batch_size=int(a["batch"]), num_train_steps=steps,
        max_seq_len=(int(a["image_size"]) // model.patch_size) ** 2,  # tokens per image
        log_every_steps=max(1, min(50, steps // 20)), eval_every_steps=max(1, steps // 5),
        checkpoint_every_steps=max(1, steps // 5),
        pretext=dict(mask_ratio=float(a["mask_ratio"]), norm_pix_loss=bool(a["norm_pix_loss"]),
                     decoder_hidden_size=int(a["decoder"]),
                     decoder_layers=int(a["decoder_layers"]), decoder_heads=4),
        # MAE's recipe: AdamW b2 0.95, weight decay 0.05, warm-up then cosine
        optimizer=dict(name="adamw", learning_rate=float(a["lr"]), end_learning_rate=0.0,
                       warmup_steps=0.05, decay="cosine", b1=0.9, b2=0.95, eps=1e-8,
                       weight_decay=0.05, grad_clip_norm=0.0))


def get_sweep(arg=None):
    base = ",".join(p for p in (arg or "").split(",")
                    if p.strip() and not p.startswith(("mask_ratio=", "norm_pix_loss=")))
    join = lambda *parts: ",".join(p for p in parts if p)
    points = {f"mask_ratio={r}": join(base, f"mask_ratio={r}") for r in (0.5, 0.75, 0.9)}
    points["norm_pix_loss=False"] = join(base, "norm_pix_loss=False")
    return points
