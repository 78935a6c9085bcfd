"""The ahead-of-time planner (python -m ssl_jax.plan): its per-device bytes against a real
run of the same config, its FLOPs formula against XLA's count, a GPT-3 2.7B plan on 64 fake
devices, every size-table row built abstractly, and bad arguments refused before compute.

Runs with other device counts than this process's go to child processes (the planner
re-runs itself; tests/plan_checks.py holds the real run)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from ssl_jax import plan
from ssl_jax.models.bert import BERT_SIZES
from ssl_jax.models.gpt import GPT_SIZES
from tests.conftest import ROOT, run_main

BERT = os.path.join(ROOT, "experiments/bert/pretrain.py")
GPT = os.path.join(ROOT, "experiments/gpt/pretrain.py")
TINY = [f"--config={BERT}:tiny", "--batch-size=16", "--config.max_seq_len=64",
        "--config.data.vocab_size=2000"]
TINY_TP = TINY + ["--mesh=data=2,fsdp=2,tensor=2", "--rules=fsdp_tp"]


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def _row_argv(model: str, size: str) -> list[str]:
    config, vocab = (BERT, 30522) if model == "bert" else (GPT, 50257)
    argv = [f"--config={config}:{size}", "--mesh=fsdp=8", "--rules=fsdp",
            f"--config.model.vocab_size={vocab}"]
    if size == "gpt3-xl":  # the paper's 24 heads do not divide 2048; implementations use 16
        argv.append("--config.model.num_heads=16")
    return argv


@pytest.fixture(scope="module")
def checks(tmp_path_factory):
    """One child with 8 fake devices: a real one-step run of the tiny config, the planner on
    it, and every BERT/GPT size row built under fsdp=8."""
    rows = {f"bert/{s}": _row_argv("bert", s) for s in BERT_SIZES}
    rows.update({f"gpt/{s}": _row_argv("gpt", s) for s in GPT_SIZES})
    spec = tmp_path_factory.mktemp("plan") / "spec.json"
    spec.write_text(json.dumps({"measure": TINY_TP, "plans": {"tiny": TINY_TP}, "rows": rows}))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    child = subprocess.run([sys.executable, os.path.join(ROOT, "tests/plan_checks.py"),
                            str(spec)], env=env, capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, child.stderr[-3000:]
    return _last_json(child.stdout)


def test_plan_of_a_tiny_config_is_within_2x_of_the_real_run(checks):
    """The real run: the loop's build_state + train step on 8 devices (fsdp_tp, scanned,
    rematerialised), one step; per device, its live arrays' shards + the step's compiled
    temporaries (see tests/plan_checks.py)."""
    real, planned = checks["measure"], checks["plans"]["tiny"]
    assert real["devices"] == planned["devices"] == 8
    assert planned["scan_layers"] is True and planned["remat"] is True
    assert real["loss"] > 0
    # the state's layout is read off the shardings: exactly what the arrays hold
    assert planned["param_bytes_per_device"] == real["param_bytes_per_device"]
    assert planned["optimizer_bytes_per_device"] == real["optimizer_bytes_per_device"]
    # the compiled arguments are the live state and batch (every device holds the same)
    assert real["live_bytes_min"] == real["live_bytes_per_device"]
    assert abs(planned["argument_bytes_per_device"] - real["live_bytes_per_device"]) \
        <= 0.01 * real["live_bytes_per_device"]
    assert planned["temp_bytes_per_device"] > 0
    ratio = planned["bytes_per_device"] / real["bytes_per_device"]
    assert 0.5 <= ratio <= 2.0, (planned["bytes_per_device"], real["bytes_per_device"])


def _bert_params(size: dict, vocab: int = 30522) -> int:
    """BertForPreTraining: embeddings (+LN), L post-LN blocks, pooler, MLM transform (+LN)
    and output bias (tied decoder), NSP."""
    H, L = size["hidden_size"], size["num_layers"]
    return (vocab * H + 512 * H + 2 * H + 2 * H + L * (12 * H * H + 13 * H)
            + (H * H + H) + (H * H + H + 2 * H) + vocab + (2 * H + 2))


def _gpt_params(size: dict, vocab: int = 50257, final_ln: bool = True) -> int:
    """Token + position tables, L blocks, the final LN of pre-LN models (GPT-2/3, not
    GPT-1); the output layer is tied."""
    H, L = size["hidden_size"], size["num_layers"]
    return vocab * H + size["max_len"] * H + L * (12 * H * H + 13 * H) + 2 * H * final_ln


def test_every_size_row_builds_sharded_under_fsdp8(checks):
    rows = checks["rows"]
    assert len(rows) == len(BERT_SIZES) + len(GPT_SIZES)
    for name, row in rows.items():
        model, size = name.split("/")
        expected = (_bert_params(BERT_SIZES[size]) if model == "bert"
                    else _gpt_params(GPT_SIZES[size], final_ln=size != "gpt1"))
        assert row["params"] == expected, name
        assert row["param_bytes"] == 4 * expected, name  # float32
        # 1/8 of the replicated bytes + the leaves no rule shards (biases, small tables)
        assert row["param_bytes_per_device"] <= row["param_bytes"] / 8 + row["unsharded_bytes"]
        # AdamW's two moments are sharded like the parameters (+ a step count)
        assert 0 <= row["optimizer_bytes_per_device"] - 2 * row["param_bytes_per_device"] <= 16
        if expected > 1e8:
            assert row["unsharded_bytes"] < 0.01 * row["param_bytes"], name
    assert rows["gpt/gpt2-small"]["params"] == 124_439_808  # GPT2LMHeadModel
    assert rows["bert/large"]["params"] == 336_226_108  # BertForPreTraining (uncased)


def test_flops_formula_against_xla_count_unscanned(capsys):
    """Without scan and remat, XLA's cost analysis counts every op once: the analytic model
    FLOPs (matmuls only) are its bulk; the rest is elementwise work (GELU, softmax,
    LayerNorm, AdamW). One device: the plan runs in this process."""
    import jax

    assert jax.device_count() >= 1  # the backend is up: a 1-device plan stays in-process
    if jax.device_count() != 1:
        pytest.skip("this process has several devices")
    done = run_main(capsys, plan.main, *TINY, "--mesh=data=1", "--no-scan")
    assert done.returncode == 0, done.stderr
    p = _last_json(done.stdout)
    assert p["scan_layers"] is False and p["remat"] is False
    assert p["hardware_flops_per_step"] == p["flops_per_step"]
    # BERT tiny (L2 H128 M512 V2000), batch 16 x 64, P = ceil(0.15 * 64) = 10
    B, T, L, H, M, V, P = 16, 64, 2, 128, 512, 2000, 10
    forward = (B * T * L * (2 * (4 * H * H + 2 * H * M) + 4 * T * H)
               + B * (P * 2 * (H * H + H * V) + 2 * H * H + 4 * H))
    assert p["flops_per_step"] == 3 * forward
    assert 1.0 <= p["xla_flops_per_device"] / p["flops_per_step"] <= 1.2
    assert p["tokens_per_step"] == B * T
    assert p["step_s"] == max(p["compute_s"], p["memory_s"])
    assert p["tokens_per_s"] == pytest.approx(B * T / p["step_s"])
    assert p["compute_s"] == pytest.approx(3 * forward / 989e12)


def test_gpt3_2p7b_plan_on_64_devices(capfd):
    """The planner re-runs itself with 64 fake devices; the 2.7B plan (1M-token batch, FSDP
    over 64) compiles in seconds and fits an 80 GB device."""
    start = time.perf_counter()
    code = plan.main([f"--config={GPT}:gpt3-2.7b,seq_len=2048", "--mesh=fsdp=64",
                      "--rules=fsdp", "--batch-size=512", "--config.model.vocab_size=50257"])
    elapsed = time.perf_counter() - start
    out = capfd.readouterr()
    assert code == 0, out.err[-3000:]
    p = _last_json(out.out)
    assert elapsed < 180
    N = _gpt_params(GPT_SIZES["gpt3-2.7b"])
    assert p["devices"] == 64 and p["params"] == N
    # fsdp shards every leaf with an `embed` axis 64 ways; the q/k/v biases (3H) and the
    # MLP's inner bias (4H) of each layer have none and stay whole on every device
    whole = 7 * 2560 * 32
    assert p["param_bytes_per_device"] == (N - whole) * 4 // 64 + whole * 4
    assert p["fits"] is True and p["bytes_per_device"] < 80e9
    assert p["bytes_per_device"] == (p["argument_bytes_per_device"] + p["output_bytes_per_device"]
                                     - p["alias_bytes_per_device"] + p["temp_bytes_per_device"])
    tokens = 512 * 2048
    H, L, T, V = 2560, 32, 2048, 50257
    layers = 2 * L * 12 * H * H + 4 * L * T * H
    assert p["flops_per_step"] == pytest.approx(3 * tokens * (layers + 2 * H * V))
    assert p["hardware_flops_per_step"] == pytest.approx(4 * tokens * layers
                                                         + 3 * tokens * 2 * H * V)
    assert "planned with model.scan_layers and model.remat=True" in out.out


BAD = [
    (["--mesh=fsdp=8,pipeline=2"], "unknown mesh axis 'pipeline'"),
    (["--mesh=fsdp=0"], "fsdp='0' is not a positive integer"),
    (["--mesh=fsdp=4x"], "fsdp='4x' is not a positive integer"),
    (["--mesh=fsdp"], "expected axis=size pairs"),
    (["--mesh=fsdp=2,fsdp=4"], "axis 'fsdp' given twice"),
    (["--mesh=fsdp=8", "--rules=zero3"], "--rules 'zero3'; expected one of"),
    (["--mesh=fsdp=8", "--device-memory=80XB"], "--device-memory '80XB'"),
    (["--mesh=fsdp=8", "--device-memory=lots"], "--device-memory 'lots'"),
    (["--mesh=fsdp=8", "--peak-tflops=0"], "--peak-tflops 0.0 must be positive"),
    (["--mesh=fsdp=8", "--grad-accum=0"], "--grad-accum 0 must be a positive integer"),
    (["--mesh=fsdp=8", "--batch-size=12"], "batch size 12 is not divisible by the 8 batch"),
    (["--mesh=fsdp=4", "--grad-accum=8"], "by the 4 batch shards (--mesh data x fsdp) x 8"),
    (["--mesh=fsdp=8", "--config.mesh.fsdp=2"], "--config.mesh.fsdp and --mesh both set it"),
    (["--mesh=fsdp=8", "--config.parallel=pmap"], "config.parallel='pmap'"),
    (["--mesh=fsdp=8", "--config.model.num_heds=2"], "unknown config key 'model.num_heds'"),
]


@pytest.mark.parametrize("extra,message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_arguments_exit_2_before_compute(extra, message, capsys):
    base = [a for a in TINY if not a.startswith("--mesh")]
    done = run_main(capsys, plan.main, *base, *extra)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert message in lines[0], (message, lines[0])
    assert done.stdout == ""


def test_a_task_the_planner_cannot_build_is_refused(capsys):
    done = run_main(capsys, plan.main,
                    f"--config={os.path.join(ROOT, 'experiments/finetune/passage_source.py')}",
                    "--mesh=data=1")
    assert done.returncode == 2
    assert done.stderr.startswith("error: config.task='finetune': the planner plans the "
                                  "pre-training tasks")


def test_a_parameter_that_does_not_divide_fails_in_the_child(capfd):
    """Checked when the shardings are made (the re-run child, 3 devices), before compile."""
    code = plan.main([*TINY[:1], "--config.data.vocab_size=2000", "--batch-size=6",
                      "--mesh=fsdp=3", "--rules=fsdp"])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: parameter ") and "does not divide over mesh axis fsdp " \
        "of size 3" in err[-1], err
