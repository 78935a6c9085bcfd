"""Every parallel layout equals one device: BERT, GPT and a ViT (MAE) trained 5 steps with
dropout on under dp=8, fsdp=8, fsdp=4 x tensor=2, data=2 x fsdp=2 x tensor=2 and pmap
(8 fake CPU devices, one child process) give one device's losses; sharding really shards;
a run saved under fsdp=8 resumes under data=2 x tensor=4 and on one device; gradient
accumulation equals one pass over the batch; bad layouts fail before compute."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from ssl_jax.tasks import get_task
from ssl_jax.train.loop import train_and_evaluate
from ssl_jax.train.metrics import read_metrics
from tests import layouts
from tests.conftest import ROOT, tiny_config

RTOL = 1e-5
LAYOUTS = ("dp8", "fsdp8", "fsdp4_tp2", "d2_f2_t2", "pmap")
# The default suite runs BERT under every layout but fsdp4_tp2 (data=2 x fsdp=2 x tensor=2
# holds both of its axes) and GPT and the ViT under the one that exercises the most (all
# three mesh axes at once); -m slow runs the rest (~3 min more).
DEFAULT = {("bert", layout) for layout in LAYOUTS if layout != "fsdp4_tp2"} | {
    (m, "d2_f2_t2") for m in ("gpt", "vit")}

_CHILD = r"""
import json, os, shutil, sys
sys.path.insert(0, {root!r})
import jax, numpy as np
assert jax.device_count() == 8, jax.devices()
from tests import layouts
tmp, out = {tmp!r}, {{}}
for spec in {specs!r}:
    out[spec["name"]] = layouts.run(spec)

# save under fsdp=8 after 3 of 5 steps; resume under data=2 x tensor=4 (and, in the parent,
# on one device from a copy)
saved = os.path.join(tmp, "saved_fsdp8")
layouts.run(dict(layouts.run_spec("bert", "fsdp8", saved), stop_after=3))
shutil.copytree(saved, os.path.join(tmp, "saved_fsdp8_copy"))
# (BERT-tiny's 2 heads do not split 4 ways: the MLP width does)
spec = layouts.run_spec("bert", "one", saved, **{{"mesh.data": "2", "mesh.tensor": "4",
                                                 "sharding_rules": "[('mlp', 'tensor')]"}})
out["resumed_d2_t4"] = layouts.run(spec)

# per-device bytes of the parameters + AdamW moments under fsdp=8, and the collectives of the
# compiled tensor-parallel step
from ssl_jax import config as config_lib
from ssl_jax.tasks import get_task
from ssl_jax.train.loop import build_state
from ssl_jax.train.sharding import Parallel
from ssl_jax.train.step import make_train_step

def built(layout):
    model, overrides = layouts.MODELS["bert"]
    config = config_lib.load_config(os.path.join({root!r}, "experiments", model), list(
        dict(layouts.COMMON, **overrides, **layouts.LAYOUTS[layout]).items()))
    task = get_task(config.task)(config, os.path.join(tmp, "built_" + layout))
    parallel = Parallel.from_config(config)
    state, shardings, schedule = build_state(config, task, parallel, fresh=True)
    return config, task, parallel, state, shardings, schedule

def device0_bytes(tree):
    leaves = jax.tree_util.tree_leaves(tree)
    per = [sum(s.data.nbytes for s in x.addressable_shards if s.device == jax.devices()[0])
           for x in leaves]
    unsharded = sum(b for b, x in zip(per, leaves) if x.sharding.is_fully_replicated)
    return sum(per), unsharded, sum(x.nbytes for x in leaves)

_, _, _, state, _, _ = built("fsdp8")
out["bytes_fsdp8"] = device0_bytes((state.params, state.opt_state))
config, task, parallel, state, shardings, schedule = built("fsdp4_tp2")
step = parallel.wrap_train_step(make_train_step(task, 0, schedule), shardings)
batch = parallel.put_batch(task.dummy_batch(config.batch_size) | dict(
    example_weight=np.ones(config.batch_size, np.float32)))
out["tp_hlo_ops"] = sorted({{op for op in ("all-gather", "all-reduce", "reduce-scatter",
                                          "all-to-all", "collective-permute")
                            if op in step.lower(state, batch).compile().as_text()}})
try:  # 2 heads over tensor=4
    built_layout = layouts.LAYOUTS.setdefault("f2_t4", {{"mesh.data": "1", "mesh.fsdp": "2",
                                                        "mesh.tensor": "4",
                                                        "sharding_rules": "fsdp_tp"}})
    built("f2_t4")
    out["bad_divide"] = None
except ValueError as e:
    out["bad_divide"] = str(e)
print(json.dumps(out))
"""


def _losses(run):
    return np.asarray(run["losses"])


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    """The references: each model's run on this process's one device."""
    assert jax.device_count() == 1
    tmp = tmp_path_factory.mktemp("one")
    return {m: layouts.run(layouts.run_spec(m, "one", str(tmp / m))) for m in layouts.MODELS}


def _eight_devices(tmp, runs, code=_CHILD):
    specs = [layouts.run_spec(m, layout, os.path.join(tmp, f"{m}_{layout}"))
             for m, layout in sorted(runs)]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    child = subprocess.run([sys.executable, "-c", code.format(root=ROOT, tmp=tmp, specs=specs)],
                           env=env, capture_output=True, text=True, timeout=1200)
    assert child.returncode == 0, child.stderr[-3000:]
    return tmp, json.loads(child.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory):
    return _eight_devices(str(tmp_path_factory.mktemp("eight")), DEFAULT)


@pytest.fixture(scope="module")
def eight_devices_rest(tmp_path_factory):
    rest = {(m, layout) for m in layouts.MODELS for layout in LAYOUTS} - DEFAULT
    code = _CHILD.split("# save under fsdp=8")[0] + "print(json.dumps(out))\n"
    return _eight_devices(str(tmp_path_factory.mktemp("rest")), rest, code)


_MATRIX = [pytest.param(m, layout, marks=[] if (m, layout) in DEFAULT else [pytest.mark.slow])
           for m in sorted(layouts.MODELS) for layout in LAYOUTS]


@pytest.mark.parametrize("model,layout", _MATRIX)
def test_every_layout_gives_one_devices_losses(request, one_device, model, layout):
    runs = request.getfixturevalue(
        "eight_devices" if (model, layout) in DEFAULT else "eight_devices_rest")
    reference = one_device[model]
    got = runs[1][f"{model}/{layout}"]
    assert len(reference["losses"]) == 5  # steps 1..5, dropout on
    np.testing.assert_allclose(_losses(got), _losses(reference), rtol=RTOL)
    np.testing.assert_allclose(got["summary"]["eval_loss"], reference["summary"]["eval_loss"],
                               rtol=RTOL)


def test_a_run_saved_under_fsdp_resumes_on_other_meshes(one_device, eight_devices):
    tmp, out = eight_devices
    reference = _losses(one_device["bert"])
    resumed = _losses(out["resumed_d2_t4"])  # steps 1-3 (fsdp=8), then 4-5 (data=2 x tensor=4)
    np.testing.assert_allclose(resumed, reference, rtol=RTOL)
    # the same checkpoint resumed on this process's single device
    copy = os.path.join(tmp, "saved_fsdp8_copy")
    one = layouts.run(layouts.run_spec("bert", "one", copy))
    assert one["summary"]["resumed_from"] == 3
    np.testing.assert_allclose(_losses(one), reference, rtol=RTOL)


def test_fsdp_shards_parameters_and_optimizer_state(eight_devices):
    on_device0, unsharded, total = eight_devices[1]["bytes_fsdp8"]
    # params + two AdamW moments: 1/8 each, plus what is left whole (LayerNorm scales of a
    # width the rules do not map, classification heads, scalars)
    assert on_device0 <= total / 8 + unsharded, (on_device0, total, unsharded)
    assert unsharded < 0.05 * total, (unsharded, total)


def test_the_tensor_parallel_step_has_its_collectives(eight_devices):
    ops = set(eight_devices[1]["tp_hlo_ops"])
    assert "all-gather" in ops, ops  # fsdp: parameters gathered for the matmuls
    assert ops & {"all-reduce", "reduce-scatter"}, ops  # gradients / row-parallel outputs


def test_a_parameter_that_does_not_divide_is_named(eight_devices):
    assert eight_devices[1]["bad_divide"] == (
        "parameter encoder/stack/layer_0/attention/key/bias of shape (2, 64): "
        "dimension 0 (heads=2) does not divide over mesh axis tensor of size 4 "
        "(config.sharding_rules maps 'heads' to ('tensor',))")


def _accumulated(tmp, accumulate):
    config = tiny_config(num_train_steps=5, grad_accum_steps=accumulate, log_every_steps=1,
                         eval_every_steps=5, checkpoint_every_steps=5,
                         **{"model.dropout_rate": 0.0, "model.attention_dropout_rate": 0.0})
    workdir = str(tmp / f"accumulate{accumulate}")
    train_and_evaluate(config, workdir, get_task(config.task), progress=False)
    return [r["loss"] for r in read_metrics(os.path.join(workdir, "metrics.jsonl"))]


def test_gradient_accumulation_equals_one_pass_over_the_batch(tmp_path):
    """4 microbatches of 2 = one batch of 8 (each microbatch holds a different share of the
    masked tokens: the loss is normalised by the whole batch's counts, not by k)."""
    np.testing.assert_allclose(_accumulated(tmp_path, 4), _accumulated(tmp_path, 1), rtol=RTOL)


def test_gradient_accumulation_shrinks_the_compiled_temporaries():
    from ssl_jax.tasks import get_compute
    from ssl_jax.train.loop import build_state
    from ssl_jax.train.sharding import Parallel
    from ssl_jax.train.step import make_train_step

    temps = {}
    for k in (1, 4):
        config = tiny_config(grad_accum_steps=k, batch_size=32, max_seq_len=128)
        task = get_compute(config.task)(config, vocab_size=2000)
        parallel = Parallel.from_config(config)
        state, shardings, schedule = build_state(config, task, parallel, fresh=False)
        step = parallel.wrap_train_step(make_train_step(task, 0, schedule, accumulate=k),
                                        shardings)
        batch = task.dummy_batch(32) | {"example_weight": np.ones(32, np.float32)}
        temps[k] = step.lower(state, parallel.put_batch(batch)).compile().memory_analysis() \
            .temp_size_in_bytes
    assert temps[4] < 0.6 * temps[1], temps


@pytest.mark.parametrize("overrides,message", [
    ({"mesh.data": "3"}, "config.mesh=data=3,fsdp=1,tensor=1 has 3 devices; there are 1"),
    ({"mesh.data": "0"}, "config.mesh.data=0: expected a positive integer or -1"),
    ({"mesh.fsdp": "-1"}, "config.mesh: only one axis may be -1"),
    ({"sharding_rules": "zero3"}, "config.sharding_rules='zero3'; expected one of"),
    ({"sharding_rules": "[('experts', 'tensor')]"},
     "config.sharding_rules: unknown logical axis 'experts'"),
    ({"sharding_rules": "[('embed', 'model')]"},
     "config.sharding_rules: 'embed' -> unknown mesh axis 'model'"),
    ({"grad_accum_steps": "0"}, "config.grad_accum_steps=0 must be a positive integer"),
    ({"grad_accum_steps": "3"}, "batch_size=8 is not divisible by the 1 batch shards (mesh "
                                "data x fsdp) x grad_accum_steps=3"),
    ({"parallel": "pmap", "sharding_rules": "fsdp"},
     "config.parallel='pmap' replicates the parameters"),
])
def test_bad_layouts_fail_before_compute(capsys, tmp_path, overrides, message):
    import launch
    from tests.conftest import run_main

    workdir = tmp_path / "run"
    args = [f"--config.{k}={v}" for k, v in overrides.items()]
    done = run_main(capsys, launch.main, "--config",
                    os.path.join(ROOT, "experiments/bert/pretrain.py:tiny"),
                    "--workdir", workdir, "--no-progress", "--config.batch_size=8", *args)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not workdir.exists()
