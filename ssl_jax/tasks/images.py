"""What every vision pretext task shares: its images (config.data) and its encoder
(config.model: a ViT from the shared block, or the small conv-net)."""
from __future__ import annotations

import numpy as np

from ssl_jax.data.images import load_images
from ssl_jax.models.vision import VitConfig
from ssl_jax.tasks.base import stack_fields


def vit_config(model_config, image_size: int) -> VitConfig:
    """config.model (ConfigDict, encoder="vit") -> VitConfig, checked."""
    m = model_config
    for name in ("num_layers", "hidden_size", "num_heads", "patch_size"):
        if m[name] < 1:
            raise ValueError(f"model.{name}={m[name]} must be >= 1")
    fields = stack_fields(m, 1)
    del fields["vocab_size"]
    return VitConfig(**fields, image_size=image_size, patch_size=m.patch_size,
                     pooling=m.pooling)


def train_and_eval_images(data_config) -> tuple[np.ndarray, np.ndarray]:
    """(train images, held-out images), float32 [N, size, size, 3] in [0, 1]; labels are not
    used by pretext tasks (the linear probe reads them itself)."""
    train, _, _ = load_images(data_config.source, "train", size=data_config.image_size,
                              data_dir=data_config.get("data_dir"),
                              limit=data_config.get("limit"))
    held_out, _, _ = load_images(data_config.source, data_config.eval_split,
                                 size=data_config.image_size,
                                 data_dir=data_config.get("data_dir"),
                                 limit=data_config.get("limit"))
    if len(train) == 0 or len(held_out) == 0:
        raise ValueError(f"data.source={data_config.source!r} gave {len(train)} training and "
                         f"{len(held_out)} held-out images")
    return train, held_out
