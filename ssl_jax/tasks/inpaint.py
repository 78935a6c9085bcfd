"""Context encoders (Pathak et al. 2016): hide a central square, random blocks or a random
region of each image; an encoder-decoder predicts the missing pixels. L2 on the predicted
region, weighted 10x on the overlap band as in the released code (the band stays visible in
the input; the decoder must blend into it); optionally the paper's adversarial term."""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssl_jax.data import image_masks
from ssl_jax.models import image_losses
from ssl_jax.eval.pictures import save_image_grid
from ssl_jax.models.vision import ContextEncoder, Discriminator, Vit, build_encoder
from ssl_jax.tasks.images import ImageData, ImagePretext

MASKS = ("central", "random_blocks", "random_region")


class Inpaint(ImagePretext):
    """Context encoders, from the config, the channel count and the colour that fills the
    hole (`fill` [channels]: the training images' mean pixel)."""

    @classmethod
    def check(cls, config) -> None:
        super().check(config)
        p = config.pretext
        if p.mask not in MASKS:
            raise ValueError(f"pretext.mask={p.mask!r}; expected one of {MASKS}")
        if not 0 <= p.adversarial_weight < 1:
            raise ValueError(f"pretext.adversarial_weight={p.adversarial_weight} must be in "
                             f"[0, 1) (the paper: 0.001, with 0.999 on the L2 term)")

    def __init__(self, config, *, channels: int, fill: np.ndarray):
        super().__init__(config, channels=channels)
        p = config.pretext
        self.size = config.data.image_size
        self._encoder = build_encoder(config.model, self.size)
        self.adversarial = p.adversarial_weight > 0
        self.loss_terms = ("inpaint_loss", "adversarial_loss") if self.adversarial \
            else ("inpaint_loss",)
        self.fill = np.asarray(fill, np.float32)  # [C]

    def region(self, rng: np.random.Generator) -> np.ndarray:
        """bool [size, size]: the region the decoder predicts (hole + overlap band)."""
        p = self.config.pretext
        if p.mask == "central":
            return image_masks.central_mask(self.size, p.coverage)
        if p.mask == "random_blocks":
            return image_masks.random_blocks_mask(self.size, rng, p.block, p.coverage)
        return image_masks.random_region_mask(self.size, rng, p.coverage)

    def example(self, image: np.ndarray, rng: np.random.Generator) -> dict:
        p = self.config.pretext
        region = self.region(rng)
        hole = image_masks.erode_mask(region, p.overlap)  # blanked in the input
        return {"image": image, "hole": hole,
                "weights": image_masks.overlap_weights(region, p.overlap, p.overlap_weight)}

    def encoder(self):
        return self._encoder

    def encoder_params(self, params):
        return self._generator_params(params)["encoder"]

    def _generator_params(self, params):
        return params["generator"] if self.adversarial else params

    def build_model(self, *, train: bool) -> ContextEncoder:
        patch = self._encoder.config.patch_size if isinstance(self._encoder, Vit) else 0
        return ContextEncoder(self._encoder, channels=self.channels,
                              patch_size=patch,
                              decoder_channels=tuple(self.config.pretext.decoder_channels))

    def init_boxed(self, rng):
        images = self.dummy_batch(1)["image"]
        gen_rng, disc_rng = jax.random.split(rng)
        generator = self.build_model(train=False).init(gen_rng, images)["params"]
        if not self.adversarial:
            return generator
        return {"generator": generator,
                "discriminator": Discriminator().init(disc_rng, images)["params"]}

    def model_inputs(self, batch: dict) -> dict:
        return {"images": self.blank(batch["image"], batch["hole"])}

    def blank(self, images, hole):
        return jnp.where(hole[..., None], jnp.asarray(self.fill), images)

    def stats(self, params, batch, rng, *, train: bool):
        # weights [b, H, W]: 0 = not predicted (or a padding example)
        images, weights = batch["image"], batch["weights"] * batch["example_weight"][:, None, None]
        pred = self.build_model(train=train).apply({"params": self._generator_params(params)},
                                                   **self.model_inputs(batch))
        total = weights.sum()
        rec = image_losses.inpaint_loss_jax(pred, images, weights > 0, weights)
        result = {"inpaint_loss": (rec * total, total)}
        if self.adversarial:
            result["adversarial_loss"] = self._adversarial(params, images, pred, weights > 0,
                                                           batch["example_weight"])
        return result

    def _adversarial(self, params, images, pred, region, example_weight):
        """One objective, two players: the generator's non-saturating term sees the
        discriminator frozen (stop_gradient on its parameters), the discriminator's term sees
        the completed images frozen; each player's gradient is its own loss's. The L2 term
        keeps weight 1 - lambda (the paper: 0.999 / 0.001)."""
        lam = self.config.pretext.adversarial_weight
        disc = Discriminator()
        completed = jnp.where(region[..., None], pred, images)
        frozen_disc = jax.lax.stop_gradient(params["discriminator"])
        fake_for_g = disc.apply({"params": frozen_disc}, completed)
        g_loss = optax.sigmoid_binary_cross_entropy(fake_for_g, jnp.ones_like(fake_for_g))
        real = disc.apply({"params": params["discriminator"]}, images)
        fake = disc.apply({"params": params["discriminator"]}, jax.lax.stop_gradient(completed))
        d_loss = (optax.sigmoid_binary_cross_entropy(real, jnp.ones_like(real))
                  + optax.sigmoid_binary_cross_entropy(fake, jnp.zeros_like(fake)))
        # inpaint_loss is reported unscaled; the generator's share lam/(1-lam) rescales the
        # sum to the paper's (1 - lam) L2 + lam adversarial, up to the overall 1/(1 - lam)
        per_example = lam / (1 - lam) * g_loss + d_loss
        return jnp.sum(per_example * example_weight), jnp.sum(example_weight)

    def tokens_per_example(self) -> int:
        return self.size * self.size  # pixels


class InpaintTask(ImageData, Inpaint):
    """Context encoders on config.data's images; the hole is filled with the training
    images' mean colour (the paper's mean pixel)."""

    def load(self, config, workdir: str):
        facts = super().load(config, workdir)
        return dict(facts, fill=self.train_images.mean(axis=(0, 1, 2)).astype(np.float32))

    def draw(self, params, workdir: str) -> list[str]:
        """inpainting.png: original, input with the hole, prediction pasted into the hole."""
        examples = self.eval_examples()[:8]
        images = np.stack([e["image"] for e in examples])
        holes = np.stack([e["hole"] for e in examples])
        inputs = np.asarray(self.blank(images, holes))
        pred = np.asarray(jax.jit(self.build_model(train=False).apply)(
            {"params": self._generator_params(params)}, inputs))
        region = np.stack([e["weights"] > 0 for e in examples])[..., None]
        filled = np.where(region, pred, images)
        rows = [[x, i, f] for x, i, f in zip(images, inputs, filled)]
        return [save_image_grid(rows, ["original", "input (hole)", "in-painted"],
                                os.path.join(workdir, "inpainting.png"),
                                title=f"{self.config.pretext.mask} mask")]

    def describe(self):
        p = self.config.pretext
        hidden = float(np.mean([e["hole"].mean() for e in self.eval_examples()]))
        return {**super().describe(), "mask": p.mask, "coverage": p.coverage,
                "hole_fraction_held_out": hidden, "overlap": p.overlap,
                "overlap_weight": p.overlap_weight, "adversarial_weight": p.adversarial_weight}
