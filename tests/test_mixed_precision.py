"""model.dtype="bfloat16": every task computes in bf16 with float32 parameters and optimizer
state, its logits summed and its losses taken in float32, and trains like float32;
model.param_dtype="bfloat16" trains; float16 (no loss scaling) is refused."""
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import ROOT, run_main
from ssl_jax.models.partitioning import init_unboxed
from ssl_jax import config as config_lib
from ssl_jax.models.bert import BertConfig, BertForPreTraining
from ssl_jax.models.gpt import GptConfig, GptLM
from ssl_jax.tasks import get_compute
from ssl_jax.train.optim import make_optimizer
from ssl_jax.train.step import TrainState, make_train_step

TINY_BERT = [("model.num_layers", "1"), ("model.hidden_size", "32"), ("model.num_heads", "2"),
             ("model.mlp_dim", "64"), ("max_seq_len", "16"), ("batch_size", "4")]
VIT = [("model.num_layers", "1"), ("model.hidden_size", "32"), ("model.num_heads", "2"),
       ("model.mlp_dim", "64"), ("batch_size", "4")]
CONVNET = [("model.channels", "[8, 16]"), ("model.kernels", "[3, 3]"),
           ("model.pool_after", "[True, False]"), ("batch_size", "4")]
# every model and head (GPT: test_a_bfloat16_run_tracks_the_float32_run) ->
# (experiment spec, overrides, the compute half's facts)
TASKS = {
    "bert_pretrain": ("bert/pretrain.py:tiny", TINY_BERT + [("data.max_predictions_per_seq", "4")],
                      dict(vocab_size=50)),
    "finetune_mean_pool": ("finetune/glue.py:task=mnli,variant=tiny",
                           TINY_BERT + [("finetune.pooling", "mean")],
                           dict(vocab_size=50, head="sequence", num_outputs=3)),
    "finetune_span": ("finetune/squad.py:variant=tiny", TINY_BERT,
                      dict(vocab_size=50, head="span", num_outputs=2)),
    "jigsaw_vit": ("vision/jigsaw.py:permutations=10,encoder=vit",
                   VIT + [("model.patch_size", "2")], dict(channels=3)),
    "inpaint_convnet": ("vision/inpainting.py:image_size=16,adversarial=0.001", CONVNET,
                        dict(channels=3, fill=np.zeros(3))),
    "mae": ("vision/mae.py:image_size=16", VIT + [("pretext.decoder_layers", "1"),
                                                  ("pretext.decoder_hidden_size", "16"),
                                                  ("pretext.decoder_heads", "2")],
            dict(channels=3)),
    "rotation_convnet": ("vision/rotation.py:image_size=16", CONVNET, dict(channels=3)),
}


def _task(name: str, *overrides):
    spec, base, facts = TASKS[name]
    config = config_lib.load_config(os.path.join(ROOT, "experiments", spec),
                                    [*base, ("num_train_steps", "10"), *overrides])
    return get_compute(config.task)(config, **facts), config


def _random_batch(task, seed=0):
    """The task's dummy batch with random floats (pixels, weights) and in-range ids."""
    rng = np.random.default_rng(seed)
    batch = task.dummy_batch(4)
    for k, v in batch.items():
        if k == "example_weight":
            continue
        if v.dtype.kind == "f":
            batch[k] = rng.random(v.shape).astype(v.dtype)
        elif k in ("input_ids", "masked_ids", "target_ids"):
            batch[k] = rng.integers(1, 50, v.shape).astype(v.dtype)
    return batch


def _float_dtypes(tree) -> set:
    return {x.dtype for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}


def _eval_loss(task, params, batch) -> float:
    stats = jax.jit(lambda p: task.stats(p, batch, None, train=False))(params)
    return sum(float(stats[t][0]) / float(stats[t][1]) for t in task.loss_terms)


@pytest.mark.parametrize("name", list(TASKS))
def test_every_model_computes_in_bfloat16_with_float32_state(name):
    """Parameters float32 after init and after a train step, the optimizer state float32,
    matmuls in bf16, and the loss within 1% of float32's (same parameters and batch; measured:
    at most 0.012%)."""
    task, config = _task(name, ("model.dtype", "bfloat16"))
    reference, _ = _task(name)
    batch = _random_batch(task)
    params = jax.jit(task.init_params)(jax.random.PRNGKey(0))
    assert _float_dtypes(params) == {jnp.dtype(jnp.float32)}
    jaxpr = str(jax.make_jaxpr(lambda p: task.stats(p, batch, None, train=False))(params))
    assert "bf16" in jaxpr and "dot_general" in jaxpr
    loss, ref_loss = _eval_loss(task, params, batch), _eval_loss(reference, params, batch)
    assert np.isfinite(loss) and abs(loss - ref_loss) <= 0.01 * abs(ref_loss), (loss, ref_loss)
    tx, schedule = make_optimizer(config, task.update_multipliers(params))
    state = TrainState.create(apply_fn=None, params=params, tx=tx)
    state, metrics = jax.jit(make_train_step(task, 0, schedule))(state, batch)
    assert np.isfinite(float(metrics["loss"]))
    assert _float_dtypes(state.params) == _float_dtypes(state.opt_state) == {jnp.dtype(jnp.float32)}


def _markov_batches(steps: int, batch: int, seq: int, vocab: int, seed: int = 0):
    """Learnable token streams: each sequence counts up by its own stride (1, 2 or 3) mod
    vocab from a random start, so the next token follows from the last two."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        start = rng.integers(0, vocab, (batch, 1))
        stride = rng.integers(1, 4, (batch, 1))
        ids = ((start + stride * np.arange(seq + 1)[None, :]) % vocab).astype(np.int32)
        yield {"input_ids": ids[:, :-1], "target_ids": ids[:, 1:],
               "segment_ids": np.zeros((batch, seq), np.int32),
               "target_weights": np.ones((batch, seq), np.float32),
               "example_weight": np.ones((batch,), np.float32)}


def _gpt_losses(steps: int, *overrides) -> tuple[np.ndarray, TrainState]:
    """A 2-layer, 64-wide GPT trained `steps` steps on the counting streams: the losses and
    the final state."""
    config = config_lib.load_config(
        os.path.join(ROOT, "experiments/gpt/pretrain.py:gpt-tiny,seq_len=32,lr=3e-3"),
        [("model.num_layers", "2"), ("model.hidden_size", "64"), ("model.num_heads", "2"),
         ("model.mlp_dim", "128"), ("batch_size", "16"), ("num_train_steps", str(steps)),
         *overrides])
    task = get_compute("gpt_pretrain")(config, vocab_size=64)
    params = jax.jit(task.init_params)(jax.random.PRNGKey(0))
    tx, schedule = make_optimizer(config)
    state = TrainState.create(apply_fn=None, params=params, tx=tx)
    step = jax.jit(make_train_step(task, 0, schedule))
    losses = []
    for batch in _markov_batches(steps, 16, 32, 64):
        state, metrics = step(state, batch)
        losses.append(metrics["loss"])
    return np.asarray(jax.device_get(losses)), state


def test_a_bfloat16_run_tracks_the_float32_run():
    """200 steps: the bf16 losses follow the float32 ones. Tolerance: every 20-step mean,
    the last one included, within 1% (relative) of float32's (measured: at most 0.01%; the
    loss falls from 3.5 to 0.8 meanwhile); the runs are not the same computation (bf16 is
    in effect) and both learn (the last 20 steps' mean under half the first 20's)."""
    f32, _ = _gpt_losses(200)
    bf16, state = _gpt_losses(200, ("model.dtype", "bfloat16"))
    assert _float_dtypes(state.params) == _float_dtypes(state.opt_state) == {jnp.dtype(jnp.float32)}
    windows = lambda x: x.reshape(10, 20).mean(axis=1)
    relative = np.abs(windows(bf16) - windows(f32)) / windows(f32)
    assert relative.max() < 0.01, (windows(f32), windows(bf16))
    assert not np.array_equal(f32, bf16)
    assert windows(f32)[-1] < 0.5 * windows(f32)[0] and windows(bf16)[-1] < 0.5 * windows(bf16)[0]


def test_bfloat16_parameters_train():
    losses, state = _gpt_losses(100, ("model.dtype", "bfloat16"),
                                ("model.param_dtype", "bfloat16"))
    assert _float_dtypes(state.params) == {jnp.dtype(jnp.bfloat16)}
    assert np.isfinite(losses).all()
    assert losses[-20:].mean() < 0.7 * losses[:20].mean(), losses


def _relative_error(got, exact) -> float:
    return float(np.abs(np.asarray(got, np.float64) - exact).max() / np.abs(exact).max())


def test_bfloat16_logits_are_summed_in_float32():
    """GPT's tied output and BERT's MLM logits equal the exact product of their bf16
    operands to float32 precision (rounded to bf16 they would be ~1e-3 off)."""
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 61, (2, 12)), jnp.int32)
    gpt = GptLM(GptConfig(vocab_size=61, hidden_size=256, num_layers=1, num_heads=4,
                          max_len=16, dtype=jnp.bfloat16))
    params = init_unboxed(gpt, jax.random.PRNGKey(0), ids)["params"]
    hidden = gpt.apply({"params": params}, ids, return_hidden=True)
    assert hidden.dtype == jnp.bfloat16
    table = np.asarray(params["token"]["embedding"].astype(jnp.bfloat16), np.float64)
    exact = np.asarray(hidden, np.float64) @ table.T
    for last_only in (False, True):  # the training product and the decoding one
        logits = gpt.apply({"params": params}, ids, last_only=last_only)
        assert logits.dtype == jnp.float32
        want = exact[:, -1:] if last_only else exact
        assert _relative_error(logits, want) < 1e-5

    bert = BertForPreTraining(BertConfig(vocab_size=61, hidden_size=256, num_layers=1,
                                         num_heads=4, max_position_embeddings=16,
                                         dtype=jnp.bfloat16))
    args = (ids, jnp.zeros_like(ids), jnp.ones_like(ids))
    bp = init_unboxed(bert, jax.random.PRNGKey(0), *args)["params"]
    mlm, nsp = bert.apply({"params": bp}, *args)
    assert mlm.dtype == nsp.dtype == jnp.float32
    _, state = bert.apply({"params": bp}, *args, capture_intermediates=True,
                          mutable=["intermediates"])
    transformed = state["intermediates"]["mlm"]["ln"]["__call__"][0]  # [n, hidden] bf16
    word = np.asarray(bp["encoder"]["embeddings"]["word"]["embedding"].astype(jnp.bfloat16),
                      np.float64)
    exact = np.asarray(transformed, np.float64) @ word.T + np.asarray(bp["mlm"]["bias"])
    assert _relative_error(mlm.reshape(-1, 61), exact) < 1e-5


@pytest.mark.parametrize("field", ["dtype", "param_dtype"])
def test_float16_is_refused_before_any_compute(field, capsys, tmp_path):
    import launch
    from ssl_jax.models.bert import bert_config
    from ssl_jax.models.vision import build_encoder
    message = (f"model.{field}='float16' needs loss scaling, which ssl_jax does not do; use "
               f"'bfloat16' (float32's range, no scaling needed)")
    bert = config_lib.load_config(os.path.join(ROOT, "experiments/bert/pretrain.py:tiny"),
                                  [(f"model.{field}", "float16")])
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        bert_config(bert.model, 100)
    convnet = config_lib.load_config(os.path.join(ROOT, "experiments/vision/rotation.py"),
                                     [(f"model.{field}", "float16")])
    assert convnet.model.encoder == "convnet"
    with pytest.raises(ValueError, match="needs loss scaling"):
        build_encoder(convnet.model, 32)
    with pytest.raises(ValueError, match="needs loss scaling"):
        dataclasses.replace(GptConfig(), **{field: jnp.float16})
    for spec in ("gpt/pretrain.py:gpt-tiny", "vision/rotation.py"):
        done = run_main(capsys, launch.main, "--config", os.path.join(ROOT, "experiments", spec),
                        "--workdir", tmp_path / "w", "--no-progress",
                        f"--config.model.{field}=float16")
        assert (done.returncode, done.stderr) == (2, f"error: {message}\n"), done
        assert not (tmp_path / "w").exists()
