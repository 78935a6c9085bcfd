"""Fine-tuning heads on the shared BERT encoder (Devlin et al. 2019, section 4).

One module, three head shapes, so every fine-tuning task restores the same `encoder` subtree
that pre-training (BertForPreTraining) or an imported checkpoint wrote:
  sequence  one linear layer on the pooled [CLS] (classification, sentence pairs through the
            segment ids, regression with num_outputs=1); or on the mean of the real tokens
  token     one linear layer per token (tagging: NER, POS)
  span      start/end logits per token (extractive QA)
  choice    multiple choice: input [batch, options, seq], one scalar per option from a
            shared linear scorer on each pooled [CLS] (logits [batch, options])

GptWithHead is GPT-1's (Radford et al. 2018, section 3.3): GptLM ("decoder") + a linear head
on the final hidden state at each sequence's [extract] token (its last real token).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.models.bert import BertConfig, BertEncoder
from ssl_jax.models.dropout import Dropout
from ssl_jax.models.gpt import GptConfig, GptLM
from ssl_jax.models.partitioning import dense_init

Array = jax.Array
HEADS = ("sequence", "token", "span", "choice")
GPT_HEADS = ("sequence", "similarity", "choice")
POOLINGS = ("pooler", "mean")


def mean_pool(sequence: Array, input_mask: Array) -> Array:
    """[batch, seq, hidden], [batch, seq] -> [batch, hidden] float32: the mean over the real
    tokens (summed in float32: a bfloat16 sum over 512 tokens keeps ~3 digits)."""
    sequence = sequence.astype(jnp.float32)
    weights = input_mask.astype(jnp.float32)[..., None]
    return jnp.sum(sequence * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)


def classifier(config, outputs: int) -> nn.Dense:
    """A head's linear layer: truncated-normal init at the model's initializer_range,
    logits in float32 (parameters in the model's param_dtype)."""
    return nn.Dense(outputs, **dense_init(nn.initializers.truncated_normal(
        config.initializer_range), "embed", "classes"), dtype=jnp.float32,
        param_dtype=config.param_dtype)


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
        self.classifier = classifier(c, 1 if self.head == "choice" else self.num_outputs)
        self.dropout = Dropout(self.classifier_dropout)

    def __call__(self, input_ids: Array, segment_ids: Array, input_mask: Array) -> Array:
        """sequence: [batch, num_outputs]; token: [batch, seq, num_outputs];
        span: [batch, seq, 2] (start, end); choice ([batch, options, seq] inputs):
        [batch, options]."""
        if self.head == "choice":
            rows = input_ids.shape[:2]
            flat = lambda x: x.reshape((-1, x.shape[-1]))
            _, pooled = self.encoder(flat(input_ids), flat(segment_ids), flat(input_mask))
            x = self.dropout(pooled, deterministic=self.deterministic)
            return self.classifier(x)[:, 0].reshape(rows).astype(jnp.float32)
        sequence, pooled = self.encoder(input_ids, segment_ids, input_mask)
        if self.head == "sequence":
            x = pooled if self.pooling == "pooler" else mean_pool(sequence, input_mask)
        else:
            x = sequence  # [batch, seq, hidden]
        x = self.dropout(x, deterministic=self.deterministic)
        shape = x.shape
        logits = self.classifier(x.reshape(-1, shape[-1]))  # [tokens, outputs] (see Mlp)
        return logits.reshape(shape[:-1] + (self.num_outputs,)).astype(jnp.float32)


def extract_states(hidden: Array, input_mask: Array) -> Array:
    """[rows, seq, hidden], right-padded [rows, seq] -> [rows, hidden]: each row's state at
    its last real token (the [extract] token of GPT's input transforms)."""
    last = jnp.maximum(jnp.sum(input_mask, axis=-1) - 1, 0)  # [rows]
    return jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]


class GptWithHead(nn.Module):
    """GptLM ("decoder") + dropout + a linear "classifier" on the [extract] states.

    sequence    input [batch, seq]: logits [batch, num_outputs]
    similarity  input [batch, 2, seq] (both orders): the two states added, then the head
    choice      input [batch, options, seq]: one scalar per option, logits [batch, options]
    Returns (float32 logits, the decoder's final hidden states [..., seq, hidden]: the
    auxiliary LM loss applies the tied output layer to them)."""

    config: GptConfig
    head: str  # one of GPT_HEADS
    num_outputs: int  # classes; 1 for regression; options for "choice"
    classifier_dropout: float = 0.1
    deterministic: bool = True

    def setup(self):
        if self.head not in GPT_HEADS:
            raise ValueError(f"head={self.head!r}; expected one of {GPT_HEADS}")
        c = self.config
        self.decoder = GptLM(c, deterministic=self.deterministic)
        self.classifier = classifier(c, 1 if self.head == "choice" else self.num_outputs)
        self.dropout = Dropout(self.classifier_dropout)

    def __call__(self, input_ids: Array, input_mask: Array) -> tuple[Array, Array]:
        seq = input_ids.shape[-1]
        rows = input_ids.shape[:-1]  # [batch] or [batch, k]
        ids, mask = input_ids.reshape(-1, seq), input_mask.reshape(-1, seq)
        hidden = self.decoder(ids, mask, return_hidden=True)  # [rows, seq, hidden]
        x = extract_states(hidden, mask).astype(jnp.float32)  # [rows, hidden]
        if self.head == "similarity":
            x = x.reshape(rows + (-1,)).sum(axis=1)  # [batch, hidden]
        x = self.dropout(x, deterministic=self.deterministic)
        logits = self.classifier(x)
        if self.head == "choice":
            logits = logits[:, 0].reshape(rows)  # [batch, options]
        return logits.astype(jnp.float32), hidden.reshape(rows + hidden.shape[1:])
