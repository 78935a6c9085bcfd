"""Text generation with a KV cache, and continuation log-likelihoods, for GPT decoders.

`generate_ids` compiles one program per (batch, prompt bucket, max_new_tokens, sampling):
the prompt is pre-filled in one call, then a `lax.while_loop` samples token after token on
the device (no host round trip, no recompilation per token) until every row has produced
the stop token or `max_new_tokens`. Prompts of different lengths are left-padded; the model
gives padding no attention and no positions (GptLM, decode=True).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.models.partitioning import init_unboxed
from ssl_jax.models.gpt import GptConfig, GptLM

PROMPT_BUCKET = 16  # prompt lengths are padded up to a multiple of this (fewer compilations)


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Ancestral sampling from softmax(logits / temperature), optionally restricted to the
    top_k tokens (0 = all) and/or the nucleus of probability top_p (1.0 = all).
    Greedy decoding is `None` in place of a Sampling."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature} must be > 0 (greedy: no sampling)")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k} must be >= 0 (0 = no top-k filter)")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1]")


def top_k_filter(logits: jax.Array, k: int) -> jax.Array:
    """Keeps the k largest logits of the last axis (ties at the k-th value are kept too);
    the rest become -inf."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = jax.lax.top_k(logits, k)[0][..., -1:]
    return jnp.where(logits < kth, -jnp.inf, logits)


def top_p_filter(logits: jax.Array, p: float) -> jax.Array:
    """Nucleus filter: keeps the most probable tokens whose cumulative probability first
    reaches p (at least one token); the rest become -inf."""
    if p >= 1.0:
        return logits
    sorted_logits = -jnp.sort(-logits, axis=-1)  # descending
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs  # probability of the better tokens
    cutoff = jnp.min(jnp.where(mass_before < p, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits < cutoff, -jnp.inf, logits)


def greedy_token(logits: jax.Array) -> jax.Array:
    """jnp.argmax(logits, -1) as int32 (the first maximum; the first NaN if there is one)
    from two plain reductions, the maximum and the lowest index holding it: XLA:CPU runs
    argmax's paired (value, index) reduction over GPT-2's 50,257 logits ~9x slower (232 vs
    25 us per token, the largest cost in a decoded token after the matrix products)."""
    top = jnp.max(logits, axis=-1, keepdims=True)
    index = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
    hit = (logits == top) | jnp.isnan(logits)
    return jnp.min(jnp.where(hit, index, logits.shape[-1]), axis=-1)


def next_token(logits: jax.Array, rng: jax.Array, sampling: Sampling | None) -> jax.Array:
    """logits [batch, vocab] -> token ids [batch]."""
    if sampling is None:
        return greedy_token(logits)
    logits = top_p_filter(top_k_filter(logits / sampling.temperature, sampling.top_k),
                          sampling.top_p)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


@functools.lru_cache(maxsize=32)
def _decoder(config: GptConfig, batch: int, prompt_len: int, max_new_tokens: int,
             sampling: Sampling | None):
    """The jitted whole-generation program for these static sizes."""
    model = GptLM(config, decode=True)
    total = prompt_len + max_new_tokens
    cache_shapes = jax.eval_shape(
        lambda: init_unboxed(model, jax.random.PRNGKey(0), jnp.zeros((batch, total), jnp.int32)))["cache"]

    def run(params, prompt, prompt_mask, rng, stop_id):
        cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), cache_shapes)
        logits, variables = model.apply({"params": params, "cache": cache}, prompt, prompt_mask,
                                        last_only=True, mutable=["cache"])
        out = jnp.zeros((batch, max_new_tokens), jnp.int32)
        done = jnp.zeros((batch,), bool)

        def cond(state):
            step, _, done, _, _ = state
            return (step < max_new_tokens) & ~jnp.all(done)

        def body(state):
            step, out, done, cache, logits = state
            token = next_token(logits, jax.random.fold_in(rng, step), sampling)
            token = jnp.where(done, stop_id, token)
            out = jax.lax.dynamic_update_slice(out, token[:, None], (0, step))
            done = done | (token == stop_id)
            logits, variables = model.apply(
                {"params": params, "cache": cache}, token[:, None], jnp.ones((batch, 1), jnp.int32),
                last_only=True, mutable=["cache"])
            return step + 1, out, done, variables["cache"], logits[:, -1]

        state = (jnp.int32(0), out, done, variables["cache"], logits[:, -1])
        step, out, done, _, _ = jax.lax.while_loop(cond, body, state)
        return out, step

    return jax.jit(run)


def generate_ids(config: GptConfig, params, prompts: Sequence[Sequence[int]], *,
                 max_new_tokens: int, sampling: Sampling | None = None,
                 stop_id: int | None = None, seed: int = 0) -> list[list[int]]:
    """The new tokens of each prompt (stop token excluded), decoded in one batch."""
    if not prompts:
        return []
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
    lengths = [len(p) for p in prompts]
    if min(lengths) < 1:
        raise ValueError(f"prompt {lengths.index(0)} is empty: give at least one token "
                         "(e.g. the end-of-text token)")
    longest = max(lengths)
    if longest + max_new_tokens > config.max_len:
        raise ValueError(f"a prompt of {longest} tokens + max_new_tokens={max_new_tokens} "
                         f"exceeds the model's context of {config.max_len} tokens")
    width = min(-(-longest // PROMPT_BUCKET) * PROMPT_BUCKET, config.max_len - max_new_tokens)
    batch = len(prompts)
    ids = np.zeros((batch, width), np.int32)
    mask = np.zeros((batch, width), np.int32)
    for row, prompt in enumerate(prompts):  # left padding
        ids[row, width - len(prompt):] = prompt
        mask[row, width - len(prompt):] = 1
    decode = _decoder(config, batch, width, max_new_tokens, sampling)
    stop = -1 if stop_id is None else stop_id
    out, _ = decode(params, ids, mask, jax.random.PRNGKey(seed), jnp.int32(stop))
    out = np.asarray(out)
    results = []
    for row in out:
        hits = np.flatnonzero(row == stop)
        results.append(row[:hits[0] if len(hits) else len(row)].tolist())
    return results


@functools.lru_cache(maxsize=8)
def _token_log_probs(config: GptConfig):
    model = GptLM(config)

    @jax.jit
    def run(params, ids):  # [batch, len] -> log p(ids[:, 1:] | prefix) [batch, len - 1]
        logits = model.apply({"params": params}, ids[:, :-1])
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        return jnp.take_along_axis(log_probs, ids[:, 1:, None], axis=-1)[..., 0]

    return run


def continuation_log_likelihoods(config: GptConfig, params,
                                 requests: Sequence[tuple[Sequence[int], Sequence[int]]], *,
                                 batch_size: int = 16) -> list[tuple[float, int]]:
    """(sum log p(continuation | context), number of continuation tokens) per request; the
    context is cut from the left when the pair exceeds the context window."""
    rows = []
    for context, continuation in requests:
        if not continuation:
            raise ValueError("an empty continuation has no likelihood to score")
        if not context:
            raise ValueError("an empty context: start it with the end-of-text token")
        tokens = (list(context) + list(continuation))[-(config.max_len + 1):]
        rows.append((tokens, len(continuation)))
    score = _token_log_probs(config)
    results = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        width = -(-max(len(t) for t, _ in chunk) // PROMPT_BUCKET) * PROMPT_BUCKET
        width = min(width, config.max_len + 1)
        ids = np.zeros((batch_size, width), np.int32)  # right padding: causal, so harmless
        for row, (tokens, _) in enumerate(chunk):
            ids[row, :len(tokens)] = tokens
        log_probs = np.asarray(score(params, ids))
        for row, (tokens, n) in enumerate(chunk):
            scored = log_probs[row, len(tokens) - 1 - n:len(tokens) - 1]
            results.append((float(scored.sum()), n))
    return results


class LanguageModel:
    """A trained decoder with its tokenizer: text in, text (or log-likelihoods) out."""

    def __init__(self, config: GptConfig, params, tokenizer):
        self.config = config
        self.params = params
        self.tokenizer = tokenizer
        self.max_len = config.max_len

    @classmethod
    def from_pretrained(cls, path: str, step: int | None = None) -> "LanguageModel":
        """The GPT at `path`: a gpt_pretrain run (its best checkpoint by held-out loss, or
        `step`) or an HF GPT-2 directory, through ssl_jax.interop.pretrained. Anything else
        is refused from its config.json, before a weight is read."""
        from ssl_jax.data.model_dir import read_gpt_config
        from ssl_jax.interop.pretrained import load_pretrained

        read_gpt_config(path)
        pretrained = load_pretrained(path, step=step)
        return cls(pretrained.config, jax.device_put(pretrained.params), pretrained.tokenizer)

    from_workdir = from_pretrained  # its name before HF directories were read too

    def _stop_id(self, stop: str | None) -> int | None:
        if stop is None:
            return None
        ids = self.tokenizer.encode(stop)
        return ids[0] if len(ids) == 1 else None  # multi-token stops are cut on the text

    def generate(self, prompts: list[str], *, max_new_tokens: int,
                 sampling: Sampling | None = None, stop: str | None = None, seed: int = 0,
                 batch_size: int = 16) -> list[str]:
        """Each prompt's continuation (cut before `stop`); greedy when sampling is None."""
        encoded = [self.tokenizer.encode(p) or [self.tokenizer.eot_id] for p in prompts]
        out = []
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start:start + batch_size]
            new = generate_ids(self.config, self.params, chunk, max_new_tokens=max_new_tokens,
                               sampling=sampling, stop_id=self._stop_id(stop),
                               seed=seed + start)
            out += [self.tokenizer.decode(ids) for ids in new]
        if stop is not None:
            out = [text.split(stop, 1)[0] for text in out]
        return out

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[tuple[float, int]]:
        """(sum log p(continuation | context), continuation tokens) per (context,
        continuation); an empty context is the end-of-text token, as in GPT-2/3."""
        pairs = [(self.tokenizer.encode(c) or [self.tokenizer.eot_id],
                  self.tokenizer.encode(x)) for c, x in requests]
        return continuation_log_likelihoods(self.config, self.params, pairs)
