"""GPT decoders (GPT-1, GPT-2, GPT-3 sizes) from the shared Block, with a causal mask.

GPT-1: post-LN, 12 x 768, 12 heads, 512 context. GPT-2/3: pre-LN with a final LayerNorm
and residual output projections initialised with std 0.02 / sqrt(2 * layers). The output
projection is tied to the token embedding. (Training task, generation and the sparse
attention option come with the GPT issue.)
"""
from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.models.dropout import Dropout
from ssl_jax.models.transformer import TransformerConfig

Array = jax.Array

# name -> (layers, hidden, heads, context); GPT-3 sizes from Brown et al. 2020, Table 2.1.
GPT_SIZES: dict[str, dict[str, int]] = {
    "gpt1": dict(num_layers=12, hidden_size=768, num_heads=12, max_len=512),
    "gpt2-small": dict(num_layers=12, hidden_size=768, num_heads=12, max_len=1024),
    "gpt2-medium": dict(num_layers=24, hidden_size=1024, num_heads=16, max_len=1024),
    "gpt2-large": dict(num_layers=36, hidden_size=1280, num_heads=20, max_len=1024),
    "gpt2-xl": dict(num_layers=48, hidden_size=1600, num_heads=25, max_len=1024),
    "gpt3-small": dict(num_layers=12, hidden_size=768, num_heads=12, max_len=2048),
    "gpt3-medium": dict(num_layers=24, hidden_size=1024, num_heads=16, max_len=2048),
    "gpt3-large": dict(num_layers=24, hidden_size=1536, num_heads=16, max_len=2048),
    "gpt3-xl": dict(num_layers=24, hidden_size=2048, num_heads=24, max_len=2048),
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


def causal_mask(seq_len: int) -> Array:
    """[1, 1, seq, seq] bool: position i attends to positions <= i."""
    return jnp.tril(jnp.ones((seq_len, seq_len), bool))[None, None]


class GptLM(nn.Module):
    """Token + learned position embeddings, a causal Stack, tied output logits."""

    config: GptConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, input_ids: Array, mask: Array | None = None) -> Array:
        """input_ids [batch, seq] -> logits [batch, seq, vocab] (float32). `mask` (bool,
        broadcastable to [batch, heads, seq, seq]) is combined with the causal mask, e.g.
        to stop attention across packed document boundaries."""
        c = self.config
        seq_len = input_ids.shape[1]
        if seq_len > c.max_len:
            raise ValueError(f"sequence length {seq_len} exceeds the context max_len={c.max_len}")
        init = nn.initializers.truncated_normal(c.initializer_range)
        wte = nn.Embed(c.vocab_size, c.hidden_size, embedding_init=init, dtype=c.dtype,
                       param_dtype=c.param_dtype, name="token")
        x = wte(input_ids) + nn.Embed(c.max_len, c.hidden_size, embedding_init=init,
                                      dtype=c.dtype, param_dtype=c.param_dtype,
                                      name="position")(jnp.arange(seq_len)[None])
        x = self.perturb("embeddings", x)  # lets tests/probes take d(out)/d(inputs)
        x = Dropout(c.dropout_rate)(x, deterministic=self.deterministic)
        attend = causal_mask(seq_len) if mask is None else causal_mask(seq_len) & mask
        # GPT-2: residual projections scaled by 1/sqrt(2 * layers) at init.
        residual_init = (nn.initializers.truncated_normal(
            c.initializer_range / math.sqrt(2 * c.num_layers)) if c.pre_ln else init)
        x = c.stack(pre_ln=c.pre_ln, deterministic=self.deterministic,
                    out_kernel_init=residual_init, name="stack")(x, attend)
        if c.pre_ln:
            x = nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=c.dtype,
                             param_dtype=c.param_dtype, name="ln_final")(x)
        # tied to the embedding; on [tokens, hidden] (see MultiHeadAttention)
        logits = wte.attend(x.reshape(-1, c.hidden_size)).astype(jnp.float32)
        return logits.reshape(input_ids.shape + (c.vocab_size,))  # [batch, seq, vocab]
