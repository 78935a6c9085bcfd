"""Masked autoencoding of image patches (MAE, He et al. 2021): hide 75% of the patches, encode
the rest with the ViT, decode every patch, MSE on the hidden ones against per-patch
normalised pixels."""
from __future__ import annotations

import os

import jax
import numpy as np

from ssl_jax.data import image_masks
from ssl_jax.models import image_losses
from ssl_jax.models.transformer import TransformerConfig
from ssl_jax.eval.pictures import save_image_grid
from ssl_jax.models.vision import MaskedAutoencoder, Vit, patchify, unpatchify, vit_config
from ssl_jax.tasks.images import ImageData, ImagePretext


class Mae(ImagePretext):
    loss_terms = ("mae_loss",)

    @classmethod
    def check(cls, config) -> None:
        super().check(config)
        if config.model.encoder != "vit":
            raise ValueError(f"model.encoder={config.model.encoder!r}: MAE drops patches, "
                             f"which needs the ViT encoder")
        vit = vit_config(config.model, config.data.image_size)
        p = config.pretext
        image_masks.num_masked_patches(vit.num_patches, p.mask_ratio)
        if vit.position == "sincos" and p.decoder_hidden_size % 4:
            raise ValueError(f"pretext.decoder_hidden_size={p.decoder_hidden_size} must be "
                             f"divisible by 4 for model.position='sincos' (the decoder's "
                             f"sine-cosine table)")

    def __init__(self, config, *, channels: int):
        super().__init__(config, channels=channels)
        self.vit = vit_config(config.model, config.data.image_size)
        p = config.pretext
        self.num_masked = image_masks.num_masked_patches(self.vit.num_patches, p.mask_ratio)
        self.decoder = TransformerConfig(
            hidden_size=p.decoder_hidden_size, num_layers=p.decoder_layers,
            num_heads=p.decoder_heads, mlp_dim=4 * p.decoder_hidden_size, dropout_rate=0.0,
            attention_dropout_rate=0.0, layer_norm_eps=1e-6, dtype=self.vit.dtype,
            param_dtype=self.vit.param_dtype, attention_impl=self.vit.attention_impl)

    def encoder(self) -> Vit:
        return Vit(self.vit)

    def build_model(self, *, train: bool) -> MaskedAutoencoder:
        return MaskedAutoencoder(self.vit, self.decoder,
                                 num_visible=self.vit.num_patches - self.num_masked,
                                 deterministic=not train)

    def model_inputs(self, batch: dict) -> dict:
        return {"images": batch["image"], "mask": batch["mask"]}

    def example(self, image: np.ndarray, rng: np.random.Generator) -> dict:
        _, mask = image_masks.patch_mask(self.vit.num_patches, self.config.pretext.mask_ratio,
                                         rng)
        return {"image": image, "mask": mask}

    def stats(self, params, batch, rng, *, train: bool):
        pred = self.build_model(train=train).apply(
            {"params": params}, **self.model_inputs(batch), rngs={"dropout": rng} if train else {})
        target = patchify(batch["image"], self.vit.patch_size)
        if self.config.pretext.norm_pix_loss:
            target = image_losses.normalized_patch_targets(target)
        # [batch, N]: 1 = hidden (and not a padding example)
        mask = batch["mask"].astype("float32") * batch["example_weight"][:, None]
        count = mask.sum()
        return {"mae_loss": (image_losses.mae_loss_jax(pred, target, mask) * count, count)}

    def tokens_per_example(self) -> int:
        return self.vit.num_patches


class MaeTask(ImageData, Mae):
    """MAE on config.data's images."""

    def draw(self, params, workdir: str) -> list[str]:
        """mae_reconstructions.png: original, the visible patches, the prediction (hidden
        patches predicted, visible ones as given, as in the paper's figures)."""
        p = self.vit.patch_size
        examples = self.eval_examples()[:8]
        images = np.stack([e["image"] for e in examples])
        masks = np.stack([e["mask"] for e in examples])  # [b, N], True = hidden
        pred = np.asarray(jax.jit(self.build_model(train=False).apply)(
            {"params": params}, images, masks))
        patches = patchify(images, p)
        if self.config.pretext.norm_pix_loss:  # predictions are normalised: undo with the
            mean = patches.mean(-1, keepdims=True)  # true patch's statistics to show them
            pred = pred * np.sqrt(patches.var(-1, keepdims=True) + 1e-6) + mean
        hidden = masks[..., None]
        visible = unpatchify(np.where(hidden, 0.5, patches), p)
        filled = unpatchify(np.where(hidden, pred, patches), p)
        rows = [[x, v, f] for x, v, f in zip(images, visible, filled)]
        return [save_image_grid(rows, ["original", "visible (grey = hidden)", "reconstruction"],
                                os.path.join(workdir, "mae_reconstructions.png"),
                                title=f"{self.num_masked}/{self.vit.num_patches} patches hidden")]

    def describe(self):
        p = self.config.pretext
        return {**super().describe(), "patches": self.vit.num_patches,
                "hidden_per_image": self.num_masked, "mask_ratio": p.mask_ratio,
                "norm_pix_loss": bool(p.norm_pix_loss),
                "baselines": {"predict zeros (normalised targets)": 1.0}
                if p.norm_pix_loss else {}}
