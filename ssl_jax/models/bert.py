"""BERT (Devlin et al. 2019): embeddings, post-LN encoder, MLM and NSP heads."""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.models.dropout import Dropout
from ssl_jax.models.attention import right_padding_mask
from ssl_jax.models.partitioning import axes, constrain, dense_init
from ssl_jax.models.transformer import (TransformerConfig, get_activation, layer_norm,
                                        stack_fields)

Array = jax.Array

# The BERT paper's sizes (base, large) and the compact-model table of Turc et al. 2019.
BERT_SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(num_layers=2, hidden_size=128, num_heads=2),
    "mini": dict(num_layers=4, hidden_size=256, num_heads=4),
    "small": dict(num_layers=4, hidden_size=512, num_heads=8),
    "medium": dict(num_layers=8, hidden_size=512, num_heads=8),
    "base": dict(num_layers=12, hidden_size=768, num_heads=12),
    "large": dict(num_layers=24, hidden_size=1024, num_heads=16),
}


@dataclasses.dataclass(frozen=True)
class BertConfig(TransformerConfig):
    """BERT-base defaults (erf GELU, LayerNorm eps 1e-12) plus the embedding tables."""

    max_position_embeddings: int = 512
    type_vocab_size: int = 2


class BertEmbeddings(nn.Module):
    """WordPiece token + learned absolute position + segment embeddings, LayerNorm, dropout."""

    config: BertConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, input_ids: Array, segment_ids: Array) -> Array:
        c = self.config
        init = nn.initializers.truncated_normal(c.initializer_range)
        embed = lambda n, rows, name: nn.Embed(
            n, c.hidden_size, embedding_init=axes(init, rows, "embed"), dtype=c.dtype,
            param_dtype=c.param_dtype, name=name)
        seq_len = input_ids.shape[1]
        if seq_len > c.max_position_embeddings:
            raise ValueError(f"sequence length {seq_len} exceeds max_position_embeddings="
                             f"{c.max_position_embeddings}")
        x = embed(c.vocab_size, "vocab", "word")(input_ids)  # [batch, seq, hidden]
        x = x + embed(c.max_position_embeddings, "position", "position")(
            jnp.arange(seq_len)[None, :])
        x = x + embed(c.type_vocab_size, "segment", "segment")(segment_ids)
        x = layer_norm(epsilon=c.layer_norm_eps, dtype=c.dtype, param_dtype=c.param_dtype,
                       name="ln")(x)
        x = constrain(x, "batch", "length", "embed")
        return Dropout(c.dropout_rate)(x, deterministic=self.deterministic)



class BertEncoder(nn.Module):
    """Embeddings + post-LN Stack + pooler (dense + tanh on [CLS])."""

    config: BertConfig
    deterministic: bool = True

    def setup(self):
        c = self.config
        self.embeddings = BertEmbeddings(c, deterministic=self.deterministic)
        self.stack = c.stack(pre_ln=False, deterministic=self.deterministic)
        self.pooler = nn.Dense(c.hidden_size, **dense_init(nn.initializers.truncated_normal(
            c.initializer_range), "embed", "mlp"), dtype=c.dtype, param_dtype=c.param_dtype)

    def __call__(self, input_ids: Array, segment_ids: Array, input_mask: Array):
        """Returns (sequence [batch, seq, hidden], pooled [batch, hidden])."""
        x = self.embeddings(input_ids, segment_ids)
        # input_mask is right-padded (every pipeline pads after the real tokens): the cuDNN
        # path reads it as lengths, the XLA op as the dense mask
        x = self.stack(x, right_padding_mask(input_mask))
        pooled = jnp.tanh(self.pooler(x[:, 0]))
        return x, pooled

    def word_embedding(self) -> Array:
        return nn.meta.unbox(self.embeddings.variables["params"]["word"]["embedding"])


def gather_positions(sequence: Array, positions: Array) -> Array:
    """[batch, seq, hidden], [batch, P] int -> [batch, P, hidden]."""
    return jnp.take_along_axis(sequence, positions[..., None], axis=1)


class MlmHead(nn.Module):
    """dense + activation + LayerNorm, then logits against the tied word embedding + bias."""

    config: BertConfig

    @nn.compact
    def __call__(self, x: Array, word_embedding: Array) -> Array:
        c = self.config
        shape = x.shape  # [..., hidden], flattened for the dense (see MultiHeadAttention)
        x = nn.Dense(c.hidden_size, **dense_init(nn.initializers.truncated_normal(
            c.initializer_range), "embed", "mlp"), dtype=c.dtype, param_dtype=c.param_dtype,
            name="transform")(x.reshape(-1, shape[-1]))
        x = get_activation(c.activation)(x)
        x = layer_norm(epsilon=c.layer_norm_eps, dtype=c.dtype, param_dtype=c.param_dtype,
                       name="ln")(x)
        bias = self.param("bias", axes(nn.initializers.zeros, "vocab"), (c.vocab_size,),
                          c.param_dtype)
        logits = jnp.einsum("nh,vh->nv", x, word_embedding.astype(c.dtype),
                            preferred_element_type=jnp.float32)  # summed in float32
        logits = logits + bias.astype(jnp.float32)[None, :]  # [n, vocab]
        return logits.reshape(shape[:-1] + (c.vocab_size,))  # [..., vocab]


class BertForPreTraining(nn.Module):
    """Encoder + MLM head (only at masked positions) + NSP head on the pooled [CLS]."""

    config: BertConfig
    deterministic: bool = True

    def setup(self):
        self.encoder = BertEncoder(self.config, deterministic=self.deterministic)
        self.mlm = MlmHead(self.config)
        self.nsp = nn.Dense(2, **dense_init(nn.initializers.truncated_normal(
            self.config.initializer_range), "embed", "classes"),
            dtype=jnp.float32,  # logits in float32
            param_dtype=self.config.param_dtype)

    def __call__(self, input_ids: Array, segment_ids: Array, input_mask: Array,
                 masked_positions: Array | None = None):
        """masked_positions [batch, P]: MLM logits only there ([batch, P, vocab]);
        None: logits at every position ([batch, seq, vocab]). NSP logits [batch, 2]."""
        sequence, pooled = self.encoder(input_ids, segment_ids, input_mask)
        if masked_positions is not None:
            sequence = gather_positions(sequence, masked_positions)
        mlm_logits = self.mlm(sequence, self.encoder.word_embedding())
        nsp_logits = self.nsp(pooled).astype(jnp.float32)
        return mlm_logits, nsp_logits


def bert_config(model_config, vocab_size: int) -> BertConfig:
    """config.model (ConfigDict) -> BertConfig, checked."""
    return BertConfig(**stack_fields(model_config, vocab_size),
                      max_position_embeddings=model_config.max_position_embeddings,
                      type_vocab_size=model_config.type_vocab_size)


def check_model_sizes(m) -> None:
    """config.model's layer/width/head counts (no data needed)."""
    for name in ("num_layers", "hidden_size", "num_heads"):
        if m[name] < 1:
            raise ValueError(f"model.{name}={m[name]} must be >= 1")
    if m.hidden_size % m.num_heads:
        raise ValueError(f"model.num_heads={m.num_heads} does not divide "
                         f"model.hidden_size={m.hidden_size}")
