"""GPT decoders: causality by gradient, sizes against the papers' parameter counts."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.models.partitioning import init_unboxed
from ssl_jax.models.gpt import GPT_SIZES, GptConfig, GptLM

TINY = GptConfig(vocab_size=61, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64,
                 max_len=16, dropout_rate=0.0, attention_dropout_rate=0.0)


@pytest.mark.parametrize("pre_ln,sparse", [(True, False), (False, False), (True, True)])
def test_no_later_token_changes_an_earlier_logit(pre_ln, sparse):
    import dataclasses
    model = GptLM(dataclasses.replace(TINY, pre_ln=pre_ln, sparse_attention=sparse,
                                      attention_window=3))
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 61, (1, 10)), jnp.int32)
    variables = init_unboxed(model, jax.random.PRNGKey(0), ids)
    params, zeros = variables["params"], variables["perturbations"]

    def out(perturbations, t):  # position t's logits, as a function of every input vector
        return model.apply({"params": params, "perturbations": perturbations}, ids)[0, t].sum()

    for t in (0, 4, 9):
        g = jax.grad(out)(zeros, t)["embeddings"][0]  # [seq, hidden]
        norms = np.asarray(jnp.abs(g).sum(-1))
        assert (norms[t + 1:] == 0).all(), (t, norms)  # no later token reaches position t
        assert (norms[:t + 1] > 0).all(), (t, norms)
    # and by perturbation: changing the last 5 tokens leaves the first 5 logits exactly equal
    changed = ids.at[0, 5:].set((ids[0, 5:] + 1) % 61)
    a = model.apply({"params": params}, ids)
    b = model.apply({"params": params}, changed)
    np.testing.assert_array_equal(a[0, :5], b[0, :5])
    assert float(jnp.abs(a[0, 5:] - b[0, 5:]).max()) > 1e-4


def test_parameter_counts_match_the_papers():
    def count(name, vocab=50257):
        s = GPT_SIZES[name]
        c = GptConfig(vocab_size=vocab, hidden_size=s["hidden_size"], num_layers=s["num_layers"],
                      num_heads=s["num_heads"], mlp_dim=4 * s["hidden_size"], max_len=s["max_len"])
        shapes = jax.eval_shape(lambda: init_unboxed(GptLM(c), jax.random.PRNGKey(0),
                                                      jnp.zeros((1, 8), jnp.int32)))
        return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes["params"]))
    assert count("gpt2-small") == 124_439_808  # the released GPT-2 small checkpoint
    assert abs(count("gpt2-medium") - 354_823_168) == 0
    assert abs(count("gpt1", vocab=40478) / 1e6 - 116.5) < 1.0  # GPT-1: ~117M


def test_residual_projections_are_scaled_at_init():
    c = GptConfig(vocab_size=100, hidden_size=256, num_layers=8, num_heads=4, mlp_dim=1024,
                  max_len=8)
    params = init_unboxed(GptLM(c), jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"]
    layer = params["stack"]["layer_0"]
    std_out = float(np.std(layer["mlp"]["fc_out"]["kernel"])) / 0.88  # truncation at 2 sigma
    std_in = float(np.std(layer["mlp"]["fc_in"]["kernel"])) / 0.88
    assert abs(std_in - 0.02) < 0.002
    assert abs(std_out - 0.02 / np.sqrt(16)) < 0.0007


def test_attention_masks_by_hand():
    from ssl_jax.models.gpt import attention_masks, document_mask
    dense, band = attention_masks(jnp.arange(4), None, 4, window=2)
    np.testing.assert_array_equal(dense[0, 0], np.tril(np.ones((4, 4), bool)))
    np.testing.assert_array_equal(band[0, 0], [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0],
                                               [0, 0, 1, 1]])
    # left padding: slot 0 of row 1 is a pad, never attended to
    dense, _ = attention_masks(jnp.arange(3), jnp.array([[1, 1, 1], [0, 1, 1]], bool), 3)
    np.testing.assert_array_equal(dense[1, 0], [[0, 0, 0], [0, 1, 0], [0, 1, 1]])
    # decode: one query at cache slot 2 of a 5-slot cache sees slots 0..2 only
    dense, band = attention_masks(jnp.array([2]), jnp.ones((1, 5), bool), 1, window=2)
    np.testing.assert_array_equal(dense[0, 0], [[1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(band[0, 0], [[0, 1, 1, 0, 0]])
    docs = document_mask(jnp.array([[0, 0, 1, 1, 2]]))[0, 0]
    np.testing.assert_array_equal(docs[3], [0, 0, 1, 1, 0])


def test_sparse_layers_alternate_and_scan_equals_loop():
    import dataclasses
    ids = jnp.asarray(np.random.default_rng(1).integers(0, 61, (2, 12)), jnp.int32)
    config = dataclasses.replace(TINY, num_layers=4, sparse_attention=True, attention_window=2)
    loop = GptLM(config)
    params = init_unboxed(loop, jax.random.PRNGKey(0), ids)["params"]
    stacked = {k: v for k, v in params.items() if k != "stack"}
    stacked["stack"] = {"layers": jax.tree.map(lambda *x: jnp.stack(x),
                                               *[params["stack"][f"layer_{i}"] for i in range(4)])}
    scan = GptLM(dataclasses.replace(config, scan_layers=True))
    np.testing.assert_allclose(scan.apply({"params": stacked}, ids),
                               loop.apply({"params": params}, ids), atol=2e-5)
    dense = GptLM(dataclasses.replace(config, sparse_attention=False))
    # the band matters (window 2 < 12 positions) ...
    assert np.abs(dense.apply({"params": params}, ids) - loop.apply({"params": params}, ids)).max() > 1e-3
    # ... but only from position `window` on: the first two positions see the same keys
    np.testing.assert_allclose(dense.apply({"params": params}, ids)[:, :2],
                               loop.apply({"params": params}, ids)[:, :2], atol=1e-6)
