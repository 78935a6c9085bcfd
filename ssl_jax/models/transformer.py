"""The one transformer block (post-LN or pre-LN) and the layer stack every model uses."""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.models.dropout import Dropout
from ssl_jax.models.attention import (AttentionMask, MultiHeadAttention, dense_mask,
                                      resolve_attention_impl)
from ssl_jax.models.partitioning import axes, constrain

Array = jax.Array
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
Dtype = Any

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),  # BERT's erf GELU
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),  # GPT-2's
    "relu": jax.nn.relu,
}


def get_activation(name: str) -> Callable[[Array], Array]:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class Mlp(nn.Module):
    """Position-wise feed-forward: dense(mlp_dim) -> activation -> dense(hidden) -> dropout."""

    mlp_dim: int
    activation: str = "gelu"
    dropout_rate: float = 0.0
    kernel_init: Callable = nn.initializers.truncated_normal(0.02)
    out_kernel_init: Callable | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, deterministic: bool) -> Array:
        shape, hidden = x.shape, x.shape[-1]  # x: [..., hidden]
        dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
        # [tokens, hidden]: one contracting axis for the kernel gradients (fast on XLA:CPU)
        h = dense(self.mlp_dim, kernel_init=axes(self.kernel_init, "embed", "mlp"),
                  bias_init=axes(nn.initializers.zeros, "mlp"), name="fc_in")(
            x.reshape(-1, hidden))  # [tokens, mlp]
        h = get_activation(self.activation)(h)
        h = dense(hidden, kernel_init=axes(self.out_kernel_init or self.kernel_init, "mlp", "embed"),
                  bias_init=axes(nn.initializers.zeros, "embed"), name="fc_out")(h)
        return Dropout(self.dropout_rate)(h.reshape(shape), deterministic=deterministic)


def layer_norm(**kw) -> nn.LayerNorm:
    """nn.LayerNorm with logical axes on its scale and bias (the model width)."""
    return nn.LayerNorm(scale_init=axes(nn.initializers.ones, "embed"),
                        bias_init=axes(nn.initializers.zeros, "embed"), **kw)


class Block(nn.Module):
    """Self-attention + MLP with residuals.

    post-LN (BERT, GPT-1): x = LN(x + attn(x)); x = LN(x + mlp(x)).
    pre-LN (GPT-2/3, ViT): x = x + attn(LN(x)); x = x + mlp(LN(x)).
    """

    num_heads: int
    mlp_dim: int
    pre_ln: bool = False
    activation: str = "gelu"
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    layer_norm_eps: float = 1e-12
    kernel_init: Callable = nn.initializers.truncated_normal(0.02)
    out_kernel_init: Callable | None = None
    deterministic: bool = True
    decode: bool = False  # attention keeps a KV cache (see MultiHeadAttention)
    attention_impl: str = "xla"  # or "cudnn" (see ssl_jax.models.attention)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, mask: AttentionMask | Array | None) -> Array:
        norm = functools.partial(layer_norm, epsilon=self.layer_norm_eps, dtype=self.dtype,
                                 param_dtype=self.param_dtype)
        attention = MultiHeadAttention(
            num_heads=self.num_heads, dropout_rate=self.attention_dropout_rate,
            kernel_init=self.kernel_init, out_kernel_init=self.out_kernel_init,
            decode=self.decode, attention_impl=self.attention_impl, dtype=self.dtype,
            param_dtype=self.param_dtype, name="attention")
        mlp = Mlp(mlp_dim=self.mlp_dim, activation=self.activation, dropout_rate=self.dropout_rate,
                  kernel_init=self.kernel_init, out_kernel_init=self.out_kernel_init,
                  dtype=self.dtype, param_dtype=self.param_dtype, name="mlp")
        drop = Dropout(self.dropout_rate)
        det = self.deterministic
        if self.pre_ln:
            x = x + drop(attention(norm(name="ln_attention")(x), mask, deterministic=det),
                         deterministic=det)
            x = x + mlp(norm(name="ln_mlp")(x), deterministic=det)
        else:
            x = norm(name="ln_attention")(x + drop(attention(x, mask, deterministic=det),
                                                    deterministic=det))
            x = norm(name="ln_mlp")(x + mlp(x, deterministic=det))
        return constrain(x, "batch", "length", "embed")


class _ScanBlock(Block):
    """Block with the (carry, out) signature nn.scan wants; picks its layer's mask."""

    @nn.compact
    def __call__(self, x: Array, masks: tuple, use_alt: Array):  # type: ignore[override]
        mask, alt_mask = masks
        if alt_mask is not None:  # the layer's mask is then one or the other: dense
            mask = AttentionMask(jnp.where(use_alt, dense_mask(alt_mask), dense_mask(mask)))
        return super().__call__(x, mask), None


class Stack(nn.Module):
    """num_layers Blocks; `scan` compiles one layer body, `remat` recomputes activations.

    `alt_mask`, when given, replaces `mask` in every second layer (1, 3, 5, ...): GPT-3's
    alternating dense and locally banded attention."""

    num_layers: int
    block: dict  # keyword arguments of Block (num_heads, mlp_dim, pre_ln, ...)
    scan: bool = False
    remat: bool = False
    deterministic: bool = True
    decode: bool = False

    @nn.compact
    def __call__(self, x: Array, mask: AttentionMask | Array | None,
                 alt_mask: AttentionMask | Array | None = None) -> Array:
        kw = dict(self.block, deterministic=self.deterministic, decode=self.decode)
        if self.scan:
            layer = nn.remat(_ScanBlock, prevent_cse=False) if self.remat else _ScanBlock
            scanned = nn.scan(
                layer,
                variable_axes={"params": 0, "cache": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast, 0),
                length=self.num_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )
            use_alt = jnp.arange(self.num_layers) % 2 == 1
            x, _ = scanned(**kw, name="layers")(x, (mask, alt_mask), use_alt)
            return x
        layer = nn.remat(Block) if self.remat else Block
        for i in range(self.num_layers):
            layer_mask = alt_mask if (alt_mask is not None and i % 2 == 1) else mask
            x = layer(**kw, name=f"layer_{i}")(x, layer_mask)
        return x


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """The fields every model's stack shares; BertConfig and GptConfig extend it."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    activation: str = "gelu"
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    scan_layers: bool = False
    remat: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    attention_impl: str = "xla"  # "xla" | "cudnn" | "auto" (resolved here to one of the two)

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"model.hidden_size={self.hidden_size} is not divisible by "
                             f"model.num_heads={self.num_heads}")
        get_activation(self.activation)
        check_dtype_names(jnp.dtype(self.dtype).name, jnp.dtype(self.param_dtype).name)
        object.__setattr__(self, "attention_impl", resolve_attention_impl(
            self.attention_impl, dtype=self.dtype, head_dim=self.hidden_size // self.num_heads,
            dropout_rate=self.attention_dropout_rate))

    def stack(self, *, pre_ln: bool, deterministic: bool, out_kernel_init: Callable | None = None,
              decode: bool = False, name: str | None = None) -> Stack:
        """The model's layer Stack, configured from these fields."""
        return Stack(
            num_layers=self.num_layers,
            block=dict(num_heads=self.num_heads, mlp_dim=self.mlp_dim, pre_ln=pre_ln,
                       activation=self.activation, dropout_rate=self.dropout_rate,
                       attention_dropout_rate=self.attention_dropout_rate,
                       layer_norm_eps=self.layer_norm_eps,
                       kernel_init=nn.initializers.truncated_normal(self.initializer_range),
                       out_kernel_init=out_kernel_init, attention_impl=self.attention_impl,
                       dtype=self.dtype, param_dtype=self.param_dtype),
            scan=self.scan_layers, remat=self.remat, deterministic=deterministic, decode=decode,
            name=name)



def check_dtype_names(dtype: str, param_dtype: str) -> None:
    """model.dtype (compute) and model.param_dtype (storage): known, and not float16, which
    would need loss scaling (not implemented; bfloat16 has float32's range and needs none)."""
    for name, value in (("dtype", dtype), ("param_dtype", param_dtype)):
        if value not in DTYPES:
            raise ValueError(f"model.{name}={value!r}; expected one of {sorted(DTYPES)}")
        if value == "float16":
            raise ValueError(f"model.{name}='float16' needs loss scaling, which ssl_jax does "
                             f"not do; use 'bfloat16' (float32's range, no scaling needed)")


def compute_dtypes(model_config) -> tuple[Any, Any]:
    """config.model's (dtype, param_dtype), checked: every model (transformer or conv-net)
    reads its dtypes through here, so a bad one is refused before any compute."""
    check_dtype_names(model_config.dtype, model_config.param_dtype)
    return DTYPES[model_config.dtype], DTYPES[model_config.param_dtype]


def check_compute(model_config, *, sizes: bool = True) -> None:
    """The dtypes and (transformers) model.attention_impl of config.model, checked before
    any data is read, for tasks whose model is only built after loading. sizes=False:
    config.model's sizes are not the model's (a pre-trained encoder's are read later), so
    the head size is checked when the model config is built."""
    m = model_config
    dtype, _ = compute_dtypes(m)
    if "attention_impl" in m:
        head_dim = None
        if sizes and m.num_heads >= 1 and not m.hidden_size % m.num_heads:
            head_dim = m.hidden_size // m.num_heads
        resolve_attention_impl(m.attention_impl, dtype=dtype, head_dim=head_dim,
                               dropout_rate=m.attention_dropout_rate)


def stack_fields(model_config, vocab_size: int) -> dict[str, Any]:
    """The TransformerConfig fields of config.model (ConfigDict), checked: the vocabulary
    covers the tokenizer's `vocab_size` tokens, the dtypes are known (float16 refused), the
    attention implementation can run here (TransformerConfig resolves "auto")."""
    m = model_config
    dtype, param_dtype = compute_dtypes(m)
    if m.get("vocab_size") and m.vocab_size < vocab_size:
        raise ValueError(f"model.vocab_size={m.vocab_size} is smaller than the tokenizer's "
                         f"{vocab_size} tokens")
    return dict(
        vocab_size=m.get("vocab_size") or vocab_size, hidden_size=m.hidden_size,
        num_layers=m.num_layers, num_heads=m.num_heads,
        mlp_dim=m.get("mlp_dim") or 4 * m.hidden_size, activation=m.activation,
        dropout_rate=m.dropout_rate, attention_dropout_rate=m.attention_dropout_rate,
        layer_norm_eps=m.layer_norm_eps, initializer_range=m.initializer_range,
        scan_layers=m.scan_layers, remat=m.remat, dtype=dtype, param_dtype=param_dtype,
        # configs written before model.attention_impl existed ran today's XLA op
        attention_impl=m.get("attention_impl", "xla"))
