"""Throughput: tokens/s, MFU against the measured matmul peak, peak memory, vs HF transformers.

    python benchmarks/throughput.py --model bert --layers 4 --hidden 256 --heads 4 \
        --vocab 30522 --batch 32 --seq-len 128
    python benchmarks/throughput.py --model gpt --layers 6 --hidden 384 --heads 6 \
        --vocab 50257 --batch 16 --seq-len 256
    python benchmarks/throughput.py --model gpt --layers 6 --hidden 384 --heads 6 \
        --vocab 50257 --mode generate --batch 1 --prompt-len 32 --new-tokens 128

--mode train times our jitted train step of the real task (ssl_jax.tasks' compute half of
bert_pretrain / gpt_pretrain, no corpus read; AdamW, dropout 0.1; BERT: MLM gathered at
ceil(0.15*seq) positions + NSP; GPT-2: next-token loss at every position) against HF
transformers' BertForPreTraining / GPT2LMHeadModel with torch.optim.AdamW at the same sizes
and batch. --mode generate (GPT) times greedy decoding of exactly --new-tokens tokens with a KV
cache: ours (ssl_jax.eval.generation.generate_ids, one compiled while_loop) against HF
`model.generate`. Each side runs in its own process (so each peak RSS is its own); the peer
runs when torch and transformers are installed. Prints a table, then as the last line one
JSON object.

Scale settings (--mode train): --dtype bfloat16 (model.dtype; parameters and AdamW state stay
float32; the peer runs under torch.autocast), --attention-impl (model.attention_impl, where
the config has it), --grad-accum k (config.grad_accum_steps: k microbatches in the one
step), --mesh / --rules (the loop's sharded step: ssl_jax.train.loop.build_state and
Parallel.wrap_train_step over a data/fsdp/tensor mesh; on a CPU that many fake devices,
which share its cores). Reported besides tokens/s: tokens/s per device, MFU (model FLOPs
per second over the peak: on a GPU or TPU its bf16 peak by device kind x the devices used,
on a CPU the measured float32 matmul peak of the whole machine; --peak-tflops overrides),
and device memory (the largest device's peak_bytes_in_use where the runtime keeps it, else,
as on the CPU, the bytes of the live arrays' shards on the fullest device after the steps).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # ssl_jax, for the workers and the flag checks
GPT2_CONTEXT = 1024  # GPT-2's n_positions
# Dense bf16 tensor-core peaks (FLOP/s per device) by device_kind substring, first match.
DEVICE_PEAKS = (("H100 PCIe", 756e12), ("H100", 989e12), ("GH200", 989e12), ("H200", 989e12),
                ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12), ("TPU v4", 275e12),
                ("TPU v5 lite", 197e12), ("TPU v5p", 459e12), ("TPU v6 lite", 918e12))
RULES = ("dp", "fsdp", "fsdp_tp")
# Our AdamW (ssl_jax.train.optim) and the peer's torch.optim.AdamW share these settings.
OPTIMIZER = dict(name="adamw", learning_rate=1e-4, end_learning_rate=0.0, warmup_steps=0.1,
                 decay="linear", b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01,
                 grad_clip_norm=1.0)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="bert", choices=["bert", "gpt"])
    p.add_argument("--mode", default="train", choices=["train", "generate"],
                   help="generate: greedy KV-cache decoding (--model gpt only)")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128, help="train: tokens per sequence")
    p.add_argument("--prompt-len", type=int, default=32, help="generate: prompt tokens")
    p.add_argument("--new-tokens", type=int, default=128, help="generate: tokens generated")
    p.add_argument("--steps", type=int, default=10,
                   help="timed train steps or generate calls (the median is reported)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed steps/calls (compile, caches); default 3 (train), 1 (generate)")
    p.add_argument("--peer", choices=["auto", "on", "off"], default="auto",
                   help="HF transformers on the CPU (auto: when installed and JAX runs on the "
                        "CPU)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="train: model.dtype, the compute dtype (parameters stay float32)")
    p.add_argument("--attention-impl", help="train: model.attention_impl (xla | cudnn | auto)")
    p.add_argument("--grad-accum", type=int, default=1,
                   help="train: microbatches per step (config.grad_accum_steps)")
    p.add_argument("--mesh", help="train on a mesh, e.g. data=8 or fsdp=4,tensor=2 (missing "
                                  "axes: 1); on a CPU, that many fake devices")
    p.add_argument("--rules", choices=RULES, help="train: sharding rules (default dp)")
    p.add_argument("--peak-tflops", type=float,
                   help="per-device peak for MFU (default: by device kind, or measured)")
    p.add_argument("--rounds", type=int, default=None,
                   help="alternate ours and the peer this many times, each in a fresh process, "
                        "and report every pair and the median ratio (default 3 with a peer, "
                        "1 without)")
    p.add_argument("--worker", choices=["ours", "peer"], help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.mode == "generate" and a.model != "gpt":
        p.error(f"--mode generate needs a decoder: use --model gpt, not --model {a.model}")
    for name in ("layers", "hidden", "heads", "vocab", "batch", "steps", "prompt_len",
                 "new_tokens"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(a, name)} must be >= 1")
    if a.rounds is not None and a.rounds < 1:
        p.error(f"--rounds {a.rounds} must be >= 1")
    if a.warmup is not None and a.warmup < 0:
        p.error(f"--warmup {a.warmup} must be >= 0")
    if a.hidden % a.heads:
        p.error(f"--heads {a.heads} does not divide --hidden {a.hidden}")
    if a.model == "gpt" and a.mode == "train" and a.seq_len < 2:
        p.error(f"--seq-len {a.seq_len}: next-token prediction needs at least 2 tokens")
    if a.model == "gpt" and a.mode == "generate" and a.prompt_len + a.new_tokens > GPT2_CONTEXT:
        p.error(f"--prompt-len {a.prompt_len} + --new-tokens {a.new_tokens} exceeds GPT-2's "
                f"context of {GPT2_CONTEXT} tokens")
    if a.warmup is None:
        a.warmup = 1 if a.mode == "generate" else 3
    _check_scale_flags(p, a)
    return a


def _check_scale_flags(p: argparse.ArgumentParser, a) -> None:
    """The train-only flags: values, divisibility, and model.attention_impl in the config."""
    from ssl_jax.plan import parse_mesh

    a.mesh_sizes = None
    if a.mode == "generate":
        for flag, value, default in (("--dtype", a.dtype, "float32"),
                                     ("--attention-impl", a.attention_impl, None),
                                     ("--grad-accum", a.grad_accum, 1), ("--mesh", a.mesh, None),
                                     ("--rules", a.rules, None)):
            if value != default:
                p.error(f"{flag} {value} applies to --mode train (generation runs the "
                        f"float32 decoder on one device)")
        return
    if a.grad_accum < 1:
        p.error(f"--grad-accum {a.grad_accum} must be >= 1")
    if a.peak_tflops is not None and not a.peak_tflops > 0:
        p.error(f"--peak-tflops {a.peak_tflops} must be positive")
    shards = 1
    if a.mesh is not None or a.rules is not None:
        try:
            a.mesh_sizes = parse_mesh(a.mesh or "data=1")
        except ValueError as e:
            p.error(str(e))
        shards = a.mesh_sizes["data"] * a.mesh_sizes["fsdp"]
    if a.batch % (shards * a.grad_accum):
        p.error(f"--batch {a.batch} is not divisible by the {shards} batch shard(s) (mesh data "
                f"x fsdp) x --grad-accum {a.grad_accum}")
    if a.attention_impl is not None and "attention_impl" not in pretrain_config(
            a, attention=False).model:
        p.error(f"--attention-impl {a.attention_impl}: this checkout's models have no "
                f"model.attention_impl to set (their attention is the one XLA op)")
    if a.attention_impl is not None:
        try:  # the models' own check (e.g. cudnn where it cannot run), before any compute
            pretrain_task(a)
        except ValueError as e:
            p.error(f"--attention-impl {a.attention_impl}: {e}")


def devices_wanted(a) -> int:
    return math.prod(a.mesh_sizes.values()) if a.mesh_sizes else 1


def predictions(seq_len: int) -> int:
    return math.ceil(0.15 * seq_len)


def gpt_context(a) -> int:
    return max(GPT2_CONTEXT, a.seq_len)


def layer_matmul_params(a) -> int:
    """Weights of one block's qkv + output projections and 4x MLP."""
    return 4 * a.hidden * a.hidden + 2 * a.hidden * 4 * a.hidden


def train_flops_per_step(a, *, full_vocab_head: bool) -> float:
    """Matmul FLOPs of forward + backward (3x forward) for one batch: 6 * N * tokens with the
    tied embedding counted once (the logits matmul), plus attention's q.k and weights.v."""
    H, L, S, B, V = a.hidden, a.layers, a.seq_len, a.batch, a.vocab
    per_token_layer = 2 * layer_matmul_params(a)
    attention = 2 * 2 * S * H  # q.k and weights.v, per token per layer
    if a.model == "gpt":  # logits at every position, no transform layer
        head = 2 * S * H * V
    else:
        head_positions = S if full_vocab_head else predictions(S)
        head = 2 * head_positions * (H * H + H * V)  # transform + tied output, per sequence
    forward = B * (S * L * (per_token_layer + attention) + head)
    return 3.0 * forward


def generate_flops_per_token(a) -> float:
    """2 * N matmul FLOPs per generated token (N: the layers' weights + the tied logits)."""
    return 2.0 * (a.layers * layer_matmul_params(a) + a.hidden * a.vocab)


def matmul_peak_flops(n: int = 2048, reps: int = 10, dtype: str = "float32") -> float:
    import jax
    import jax.numpy as jnp
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def kv_cache_bytes_per_token(a) -> float:
    """Bytes of keys + values (float32) a decoding step reads, at the mean context length
    of the --new-tokens steps (prompt + 0 .. new - 1 tokens), for every row of the batch."""
    mean_context = a.prompt_len + (a.new_tokens - 1) / 2
    return 2 * a.layers * a.batch * mean_context * a.hidden * 4


def streaming_pass(a, params):
    """(run, bytes): run() reads the weights a decoding step reads (every parameter but the
    position table, of which a step reads one row) and returns the seconds the machine's
    best streaming pass among three would take for those bytes: matrix-vector products over
    every weight matrix as decoding reads them (the [vocab, hidden] table as the tied logits
    read it, the layers' kernels as hidden @ kernel), a plain sum over every weight, and a
    sum over the largest one alone (the logits' table: fewest ops, closest to the memory's
    streaming bandwidth), scaled to all the bytes. The fastest is the floor's bandwidth."""
    import jax
    import jax.numpy as jnp

    leaves = [x for path, x in jax.tree_util.tree_leaves_with_path(params)
              if "position" not in jax.tree_util.keystr(path)]
    largest = max(leaves, key=lambda x: x.size)

    @jax.jit
    def matvec(leaves):
        total = jnp.float32(0)
        for x in leaves:
            if x.ndim < 2:
                total += jnp.sum(x)
            elif x.shape[0] == a.vocab:
                total += jnp.sum(x @ jnp.ones((x.shape[1],), x.dtype))
            else:
                w = x.reshape(x.shape[0], -1)
                total += jnp.sum(jnp.ones((w.shape[0],), w.dtype) @ w)
        return total

    @jax.jit
    def plain_sum(leaves):
        return sum(jnp.sum(x) for x in leaves)

    total_bytes = sum(x.size * x.dtype.itemsize for x in leaves)
    passes = ((lambda: matvec(leaves), 1.0), (lambda: plain_sum(leaves), 1.0),
              (lambda: jnp.sum(largest), total_bytes / (largest.size * largest.dtype.itemsize)))

    def run() -> float:
        seconds = []
        for fn, scale in passes:
            start = time.perf_counter()
            fn().block_until_ready()
            seconds.append((time.perf_counter() - start) * scale)
        return min(seconds)

    run.passes = passes  # (fn, scale to all the bytes), for the tests
    return run, total_bytes


def floor_ms_per_token(a, weight_bytes: int, stream_seconds: float) -> float:
    """The memory-bandwidth floor of one decoding step: (the weights + the KV cache at the
    mean context) / the bandwidth the streaming pass reached."""
    return 1000 * (weight_bytes + kv_cache_bytes_per_token(a)) * stream_seconds / weight_bytes


def peak_memory_mb() -> float:
    try:
        import jax
        stats = jax.devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            return stats["peak_bytes_in_use"] / 2 ** 20
    except Exception:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def device_memory_mb(devices) -> tuple[float, str]:
    """The fullest device's memory, MB: its runtime's peak_bytes_in_use where kept (GPU,
    TPU), else (CPU) the bytes of the live arrays' shards on it; and which of the two."""
    import jax

    stats = [d.memory_stats() or {} for d in devices]
    if all("peak_bytes_in_use" in s for s in stats):
        return max(s["peak_bytes_in_use"] for s in stats) / 2 ** 20, "peak_bytes_in_use"
    live = jax.live_arrays()
    return max(sum(shard.data.nbytes for x in live for shard in x.addressable_shards
                   if shard.device == d) for d in devices) / 2 ** 20, "live arrays"


def median_seconds(fn, warmup: int, repeats: int):
    """Runs fn() warmup times untimed, then repeats times; (median seconds, last result).
    fn must block until its work is done."""
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def synthetic_batch(a, seed=0):
    import numpy as np

    from ssl_jax.data.batching import with_example_weight
    rng = np.random.default_rng(seed)
    B, S = a.batch, a.seq_len
    if a.model == "gpt":  # positions 0..S-2 predict tokens 1..S-1, as HF's labels=input_ids
        ids = rng.integers(0, a.vocab, (B, S)).astype(np.int32)
        weights = np.broadcast_to((np.arange(S) < S - 1).astype(np.float32), (B, S)).copy()
        return with_example_weight({"input_ids": ids, "target_ids": np.roll(ids, -1, axis=1),
                                    "target_weights": weights})
    P = predictions(S)
    segment = (np.arange(S) >= S // 2).astype(np.int32)
    return with_example_weight({
        "input_ids": rng.integers(5, a.vocab, (B, S)).astype(np.int32),
        "segment_ids": np.broadcast_to(segment, (B, S)).copy(),
        "input_mask": np.ones((B, S), np.int32),
        "masked_positions": np.sort(np.stack([rng.choice(np.arange(1, S), P, replace=False)
                                              for _ in range(B)]), 1).astype(np.int32),
        "masked_ids": rng.integers(5, a.vocab, (B, P)).astype(np.int32),
        "masked_weights": np.ones((B, P), np.float32),
        "next_sentence_label": rng.integers(0, 2, B).astype(np.int32),
    })


def synthetic_prompts(a, seed=0):
    import numpy as np
    return np.random.default_rng(seed).integers(0, a.vocab, (a.batch, a.prompt_len))


# --- ours ------------------------------------------------------------------------------------
def gpt_config(a):
    from ssl_jax.models.gpt import GptConfig
    return GptConfig(vocab_size=a.vocab, hidden_size=a.hidden, num_layers=a.layers,
                     num_heads=a.heads, mlp_dim=4 * a.hidden, max_len=gpt_context(a),
                     pre_ln=True, dropout_rate=0.1, attention_dropout_rate=0.1)


def pretrain_config(a, *, attention: bool = True):
    """The real pre-training task's experiment config at the benchmark's sizes (--layers/
    --hidden/--heads/--seq-len, --batch), our AdamW settings, and the scale flags."""
    from ssl_jax import config as config_lib

    sizes = [("model.num_layers", a.layers), ("model.hidden_size", a.hidden),
             ("model.num_heads", a.heads), ("model.mlp_dim", 4 * a.hidden),
             ("model.dropout_rate", 0.1), ("model.attention_dropout_rate", 0.1),
             ("max_seq_len", a.seq_len), ("batch_size", a.batch)]
    if a.model == "gpt":
        spec = "experiments/gpt/pretrain.py:gpt-tiny"
        sizes += [("model.max_len", gpt_context(a)), ("model.pre_ln", True)]
    else:  # MLM at ceil(0.15 * seq) positions + NSP
        spec = "experiments/bert/pretrain.py:tiny,mask_rate=0.15,nsp=True"
        sizes += [("model.max_position_embeddings", max(512, a.seq_len))]
    sizes += [("num_train_steps", 1000), ("model.dtype", a.dtype)]
    sizes += [(f"optimizer.{k}", v) for k, v in OPTIMIZER.items() if k != "name"]
    if a.grad_accum > 1:
        sizes.append(("grad_accum_steps", a.grad_accum))
    if a.mesh_sizes:
        sizes += [(f"mesh.{axis}", n) for axis, n in a.mesh_sizes.items()]
        sizes.append(("sharding_rules", a.rules or "dp"))
    config = config_lib.load_config(os.path.join(ROOT, spec),
                                    [(k, str(v)) for k, v in sizes])
    if attention and a.attention_impl is not None:  # parse checked that the config has it
        config.model.attention_impl = a.attention_impl
    return config


def pretrain_task(a):
    """The real pre-training task's compute half (ssl_jax.tasks: its model, loss and stats)
    at the benchmark's sizes, built without reading any corpus."""
    from ssl_jax.tasks import get_compute

    return get_compute(f"{a.model}_pretrain")(pretrain_config(a), vocab_size=a.vocab)


def run_ours_train(a) -> dict:
    import jax
    import ml_collections

    from ssl_jax.train.optim import make_optimizer
    from ssl_jax.train.step import TrainState, make_train_step

    task = pretrain_task(a)
    if a.mesh_sizes is None:  # one device, plain jit (the default)
        batch = jax.device_put(synthetic_batch(a))
        params = jax.jit(task.init_params)(jax.random.PRNGKey(0))
        run = ml_collections.ConfigDict(dict(num_train_steps=1000, optimizer=OPTIMIZER))
        tx, schedule = make_optimizer(run)
        state = TrainState.create(apply_fn=None, params=params, tx=tx)
        step = jax.jit(make_train_step(task, 0, schedule, accumulate=a.grad_accum),
                       donate_argnums=(0,))
        devices = jax.devices()[:1]
    else:  # the loop's sharded state and step over the mesh
        from ssl_jax.train.loop import build_state
        from ssl_jax.train.sharding import Parallel

        parallel = Parallel.from_config(task.config)
        state, shardings, schedule = build_state(task.config, task, parallel, fresh=False)
        step = parallel.wrap_train_step(
            make_train_step(task, 0, schedule, parallel.axis_name, a.grad_accum), shardings)
        batch = parallel.put_batch(synthetic_batch(a))
        devices = list(parallel.mesh.devices.flat)

    def one_step():
        nonlocal state
        state, metrics = step(state, batch)
        return jax.block_until_ready(metrics)

    seconds, metrics = median_seconds(one_step, a.warmup, a.steps)
    memory, memory_kind = device_memory_mb(devices)
    return {"step_ms": 1000 * seconds, "tokens_per_s": a.batch * a.seq_len / seconds,
            "flops_per_step": train_flops_per_step(a, full_vocab_head=False),
            "peak_memory_mb": peak_memory_mb(), "device_memory_mb": memory,
            "device_memory_kind": memory_kind, "devices": len(devices),
            "loss": float(metrics["loss"])}


def run_ours_generate(a) -> dict:
    import jax
    from ssl_jax.eval.generation import generate_ids
    from ssl_jax.models.gpt import GptLM
    from ssl_jax.models.partitioning import init_unboxed

    config = gpt_config(a)
    prompts = synthetic_prompts(a).tolist()
    params = init_unboxed(GptLM(config), jax.random.PRNGKey(0), jax.numpy.asarray(prompts))["params"]

    def generate():
        return generate_ids(config, params, prompts, max_new_tokens=a.new_tokens,
                            sampling=None, stop_id=None)  # returns host lists: blocks

    stream, weight_bytes = streaming_pass(a, params)
    # generation and the streaming passes alternate, so both see the same machine load
    for _ in range(max(a.warmup, 1)):
        generate(), stream()
    times, streams = [], []
    for _ in range(a.steps):
        start = time.perf_counter()
        out = generate()
        times.append(time.perf_counter() - start)
        streams.append(stream())
    seconds, stream_seconds = statistics.median(times), statistics.median(streams)
    generated = sorted({len(row) for row in out})
    if len(out) != a.batch or generated != [a.new_tokens]:
        raise RuntimeError(f"ours generated {generated} tokens per row, not {a.new_tokens}")
    memory, memory_kind = device_memory_mb(jax.devices()[:1])
    return {"seconds": seconds, "peak_memory_mb": peak_memory_mb(), "devices": 1,
            "device_memory_mb": memory, "device_memory_kind": memory_kind,
            "weight_bytes": weight_bytes, "bandwidth_bytes_per_s": weight_bytes / stream_seconds,
            "floor_ms_per_token": floor_ms_per_token(a, weight_bytes, stream_seconds)}


def run_ours(a) -> dict:
    sys.path.insert(0, ROOT)
    import jax

    r = run_ours_generate(a) if a.mode == "generate" else run_ours_train(a)
    r.update(system="ssl_jax (JAX/Flax, jit)", device=str(jax.devices()[0].platform),
             jax=jax.__version__)
    return r


# --- peer ------------------------------------------------------------------------------------
def _peer_bert(a, torch, transformers):
    """(model, forward kwargs) for BertForPreTraining on our batch."""
    import numpy as np
    config = transformers.BertConfig(
        vocab_size=a.vocab, hidden_size=a.hidden, num_hidden_layers=a.layers,
        num_attention_heads=a.heads, intermediate_size=4 * a.hidden,
        max_position_embeddings=max(512, a.seq_len))
    b = synthetic_batch(a)
    labels = np.full((a.batch, a.seq_len), -100, np.int64)
    np.put_along_axis(labels, b["masked_positions"], b["masked_ids"], 1)
    inputs = dict(input_ids=torch.tensor(b["input_ids"], dtype=torch.long),
                  token_type_ids=torch.tensor(b["segment_ids"], dtype=torch.long),
                  attention_mask=torch.tensor(b["input_mask"], dtype=torch.long),
                  labels=torch.tensor(labels),
                  next_sentence_label=torch.tensor(b["next_sentence_label"], dtype=torch.long))
    return transformers.BertForPreTraining(config), inputs


def _peer_gpt_model(a, transformers):
    config = transformers.GPT2Config(
        vocab_size=a.vocab, n_positions=gpt_context(a), n_embd=a.hidden, n_layer=a.layers,
        n_head=a.heads, n_inner=4 * a.hidden, resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)
    return transformers.GPT2LMHeadModel(config)


def run_peer_train(a, torch, transformers) -> dict:
    if a.model == "gpt":
        model = _peer_gpt_model(a, transformers)
        ids = torch.tensor(synthetic_batch(a)["input_ids"], dtype=torch.long)
        inputs = dict(input_ids=ids, labels=ids)  # HF shifts the labels internally
    else:
        model, inputs = _peer_bert(a, torch, transformers)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=OPTIMIZER["learning_rate"],
                            betas=(OPTIMIZER["b1"], OPTIMIZER["b2"]), eps=OPTIMIZER["eps"],
                            weight_decay=OPTIMIZER["weight_decay"])

    import contextlib
    cast = (torch.autocast("cpu", dtype=torch.bfloat16) if a.dtype == "bfloat16"
            else contextlib.nullcontext())  # --dtype bfloat16: mixed precision, fp32 weights

    def step():
        with cast:
            loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), OPTIMIZER["grad_clip_norm"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    seconds, loss = median_seconds(step, a.warmup, a.steps)
    return {"model_class": type(model).__name__, "step_ms": 1000 * seconds,
            "tokens_per_s": a.batch * a.seq_len / seconds,
            "flops_per_step": train_flops_per_step(a, full_vocab_head=True),
            "loss": float(loss)}


def run_peer_generate(a, torch, transformers) -> dict:
    model = _peer_gpt_model(a, transformers)
    model.eval()
    ids = torch.tensor(synthetic_prompts(a), dtype=torch.long)
    mask = torch.ones_like(ids)

    def generate():
        with torch.no_grad():
            return model.generate(ids, attention_mask=mask, max_new_tokens=a.new_tokens,
                                  min_new_tokens=a.new_tokens, do_sample=False, use_cache=True,
                                  pad_token_id=0)

    seconds, out = median_seconds(generate, max(a.warmup, 1), a.steps)
    if tuple(out.shape) != (a.batch, a.prompt_len + a.new_tokens):
        raise RuntimeError(f"peer returned {tuple(out.shape)}, expected "
                           f"{(a.batch, a.prompt_len + a.new_tokens)}")
    return {"model_class": type(model).__name__, "seconds": seconds}


def run_peer(a) -> dict:
    import torch
    import transformers

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count())
    r = (run_peer_generate if a.mode == "generate" else run_peer_train)(a, torch, transformers)
    r.update(system=f"HF transformers {r.pop('model_class')} (PyTorch, eager)",
             peak_memory_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
             device="cpu", torch=torch.__version__, transformers=transformers.__version__)
    return r


# --- driver ----------------------------------------------------------------------------------
def _worker(kind: str, argv: list[str], env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--worker", kind],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def table_peak(device_kind: str) -> tuple[str, float] | None:
    """(table entry, dense bf16 FLOP/s) of the first DEVICE_PEAKS entry in device_kind."""
    for kind, peak in DEVICE_PEAKS:
        if kind.lower() in device_kind.lower():
            return kind, peak
    return None


def device_peak(a) -> dict:
    """What MFU is measured against, from this process's JAX (it lets the workers have the
    accelerator's memory): per-device peak FLOP/s, its source, the platform and device."""
    os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # this process only (see main)
    import jax

    device = jax.devices()[0]
    out = {"platform": device.platform, "device_kind": device.device_kind,
           "device_count": jax.device_count()}
    if a.peak_tflops is not None:
        return dict(out, peak=a.peak_tflops * 1e12, source="--peak-tflops")
    if device.platform == "cpu":
        return dict(out, peak=matmul_peak_flops(), source="measured float32 matmul, the whole CPU")
    known = table_peak(device.device_kind)
    if known is not None:
        return dict(out, peak=known[1], source=f"dense bf16 peak of {known[0]}")
    return dict(out, peak=matmul_peak_flops(8192, dtype="bfloat16"),
                source=f"measured bfloat16 matmul ({device.device_kind} is not in the table)")


def _finish(a, r: dict, peak: float) -> None:
    """Adds the per-mode derived columns: tokens/s, time column, MFU (over `peak`, the
    FLOP/s of all the devices the row ran on), tokens/s per device."""
    if a.mode == "generate":
        new = a.batch * a.new_tokens
        r["tokens_per_s"] = new / r["seconds"]
        r["ms_per_token"] = 1000 * r["seconds"] / a.new_tokens  # per decoding step (all rows)
        r["mfu"] = generate_flops_per_token(a) * new / r["seconds"] / peak
    else:
        r["mfu"] = r["flops_per_step"] / (r["step_ms"] / 1000) / peak
    r["tokens_per_s_per_device"] = r["tokens_per_s"] / r.get("devices", 1)


def _median_row(rows: list[dict]) -> dict:
    """The row of the median tokens/s (the lower middle of an even count)."""
    ranked = sorted(rows, key=lambda r: r["tokens_per_s"])
    return ranked[(len(ranked) - 1) // 2]


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parse(argv)
    if a.worker:
        print(json.dumps(run_ours(a) if a.worker == "ours" else run_peer(a)))
        return 0
    have_peer = all(importlib.util.find_spec(m) for m in ("torch", "transformers"))
    if a.peer == "on" and not have_peer:
        print("error: --peer on needs torch and transformers installed", file=sys.stderr)
        return 2
    env = dict(os.environ)  # the workers', before device_peak changes this process's
    hw = device_peak(a)
    peak, on_cpu, devices = hw["peak"], hw["platform"] == "cpu", devices_wanted(a)
    if on_cpu and devices > 1:  # fake CPU devices, sharing the cores
        flags = [f for f in env.get("XLA_FLAGS", "").split()
                 if not f.startswith("--xla_force_host_platform_device_count")]
        env["XLA_FLAGS"] = " ".join(flags + [
            f"--xla_force_host_platform_device_count={devices}"])
    elif devices > hw["device_count"]:
        print(f"error: --mesh {a.mesh} needs {devices} devices; this machine has "
              f"{hw['device_count']} {hw['platform']}", file=sys.stderr)
        return 2
    if a.peer == "on" and not on_cpu:
        print(f"error: --peer on: the peer runs on the CPU; JAX here runs on "
              f"{hw['platform']}", file=sys.stderr)
        return 2
    with_peer = a.peer != "off" and have_peer and on_cpu
    rounds = a.rounds if a.rounds is not None else (3 if with_peer else 1)
    pairs = []  # (ours, peer or None) per round; ours first in each, fresh processes
    for _ in range(rounds):
        pair = [_worker("ours", argv, env)] + ([_worker("peer", argv, env)] if with_peer else [])
        for r in pair:  # a CPU's measured peak is the whole machine's, whatever its fake devices
            _finish(a, r, peak if on_cpu else peak * r.get("devices", 1))
        pairs.append(pair)
    # the table: each system's median round (by tokens/s)
    rows = [_median_row([pair[i] for pair in pairs]) for i in range(len(pairs[0]))]
    generate = a.mode == "generate"
    shape = (f"batch {a.batch} prompt {a.prompt_len} + {a.new_tokens} new tokens (greedy, "
             f"KV cache)" if generate else f"batch {a.batch} seq {a.seq_len}")
    hardware = (f"measured float32 matmul peak {peak / 1e9:.0f} GFLOP/s, {os.cpu_count()} CPUs"
                if on_cpu and a.peak_tflops is None else
                f"{hw['device_kind']}: {peak / 1e12:.0f} TFLOP/s per device ({hw['source']})")
    print(f"{a.mode} {a.model} L{a.layers}/H{a.hidden}/A{a.heads} vocab {a.vocab} {shape}; "
          f"{hardware}")
    layout = (f"mesh {a.mesh or 'data=1'} ({rows[0]['devices']} {hw['platform']} device(s)"
              f"{', fake: they share the cores' if on_cpu and devices > 1 else ''}), rules "
              f"{a.rules or 'dp'}" if a.mesh_sizes else "one device, plain jit")
    if not generate:
        print(f"dtype {a.dtype}, attention {a.attention_impl or 'the config default'}, "
              f"grad accum {a.grad_accum}, {layout}")
    print()
    time_column = "ms/token" if generate else "step ms"
    print(f"| system | {'new ' if generate else ''}tokens/s | per device | {time_column} | MFU | "
          "peak memory MB | device memory MB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        ms = r["ms_per_token"] if generate else r["step_ms"]
        device_memory = f"{r['device_memory_mb']:.0f}" if "device_memory_mb" in r else "-"
        print(f"| {r['system']} | {r['tokens_per_s']:.0f} | {r['tokens_per_s_per_device']:.0f} | "
              f"{ms:.1f} | {100 * r['mfu']:.1f}% | {r['peak_memory_mb']:.0f} | "
              f"{device_memory} |")
    ours = rows[0]
    result = {"model": a.model, "mode": a.mode, "layers": a.layers, "hidden": a.hidden,
              "heads": a.heads, "vocab": a.vocab, "batch": a.batch}
    result.update({"prompt_len": a.prompt_len, "new_tokens": a.new_tokens,
                   "ms_per_token": ours["ms_per_token"]} if generate else
                  {"seq_len": a.seq_len, "step_ms": ours["step_ms"]})
    result.update({"tokens_per_s": ours["tokens_per_s"], "mfu": ours["mfu"],
                   "peak_memory_mb": ours["peak_memory_mb"], "matmul_peak_flops": peak,
                   "device": ours["device"], "device_kind": hw["device_kind"],
                   "peak_flops_per_device": peak, "peak_source": hw["source"],
                   "devices": ours["devices"],
                   "tokens_per_s_per_device": ours["tokens_per_s_per_device"],
                   "device_memory_mb": ours["device_memory_mb"],
                   "device_memory_kind": ours["device_memory_kind"], "dtype": a.dtype,
                   "attention_impl": a.attention_impl, "grad_accum": a.grad_accum,
                   "mesh": a.mesh_sizes, "rules": (a.rules or "dp") if a.mesh_sizes else None})
    result["rounds"] = [{"tokens_per_s": pair[0]["tokens_per_s"],
                         **({"floor_ratio": pair[0]["ms_per_token"] / pair[0]["floor_ms_per_token"]}
                            if generate else {}),
                         **({"peer_tokens_per_s": pair[1]["tokens_per_s"],
                             "ratio": pair[0]["tokens_per_s"] / pair[1]["tokens_per_s"]}
                            if len(pair) > 1 else {})} for pair in pairs]
    if len(rows) > 1:
        peer = rows[1]
        result["peer"] = {k: peer[k] for k in ("system", "tokens_per_s", "mfu", "peak_memory_mb",
                                               "ms_per_token" if generate else "step_ms")}
        result["peer_tokens_per_s"] = peer["tokens_per_s"]
        # the median of the rounds' ratios (each pair ran back to back)
        result["speedup"] = result["speedup_vs_peer"] = statistics.median(
            r["ratio"] for r in result["rounds"])
        if rounds > 1:
            print()
            for i, r in enumerate(result["rounds"], 1):
                print(f"round {i}: ours {r['tokens_per_s']:,.0f}, peer "
                      f"{r['peer_tokens_per_s']:,.0f} tokens/s = {r['ratio']:.2f}x")
        print(f"\nspeed-up vs peer (ours/peer): {result['speedup']:.2f}x "
              f"{'new ' if generate else ''}tokens/s"
              f"{f' (median of {rounds} alternating rounds)' if rounds > 1 else ''}")
    if generate:  # the memory-bandwidth floor, measured in each ours worker's process
        result.update({k: ours[k] for k in ("floor_ms_per_token", "weight_bytes",
                                            "bandwidth_bytes_per_s")})
        # the median of the rounds' own ratios: each worker's ms/token over the floor it
        # measured alternately with it, under the same load (the host's rate varies)
        result["floor_ratio"] = statistics.median(r["floor_ratio"] for r in result["rounds"])
        result.setdefault("peer_tokens_per_s", None)
        peer_line = (f"; HF {rows[1]['ms_per_token']:.2f} ms/token "
                     f"({rows[1]['tokens_per_s']:.0f} tokens/s)" if len(rows) > 1 else "")
        if rounds > 1:
            print("ours / floor per round: " + ", ".join(
                f"{r['floor_ratio']:.2f}x" for r in result["rounds"]))
        print(f"memory-bandwidth floor: {ours['weight_bytes'] / 2 ** 20:.0f} MiB of weights + "
              f"the KV cache at the mean context, streamed at "
              f"{ours['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s = {ours['floor_ms_per_token']:.2f}"
              f" ms/token; ours {ours['ms_per_token']:.2f} ms/token; "
              f"{result['floor_ratio']:.2f}x the floor"
              f"{f' (median of {rounds} rounds)' if rounds > 1 else ''}{peer_line}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
