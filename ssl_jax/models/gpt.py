"""GPT decoders (GPT-1, GPT-2, GPT-3 sizes) from the shared Block, with a causal mask.

GPT-1: post-LN, 12 x 768, 12 heads, 512 context. GPT-2/3: pre-LN with a final LayerNorm
and residual output projections initialised with std 0.02 / sqrt(2 * layers). The output
projection is tied to the token embedding. `sparse_attention` alternates dense layers with
locally banded ones (each position sees the previous `attention_window` positions), as GPT-3
did after the Sparse Transformer; the band is a mask, so compute stays dense.

`decode=True` is the cached, incremental form used by generation (ssl_jax/eval/generation.py):
the model keeps, in collection "cache", which cache slots hold real tokens and how many real
tokens each row has seen, so a batch of left-padded prompts of different lengths decodes
with the right positions and masks.
"""
from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.models.attention import AttentionMask
from ssl_jax.models.dropout import Dropout
from ssl_jax.models.partitioning import axes, constrain
from ssl_jax.models.transformer import TransformerConfig, layer_norm, stack_fields

Array = jax.Array

# name -> (layers, hidden, heads, context); GPT-3 sizes from Brown et al. 2020, Table 2.1.
GPT_SIZES: dict[str, dict[str, int]] = {
    # CPU-sized GPT-2-style variants for the embedded corpus and tests
    "gpt-tiny": dict(num_layers=2, hidden_size=128, num_heads=2, max_len=512),
    "gpt-mini": dict(num_layers=4, hidden_size=256, num_heads=4, max_len=1024),
    "gpt1": dict(num_layers=12, hidden_size=768, num_heads=12, max_len=512),
    "gpt2-small": dict(num_layers=12, hidden_size=768, num_heads=12, max_len=1024),
    "gpt2-medium": dict(num_layers=24, hidden_size=1024, num_heads=16, max_len=1024),
    "gpt2-large": dict(num_layers=36, hidden_size=1280, num_heads=20, max_len=1024),
    "gpt2-xl": dict(num_layers=48, hidden_size=1600, num_heads=25, max_len=1024),
    "gpt3-small": dict(num_layers=12, hidden_size=768, num_heads=12, max_len=2048),
    "gpt3-medium": dict(num_layers=24, hidden_size=1024, num_heads=16, max_len=2048),
    "gpt3-large": dict(num_layers=24, hidden_size=1536, num_heads=16, max_len=2048),
    # Table 2.1 prints 24 heads of 128 for d_model 2048: 24 does not divide 2048 (24 x 128 =
    # 3072). Implementations use 16 heads of 128, keeping the width, as for 13B below.
    "gpt3-xl": dict(num_layers=24, hidden_size=2048, num_heads=16, max_len=2048),
    "gpt3-2.7b": dict(num_layers=32, hidden_size=2560, num_heads=32, max_len=2048),
    "gpt3-6.7b": dict(num_layers=32, hidden_size=4096, num_heads=32, max_len=2048),
    # Table 2.1 prints d_model 5140 with 40 heads of 128: the model is 40 x 128 = 5120 wide.
    "gpt3-13b": dict(num_layers=40, hidden_size=5120, num_heads=40, max_len=2048),
    "gpt3-175b": dict(num_layers=96, hidden_size=12288, num_heads=96, max_len=2048),
}


@dataclasses.dataclass(frozen=True)
class GptConfig(TransformerConfig):
    """GPT-2 small defaults (tanh GELU, LayerNorm eps 1e-5, 50,257 BPE tokens)."""

    vocab_size: int = 50257
    activation: str = "gelu_tanh"
    layer_norm_eps: float = 1e-5
    max_len: int = 1024
    pre_ln: bool = True  # False: GPT-1
    sparse_attention: bool = False  # GPT-3: odd layers locally banded
    attention_window: int = 256  # the band's width (positions seen, itself included)

    def __post_init__(self):
        super().__post_init__()
        if self.attention_window < 1:
            raise ValueError(f"model.attention_window={self.attention_window} must be >= 1")


def document_mask(segment_ids: Array) -> Array:
    """[batch, seq] document ids of packed sequences -> [batch, 1, seq, seq]: attend only
    within one's own document."""
    return (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]


def positions_from_mask(input_mask: Array, start: Array | int = 0) -> Array:
    """Left-padded rows: the k-th real token of a row gets position start + k (pads: start)."""
    return start + jnp.maximum(jnp.cumsum(input_mask.astype(jnp.int32), axis=1) - 1, 0)


def attention_masks(query_slot: Array, key_valid: Array | None, seq_len: int,
                    mask: Array | None = None, window: int | None = None):
    """Causal masks over key slots (cache slots in decode mode, else positions).

    query_slot [seq]: each query's slot; key_valid [batch, kv_len] (None: all seq_len keys
    real). Returns (dense, band): bool [batch or 1, 1, seq, kv_len]; `band` (None unless a
    window is given) also hides keys `window` or more slots back."""
    key_slot = jnp.arange(seq_len if key_valid is None else key_valid.shape[1])  # [kv_len]
    distance = query_slot[:, None] - key_slot[None, :]  # [seq, kv_len]
    attend = (distance >= 0)[None, None]  # [1, 1, seq, kv_len]
    if key_valid is not None:
        attend = attend & key_valid[:, None, None, :]  # [batch, 1, seq, kv_len]
    if mask is not None:
        attend = attend & mask
    band = attend & (distance < window)[None, None] if window is not None else None
    return attend, band


class GptLM(nn.Module):
    """Token + learned position embeddings, a causal Stack, tied output logits."""

    config: GptConfig
    deterministic: bool = True
    decode: bool = False

    @nn.compact
    def __call__(self, input_ids: Array, input_mask: Array | None = None,
                 mask: Array | None = None, last_only: bool = False,
                 return_hidden: bool = False) -> Array:
        """input_ids [batch, seq] -> logits [batch, seq, vocab] (float32).

        input_mask [batch, seq]: 1 = real token, 0 = (left) padding, which is never attended
        to and does not advance positions. mask (bool, broadcastable to [batch, 1, seq,
        seq]; not in decode mode) is and-ed with the causal mask, e.g. `document_mask`.
        last_only: logits of the last position only ([batch, 1, vocab]), for decoding.
        return_hidden: the final hidden states [batch, seq, hidden] instead of logits, for a
        loss that applies the tied output layer itself (ssl_jax/models/losses.py)."""
        c = self.config
        batch, seq_len = input_ids.shape
        if seq_len > c.max_len:
            raise ValueError(f"sequence length {seq_len} exceeds the context max_len={c.max_len}")
        if self.decode:
            if mask is not None:
                raise ValueError("GptLM(decode=True) takes no extra mask")
            if input_mask is None:
                input_mask = jnp.ones((batch, seq_len), jnp.int32)
            positions, key_valid, first_slot = self._advance_cache(input_mask)
        elif input_mask is None:  # plain causal LM: [1, 1, seq, seq] masks
            positions, key_valid, first_slot = jnp.arange(seq_len)[None], None, 0
        else:
            positions = positions_from_mask(input_mask)
            key_valid, first_slot = input_mask.astype(bool), 0
        attend, band = attention_masks(
            first_slot + jnp.arange(seq_len), key_valid, seq_len, mask,
            c.attention_window if c.sparse_attention else None)
        # plainly causal (no padding, no extra mask, not decoding): cuDNN takes it as a flag;
        # left padding, documents and bands stay dense masks
        attend = AttentionMask(attend, causal=not self.decode and key_valid is None
                               and mask is None)
        band = None if band is None else AttentionMask(band)

        init = nn.initializers.truncated_normal(c.initializer_range)
        wte = nn.Embed(c.vocab_size, c.hidden_size, embedding_init=axes(init, "vocab", "embed"),
                       dtype=c.dtype, param_dtype=c.param_dtype, name="token")
        x = wte(input_ids) + nn.Embed(c.max_len, c.hidden_size,
                                      embedding_init=axes(init, "position", "embed"),
                                      dtype=c.dtype, param_dtype=c.param_dtype,
                                      name="position")(positions)
        x = constrain(x, "batch", "length", "embed")
        x = self.perturb("embeddings", x)  # lets tests/probes take d(out)/d(inputs)
        x = Dropout(c.dropout_rate)(x, deterministic=self.deterministic)
        # GPT-2: residual projections scaled by 1/sqrt(2 * layers) at init.
        residual_init = (nn.initializers.truncated_normal(
            c.initializer_range / math.sqrt(2 * c.num_layers)) if c.pre_ln else init)
        x = c.stack(pre_ln=c.pre_ln, deterministic=self.deterministic,
                    out_kernel_init=residual_init, decode=self.decode, name="stack")(
                        x, attend, band)
        if c.pre_ln:
            x = layer_norm(epsilon=c.layer_norm_eps, dtype=c.dtype,
                             param_dtype=c.param_dtype, name="ln_final")(x)
        if return_hidden:
            return x
        if last_only:
            x = x[:, -1:]
        tokens = x.reshape(-1, c.hidden_size)  # [tokens, hidden] (see MultiHeadAttention)
        if tokens.shape[0] <= 8:
            # decoding: the table [vocab, hidden] as the left operand of a matrix-vector
            # product; `attend` (x @ E^T) made XLA:CPU copy the transposed 50k-row table on
            # every token (~30% of a decode step)
            logits = jax.lax.dot_general(wte.embedding.astype(c.dtype), tokens.astype(c.dtype),
                                         (((1,), (1,)), ((), ())),
                                         preferred_element_type=jnp.float32).T
        else:  # tied to the embedding (Embed.attend), summed in float32
            logits = jnp.dot(tokens.astype(c.dtype), wte.embedding.astype(c.dtype).T,
                             preferred_element_type=jnp.float32)
        return logits.reshape(x.shape[:2] + (c.vocab_size,))

    def _advance_cache(self, input_mask: Array) -> tuple[Array, Array, Array]:
        """Decode mode: records this call's tokens in the cache bookkeeping; returns their
        positions, which cache slots hold real tokens, and the first slot written."""
        ready = self.has_variable("cache", "valid")  # absent while `init` sizes the cache
        valid = self.variable("cache", "valid", jnp.zeros, input_mask.shape, bool)
        seen = self.variable("cache", "seen", jnp.zeros, input_mask.shape[:1], jnp.int32)
        index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
        if not ready:
            return positions_from_mask(input_mask), input_mask.astype(bool), jnp.int32(0)
        first = index.value
        positions = positions_from_mask(input_mask, seen.value[:, None])
        valid.value = jax.lax.dynamic_update_slice(valid.value, input_mask.astype(bool),
                                                   (0, first))
        seen.value = seen.value + jnp.sum(input_mask, axis=1, dtype=jnp.int32)
        index.value = first + input_mask.shape[1]
        return positions, valid.value, first


def gpt_config(model_config, vocab_size: int) -> GptConfig:
    """config.model (ConfigDict) -> GptConfig, checked."""
    m = model_config
    for name in ("num_layers", "hidden_size", "num_heads", "max_len"):
        if m[name] < 1:
            raise ValueError(f"model.{name}={m[name]} must be >= 1")
    return GptConfig(**stack_fields(m, vocab_size), max_len=m.max_len, pre_ln=m.pre_ln,
                     sparse_attention=m.sparse_attention, attention_window=m.attention_window)
