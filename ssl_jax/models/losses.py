"""Losses as (sum, count) stats: classification (cross-entropy and top-1 accuracy), and
softmax cross-entropy over a tied output layer, chunked over tokens.

For a large vocabulary the output layer dominates a small decoder (GPT-2's 50,257 x 384
logits are ~60% of the FLOPs at 6 layers). Computing it per chunk of tokens, with one exp
pass per chunk and the gradients formed in the same pass, never materialises the
[tokens, vocab] logits (or their log-softmax) and was ~20% faster per training step on
XLA:CPU than log_softmax over the full logits, at half the peak memory.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

Array = jax.Array


def classification_stats(logits: Array, labels: Array, weight: Array, *, loss: str,
                         accuracy: str) -> dict[str, tuple[Array, Array]]:
    """logits [..., classes], integer labels [...], weight [...] (0: not counted) ->
    {loss: (weighted cross-entropy sum, weight sum), accuracy: (weighted top-1 hits, weight
    sum)}, in float32: the stats of every softmax classifier (NSP, MLM at its gathered
    positions, fine-tuning heads, pretext labels)."""
    logits = logits.astype(jnp.float32)
    weight = weight.astype(jnp.float32)
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[..., None], axis=-1)[..., 0]
    hits = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    count = jnp.sum(weight)
    return {loss: (jnp.sum(nll * weight), count), accuracy: (jnp.sum(hits * weight), count)}


def _chunked(x: Array, chunk: int) -> Array:
    return x.reshape((x.shape[0] // chunk, chunk) + x.shape[1:])


def _pad(hidden, targets, weights, chunk):
    pad = -hidden.shape[0] % chunk
    if pad:
        hidden = jnp.pad(hidden, ((0, pad), (0, 0)))
        targets, weights = jnp.pad(targets, (0, pad)), jnp.pad(weights, (0, pad))
    return hidden, targets, weights


def _chunk_stats(x, embedding, t, w):
    """One chunk: logits [C, vocab] and what the loss and its gradient need from them."""
    logits = jnp.dot(x, embedding.T, preferred_element_type=jnp.float32)  # [C, vocab]
    top = jnp.max(logits, axis=-1, keepdims=True)
    exp = jnp.exp(logits - top)  # the one exp pass
    total = jnp.sum(exp, axis=-1, keepdims=True)
    target_logit = jnp.take_along_axis(logits, t[:, None], axis=-1)[:, 0]
    nll = (top[:, 0] + jnp.log(total[:, 0]) - target_logit) * w
    correct = (target_logit >= top[:, 0]).astype(jnp.float32) * w  # target is an argmax
    return logits, exp, total, nll, correct


def tied_cross_entropy(hidden: Array, embedding: Array, targets: Array, weights: Array,
                       chunk: int = 512) -> tuple[Array, Array]:
    """hidden [tokens, hidden], embedding [vocab, hidden], targets/weights [tokens] ->
    (sum of weighted next-token NLL, sum of weighted top-1 hits). Differentiable in hidden and
    embedding (the loss only; the hit count carries no gradient)."""
    return _tied_ce(*_pad(hidden, targets, weights, chunk), embedding, chunk)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _tied_ce(hidden, targets, weights, embedding, chunk):
    def body(carry, xs):
        x, t, w = xs
        _, _, _, nll, correct = _chunk_stats(x, embedding, t, w)
        return carry, (jnp.sum(nll), jnp.sum(correct))

    _, (nll, correct) = jax.lax.scan(
        body, None, (_chunked(hidden, chunk), _chunked(targets, chunk), _chunked(weights, chunk)))
    return jnp.sum(nll), jnp.sum(correct)


def _tied_ce_fwd(hidden, targets, weights, embedding, chunk):
    """The forward pass also forms the gradients (they need the same exp pass)."""
    def body(d_embedding, xs):
        x, t, w = xs  # [C, hidden], [C], [C]
        logits, exp, total, nll, correct = _chunk_stats(x, embedding, t, w)
        d_logits = (exp * (w[:, None] / total)
                    - jax.nn.one_hot(t, logits.shape[-1], dtype=logits.dtype) * w[:, None])
        dx = jnp.dot(d_logits, embedding)  # [C, hidden]
        return d_embedding + jnp.dot(d_logits.T, x), (jnp.sum(nll), jnp.sum(correct), dx)

    d_embedding, (nll, correct, dx) = jax.lax.scan(
        body, jnp.zeros_like(embedding),
        (_chunked(hidden, chunk), _chunked(targets, chunk), _chunked(weights, chunk)))
    return (jnp.sum(nll), jnp.sum(correct)), (dx.reshape(hidden.shape), d_embedding)


def _tied_ce_bwd(chunk, residuals, grads):
    dx, d_embedding = residuals
    g = grads[0]  # the hit count has no gradient
    return g * dx, None, None, g * d_embedding


_tied_ce.defvjp(_tied_ce_fwd, _tied_ce_bwd)
