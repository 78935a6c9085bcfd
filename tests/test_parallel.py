"""jit over an 8-device mesh, pmap over 8 devices and one device give the same losses."""
import json
import os
import subprocess
import sys

import numpy as np

from ssl_jax.train.loop import train_and_evaluate
from ssl_jax.train.metrics import read_metrics
from tests.conftest import ROOT, tiny_config

FIELDS = {"num_train_steps": 3, "model.dropout_rate": 0.0, "model.attention_dropout_rate": 0.0,
          "eval_every_steps": 3, "checkpoint_every_steps": 3}

_CHILD = r"""
import json, os, sys
sys.path.insert(0, {root!r})
import jax
assert jax.device_count() == 8, jax.devices()
from ssl_jax.train.loop import train_and_evaluate
from ssl_jax.train.metrics import read_metrics
from tests.conftest import tiny_config
os.environ["SSL_JAX_DATA_DIR"] = {data_dir!r}
out = {{}}
for mode in ("jit", "pmap"):
    workdir = os.path.join({tmp!r}, mode)
    summary = train_and_evaluate(tiny_config(parallel=mode, **{fields!r}), workdir, progress=False)
    out[mode] = {{"losses": [r["loss"] for r in read_metrics(os.path.join(workdir, "metrics.jsonl"))],
                 "eval_loss": summary["eval_loss"]}}
print(json.dumps(out))
"""


def test_pmap_equals_jit_equals_one_device(tmp_path):
    single = train_and_evaluate(tiny_config(**FIELDS), str(tmp_path / "single"), progress=False)
    single_losses = [r["loss"] for r in read_metrics(str(tmp_path / "single/metrics.jsonl"))]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    code = _CHILD.format(root=ROOT, tmp=str(tmp_path), fields=FIELDS,
                         data_dir=os.environ["SSL_JAX_DATA_DIR"])
    child = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, timeout=600)
    assert child.returncode == 0, child.stderr[-3000:]
    out = json.loads(child.stdout.strip().splitlines()[-1])
    assert len(single_losses) == 3
    for mode in ("jit", "pmap"):
        np.testing.assert_allclose(out[mode]["losses"], single_losses, rtol=2e-5, err_msg=mode)
        np.testing.assert_allclose(out[mode]["eval_loss"], single["eval_loss"], rtol=2e-5)
