"""GPT decoders: causality by gradient, sizes against the papers' parameter counts."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.models.gpt import GPT_SIZES, GptConfig, GptLM

TINY = GptConfig(vocab_size=61, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64,
                 max_len=16, dropout_rate=0.0, attention_dropout_rate=0.0)


@pytest.mark.parametrize("pre_ln", [True, False])
def test_no_later_token_changes_an_earlier_logit(pre_ln):
    import dataclasses
    model = GptLM(dataclasses.replace(TINY, pre_ln=pre_ln))
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 61, (1, 10)), jnp.int32)
    variables = model.init(jax.random.PRNGKey(0), ids)
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
        shapes = jax.eval_shape(lambda: GptLM(c).init(jax.random.PRNGKey(0),
                                                      jnp.zeros((1, 8), jnp.int32)))
        return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes["params"]))
    assert count("gpt2-small") == 124_439_808  # the released GPT-2 small checkpoint
    assert abs(count("gpt2-medium") - 354_823_168) == 0
    assert abs(count("gpt1", vocab=40478) / 1e6 - 116.5) < 1.0  # GPT-1: ~117M


def test_residual_projections_are_scaled_at_init():
    c = GptConfig(vocab_size=100, hidden_size=256, num_layers=8, num_heads=4, mlp_dim=1024,
                  max_len=8)
    params = GptLM(c).init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"]
    layer = params["stack"]["layer_0"]
    std_out = float(np.std(layer["mlp"]["fc_out"]["kernel"])) / 0.88  # truncation at 2 sigma
    std_in = float(np.std(layer["mlp"]["fc_in"]["kernel"])) / 0.88
    assert abs(std_in - 0.02) < 0.002
    assert abs(std_out - 0.02 / np.sqrt(16)) < 0.0007
