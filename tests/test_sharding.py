"""ssl_jax.train.sharding: batch-size checks, batches and state placed and read back in
order, jit and pmap, on one device here and on 8 fake CPU devices in a child process
(jit = pmap = one device for whole runs: tests/test_parallel.py)."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.train.sharding import Parallel, check_batch_size
from tests.conftest import ROOT

BATCH = {"ids": np.arange(24, dtype=np.int32).reshape(8, 3),
         "weight": np.linspace(0.0, 1.0, 8).astype(np.float32)}


@pytest.mark.parametrize("mode", ["jit", "pmap"])
def test_batch_and_state_round_trips_on_one_device(mode):
    parallel = Parallel(mode)
    placed = parallel.put_batch(BATCH)
    if mode == "pmap":
        assert placed["ids"].shape == (1, 8, 3)  # [devices, per-device batch, ...]
    predict = parallel.wrap_predict_step(lambda params, batch: {"ids": batch["ids"] + params})
    out = parallel.get_batch(predict(parallel.put_state(jnp.int32(100)), placed))
    np.testing.assert_array_equal(out["ids"], BATCH["ids"] + 100)
    state = {"w": jnp.arange(4.0), "step": jnp.zeros((), jnp.int32)}
    back = parallel.get_state(parallel.put_state(state))
    jax.tree.map(np.testing.assert_array_equal, back, state)


def test_bad_mode_and_batch_sizes():
    with pytest.raises(ValueError, match=r"config.parallel='shard'; expected one of"):
        Parallel("shard")
    check_batch_size(7)  # one device, one process: any size


_CHILD = r"""
import json, sys
sys.path.insert(0, {root!r})
import jax, jax.numpy as jnp, numpy as np
from ssl_jax.train.sharding import Parallel, check_batch_size
assert jax.device_count() == 8
out = {{}}
try:
    check_batch_size(12)
except ValueError as e:
    out["error"] = str(e)
check_batch_size(16)
batch = {{"ids": np.arange(48, dtype=np.int32).reshape(16, 3)}}
for mode in ("jit", "pmap"):
    p = Parallel(mode)
    predict = p.wrap_predict_step(lambda params, b: {{"ids": b["ids"] * params}})
    ids = p.get_batch(predict(p.put_state(jnp.int32(2)), p.put_batch(batch)))["ids"]
    state = p.put_state({{"w": jnp.arange(3.0)}})
    out[mode] = dict(ids=ids.tolist(), w=np.asarray(p.get_state(state)["w"]).tolist(),
                     copies=int(state["w"].shape[0]) if mode == "pmap" else 1)
print(json.dumps(out))
"""


def test_eight_fake_devices_keep_batch_order_and_refuse_an_uneven_batch():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    child = subprocess.run([sys.executable, "-c", _CHILD.format(root=ROOT)], env=env,
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    out = json.loads(child.stdout.strip().splitlines()[-1])
    assert out["error"] == ("batch_size=12 is not divisible by the 8 batch shards (mesh data x "
                            "fsdp)")
    expected = (np.arange(48).reshape(16, 3) * 2).tolist()
    for mode in ("jit", "pmap"):
        assert out[mode]["ids"] == expected, mode  # split over devices, read back in order
        assert out[mode]["w"] == [0.0, 1.0, 2.0]
    assert out["pmap"]["copies"] == 8  # one replica per device
