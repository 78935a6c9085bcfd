"""ssl_jax.train.step: one train step of a toy task (linear regression, two loss terms with
their own (sum, count) weights) checked by hand with NumPy: loss, per-term means, gradient
norm, learning rate and the AdamW update; a batch split across a named axis gives the same
step as the whole batch."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ssl_jax.train.optim import make_optimizer
from ssl_jax.train.step import TrainState, make_eval_step, make_train_step

X = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 1.5], [2.0, 0.5, -0.5], [-1.0, 1.0, 1.0],
              [0.5, 0.0, 2.0], [1.5, -2.0, 0.0]], np.float32)
Y = np.array([1.0, -2.0, 0.5, 3.0, 0.0, -1.0], np.float32)
WEIGHT = np.array([1.0, 2.0, 0.0, 1.0, 0.5, 1.0], np.float32)  # the squared-error term's
FIRST = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 1.0], np.float32)  # examples the |error| term sees
PARAMS = {"kernel": np.array([0.5, -0.25, 1.0], np.float32), "bias": np.float32(0.2)}
LR, B1, B2, EPS, DECAY, CLIP = 0.1, 0.9, 0.99, 0.5, 0.1, 0.5


class LinearRegression:
    """prediction = x . kernel + bias; loss = weighted mean squared error + mean |error|
    over the FIRST examples (two terms with different counts)."""

    loss_terms = ("squared_error", "abs_error")

    def stats(self, params, batch, rng, train: bool):
        error = batch["x"] @ params["kernel"] + params["bias"] - batch["y"]  # [batch]
        return {"squared_error": (jnp.sum(batch["weight"] * error ** 2), jnp.sum(batch["weight"])),
                "abs_error": (jnp.sum(batch["first"] * jnp.abs(error)), jnp.sum(batch["first"])),
                "mean_prediction": (jnp.sum(error + batch["y"]), jnp.float32(error.shape[0]))}


def _config():
    return ml_collections.ConfigDict(dict(num_train_steps=10, optimizer=dict(
        name="adamw", learning_rate=LR, end_learning_rate=0.0, warmup_steps=0, decay="linear",
        b1=B1, b2=B2, eps=EPS, weight_decay=DECAY, grad_clip_norm=CLIP)))


def _state():
    tx, schedule = make_optimizer(_config())
    state = TrainState.create(apply_fn=None, params=jax.tree.map(jnp.asarray, PARAMS), tx=tx)
    return state, schedule


def _batch(rows=slice(None)):
    return {"x": X[rows], "y": Y[rows], "weight": WEIGHT[rows], "first": FIRST[rows]}


def _by_hand():
    """NumPy: the loss, its gradient (kernel, bias), and one AdamW step from a fresh state."""
    k, b = PARAMS["kernel"].astype(np.float64), float(PARAMS["bias"])
    error = X @ k + b - Y
    loss = np.sum(WEIGHT * error ** 2) / WEIGHT.sum() + np.sum(FIRST * np.abs(error)) / FIRST.sum()
    d_error = 2 * WEIGHT * error / WEIGHT.sum() + FIRST * np.sign(error) / FIRST.sum()
    grads = {"kernel": X.T @ d_error, "bias": np.sum(d_error)}
    norm = np.sqrt(np.sum(grads["kernel"] ** 2) + grads["bias"] ** 2)
    scale = min(1.0, CLIP / norm)  # global-norm clipping
    new = {}
    for name, p in (("kernel", k), ("bias", b)):
        g = grads[name] * scale
        m_hat = (1 - B1) * g / (1 - B1)  # first step: bias-corrected moments are g and g**2
        v_hat = (1 - B2) * g ** 2 / (1 - B2)
        decay = DECAY * p if name == "kernel" else 0.0  # no weight decay on biases
        new[name] = p - LR * (m_hat / (np.sqrt(v_hat) + EPS) + decay)
    means = {"squared_error": np.sum(WEIGHT * error ** 2) / WEIGHT.sum(),
             "abs_error": np.sum(FIRST * np.abs(error)) / FIRST.sum(),
             "mean_prediction": np.mean(X @ k + b)}
    return loss, norm, new, means


def test_one_step_by_hand():
    loss, norm, new, means = _by_hand()
    assert norm > CLIP  # the clipping is exercised
    state, schedule = _state()
    step = jax.jit(make_train_step(LinearRegression(), seed=0, schedule=schedule))
    state, metrics = step(state, _batch())
    np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-6)
    np.testing.assert_allclose(metrics["grad_norm"], norm, rtol=1e-6)  # before clipping
    np.testing.assert_allclose(metrics["learning_rate"], LR, rtol=1e-7)  # schedule(0)
    for name, value in means.items():
        np.testing.assert_allclose(metrics[name], value, rtol=1e-6, err_msg=name)
    np.testing.assert_allclose(state.params["kernel"], new["kernel"], rtol=1e-6)
    np.testing.assert_allclose(state.params["bias"], new["bias"], rtol=1e-6)
    assert int(state.step) == 1
    np.testing.assert_allclose(schedule(5), LR / 2, rtol=1e-6)  # linear decay to 0 at 10


def test_a_batch_split_over_devices_steps_like_the_whole_batch():
    """Shards with different weight totals: psum'ed (sum, count) give the whole batch's
    means, loss and gradients (vmap with a named axis stands in for pmap's devices)."""
    state, schedule = _state()
    whole, whole_metrics = jax.jit(make_train_step(LinearRegression(), 0, schedule))(
        state, _batch())
    shards = {k: v.reshape((2, 3) + v.shape[1:]) for k, v in _batch().items()}
    assert shards["weight"][0].sum() != shards["weight"][1].sum()
    split = jax.vmap(make_train_step(LinearRegression(), 0, schedule, axis_name="data"),
                     in_axes=(None, 0), axis_name="data")
    states, metrics = split(state, shards)
    for name in ("loss", "grad_norm", "squared_error", "abs_error", "mean_prediction"):
        np.testing.assert_allclose(metrics[name], np.full(2, whole_metrics[name]), rtol=1e-6,
                                   err_msg=name)
    for name in ("kernel", "bias"):
        np.testing.assert_allclose(states.params[name][0], whole.params[name], rtol=1e-6)
        np.testing.assert_allclose(states.params[name][1], whole.params[name], rtol=1e-6)


def test_eval_step_returns_summed_stats():
    eval_step = jax.vmap(make_eval_step(LinearRegression(), axis_name="data"),
                         in_axes=(None, 0), axis_name="data")
    shards = {k: v.reshape((2, 3) + v.shape[1:]) for k, v in _batch().items()}
    out = eval_step(jax.tree.map(jnp.asarray, PARAMS), shards)
    error = X @ PARAMS["kernel"] + PARAMS["bias"] - Y
    total, count = out["squared_error"]
    np.testing.assert_allclose(total, np.full(2, np.sum(WEIGHT * error ** 2)), rtol=1e-6)
    np.testing.assert_allclose(count, np.full(2, WEIGHT.sum()))
    single = jax.jit(make_eval_step(LinearRegression()))(jax.tree.map(jnp.asarray, PARAMS),
                                                         _batch())
    np.testing.assert_allclose(single["abs_error"][0], np.sum(FIRST * np.abs(error)),
                               rtol=1e-6)
