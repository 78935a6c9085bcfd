"""Generation: the KV cache equals full re-computation; sampling filters; log-likelihoods."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.models.partitioning import init_unboxed
from ssl_jax.eval import generation as gen
from ssl_jax.models.gpt import GptConfig, GptLM

CONFIG = GptConfig(vocab_size=97, hidden_size=32, num_layers=3, num_heads=4, mlp_dim=64,
                   max_len=64, dropout_rate=0.0, attention_dropout_rate=0.0)
PROMPTS = [[5, 6, 7], list(range(1, 20)), [42]]


def _params(config, seed=1):
    return init_unboxed(GptLM(config), jax.random.PRNGKey(seed), jnp.zeros((1, 8), jnp.int32))["params"]


@functools.lru_cache
def _forward(config):
    return jax.jit(lambda params, ids: GptLM(config).apply({"params": params}, ids))


def _full_logits(config, params, tokens):  # recomputed from scratch: [len(tokens), vocab]
    ids = np.zeros((1, 32), np.int32)  # right padding: causal, so it changes nothing before
    ids[0, :len(tokens)] = tokens
    return np.asarray(_forward(config)(params, ids)[0, :len(tokens)])


VARIANTS = [dict(), dict(pre_ln=False), dict(sparse_attention=True, attention_window=4),
            dict(scan_layers=True)]


@pytest.mark.parametrize("variant", VARIANTS, ids=["pre_ln", "post_ln", "sparse", "scan"])
def test_cached_logits_equal_full_recomputation(variant):
    """Left-padded prompts of different lengths, pre-filled then decoded token by token with
    the cache: every step's logits equal a from-scratch forward pass of that row alone."""
    config = dataclasses.replace(CONFIG, **variant)
    params = _params(config)
    width, steps = 20, 6
    ids = np.zeros((3, width), np.int32)
    mask = np.zeros((3, width), np.int32)
    for row, p in enumerate(PROMPTS):
        ids[row, width - len(p):], mask[row, width - len(p):] = p, 1
    model = GptLM(config, decode=True)
    cache = init_unboxed(model, jax.random.PRNGKey(0), jnp.zeros((3, width + steps), jnp.int32))["cache"]
    apply = jax.jit(lambda cache, ids, mask: model.apply({"params": params, "cache": cache},
                                                         ids, mask, mutable=["cache"]))
    logits, v = apply(cache, ids, mask)
    seqs = [list(p) for p in PROMPTS]
    for row, p in enumerate(PROMPTS):  # pre-fill: every real prompt position
        np.testing.assert_allclose(logits[row, width - len(p):], _full_logits(config, params, p),
                                   atol=1e-5)
    for _ in range(steps):
        token = jnp.argmax(logits[:, -1], -1).astype(jnp.int32)
        for row in range(3):
            seqs[row].append(int(token[row]))
        logits, v = apply(v["cache"], token[:, None], jnp.ones((3, 1), jnp.int32))
        for row in range(3):
            np.testing.assert_allclose(logits[row, 0], _full_logits(config, params, seqs[row])[-1],
                                       atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS[:3], ids=["pre_ln", "post_ln", "sparse"])
def test_generate_equals_greedy_recomputation(variant):
    config = dataclasses.replace(CONFIG, **variant)
    params = _params(config)
    out = gen.generate_ids(config, params, PROMPTS, max_new_tokens=12)
    for prompt, new in zip(PROMPTS, out):
        seq = list(prompt)
        for token in new:
            assert int(np.argmax(_full_logits(config, params, seq)[-1])) == token
            seq.append(token)
        assert len(new) == 12


def test_one_compiled_program_and_stop_token():
    params = _params(CONFIG)
    first = gen.generate_ids(CONFIG, params, PROMPTS, max_new_tokens=8)
    decoder = gen._decoder(CONFIG, 3, 32, 8, None)  # 19 tokens -> the 32 bucket
    size = decoder._cache_size()
    assert size == 1
    # other prompts of the same bucket reuse the compiled program
    gen.generate_ids(CONFIG, params, [[1, 2], [3] * 17, [4, 5, 6]], max_new_tokens=8)
    assert decoder._cache_size() == size
    # with row 0's third token as the stop token, each row ends before its first one
    stop = first[0][2]
    stopped = gen.generate_ids(CONFIG, params, PROMPTS, max_new_tokens=8, stop_id=stop)
    for row in range(3):
        expected = first[row][:first[row].index(stop)] if stop in first[row] else first[row]
        assert stopped[row] == expected
    assert len(stopped[0]) <= 2


def test_top_k_and_top_p_by_hand():
    logits = jnp.log(jnp.array([[0.05, 0.5, 0.15, 0.3]]))
    inf = -np.inf
    np.testing.assert_array_equal(np.isinf(gen.top_k_filter(logits, 2)), [[1, 0, 1, 0]])
    np.testing.assert_array_equal(np.isinf(gen.top_k_filter(logits, 1)), [[1, 0, 1, 1]])
    np.testing.assert_array_equal(gen.top_k_filter(logits, 0), logits)
    # nucleus: 0.5 (mass before: 0) and 0.3 (before: 0.5) reach p=0.7; 0.15 has 0.8 before it
    np.testing.assert_array_equal(np.isinf(gen.top_p_filter(logits, 0.7)), [[1, 0, 1, 0]])
    np.testing.assert_array_equal(np.isinf(gen.top_p_filter(logits, 0.85)), [[1, 0, 0, 0]])
    np.testing.assert_array_equal(np.isinf(gen.top_p_filter(logits, 0.2)), [[1, 0, 1, 1]])
    kept = gen.top_p_filter(logits, 0.7)
    assert float(kept[0, 1]) == pytest.approx(np.log(0.5)) and kept[0, 0] == inf


def test_greedy_token_is_numpy_argmax():
    """The two-reduction greedy pick = np.argmax: first of tied maxima, the first NaN,
    -inf rows, a 50,257-way vocabulary in a batch, and inside jit."""
    rng = np.random.default_rng(0)
    cases = [np.array([[1.0, 3.0, 3.0, 2.0]]), np.array([[0.0, np.nan, 5.0, np.nan]]),
             np.full((1, 5), -np.inf), np.array([[-np.inf, -1e30, -np.inf]]),
             rng.normal(size=(3, 50257)).astype(np.float32),
             rng.integers(0, 4, size=(4, 50257)).astype(np.float32)]  # many ties
    for logits in cases:
        np.testing.assert_array_equal(np.asarray(jax.jit(gen.greedy_token)(logits)),
                                      np.argmax(logits, axis=-1))
        assert gen.greedy_token(jnp.asarray(logits)).dtype == jnp.int32


def test_sampling_frequencies():
    probs = np.array([0.05, 0.5, 0.15, 0.3])
    logits = jnp.tile(jnp.log(jnp.asarray(probs))[None], (8000, 1))
    draw = lambda s: np.bincount(np.asarray(gen.next_token(logits, jax.random.PRNGKey(3), s)),
                                 minlength=4) / 8000
    np.testing.assert_allclose(draw(gen.Sampling()), probs, atol=0.02)
    np.testing.assert_allclose(draw(gen.Sampling(top_k=2)), [0, 0.5 / 0.8, 0, 0.3 / 0.8], atol=0.02)
    hot = np.exp(np.log(probs) / 2) / np.exp(np.log(probs) / 2).sum()  # temperature 2
    np.testing.assert_allclose(draw(gen.Sampling(temperature=2.0)), hot, atol=0.02)
    assert (np.asarray(gen.next_token(logits[:2], None, None)) == 1).all()  # greedy


def test_continuation_log_likelihoods_match_the_forward_pass():
    params = _params(CONFIG)
    requests = [([5, 6, 7], [8, 9]), ([1], [2, 3, 4, 5]), (list(range(1, 30)), [7])]
    got = gen.continuation_log_likelihoods(CONFIG, params, requests, batch_size=2)
    for (context, cont), (total, n) in zip(requests, got):
        seq = context + cont
        log_p = jax.nn.log_softmax(_full_logits(CONFIG, params, seq), -1)
        expected = sum(float(log_p[len(context) - 1 + i, t]) for i, t in enumerate(cont))
        assert n == len(cont) and total == pytest.approx(expected, abs=1e-4)


def test_bad_input():
    params = _params(CONFIG)
    with pytest.raises(ValueError, match="exceeds the model's context of 64"):
        gen.generate_ids(CONFIG, params, [[1] * 60], max_new_tokens=10)
    with pytest.raises(ValueError, match="max_new_tokens=0"):
        gen.generate_ids(CONFIG, params, [[1]], max_new_tokens=0)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        gen.generate_ids(CONFIG, params, [[1], []], max_new_tokens=2)
    for bad, match in [(dict(temperature=0.0), "temperature=0.0"), (dict(top_k=-1), "top_k=-1"),
                       (dict(top_p=1.5), "top_p=1.5")]:
        with pytest.raises(ValueError, match=match):
            gen.Sampling(**bad)


def test_batch_one_decode_equals_recomputation_and_writes_the_cache_in_place():
    """Batch 1 (the decode step's attention reads the cache as it was, then writes it):
    greedy tokens equal a from-scratch forward pass, and the compiled decoding loop copies
    no layer's cached keys/values per token (the copy it made before)."""
    import re

    params = _params(CONFIG)
    prompt = [3, 1, 4, 1, 5]
    new = gen.generate_ids(CONFIG, params, [prompt], max_new_tokens=10)[0]
    seq = list(prompt)
    for token in new:
        assert int(np.argmax(_full_logits(CONFIG, params, seq)[-1])) == token
        seq.append(token)
    decoder = gen._decoder(CONFIG, 1, 16, 10, None)
    hlo = decoder.lower(params, np.zeros((1, 16), np.int32), np.ones((1, 16), np.int32),
                        jax.random.PRNGKey(0), jnp.int32(-1)).compile().as_text()
    body = re.search(r"body=(%[\w.\-]+)", hlo).group(1)
    body_text = re.search(re.escape(body) + r" \(.*?\n}\n", hlo, re.S).group(0)
    cache = f"f32[1,{CONFIG.num_heads},26,{CONFIG.hidden_size // CONFIG.num_heads}]"
    assert "dynamic-update-slice" in body_text
    assert not re.search(re.escape(cache) + r"\S* copy\(", body_text)
