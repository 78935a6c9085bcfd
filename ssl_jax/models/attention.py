"""Scaled dot-product attention and multi-head self-attention.

Masks are built by the model (padding, causal, prefix) and passed in as an `AttentionMask`;
this op never knows which model it serves. Softmax always runs in float32.

Two implementations (model.attention_impl): "xla", our op (`heads_major_attention`: heads-major
layout and the hash dropout, tuned for XLA:CPU), and "cudnn", jax.nn.dot_product_attention's
cuDNN flash attention (NVIDIA GPUs, bfloat16), which reads padding as key lengths and causality
as a flag where the mask is of those kinds. "auto" is resolved to one of them when the model
config is built (`resolve_attention_impl`).
"""
from __future__ import annotations

import functools
import logging
import math
from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from ssl_jax.models.dropout import dropout
from ssl_jax.models.partitioning import axes

Array = jax.Array
Dtype = Any
ATTENTION_IMPLS = ("xla", "cudnn", "auto")
_FUSED_BACKEND = "cudnn"  # jax.nn.dot_product_attention's; tests run the path with "xla"
_LOGGED: set[str] = set()  # the choices "auto" has logged in this process


@flax.struct.dataclass
class AttentionMask:
    """Who may attend to whom. `dense`: bool, broadcastable to [batch, heads, q_len, kv_len],
    True = attend: the whole mask, what the XLA op reads. Where the mask is one of the kinds
    cuDNN takes without a dense mask, also what it is: `kv_lengths` [batch] int32, a row's
    keys at or past its length are hidden (right padding) and nothing else; `causal`, query i
    sees keys <= i (q_len == kv_len), and-ed with kv_lengths if given. Neither: an arbitrary
    mask (documents, bands, left padding), which cuDNN also gets densely."""

    dense: Array
    kv_lengths: Array | None = None
    causal: bool = flax.struct.field(pytree_node=False, default=False)


def dense_mask(mask: AttentionMask | Array | None) -> Array | None:
    """The bool mask of an AttentionMask (a bare bool array is its own)."""
    return mask.dense if isinstance(mask, AttentionMask) else mask


def heads_major_attention(query: Array, key: Array, value: Array, mask: Array | None, *,
                          dropout_rate: float = 0.0, dropout_rng: Array | None = None,
                          deterministic: bool = True, dtype: Dtype = jnp.float32) -> Array:
    """softmax(q k^T / sqrt(d) + mask) v, the softmax in float32, on [batch, heads, len,
    head_dim] inputs (what a KV cache stores); mask: bool, broadcastable to [batch, heads,
    q_len, kv_len], True = attend. Heads-major because XLA's CPU backend runs these batched
    matmuls ~1.8x faster than with heads as the third axis (the transposes fuse into the
    dots)."""
    query = query / jnp.sqrt(query.shape[-1]).astype(query.dtype)
    # [batch, heads, q_len, kv_len]
    logits = jnp.einsum("bhqd,bhkd->bhqk", query, key, preferred_element_type=jnp.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1)
    weights = dropout(weights, dropout_rate, dropout_rng, deterministic)
    weights = weights.astype(dtype)
    return jnp.einsum("bhqk,bhkd->bhqd", weights, value.astype(dtype))


def step_attention(query: Array, cached_key: Array, cached_value: Array, key: Array,
                   value: Array, mask: Array, self_mask: Array, *, dropout_rate: float = 0.0,
                   dropout_rng: Array | None = None, deterministic: bool = True,
                   dtype: Dtype = jnp.float32) -> Array:
    """heads_major_attention over the keys/values [cached_key; key] without concatenating
    them (which would copy the cache): one softmax over both logit blocks, then the two
    weighted sums added. mask [.., 1, cache_len] for the cached keys, self_mask [.., 1, 1]
    for the new one."""
    query = query / jnp.sqrt(query.shape[-1]).astype(query.dtype)
    low = jnp.finfo(jnp.float32).min
    cached = jnp.einsum("bhqd,bhkd->bhqk", query, cached_key, preferred_element_type=jnp.float32)
    own = jnp.einsum("bhqd,bhkd->bhqk", query, key, preferred_element_type=jnp.float32)
    logits = jnp.concatenate([jnp.where(mask, cached, low), jnp.where(self_mask, own, low)], -1)
    weights = jax.nn.softmax(logits, axis=-1)
    weights = dropout(weights, dropout_rate, dropout_rng, deterministic).astype(dtype)
    return (jnp.einsum("bhqk,bhkd->bhqd", weights[..., :-1], cached_value.astype(dtype))
            + jnp.einsum("bhqk,bhkd->bhqd", weights[..., -1:], value.astype(dtype)))


class HeadsDense(nn.Module):
    """nn.DenseGeneral's computation (same initial values, same dot) with logical axis names
    on its multi-axis kernel: the last `num_in` axes of x are contracted with the kernel
    [*in, *features]. (DenseGeneral initialises a flattened kernel and reshapes it, which
    logical-axis metadata of the full rank cannot pass through.)"""

    features: tuple[int, ...]
    num_in: int
    kernel_axes: tuple[str | None, ...]
    bias_axes: tuple[str | None, ...]
    kernel_init: Callable = nn.initializers.truncated_normal(0.02)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        inputs = x.shape[x.ndim - self.num_in:]
        flat = (math.prod(inputs), math.prod(self.features))

        def kernel_init(rng, shape, dtype):
            return jnp.reshape(self.kernel_init(rng, flat, dtype), shape)

        kernel = self.param("kernel", axes(kernel_init, *self.kernel_axes),
                            inputs + self.features, self.param_dtype)
        bias = self.param("bias", axes(nn.initializers.zeros, *self.bias_axes), self.features,
                          self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        contract = tuple(range(x.ndim - self.num_in, x.ndim))
        out = jax.lax.dot_general(x, kernel, ((contract, tuple(range(self.num_in))), ((), ())))
        return out + jnp.reshape(bias, (1,) * (out.ndim - len(self.features)) + self.features)


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention: q/k/v projections, attention op, output projection.

    decode=True keeps a KV cache (collection "cache": cached_key/cached_value [batch, heads, max_len,
    head_dim] and the next write index): `init` with a [batch, max_len] input sizes it, each
    `apply(..., mutable=["cache"])` appends its tokens' keys/values at the index and
    attends over the whole cache, so the mask must then be [batch, 1, q_len, max_len].
    """

    num_heads: int
    dropout_rate: float = 0.0
    kernel_init: Callable = nn.initializers.truncated_normal(0.02)
    out_kernel_init: Callable | None = None  # e.g. GPT-2's residual scaling
    decode: bool = False
    attention_impl: str = "xla"  # or "cudnn" (resolved; decode always runs "xla")
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, mask: AttentionMask | Array | None, *,
                 deterministic: bool) -> Array:
        batch, seq, hidden = x.shape
        if hidden % self.num_heads:
            raise ValueError(f"hidden size {hidden} is not divisible by num_heads={self.num_heads}")
        head_dim = hidden // self.num_heads
        dense = functools.partial(
            HeadsDense,
            features=(self.num_heads, head_dim),
            num_in=1,
            kernel_axes=("embed", "heads", "kv"),
            bias_axes=("heads", "kv"),
            kernel_init=self.kernel_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        # Projections run on [batch*seq, hidden]: XLA's CPU backend computes the kernel
        # gradient ~2x slower when it has to contract over two batch-like axes.
        tokens = x.reshape(batch * seq, hidden)
        # each [batch, seq, heads, head_dim]
        query, key, value = (dense(name=name)(tokens).reshape(batch, seq, self.num_heads, head_dim)
                             for name in ("query", "key", "value"))
        dropout_rng = None
        if not deterministic and self.dropout_rate > 0.0:
            dropout_rng = self.make_rng("dropout")
        if self.attention_impl == "cudnn" and not self.decode:
            if dropout_rng is not None:
                raise ValueError(f"attention_impl='cudnn' has no attention dropout; "
                                 f"model.attention_dropout_rate={self.dropout_rate} must be 0")
            out = fused_attention(query, key, value, mask)  # [batch, seq, heads, head_dim]
        else:
            # [batch, heads, seq, head_dim]
            query, key, value = (t.transpose(0, 2, 1, 3) for t in (query, key, value))
            options = dict(dropout_rate=self.dropout_rate, dropout_rng=dropout_rng,
                           deterministic=deterministic, dtype=self.dtype)
            if (self.decode and seq == 1 and mask is not None
                    and self.has_variable("cache", "cached_key")):  # one decoded token
                out = self._step(query, key, value, dense_mask(mask), options)
            else:
                if self.decode:
                    key, value = self._cached(key, value)
                out = heads_major_attention(query, key, value, dense_mask(mask), **options)
            out = out.transpose(0, 2, 1, 3)
        out = HeadsDense(  # [batch*seq, hidden]
            features=(hidden,),
            num_in=2,
            kernel_axes=("heads", "kv", "embed"),
            bias_axes=("embed",),
            kernel_init=self.out_kernel_init or self.kernel_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="out",
        )(out.reshape(batch * seq, self.num_heads, head_dim))
        return out.reshape(batch, seq, hidden)

    def _step(self, query: Array, key: Array, value: Array, mask: Array,
              options: dict) -> Array:
        """One decoded token: attention over the cache as it was (the slot written now
        hidden) and this token's own key/value, then the cache write, ordered after the
        reads, so XLA updates the cache in place inside the decoding loop; attending over
        the written cache made XLA:CPU copy every layer's keys and values on every token.
        The same keys, values and mask as attending over the written cache."""
        cached_key = self.variable("cache", "cached_key")
        cached_value = self.variable("cache", "cached_value")
        index = self.variable("cache", "cache_index")
        slot = index.value
        here = jax.lax.dynamic_slice_in_dim(mask, slot, 1, axis=-1)  # the new token's slot
        others = jnp.arange(mask.shape[-1]) != slot  # [cache_len]
        before = mask & others.reshape((1,) * (mask.ndim - 1) + (-1,))
        out = step_attention(query, cached_key.value, cached_value.value, key, value, before,
                             here, **options)
        # the write after the reads: data-dependent on the attention output (0 * out), else
        # XLA:CPU copies the whole cache to write it while the reads may still be pending
        # (an optimization_barrier did not stop it)
        after = 0 * out.astype(key.dtype)
        at = (0, 0, slot, 0)
        cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key + after, at)
        cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value + after, at)
        index.value = slot + 1
        return out

    def _cached(self, key: Array, value: Array) -> tuple[Array, Array]:
        """Writes this call's keys/values at the cache index; returns the whole cache."""
        ready = self.has_variable("cache", "cached_key")  # absent while `init` sizes the cache
        cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape, value.dtype)
        index = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
        if not ready:
            return key, value
        at = (0, 0, index.value, 0)
        cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key, at)
        cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value, at)
        index.value = index.value + key.shape[2]
        return cached_key.value, cached_value.value


def padding_mask(valid: Array) -> Array:
    """[batch, seq] bool (True = real token) -> [batch, 1, 1, seq] attention mask."""
    return valid[:, None, None, :].astype(bool)


def right_padding_mask(valid: Array) -> AttentionMask:
    """[batch, seq] (1 = real token, every pad after the row's real tokens) -> the padding
    mask with the rows' lengths (cuDNN reads those; it assumes the padding is on the right)."""
    return AttentionMask(padding_mask(valid), kv_lengths=jnp.sum(valid, axis=1, dtype=jnp.int32))


def fused_attention(query: Array, key: Array, value: Array,
                    mask: AttentionMask | Array | None) -> Array:
    """jax.nn.dot_product_attention (cuDNN flash attention) on [batch, len, heads, head_dim]
    inputs; no dropout. Padding goes in as key lengths and causality as is_causal where `mask`
    says it is of those kinds; any other mask goes in densely."""
    kw: dict[str, Any] = {}
    if isinstance(mask, AttentionMask) and (mask.causal or mask.kv_lengths is not None):
        kw["is_causal"] = mask.causal
        if mask.kv_lengths is not None:
            # a row without real tokens (an eval batch's padding example) sees its first key
            # instead of none (whose result cuDNN leaves undefined); its output is never used
            kw["key_value_seq_lengths"] = jnp.maximum(mask.kv_lengths, 1).astype(jnp.int32)
    elif mask is not None:
        kw["mask"] = dense_mask(mask)
    return jax.nn.dot_product_attention(query, key, value, implementation=_FUSED_BACKEND, **kw)


def _cudnn_unsupported(dtype: Dtype, head_dim: int | None, dropout_rate: float) -> str | None:
    """Why cuDNN flash attention cannot run this model in this process (None: it can)."""
    device = jax.devices()[0]
    rocm = "rocm" in str(getattr(device.client, "platform_version", "")).lower()
    if device.platform != "gpu" or rocm:
        return (f"needs an NVIDIA GPU with cuDNN and model.dtype='bfloat16'; this process "
                f"runs on {'rocm' if rocm else device.platform}")
    if jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        return (f"needs model.dtype='bfloat16' (cuDNN flash attention runs in bf16/fp16); "
                f"model.dtype={jnp.dtype(dtype).name!r}")
    capability = getattr(device, "compute_capability", "0")
    max_head_dim = 256 if float(capability or 0) >= 9.0 else 128
    if head_dim is not None and (head_dim % 8 or head_dim > max_head_dim):
        return (f"needs a head size (hidden_size / num_heads) that is a multiple of 8 and at "
                f"most {max_head_dim} on this GPU; it is {head_dim}")
    if dropout_rate > 0:
        return (f"has no attention dropout: model.attention_dropout_rate={dropout_rate} must be "
                f"0")
    return None


def resolve_attention_impl(requested: str, *, dtype: Dtype, head_dim: int | None,
                           dropout_rate: float) -> str:
    """model.attention_impl -> the implementation this process runs, "xla" or "cudnn".

    "cudnn" where cuDNN cannot run it (platform, dtype, head size, attention dropout) is a
    ValueError saying why, raised when the model config is built, before any compute.
    "auto" takes cuDNN where it can run, else XLA, and logs its choice (INFO, once per process
    per choice). head_dim None: not known yet (checked again when it is)."""
    if requested not in ATTENTION_IMPLS:
        raise ValueError(f"model.attention_impl={requested!r}; expected one of "
                         f"{ATTENTION_IMPLS}")
    if requested == "xla":
        return "xla"
    why = _cudnn_unsupported(dtype, head_dim, dropout_rate)
    if requested == "cudnn":
        if why:
            raise ValueError(f"model.attention_impl='cudnn' {why} (use 'xla' or 'auto')")
        return "cudnn"
    choice = "xla" if why else "cudnn"
    message = (f"model.attention_impl='auto': XLA attention (cuDNN {why})" if why else
               "model.attention_impl='auto': cuDNN flash attention")
    if message not in _LOGGED:
        _LOGGED.add(message)
        logging.getLogger(__name__).info(message)
    return choice
