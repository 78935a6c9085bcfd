"""Schedule, weight-decay mask and the AdamW update against hand-computed values."""
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ssl_jax.train.optim import decay_mask, learning_rate_schedule, make_optimizer


def _config(**opt):
    base = dict(name="adamw", learning_rate=1e-3, end_learning_rate=0.0, warmup_steps=10,
                decay="linear", b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01,
                grad_clip_norm=0.0)
    base.update(opt)
    return ml_collections.ConfigDict(dict(num_train_steps=110, optimizer=base))


def test_warmup_then_linear_and_cosine_decay():
    lin = learning_rate_schedule(_config())
    assert float(lin(0)) == 0.0
    assert np.isclose(lin(5), 5e-4) and np.isclose(lin(10), 1e-3)
    assert np.isclose(lin(60), 5e-4) and np.isclose(lin(110), 0.0, atol=1e-12)
    cos = learning_rate_schedule(_config(decay="cosine"))
    assert np.isclose(cos(60), 5e-4, rtol=1e-5) and np.isclose(cos(35), 1e-3 * (1 + np.cos(np.pi / 4)) / 2)
    frac = learning_rate_schedule(_config(warmup_steps=0.1))  # a fraction of the run
    assert np.isclose(frac(11), 1e-3)


def test_decay_mask_skips_biases_and_layernorm():
    params = {"dense": {"kernel": 1, "bias": 2}, "ln": {"scale": 3, "bias": 4},
              "embed": {"embedding": 5}}
    assert decay_mask(params) == {"dense": {"kernel": True, "bias": False},
                                  "ln": {"scale": False, "bias": False},
                                  "embed": {"embedding": True}}


def test_first_adamw_step_by_hand():
    tx, _ = make_optimizer(_config(warmup_steps=0, decay="constant"))
    params = {"w": {"kernel": jnp.array([1.0, -2.0])}, "b": {"bias": jnp.array([0.5])}}
    grads = {"w": {"kernel": jnp.array([0.1, 0.3])}, "b": {"bias": jnp.array([-0.2])}}
    state = tx.init(params)
    updates, _ = tx.update(grads, state, params)
    # step 1: m/(1-b1) = g, v/(1-b2) = g^2 -> g/(|g|+eps); decoupled decay on the kernel only
    lr, eps, wd = 1e-3, 1e-6, 0.01
    g = np.array([0.1, 0.3])
    expected_w = -lr * (g / (np.abs(g) + eps) + wd * np.array([1.0, -2.0]))
    np.testing.assert_allclose(updates["w"]["kernel"], expected_w, rtol=1e-5)
    np.testing.assert_allclose(updates["b"]["bias"], [-lr * (-0.2 / (0.2 + eps))], rtol=1e-5)


def test_bad_optimizer_values():
    with pytest.raises(ValueError, match="decay='step'"):
        learning_rate_schedule(_config(decay="step"))
    with pytest.raises(ValueError, match="warmup_steps=500"):
        learning_rate_schedule(_config(warmup_steps=500))
    with pytest.raises(ValueError, match="optimizer.name='sgd'"):
        make_optimizer(_config(name="sgd"))


def test_multipliers_scale_updates_and_freeze_exactly():
    """Update with multipliers = multiplier x the plain update; 0 leaves the parameter
    bit-identical (weight decay included) and out of the clipping norm."""
    import jax
    config = _config(weight_decay=0.1, grad_clip_norm=1.0, warmup_steps=0)
    params = {"a": jnp.array([1.0, -2.0]), "b": jnp.array([0.5, 3.0]), "c": jnp.array([4.0])}
    grads = {"a": jnp.array([0.3, 0.4]), "b": jnp.array([1.0, -1.0]), "c": jnp.array([100.0])}
    plain, _ = make_optimizer(config)
    scaled, _ = make_optimizer(config, {"a": np.float32(1.0), "b": np.float32(0.25),
                                        "c": np.float32(0.0)})
    u_plain, _ = plain.update({"a": grads["a"], "b": grads["b"], "c": jnp.zeros(1)},
                              plain.init(params), params)
    u_scaled, _ = scaled.update(grads, scaled.init(params), params)
    np.testing.assert_allclose(u_scaled["a"], u_plain["a"], rtol=1e-6)
    np.testing.assert_allclose(u_scaled["b"], 0.25 * u_plain["b"], rtol=1e-6)
    assert float(u_scaled["c"][0]) == 0.0
    new = jax.tree_util.tree_map(lambda p, u: p + u, params, u_scaled)
    assert np.array_equal(new["c"], params["c"])
