"""Jigsaw puzzles (Noroozi & Favaro 2016): a 3x3 grid of tiles, cut with gaps and jitter,
colour-jittered and normalised per tile, is shuffled by one of N permutations chosen for
maximal Hamming distance; one shared encoder reads every tile and the network classifies
which permutation was applied."""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.data import jigsaw
from ssl_jax.eval.pictures import save_image_grid, tiles_with_gaps, to_unit_range
from ssl_jax.models.losses import classification_stats
from ssl_jax.models.vision import JigsawNet, Vit, build_encoder, layer_features
from ssl_jax.tasks.images import ImageData, ImagePretext, standardize


class Jigsaw(ImagePretext):
    loss_terms = ("jigsaw_loss",)

    @classmethod
    def check(cls, config) -> None:
        super().check(config)
        if config.pretext.grid < 2:
            raise ValueError(f"pretext.grid={config.pretext.grid} must be >= 2")

    def __init__(self, config, *, channels: int):
        super().__init__(config, channels=channels)
        p = config.pretext
        size = config.data.image_size
        gap = None if p.gap is None or p.gap < 0 else p.gap  # None / -1: the paper's 11/75
        _, _, self.tile_size = jigsaw.tile_geometry(size, size, p.grid, gap=gap)
        self.gap = size // p.grid - self.tile_size  # pixels between neighbouring tiles
        self.perms = jigsaw.permutation_set(p.num_permutations, p.grid * p.grid,
                                            p.permutation_seed)
        self._encoder = build_encoder(config.model, self.tile_size)

    def example(self, image: np.ndarray, rng: np.random.Generator) -> dict:
        p = self.config.pretext
        return jigsaw.jigsaw_example(image, self.perms, rng, grid=p.grid, gap=self.gap,
                                     jitter=p.jitter, color=p.color_jitter > 0,
                                     color_strength=p.color_jitter,
                                     grayscale_prob=p.grayscale_prob)

    def encoder(self):
        return self._encoder

    def build_model(self, *, train: bool) -> JigsawNet:
        p = self.config.pretext
        return JigsawNet(self._encoder, len(self.perms), p.tile_features, p.hidden)

    def model_inputs(self, batch: dict) -> dict:
        return {"tiles": batch["tiles"]}

    def stats(self, params, batch, rng, *, train: bool):
        logits = self.build_model(train=train).apply({"params": params}, batch["tiles"])
        return classification_stats(logits, batch["label"], batch["example_weight"],
                                    loss="jigsaw_loss", accuracy="jigsaw_accuracy")

    def tokens_per_example(self) -> int:
        return self.config.pretext.grid ** 2  # tiles

    # ------------------------------------------------------------- the probe
    def probe_inputs(self, images):
        """The encoder saw normalised tiles: a conv-net reads the whole image normalised the
        same way; a ViT (fixed to the tile size) reads the grid's centred tiles."""
        return images if isinstance(self._encoder, Vit) else standardize(images)

    def encode(self, encoder_params, images, layer: int = -1):
        if not isinstance(self._encoder, Vit):
            return super().encode(encoder_params, images, layer)
        # ViT: the centred (unjittered) tiles of every image, normalised, features concatenated
        g, t = self.config.pretext.grid, self.tile_size
        offsets = jigsaw.tile_offsets(images.shape[1], images.shape[2], g, t, jitter=False)
        rows = offsets[:, 0, None] + np.arange(t)  # [g*g, t]
        cols = offsets[:, 1, None] + np.arange(t)
        tiles = images[:, rows[:, :, None], cols[:, None, :]]  # [b, g*g, t, t, C]
        b = images.shape[0]
        tiles = standardize(tiles.reshape(b * g * g, t, t, -1))
        feats = layer_features(self._encoder, encoder_params, tiles, layer)
        return feats.reshape(b, -1)


class JigsawTask(ImageData, Jigsaw):
    """Jigsaw puzzles of config.data's images."""

    def draw(self, params, workdir: str) -> list[str]:
        """jigsaw_examples.png: shuffled tiles as the network sees them, the tiles put back in
        the predicted order, and the true order."""
        g = self.config.pretext.grid
        examples = self.eval_examples()[:8]
        tiles = np.stack([e["tiles"] for e in examples])
        logits = jax.jit(self.build_model(train=False).apply)({"params": params}, tiles)
        predicted = np.asarray(jnp.argmax(logits, -1))
        rows = []
        for e, guess in zip(examples, predicted):
            shown = np.stack([to_unit_range(t) for t in e["tiles"]])
            rows.append([tiles_with_gaps(shown, g),
                         tiles_with_gaps(jigsaw.unshuffle(shown, self.perms[guess]), g),
                         tiles_with_gaps(jigsaw.unshuffle(shown, self.perms[e["label"]]), g)])
        right = int((predicted == np.array([e["label"] for e in examples])).sum())
        return [save_image_grid(
            rows, ["shuffled input", "predicted order", "true order"],
            os.path.join(workdir, "jigsaw_examples.png"),
            title=f"{len(self.perms)} permutations: {right}/{len(rows)} solved")]

    def describe(self):
        p = self.config.pretext
        return {**super().describe(), "grid": p.grid, "tile_size": self.tile_size,
                "gap": self.gap, "num_permutations": len(self.perms),
                "min_hamming": jigsaw.min_hamming(self.perms),
                "mean_hamming": jigsaw.mean_hamming(self.perms),
                "baselines": {"chance accuracy": 1.0 / len(self.perms),
                              "chance loss (log N)": float(np.log(len(self.perms)))}}
