"""Rotation prediction (RotNet, Gidaris et al. 2018): an image is rotated by 0, 90, 180 or
270 degrees and the network classifies which. To tell which way is up the encoder has to find
the objects in the image and their orientation, so its features transfer.

The paper's recipe, the default (pretext.all_rotations=True): every image of the batch is fed
in all four rotations at once (a batch of b images is 4b inputs with labels 0, 1, 2, 3 for
each image), which it found better than one random rotation per image
(pretext.all_rotations=False, the ablation). Label k = a rotation by k * 90 degrees
counter-clockwise (np.rot90). No other augmentation; the encoder reads raw images, as the
probe does."""
from __future__ import annotations

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.eval.pictures import save_image_grid
from ssl_jax.models.losses import classification_stats
from ssl_jax.models.vision import build_encoder
from ssl_jax.tasks.images import ImageData, ImagePretext

NUM_ROTATIONS = 4  # 0, 90, 180, 270 degrees


def rotations(images):
    """images [b, H, W, C] (square; numpy or jax) -> (the four rotations of each image
    [b * 4, H, W, C], image i's rotation by k * 90 degrees counter-clockwise at 4 i + k;
    labels [b * 4]: k)."""
    xp = jnp if isinstance(images, jax.Array) else np
    b = images.shape[0]
    turned = xp.stack([xp.rot90(images, k, axes=(1, 2)) for k in range(NUM_ROTATIONS)], 1)
    labels = xp.tile(xp.arange(NUM_ROTATIONS, dtype=xp.int32), b)
    return turned.reshape((b * NUM_ROTATIONS,) + images.shape[1:]), labels


class RotationNet(nn.Module):
    """The encoder's pooled features -> a linear classifier over the four rotations.
    images [b, H, W, C] -> logits [b, 4]."""

    encoder: nn.Module  # ConvNet or Vit

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        _, pooled = self.encoder(images)  # [b, D]
        return nn.Dense(NUM_ROTATIONS, name="classifier")(pooled.astype(jnp.float32))


class Rotation(ImagePretext):
    loss_terms = ("rotation_loss",)

    def __init__(self, config, *, channels: int):
        super().__init__(config, channels=channels)
        self.all_rotations = bool(config.pretext.all_rotations)
        self._encoder = build_encoder(config.model, config.data.image_size)

    def example(self, image: np.ndarray, rng: np.random.Generator) -> dict:
        """all_rotations: the image (rotated four ways in the step); else one random
        rotation of it and its label."""
        if self.all_rotations:
            return {"image": image}
        k = int(rng.integers(NUM_ROTATIONS))
        return {"image": np.ascontiguousarray(np.rot90(image, k)), "rotation": np.int32(k)}

    def encoder(self):
        return self._encoder

    def build_model(self, *, train: bool) -> RotationNet:
        return RotationNet(self._encoder)

    def inputs_and_labels(self, batch: dict):
        """(images the network classifies, their rotation labels, their weights)."""
        if not self.all_rotations:
            return batch["image"], batch["rotation"], batch["example_weight"]
        images, labels = rotations(batch["image"])
        return images, labels, jnp.repeat(batch["example_weight"], NUM_ROTATIONS)

    def model_inputs(self, batch: dict) -> dict:
        return {"images": self.inputs_and_labels(batch)[0]}

    def stats(self, params, batch, rng, *, train: bool):
        images, labels, weight = self.inputs_and_labels(batch)
        logits = self.build_model(train=train).apply({"params": params}, images)
        return classification_stats(logits, labels, weight, loss="rotation_loss",
                                    accuracy="rotation_accuracy")

    def tokens_per_example(self) -> int:
        return NUM_ROTATIONS if self.all_rotations else 1  # images the encoder sees


class RotationTask(ImageData, Rotation):
    """Rotation prediction on config.data's images."""

    def draw(self, params, workdir: str) -> list[str]:
        """rotations.png: held-out images in their four rotations (each rotation's title
        row counts how many of the shown images were classified right)."""
        images = np.stack([e["image"] for e in self.eval_examples()[:8]])
        if not self.all_rotations:  # the shown images: upright, then rotated
            images = np.stack([np.rot90(x, -int(e["rotation"]))
                               for x, e in zip(images, self.eval_examples()[:8])])
        turned, labels = rotations(images)
        logits = jax.jit(self.build_model(train=False).apply)({"params": params}, turned)
        right = (np.asarray(jnp.argmax(logits, -1)) == labels).reshape(-1, NUM_ROTATIONS)
        rows = [list(turned[i * NUM_ROTATIONS:(i + 1) * NUM_ROTATIONS])
                for i in range(len(images))]
        titles = [f"{90 * k} deg: {right[:, k].sum()}/{len(images)}"
                  for k in range(NUM_ROTATIONS)]
        return [save_image_grid(rows, titles, os.path.join(workdir, "rotations.png"),
                                title=f"{right.sum()}/{right.size} rotations predicted")]

    def describe(self):
        return {**super().describe(), "all_rotations": self.all_rotations,
                "baselines": {"chance accuracy": 1.0 / NUM_ROTATIONS,
                              "chance loss (log 4)": float(np.log(NUM_ROTATIONS))}}
