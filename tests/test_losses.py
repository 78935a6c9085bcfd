"""The chunked tied-output cross-entropy equals log_softmax over the full logits."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.models.losses import tied_cross_entropy


def _reference(hidden, embedding, targets, weights):
    logits = hidden @ embedding.T
    log_p = jax.nn.log_softmax(logits, -1)
    nll = -jnp.take_along_axis(log_p, targets[:, None], -1)[:, 0]
    hits = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    return jnp.sum(nll * weights), jnp.sum(hits * weights)


@pytest.mark.parametrize("tokens,chunk", [(64, 16), (50, 16), (7, 512)])
def test_value_and_gradients_match_full_log_softmax(tokens, chunk):
    rng = np.random.default_rng(0)
    hidden = jnp.asarray(rng.normal(size=(tokens, 24)), jnp.float32)
    embedding = jnp.asarray(rng.normal(size=(101, 24)) * 0.3, jnp.float32)
    targets = jnp.asarray(rng.integers(0, 101, tokens), jnp.int32)
    weights = jnp.asarray(rng.random(tokens) > 0.2, jnp.float32)  # some positions padding
    nll, hits = tied_cross_entropy(hidden, embedding, targets, weights, chunk)
    ref_nll, ref_hits = _reference(hidden, embedding, targets, weights)
    assert float(nll) == pytest.approx(float(ref_nll), rel=1e-5)
    assert float(hits) == float(ref_hits)
    loss = lambda f: lambda h, e: f(h, e, targets, weights)[0]
    grads = jax.grad(loss(lambda *a: tied_cross_entropy(*a, chunk)), argnums=(0, 1))(hidden, embedding)
    ref = jax.grad(loss(_reference), argnums=(0, 1))(hidden, embedding)
    for g, r in zip(grads, ref):
        np.testing.assert_allclose(g, r, atol=2e-5, rtol=1e-4)
    # padding positions get exactly zero gradient
    assert not np.asarray(grads[0])[np.asarray(weights) == 0].any()
