"""jit over an 8-device mesh, pmap over 8 devices and one device give the same losses and
(fine-tuning) the same scored predictions."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ssl_jax.tasks import get_task
from ssl_jax.train.loop import train_and_evaluate
from ssl_jax.train.metrics import read_metrics
from tests.conftest import ROOT, tiny_config
from tests.test_finetune import FIXTURES, ft_config

FIELDS = {"num_train_steps": 3, "model.dropout_rate": 0.0, "model.attention_dropout_rate": 0.0,
          "eval_every_steps": 3, "checkpoint_every_steps": 3}
FINETUNE = ("glue.py:task=mrpc,variant=tiny,steps=3",
            {"finetune.path": os.path.join(FIXTURES, "glue", "MRPC"), "eval_every_steps": 3,
             "finetune.classifier_dropout": 0.0})  # pmap draws dropout per device
COMPARED = ("eval_loss", "eval_accuracy", "eval_f1")

_CHILD = r"""
import json, os, sys
sys.path.insert(0, {root!r})
import jax
assert jax.device_count() == 8, jax.devices()
from ssl_jax.tasks import get_task
from ssl_jax.train.loop import train_and_evaluate
from ssl_jax.train.metrics import read_metrics
from tests.conftest import tiny_config
from tests.test_finetune import ft_config
os.environ["SSL_JAX_DATA_DIR"] = {data_dir!r}
out = {{}}
for mode in ("jit", "pmap"):
    configs = {{"pretrain": lambda: tiny_config(parallel=mode, **{fields!r}),
               "finetune": lambda: ft_config({spec!r}, parallel=mode, **{ft_fields!r})}}
    for kind in {kinds!r}:
        config = configs[kind]()
        workdir = os.path.join({tmp!r}, mode + kind)
        summary = train_and_evaluate(config, workdir, get_task(config.task), progress=False)
        out[mode + kind] = dict(
            losses=[r["loss"] for r in read_metrics(os.path.join(workdir, "metrics.jsonl"))],
            **{{k: summary[k] for k in {compared!r} if k in summary}})
print(json.dumps(out))
"""


def _run(kind, config, workdir):
    summary = train_and_evaluate(config, workdir, get_task(config.task), progress=False)
    losses = [r["loss"] for r in read_metrics(os.path.join(workdir, "metrics.jsonl"))]
    return dict(losses=losses, **{k: summary[k] for k in COMPARED if k in summary})


# Both under -m slow: pre-training's layouts (pmap and jit among them, dropout on) are in the
# default run's test_scale.py, and fine-tuning's scored predictions across two processes in
# test_multihost.py; this keeps the dropout-off jit = pmap check of both kinds.
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pretrain", "finetune"])
def test_pmap_equals_jit_equals_one_device(tmp_path, kind):
    if kind == "pretrain":
        single = {"pretrain": _run("pretrain", tiny_config(**FIELDS), str(tmp_path / "single"))}
    else:
        single = {"finetune": _run("finetune", ft_config(FINETUNE[0], **FINETUNE[1]),
                                   str(tmp_path / "single_ft"))}
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    code = _CHILD.format(root=ROOT, tmp=str(tmp_path), fields=FIELDS, spec=FINETUNE[0],
                         ft_fields=FINETUNE[1], compared=COMPARED, kinds=[kind],
                         data_dir=os.environ["SSL_JAX_DATA_DIR"])
    child = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, timeout=600)
    assert child.returncode == 0, child.stderr[-3000:]
    out = json.loads(child.stdout.strip().splitlines()[-1])
    if kind == "pretrain":
        assert len(single["pretrain"]["losses"]) == 3
    else:
        assert {"eval_accuracy", "eval_f1"} <= set(single["finetune"])
    for mode in ("jit", "pmap"):
        for kind, reference in single.items():
            got = out[mode + kind]
            np.testing.assert_allclose(got["losses"], reference["losses"], rtol=2e-5,
                                       err_msg=mode + kind)
            for k in COMPARED:
                if k in reference:
                    np.testing.assert_allclose(got[k], reference[k], rtol=2e-5,
                                               err_msg=f"{mode} {kind} {k}")
