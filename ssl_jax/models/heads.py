"""Fine-tuning heads on the shared BERT encoder (Devlin et al. 2019, section 4).

One module, three head shapes, so every fine-tuning task restores the same `encoder` subtree
that pre-training (BertForPreTraining) or an imported checkpoint wrote:
  sequence  one linear layer on the pooled [CLS] (classification, sentence pairs through the
            segment ids, regression with num_outputs=1); or on the mean of the real tokens
  token     one linear layer per token (tagging: NER, POS)
  span      start/end logits per token (extractive QA)
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.models.bert import BertConfig, BertEncoder
from ssl_jax.models.dropout import Dropout
from ssl_jax.models.partitioning import dense_init

Array = jax.Array
HEADS = ("sequence", "token", "span")
POOLINGS = ("pooler", "mean")


def mean_pool(sequence: Array, input_mask: Array) -> Array:
    """[batch, seq, hidden], [batch, seq] -> [batch, hidden] float32: the mean over the real
    tokens (summed in float32: a bfloat16 sum over 512 tokens keeps ~3 digits)."""
    sequence = sequence.astype(jnp.float32)
    weights = input_mask.astype(jnp.float32)[..., None]
    return jnp.sum(sequence * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)


class BertWithHead(nn.Module):
    """BertEncoder ("encoder") + dropout + a linear "classifier"; outputs float32 logits."""

    config: BertConfig
    head: str  # one of HEADS
    num_outputs: int  # classes; 1 for regression; 2 (start, end) for spans
    pooling: str = "pooler"  # sequence head: BERT's tanh pooler on [CLS], or "mean"
    classifier_dropout: float = 0.1
    deterministic: bool = True

    def setup(self):
        if self.head not in HEADS:
            raise ValueError(f"head={self.head!r}; expected one of {HEADS}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling={self.pooling!r}; expected one of {POOLINGS}")
        c = self.config
        self.encoder = BertEncoder(c, deterministic=self.deterministic)
        self.classifier = nn.Dense(
            self.num_outputs,
            **dense_init(nn.initializers.truncated_normal(c.initializer_range), "embed", "classes"),
            dtype=jnp.float32, param_dtype=c.param_dtype)  # logits in float32
        self.dropout = Dropout(self.classifier_dropout)

    def __call__(self, input_ids: Array, segment_ids: Array, input_mask: Array) -> Array:
        """sequence: [batch, num_outputs]; token: [batch, seq, num_outputs];
        span: [batch, seq, 2] (start, end)."""
        sequence, pooled = self.encoder(input_ids, segment_ids, input_mask)
        if self.head == "sequence":
            x = pooled if self.pooling == "pooler" else mean_pool(sequence, input_mask)
        else:
            x = sequence  # [batch, seq, hidden]
        x = self.dropout(x, deterministic=self.deterministic)
        shape = x.shape
        logits = self.classifier(x.reshape(-1, shape[-1]))  # [tokens, outputs] (see Mlp)
        return logits.reshape(shape[:-1] + (self.num_outputs,)).astype(jnp.float32)
