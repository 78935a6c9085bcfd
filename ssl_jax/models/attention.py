"""Scaled dot-product attention and multi-head self-attention.

Masks are built by the model (padding, causal, prefix) and passed in; this op never
knows which model it serves. Softmax always runs in float32.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.models.dropout import dropout
from ssl_jax.models.partitioning import axes

Array = jax.Array
Dtype = Any


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
    logits = jnp.einsum("bhqd,bhkd->bhqk", query, key).astype(jnp.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1)
    weights = dropout(weights, dropout_rate, dropout_rng, deterministic)
    weights = weights.astype(dtype)
    return jnp.einsum("bhqk,bhkd->bhqd", weights, value.astype(dtype))


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
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, mask: Array | None, *, deterministic: bool) -> Array:
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
        # [batch, heads, seq, head_dim]
        query, key, value = (t.transpose(0, 2, 1, 3) for t in (query, key, value))
        if self.decode:
            key, value = self._cached(key, value)
        out = heads_major_attention(
            query, key, value, mask, dropout_rate=self.dropout_rate, dropout_rng=dropout_rng,
            deterministic=deterministic, dtype=self.dtype).transpose(0, 2, 1, 3)
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
