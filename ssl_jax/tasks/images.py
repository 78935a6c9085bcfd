"""What every vision pretext task shares: its images (config.data), its encoder
(config.model: a ViT from the shared block, or the small conv-net), and what is measured
once training ends (config.probe: a linear probe of the frozen encoder on labelled images,
and pictures of the pretext task in the workdir)."""
from __future__ import annotations

import json
import os
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from ssl_jax.data.batching import training_batches, with_example_weight
from ssl_jax.data.images import load_images
from ssl_jax.files import write_atomic
from ssl_jax.models.transformer import check_compute
from ssl_jax.models.vision import layer_features
from ssl_jax.tasks.base import LoadedTask, Task


def standardize(images, eps: float = 1e-5):
    """[b, H, W, C] -> zero mean, unit variance per image and channel (numpy or jax): how a
    jigsaw encoder, trained on normalised tiles, is shown whole images or centred tiles."""
    mean = images.mean(axis=(1, 2), keepdims=True)
    return (images - mean) / (images.var(axis=(1, 2), keepdims=True) + eps) ** 0.5


class ImagePretext(Task):
    """What every image pretext computes, from the config and the images' channel count.

    Subclasses build one example from one image (`example`, host-side numpy), and say where
    the encoder's parameters live (`encoder_params`) and how an image is presented to it for
    the probe (`probe_inputs`). Fine-tuning reads the encoder's output (layer -1)."""

    @classmethod
    def check(cls, config) -> None:
        check_compute(config.model)  # dtypes and (ViT) attention_impl, before the images

    def __init__(self, config, *, channels: int):
        super().__init__(config)
        self.channels = channels

    def example(self, image: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """One training or held-out example of the pretext task from one image."""
        raise NotImplementedError

    def encoder(self) -> nn.Module:
        raise NotImplementedError

    def encoder_params(self, params):
        return params["encoder"]

    def probe_inputs(self, images: jax.Array) -> jax.Array:
        return images

    def dummy_batch(self, batch_size: int):
        """`example` of a blank image, repeated: the shapes of every batch."""
        size = self.config.data.image_size
        blank = np.zeros((size, size, self.channels), np.float32)
        one = self.example(blank, np.random.default_rng(0))
        batch = {k: np.repeat(np.asarray(v)[None], batch_size, 0) for k, v in one.items()}
        return with_example_weight(batch)

    def encode(self, encoder_params, images: jax.Array, layer: int = -1) -> jax.Array:
        """Features [batch, D] of whole images from the encoder's `layer` (jittable)."""
        return layer_features(self.encoder(), encoder_params, self.probe_inputs(images), layer)

    def features(self, params, images: jax.Array, layer: int = -1) -> jax.Array:
        return self.encode(self.encoder_params(params), images, layer)


class ImageData(LoadedTask):
    """What every image pretext loads: config.data's training and held-out images (and their
    labels, for the probe). The held-out examples are `example` of each held-out image, drawn
    once with a fixed seed; the training examples are drawn afresh for every batch. A task is
    `class XTask(ImageData, X)` with X an ImagePretext; it may add `draw`."""

    def load(self, config, workdir: str) -> dict[str, Any]:
        data = config.data
        kw = dict(size=data.image_size, data_dir=data.get("data_dir"), limit=data.get("limit"))
        self.train_images, self.train_labels, self.label_names = load_images(
            data.source, "train", **kw)
        self.eval_images, self.eval_labels, _ = load_images(data.source, data.eval_split, **kw)
        if len(self.train_images) == 0 or len(self.eval_images) == 0:
            raise ValueError(f"data.source={data.source!r} gave {len(self.train_images)} "
                             f"training and {len(self.eval_images)} held-out images")
        probe = config.get("probe")
        if probe is not None:
            from ssl_jax.eval.probe import check_probe_config
            check_probe_config(probe, self.train_labels)
        self._eval = None
        return {"channels": self.train_images.shape[-1]}

    def eval_examples(self) -> list[dict[str, np.ndarray]]:
        """The held-out images as examples, drawn once with a fixed seed: every evaluation
        sees the same puzzles / holes / masks."""
        if self._eval is None:
            rng = np.random.default_rng(self.config.seed + 11)
            self._eval = [self.example(x, rng) for x in self.eval_images]
        return self._eval

    def train_dataset(self, process_index: int = 0, process_count: int = 1):
        return training_batches(list(self.train_images), seed=self.config.seed,
                                batch_size=self.config.batch_size // process_count,
                                process_index=process_index, process_count=process_count,
                                random_map=self.example)

    def draw(self, params, workdir: str) -> list[str]:
        """Writes PNGs of the pretext task into workdir; returns their file names."""
        return []

    def describe(self) -> dict[str, Any]:
        return {"images": {"source": self.config.data.source, "train": len(self.train_images),
                           "held_out": len(self.eval_images),
                           "size": self.config.data.image_size}}

    def finish(self, params, workdir: str) -> dict[str, Any]:
        """The linear probe and, if configured, full fine-tuning of the encoder (probe.json),
        and the pictures, of the trained (or, with num_train_steps=0, the random-init)
        encoder; the probe's numbers join the run's summary."""
        from ssl_jax.eval.probe import SUMMARY_KEYS, finetune_encoder, probe_encoder

        results = {}
        probe = self.config.get("probe")
        if probe is not None:
            facts = probe_encoder(lambda x: self.features(params, x, probe.layer), self, probe)
            if probe.finetune_steps:
                facts.update(finetune_encoder(self.encode, self.encoder_params(params), self,
                                              probe))
            write_atomic(os.path.join(workdir, "probe.json"), json.dumps(facts, indent=2) + "\n")
            results = {k: facts[k] for k in SUMMARY_KEYS if k in facts}
            results["selection"] = "probe_accuracy:max"  # what a sweep compares runs by
        pictures = self.draw(params, workdir)
        return dict(results, pictures=pictures) if pictures else results
