"""benchmarks/throughput.py's scale flags: checked before any worker starts, the peak table,
and the sharded step timing the same computation as the plain one."""
from __future__ import annotations

import importlib.util
import os

import pytest

from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location(
    "throughput", os.path.join(ROOT, "benchmarks/throughput.py"))
throughput = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(throughput)

TINY = ["--layers", "2", "--hidden", "32", "--heads", "2", "--vocab", "300", "--batch", "4",
        "--seq-len", "16", "--steps", "1", "--warmup", "1"]


@pytest.mark.parametrize("extra,message", [
    (["--mesh", "fsdp=3"], "--batch 4 is not divisible by the 3 batch shard(s)"),
    (["--grad-accum", "8"], "x --grad-accum 8"),
    (["--grad-accum", "0"], "--grad-accum 0 must be >= 1"),
    (["--mesh", "pipe=2"], "unknown mesh axis 'pipe'"),
    (["--attention-impl", "cudnn"],  # on this CPU: the models' own refusal
     "--attention-impl cudnn: model.attention_impl='cudnn' needs an NVIDIA GPU"),
    (["--mode", "generate", "--model", "gpt", "--dtype", "bfloat16"],
     "--dtype bfloat16 applies to --mode train"),
    (["--peak-tflops", "-1"], "--peak-tflops -1.0 must be positive"),
])
def test_bad_scale_flags_exit_2(extra, message, capsys):
    with pytest.raises(SystemExit) as done:
        throughput.parse(TINY + extra)
    assert done.value.code == 2
    assert message in capsys.readouterr().err


def test_attention_impl_is_refused_only_where_the_config_lacks_it(capsys):
    config = throughput.pretrain_config(throughput.parse(TINY), attention=False)
    if "attention_impl" in config.model:  # the models choose their attention: passed through
        a = throughput.parse(TINY + ["--attention-impl", "xla"])
        assert throughput.pretrain_config(a).model.attention_impl == "xla"
    else:
        with pytest.raises(SystemExit):
            throughput.parse(TINY + ["--attention-impl", "xla"])
        assert "no model.attention_impl to set" in capsys.readouterr().err


def test_gpu_peaks_by_device_kind():
    assert throughput.table_peak("NVIDIA H100 80GB HBM3") == ("H100", 989e12)
    assert throughput.table_peak("NVIDIA H100 PCIe") == ("H100 PCIe", 756e12)
    assert throughput.table_peak("NVIDIA H200") == ("H200", 989e12)
    assert throughput.table_peak("NVIDIA A100-SXM4-80GB") == ("A100", 312e12)
    assert throughput.table_peak("cpu") is None


@pytest.mark.parametrize("model", ["gpt"])  # BERT: the same path, 40 s more
def test_the_sharded_step_on_one_device_is_the_plain_step(model):
    import jax

    """--mesh data=1 --rules fsdp runs the loop's build_state + wrap_train_step: the same
    initial parameters, dropout draws and update as the plain jitted step, so the same loss
    after 2 steps; and the per-device tokens/s and device memory are reported."""
    a = throughput.parse(["--model", model] + TINY)
    plain = throughput.run_ours_train(a)
    sharded = throughput.run_ours_train(throughput.parse(
        ["--model", model] + TINY + ["--mesh", "data=1", "--rules", "fsdp"]))
    assert sharded["loss"] == pytest.approx(plain["loss"], rel=1e-5)
    assert plain["devices"] == sharded["devices"] == 1
    assert plain["device_memory_kind"] == "live arrays"  # the CPU keeps no allocator stats
    # the live arrays hold at least the parameters and AdamW's two moments (float32)
    params = jax.eval_shape(throughput.pretrain_task(a).init_params, jax.random.PRNGKey(0))
    state_bytes = 3 * 4 * sum(x.size for x in jax.tree_util.tree_leaves(params))
    assert plain["device_memory_mb"] * 2 ** 20 >= state_bytes


def test_generate_floor_by_hand():
    """--mode generate's floor: bytes = every parameter but the position table + the KV
    cache at the mean context (prompt + (new - 1) / 2 tokens, keys and values, float32, each
    row), over the bandwidth the fastest of the streaming passes reached on those parameter
    bytes (matrix-vector products over every weight, a sum over every weight, a sum over
    the largest one, scaled)."""
    import jax.numpy as jnp

    a = throughput.parse(["--model", "gpt", "--mode", "generate", "--layers", "2", "--hidden",
                          "32", "--heads", "2", "--vocab", "300", "--batch", "3",
                          "--prompt-len", "8", "--new-tokens", "5"])
    assert throughput.kv_cache_bytes_per_token(a) == 2 * 2 * 3 * (8 + 2) * 32 * 4
    params = {"token": {"embedding": jnp.ones((300, 32))},
              "position": {"embedding": jnp.ones((1024, 32))},
              "layer": {"kernel": jnp.ones((32, 2, 16)), "bias": jnp.ones((32,))}}
    run, weight_bytes = throughput.streaming_pass(a, params)
    assert weight_bytes == 4 * (300 * 32 + 32 * 32 + 32)
    (matvec, one), (plain_sum, one_too), (largest, scale) = run.passes
    assert one == one_too == 1.0
    assert float(matvec()) == float(plain_sum()) == 300 * 32 + 32 * 32 + 32  # all of them
    assert float(largest()) == 300 * 32 and scale == weight_bytes / (4 * 300 * 32)
    assert run() > 0  # the fastest pass's seconds, scaled to every weight byte
    # 1 ms to stream the weights: the floor adds the cache's bytes at that rate
    floor = throughput.floor_ms_per_token(a, weight_bytes, 1e-3)
    assert floor == pytest.approx(1 + throughput.kv_cache_bytes_per_token(a) / weight_bytes)


def _canned_main(monkeypatch, capsys, worker, argv, peer=True):
    """throughput.main(argv) with `worker` in place of the worker processes, a canned
    100 GFLOP/s CPU peak, and the peer installed (when `peer`): (stdout, last JSON line)."""
    import json

    monkeypatch.setattr(throughput, "_worker", worker)
    monkeypatch.setattr(throughput, "device_peak", lambda a: dict(
        platform="cpu", device_kind="cpu", device_count=1, peak=1e11, source="canned"))
    if peer:
        monkeypatch.setattr(throughput.importlib.util, "find_spec", lambda name: True)
    assert throughput.main(argv) == 0
    out = capsys.readouterr().out
    return out, json.loads(out.strip().splitlines()[-1])


def _ours_generated(seconds, floor_ms):
    """An ours --mode generate worker's result: `seconds` for the call, its floor."""
    return {"system": "ours", "seconds": seconds, "peak_memory_mb": 1.0, "devices": 1,
            "device_memory_mb": 1.0, "device_memory_kind": "live arrays", "device": "cpu",
            "floor_ms_per_token": floor_ms, "weight_bytes": 2 ** 20,
            "bandwidth_bytes_per_s": 1e9}


def test_generate_json_line_carries_the_floor_and_the_peer(monkeypatch, capsys):
    """main's table and last JSON line from canned worker results (nothing timed): 128 new
    tokens in 0.64 s = 5 ms/token, a 4 ms floor (1.25x), HF at 1.28 s = 100 tokens/s."""
    peer = {"system": "HF", "seconds": 1.28, "peak_memory_mb": 1.0}
    out, result = _canned_main(
        monkeypatch, capsys,
        lambda kind, argv, env: _ours_generated(0.64, 4.0) if kind == "ours" else dict(peer),
        ["--model", "gpt", "--mode", "generate", "--batch", "1", "--new-tokens", "128"])
    assert result["ms_per_token"] == pytest.approx(5.0)
    assert result["floor_ms_per_token"] == 4.0
    assert result["floor_ratio"] == pytest.approx(1.25)
    assert result["tokens_per_s"] == pytest.approx(200.0)
    assert result["peer_tokens_per_s"] == pytest.approx(100.0)
    assert "ours 5.00 ms/token; 1.25x the floor (median of 3 rounds); HF 10.00 ms/token" in out


def test_generate_floor_ratio_is_the_median_of_each_rounds_own(monkeypatch, capsys):
    """--rounds 3: each ours worker's ms/token over the floor it measured itself (5/4, 6/4,
    6/6 ms: 1.25x, 1.5x, 1.0x), whose median is the floor ratio, 1.25x; not the median row's
    ms over another worker's floor."""
    runs = iter([(0.64, 4.0), (0.768, 4.0), (0.768, 6.0)])  # (seconds for 128 tokens, floor)
    out, result = _canned_main(
        monkeypatch, capsys, lambda kind, argv, env: _ours_generated(*next(runs)),
        ["--model", "gpt", "--mode", "generate", "--batch", "1", "--new-tokens", "128",
         "--peer", "off", "--rounds", "3"], peer=False)
    assert [r["floor_ratio"] for r in result["rounds"]] == pytest.approx([1.25, 1.5, 1.0])
    assert result["floor_ratio"] == pytest.approx(1.25)
    assert "ours / floor per round: 1.25x, 1.50x, 1.00x" in out
    assert "1.25x the floor (median of 3 rounds)" in out


def test_rounds_alternate_fresh_workers_and_report_the_median_ratio(monkeypatch, capsys):
    """--rounds 3: ours, peer, ours, peer, ours, peer (each a fresh worker); each pair's
    ratio printed, the speed-up is the median ratio, the table each system's median row."""
    ours_s, peer_s, calls = iter([0.5, 0.4, 1.0]), iter([1.0, 1.0, 1.0]), []

    def worker(kind, argv, env):
        calls.append(kind)
        row = {"system": kind, "peak_memory_mb": 1.0, "devices": 1, "device": "cpu",
               "device_memory_mb": 1.0, "device_memory_kind": "live arrays"}
        seconds = next(ours_s if kind == "ours" else peer_s)
        return dict(row, step_ms=1000 * seconds, tokens_per_s=1000 / seconds,
                    flops_per_step=1e9)

    out, result = _canned_main(monkeypatch, capsys, worker, ["--model", "bert", "--rounds", "3"])
    assert calls == ["ours", "peer"] * 3
    assert [r["ratio"] for r in result["rounds"]] == pytest.approx([2.0, 2.5, 1.0])
    assert result["speedup"] == pytest.approx(2.0)  # the median ratio, not a ratio of medians
    assert result["tokens_per_s"] == pytest.approx(2000.0)  # ours' median round
    assert "round 2: ours 2,500, peer 1,000 tokens/s = 2.50x" in out
    assert "2.00x tokens/s (median of 3 alternating rounds)" in out
