"""Image encoders for the vision pretext tasks: a ViT on the shared transformer Stack
(Dosovitskiy et al. 2021) and a small AlexNet-style conv-net (the jigsaw and context-encoder
papers used AlexNet)."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.models.partitioning import axes, conv_init, constrain, dense_init
from ssl_jax.models.transformer import (TransformerConfig, compute_dtypes, layer_norm,
                                        stack_fields)

Array = jax.Array

# CPU sizes first (32 x 32 images, 4 x 4 patches), then the paper's.
VIT_SIZES: dict[str, dict[str, int]] = {
    "vit-tiny": dict(num_layers=4, hidden_size=128, num_heads=4, patch_size=4),
    "vit-mini": dict(num_layers=6, hidden_size=192, num_heads=3, patch_size=4),
    "vit-s/16": dict(num_layers=12, hidden_size=384, num_heads=6, patch_size=16),
    "vit-b/16": dict(num_layers=12, hidden_size=768, num_heads=12, patch_size=16),
    "vit-l/16": dict(num_layers=24, hidden_size=1024, num_heads=16, patch_size=16),
}
POOLINGS = ("cls", "mean")
POSITIONS = ("learned", "sincos")
ENCODERS = ("vit", "convnet")


def patchify(images, patch: int):
    """[B, H, W, C] -> [B, (H/p)*(W/p), p*p*C]: row-major patches, each flattened (row,
    column, channel) as in MAE. Uses only array methods, so numpy stays numpy on the host and
    a jax array stays jax inside a jitted model."""
    if images.ndim != 4:
        raise ValueError(f"patchify expects images [B, H, W, C], got shape {list(images.shape)}")
    b, h, w, c = images.shape
    if isinstance(patch, bool) or not isinstance(patch, (int, np.integer)) or patch < 1 \
            or h % patch or w % patch:
        raise ValueError(f"patch={patch!r} does not divide the image size {h}x{w}")
    grid = images.reshape(b, h // patch, patch, w // patch, patch, c)  # [B, h, p, w, p, C]
    grid = grid.transpose(0, 1, 3, 2, 4, 5)  # [B, h, w, p, p, C]
    return grid.reshape(b, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(patches, patch: int, height: int | None = None, width: int | None = None):
    """[B, N, p*p*C] -> [B, H, W, C], the exact inverse of `patchify`. Without height/width
    the image is square (N must be a perfect square)."""
    if patches.ndim != 3:
        raise ValueError(f"unpatchify expects patches [B, N, p*p*C], got {list(patches.shape)}")
    b, n, dim = patches.shape
    if isinstance(patch, bool) or not isinstance(patch, (int, np.integer)) or patch < 1 \
            or dim % (patch * patch):
        raise ValueError(f"patch={patch!r}: patch dim {dim} is not patch*patch*channels")
    c = dim // (patch * patch)
    if height is None and width is None:
        rows = math.isqrt(n)
        if rows * rows != n:
            raise ValueError(f"{n} patches do not form a square; pass height and width")
        height = width = rows * patch
    if height is None or width is None or height % patch or width % patch \
            or (height // patch) * (width // patch) != n:
        raise ValueError(f"height={height!r}, width={width!r} do not hold {n} patches of "
                         f"{patch}x{patch}")
    h, w = height // patch, width // patch
    grid = patches.reshape(b, h, w, patch, patch, c)  # [B, h, w, p, p, C]
    grid = grid.transpose(0, 1, 3, 2, 4, 5)  # [B, h, p, w, p, C]
    return grid.reshape(b, height, width, c)


def sincos_positions(grid: int, dim: int) -> np.ndarray:
    """Fixed 2-D sine-cosine position embeddings float32 [grid * grid, dim] for a grid of
    patches in row-major order (MAE's): half the channels encode the row, half the column,
    each as sin/cos of the coordinate at frequencies 1 / 10000^(k / (dim / 4))."""
    if dim % 4:
        raise ValueError(f"sine-cosine positions need a hidden size divisible by 4, got {dim}")
    freqs = 1.0 / 10000.0 ** (np.arange(dim // 4, dtype=np.float64) / (dim // 4))
    rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")

    def encode(coords):
        angles = coords.reshape(-1, 1) * freqs[None]  # [grid*grid, dim/4]
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    return np.concatenate([encode(rows), encode(cols)], axis=1).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class VitConfig(TransformerConfig):
    """Pre-LN ViT: patches -> linear embedding + positions (learned, or MAE's fixed
    sine-cosine table) (+ [CLS]) -> Stack -> LN."""

    image_size: int = 32
    patch_size: int = 4
    channels: int = 3
    pooling: str = "cls"  # "cls": the [CLS] token; "mean": the mean of the patch tokens
    position: str = "learned"  # "learned" (ViT) or "sincos": fixed 2-D sine-cosine (MAE)
    layer_norm_eps: float = 1e-6
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        if self.image_size % self.patch_size:
            raise ValueError(f"model.patch_size={self.patch_size} does not divide "
                             f"image_size={self.image_size}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"model.pooling={self.pooling!r}; expected one of {POOLINGS}")
        if self.position not in POSITIONS:
            raise ValueError(f"model.position={self.position!r}; expected one of {POSITIONS}")
        if self.position == "sincos" and self.hidden_size % 4:
            raise ValueError(f"model.position='sincos' needs hidden_size divisible by 4, got "
                             f"{self.hidden_size}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def position_embedding(module: nn.Module, kind: str, grid: int, dim: int, name: str, init,
                       config) -> Array:
    """[1, grid * grid, dim] position embeddings: a parameter `name` of `module` ("learned")
    or the fixed sine-cosine table ("sincos", no parameter)."""
    if kind == "sincos":
        return jnp.asarray(sincos_positions(grid, dim), config.dtype)[None]
    return module.param(name, axes(init, None, "position", "embed"), (1, grid * grid, dim),
                        config.param_dtype).astype(config.dtype)


class Vit(nn.Module):
    """Returns (tokens [batch, tokens, hidden] after the final LN, pooled [batch, hidden]).

    keep [batch, K] (optional): only these patches enter the encoder, each with its own
    position embedding (MAE's encoder sees the visible 25%)."""

    config: VitConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, images: Array, keep: Array | None = None) -> tuple[Array, Array]:
        c = self.config
        if images.shape[1:] != (c.image_size, c.image_size, c.channels):
            raise ValueError(f"images of shape {images.shape[1:]}; the model expects "
                             f"{(c.image_size, c.image_size, c.channels)}")
        init = nn.initializers.truncated_normal(c.initializer_range)
        patches = patchify(images.astype(c.dtype), c.patch_size)  # [batch, N, p*p*C]
        b, n, d = patches.shape
        x = nn.Dense(c.hidden_size, **dense_init(init, "pixels", "embed"), dtype=c.dtype,
                     param_dtype=c.param_dtype, name="patch_embedding")(patches.reshape(b * n, d)).reshape(b, n, -1)
        x = x + position_embedding(self, c.position, c.image_size // c.patch_size,
                                   c.hidden_size, "position", init, c)
        if keep is not None:  # [batch, K]
            x = jnp.take_along_axis(x, keep[..., None], axis=1)
        if c.pooling == "cls":
            cls = self.param("cls", axes(init, None, None, "embed"), (1, 1, c.hidden_size),
                             c.param_dtype).astype(c.dtype)
            x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, c.hidden_size)), x], axis=1)
        x = constrain(x, "batch", "length", "embed")
        x = c.stack(pre_ln=True, deterministic=self.deterministic, name="stack")(x, None)
        x = layer_norm(epsilon=c.layer_norm_eps, dtype=c.dtype, param_dtype=c.param_dtype,
                       name="ln")(x)
        pooled = x[:, 0] if c.pooling == "cls" else jnp.mean(x, axis=1)
        return x, pooled


class ConvNet(nn.Module):
    """A small AlexNet-style encoder: conv-ReLU-(pool) blocks, global average pooling.
    Returns (feature map [batch, h, w, channels[-1]], pooled [batch, channels[-1]])."""

    channels: tuple[int, ...] = (64, 128, 256)
    kernels: tuple[int, ...] = (5, 3, 3)
    pool_after: tuple[bool, ...] = (True, True, False)
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: Array, keep: Array | None = None) -> tuple[Array, Array]:
        if keep is not None:
            raise ValueError("ConvNet sees whole images; patch dropping (keep) needs the ViT")
        if not len(self.channels) == len(self.kernels) == len(self.pool_after):
            raise ValueError(f"channels {self.channels}, kernels {self.kernels} and pool_after "
                             f"{self.pool_after} must have one entry per layer")
        x = images.astype(self.dtype)
        for i, (ch, k, pool) in enumerate(zip(self.channels, self.kernels, self.pool_after)):
            x = nn.Conv(ch, (k, k), padding="SAME", **conv_init(), dtype=self.dtype,
                        param_dtype=self.param_dtype, name=f"conv_{i}")(x)
            x = nn.relu(x)
            if pool:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        return x, jnp.mean(x, axis=(1, 2))


class MaskedAutoencoder(nn.Module):
    """MAE (He et al. 2021): the ViT encoder sees only the visible patches; a lighter pre-LN
    decoder gets the encoded patches plus a shared learned mask token at every hidden
    position (with its own position embeddings) and predicts each patch's pixels.
    Returns (predictions [batch, N, p*p*C], mask [batch, N], 1 = hidden)."""

    config: VitConfig
    decoder: TransformerConfig
    num_visible: int  # patches the encoder sees (MAE: 25% of them)
    deterministic: bool = True

    @nn.compact
    def __call__(self, images: Array, mask: Array) -> Array:
        """mask [batch, N] (True/1 = hidden; exactly N - num_visible per row, drawn by the
        data pipeline) -> predicted pixels [batch, N, p*p*C] of every patch."""
        c, d = self.config, self.decoder
        n, num_keep = c.num_patches, self.num_visible
        order = jnp.argsort(mask.astype(jnp.int32), axis=1, stable=True)  # visible first
        keep, restore = order[:, :num_keep], jnp.argsort(order, axis=1)
        latent, _ = Vit(c, deterministic=self.deterministic, name="encoder")(images, keep)
        init = nn.initializers.truncated_normal(d.initializer_range)
        x = nn.Dense(d.hidden_size, **dense_init(init, "mlp", "embed"), dtype=d.dtype,
                     param_dtype=d.param_dtype, name="decoder_embedding")(latent)
        has_cls = c.pooling == "cls"
        patches = x[:, 1:] if has_cls else x  # [batch, K, dec]
        b = x.shape[0]
        mask_token = self.param("mask_token", axes(init, None, None, "embed"),
                                (1, 1, d.hidden_size), d.param_dtype)
        filled = jnp.concatenate(
            [patches, jnp.broadcast_to(mask_token.astype(d.dtype), (b, n - num_keep, d.hidden_size))],
            axis=1)
        filled = jnp.take_along_axis(filled, restore[..., None], axis=1)  # original order
        filled = filled + position_embedding(self, c.position, c.image_size // c.patch_size,
                                             d.hidden_size, "decoder_position", init, d)
        if has_cls:
            filled = jnp.concatenate([x[:, :1], filled], axis=1)
        y = d.stack(pre_ln=True, deterministic=self.deterministic, name="decoder")(filled, None)
        y = layer_norm(epsilon=d.layer_norm_eps, dtype=d.dtype, param_dtype=d.param_dtype,
                       name="decoder_ln")(y)
        y = y[:, 1:] if has_cls else y
        pixels = c.patch_size * c.patch_size * c.channels
        pred = nn.Dense(pixels, **dense_init(init, "embed", "pixels"),
                        dtype=jnp.float32,  # predictions in float32
                        param_dtype=d.param_dtype,
                        name="decoder_pred")(y.reshape(b * n, -1)).reshape(b, n, pixels)
        return pred


class JigsawNet(nn.Module):
    """Noroozi & Favaro's context-free network: every tile goes through the same encoder
    (shared weights) and a per-tile layer (their fc6); the tile features are concatenated
    in their shuffled order and classified into one of the N permutations (fc7 -> fc8).
    tiles [batch, n, t, t, C] -> logits [batch, num_permutations]."""

    encoder: nn.Module  # Vit (image_size = the tile size) or ConvNet
    num_permutations: int
    tile_features: int = 256
    hidden: int = 512

    @nn.compact
    def __call__(self, tiles: Array) -> Array:
        b, n = tiles.shape[:2]
        _, pooled = self.encoder(tiles.reshape(b * n, *tiles.shape[2:]))  # [b*n, D]
        dense = lambda n, inputs, outputs, name: nn.Dense(
            n, **dense_init(nn.initializers.lecun_normal(), inputs, outputs), name=name)
        x = nn.relu(dense(self.tile_features, "embed", "mlp", "tile_fc")(pooled))
        x = nn.relu(dense(self.hidden, "mlp", "embed", "fc")(x.reshape(b, n * self.tile_features)))
        return dense(self.num_permutations, "embed", "classes", "classifier")(x)


class ContextEncoder(nn.Module):
    """Pathak et al.'s context encoder: the image with its hidden region filled by a constant
    goes through the encoder; a decoder predicts every pixel (the loss reads the hidden ones).

    ConvNet encoder: the paper's channel-wise fully connected bottleneck (each channel's
    h x w map fully connected to itself, then a 1x1 convolution mixing channels), then one
    up-convolution (2x nearest upsampling + 3x3 convolution) per pooling of the encoder.
    ViT encoder: each patch token is mapped linearly to its patch's pixels.
    images [b, H, W, C] -> pixels [b, H, W, C]."""

    encoder: nn.Module
    channels: int = 3
    patch_size: int = 0  # > 0: the encoder is a ViT with this patch size
    decoder_channels: tuple[int, ...] = (32, 16)

    @nn.compact
    def __call__(self, images: Array) -> Array:
        feats, _ = self.encoder(images)
        b, height, width = images.shape[:3]
        if self.patch_size:
            p = self.patch_size
            tokens = feats[:, -(height // p) * (width // p):]  # drop [CLS] if present
            pixels = nn.Dense(p * p * self.channels, name="decoder_pred", **dense_init(
                nn.initializers.lecun_normal(), "embed", "pixels"))(tokens)
            return unpatchify(pixels, p, height, width).astype(jnp.float32)
        _, h, w, c = feats.shape
        maps = feats.transpose(0, 3, 1, 2).reshape(b, c, h * w)  # [b, c, h*w]
        kernel = self.param("channelwise_fc", axes(nn.initializers.lecun_normal(
            batch_axis=(0,)), "channels", None, None), (c, h * w, h * w))
        maps = jnp.einsum("bcs,cst->bct", maps, kernel.astype(maps.dtype))
        x = nn.relu(maps.reshape(b, c, h, w).transpose(0, 2, 3, 1))
        x = nn.relu(nn.Conv(c, (1, 1), **conv_init(), name="bottleneck_mix")(x))
        ups = int(round(np.log2(height / h)))
        if h * 2 ** ups != height:
            raise ValueError(f"encoder output {h}x{w} does not up-sample by powers of 2 to "
                             f"{height}x{width}")
        for i in range(ups):  # the paper's up-convolution: upsample, then convolve (a
            # transposed convolution is ~4x slower on XLA:CPU for the same map)
            ch = self.decoder_channels[min(i, len(self.decoder_channels) - 1)]
            x = jax.image.resize(x, (b, x.shape[1] * 2, x.shape[2] * 2, x.shape[3]), "nearest")
            x = nn.relu(nn.Conv(ch, (3, 3), **conv_init(), name=f"up_{i}")(x))
        return nn.Conv(self.channels, (3, 3), **conv_init(), name="decoder_pred")(x).astype(
            jnp.float32)


class Discriminator(nn.Module):
    """The context encoder's adversary: a small conv-net scoring an image as real (logit)."""

    channels: tuple[int, ...] = (32, 64)

    @nn.compact
    def __call__(self, images: Array) -> Array:
        x = images
        for i, ch in enumerate(self.channels):
            x = nn.leaky_relu(nn.Conv(ch, (4, 4), strides=(2, 2), **conv_init(),
                                      name=f"conv_{i}")(x), 0.2)
        return nn.Dense(1, name="logit", **dense_init(nn.initializers.lecun_normal(), "embed",
                                                     "classes"))(x.reshape(x.shape[0], -1))[:, 0]



def vit_config(model_config, image_size: int) -> VitConfig:
    """config.model (ConfigDict, encoder="vit") -> VitConfig, checked."""
    m = model_config
    for name in ("num_layers", "hidden_size", "num_heads", "patch_size"):
        if m[name] < 1:
            raise ValueError(f"model.{name}={m[name]} must be >= 1")
    fields = stack_fields(m, 1)
    del fields["vocab_size"]
    return VitConfig(**fields, image_size=image_size, patch_size=m.patch_size,
                     # runs saved before model.position existed had learned positions
                     pooling=m.pooling, position=m.get("position", "learned"))


def build_encoder(model_config, image_size: int) -> nn.Module:
    """config.model -> an unbound Vit (for `image_size` images) or ConvNet, checked."""
    m = model_config
    if m.encoder not in ENCODERS:
        raise ValueError(f"model.encoder={m.encoder!r}; expected one of {ENCODERS}")
    if m.encoder == "vit":
        return Vit(vit_config(m, image_size))
    channels, kernels, pools = tuple(m.channels), tuple(m.kernels), tuple(m.pool_after)
    if not len(channels) == len(kernels) == len(pools) or not channels:
        raise ValueError(f"model.channels {channels}, kernels {kernels} and pool_after "
                         f"{pools} must have one entry per layer")
    if min(channels) < 1 or min(kernels) < 1:
        raise ValueError(f"model.channels {channels} and kernels {kernels} must be >= 1")
    dtype, param_dtype = compute_dtypes(m)
    return ConvNet(channels, kernels, pools, dtype=dtype, param_dtype=param_dtype)


def num_encoder_layers(encoder: nn.Module) -> int:
    return encoder.config.num_layers if isinstance(encoder, Vit) else len(encoder.channels)


def layer_features(encoder: nn.Module, encoder_params, images: jax.Array,
                   layer: int = -1) -> jax.Array:
    """Frozen features [batch, D] of `images` from one layer of the encoder: ConvNet layer i =
    conv_i after its ReLU, averaged over space; ViT layer i = the output of block i, [CLS] or
    the mean of the patch tokens as the model pools. -1 = the encoder's own output."""
    n = num_encoder_layers(encoder)
    if not -1 <= layer < n:
        raise ValueError(f"probe layer={layer} must be -1 (the output) or in [0, {n})")
    if layer == -1:
        return encoder.apply({"params": encoder_params}, images)[1].astype(jnp.float32)
    if isinstance(encoder, Vit) and encoder.config.scan_layers:
        raise ValueError("probe layer >= 0 needs model.scan_layers=False (a scanned stack "
                         "has no per-layer outputs to read)")
    name = f"conv_{layer}" if isinstance(encoder, ConvNet) else f"layer_{layer}"
    _, state = encoder.apply({"params": encoder_params}, images, mutable=["intermediates"],
                             capture_intermediates=lambda mdl, _: mdl.name == name)
    (out,), = [v["__call__"] for v in _find(state["intermediates"], name)]
    if isinstance(encoder, ConvNet):
        return jnp.mean(nn.relu(out), axis=(1, 2)).astype(jnp.float32)
    tokens = out[0] if isinstance(out, tuple) else out  # [batch, tokens, hidden]
    pooled = tokens[:, 0] if encoder.config.pooling == "cls" else jnp.mean(tokens, axis=1)
    return pooled.astype(jnp.float32)


def _find(tree: dict, name: str) -> list:
    found = [v for k, v in tree.items() if k == name]
    for k, v in tree.items():
        if isinstance(v, dict) and k != name:
            found += _find(v, name)
    return found
