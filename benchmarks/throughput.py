"""Training throughput: tokens/s, MFU against the measured matmul peak, peak memory.

    python benchmarks/throughput.py --model bert --layers 4 --hidden 256 --heads 4 \
        --vocab 30522 --batch 32 --seq-len 128

Runs our jitted train step (AdamW, dropout 0.1, MLM gathered at ceil(0.15*seq) positions + NSP)
and, when torch and transformers are installed, HF transformers' BertForPreTraining with
torch.optim.AdamW at the same sizes and batch, each in its own process (so each peak RSS is
its own). Prints a table, then as the last line one JSON object.
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


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="bert", choices=["bert", "gpt"])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed steps (the median is reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps (compile, caches)")
    p.add_argument("--peer", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--worker", choices=["ours", "peer"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.model == "gpt":
        p.error("--model gpt: the GPT decoders are not implemented yet (GPT issue)")
    if args.hidden % args.heads:
        p.error(f"--heads {args.heads} does not divide --hidden {args.hidden}")
    return args


def predictions(seq_len: int) -> int:
    return math.ceil(0.15 * seq_len)


def train_flops_per_step(a, *, full_vocab_head: bool) -> float:
    """Matmul FLOPs of forward + backward (3x forward) for one batch."""
    H, L, S, B, V = a.hidden, a.layers, a.seq_len, a.batch, a.vocab
    per_token_layer = 2 * (4 * H * H + 2 * H * 4 * H)  # qkv+out projections, MLP
    attention = 2 * 2 * S * H  # q.k and weights.v, per token per layer
    head_positions = S if full_vocab_head else predictions(S)
    head = 2 * head_positions * (H * H + H * V)  # transform + tied output, per sequence
    forward = B * (S * L * (per_token_layer + attention) + head)
    return 3.0 * forward


def matmul_peak_flops(n: int = 2048, reps: int = 10) -> float:
    import jax
    import jax.numpy as jnp
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def peak_memory_mb() -> float:
    try:
        import jax
        stats = jax.devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            return stats["peak_bytes_in_use"] / 2 ** 20
    except Exception:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def synthetic_batch(a, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    B, S, P = a.batch, a.seq_len, predictions(a.seq_len)
    segment = (np.arange(S) >= S // 2).astype(np.int32)
    return {
        "input_ids": rng.integers(5, a.vocab, (B, S)).astype(np.int32),
        "segment_ids": np.broadcast_to(segment, (B, S)).copy(),
        "input_mask": np.ones((B, S), np.int32),
        "masked_positions": np.sort(np.stack([rng.choice(np.arange(1, S), P, replace=False)
                                              for _ in range(B)]), 1).astype(np.int32),
        "masked_ids": rng.integers(5, a.vocab, (B, P)).astype(np.int32),
        "masked_weights": np.ones((B, P), np.float32),
        "next_sentence_label": rng.integers(0, 2, B).astype(np.int32),
    }


def run_ours(a) -> dict:
    sys.path.insert(0, ROOT)
    import jax
    import ml_collections

    from ssl_jax.models.bert import BertConfig, BertForPreTraining
    from ssl_jax.tasks.bert_pretrain import model_inputs, pretraining_stats
    from ssl_jax.train.optim import make_optimizer
    from ssl_jax.train.step import TrainState, make_train_step

    config = BertConfig(vocab_size=a.vocab, hidden_size=a.hidden, num_layers=a.layers,
                        num_heads=a.heads, mlp_dim=4 * a.hidden,
                        max_position_embeddings=max(512, a.seq_len))
    model = BertForPreTraining(config, deterministic=False)

    class Synthetic:  # the task interface the train step needs
        loss_terms = ("mlm_loss", "nsp_loss")

        @staticmethod
        def stats(params, batch, rng, *, train):
            return pretraining_stats(model, params, batch, rng, train=train)

    run = ml_collections.ConfigDict(dict(num_train_steps=1000, optimizer=dict(
        name="adamw", learning_rate=1e-4, end_learning_rate=0.0, warmup_steps=0.1,
        decay="linear", b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01, grad_clip_norm=1.0)))
    tx, schedule = make_optimizer(run)
    batch = jax.device_put(synthetic_batch(a))
    params = BertForPreTraining(config).init(jax.random.PRNGKey(0),
                                             **model_inputs(batch))["params"]
    state = TrainState.create(apply_fn=model.apply, params=params, tx=tx)
    step = jax.jit(make_train_step(Synthetic, 0, schedule), donate_argnums=(0,))
    for _ in range(a.warmup):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(a.steps):
        t = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t)
    seconds = statistics.median(times)
    return {"system": "ssl_jax (JAX/Flax, jit)", "step_ms": 1000 * seconds,
            "tokens_per_s": a.batch * a.seq_len / seconds,
            "flops_per_step": train_flops_per_step(a, full_vocab_head=False),
            "peak_memory_mb": peak_memory_mb(), "loss": float(metrics["loss"]),
            "device": str(jax.devices()[0].platform), "jax": jax.__version__}


def run_peer(a) -> dict:
    import numpy as np
    import torch
    import transformers

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count())
    config = transformers.BertConfig(
        vocab_size=a.vocab, hidden_size=a.hidden, num_hidden_layers=a.layers,
        num_attention_heads=a.heads, intermediate_size=4 * a.hidden,
        max_position_embeddings=max(512, a.seq_len))
    model = transformers.BertForPreTraining(config)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-6,
                            weight_decay=0.01)
    b = synthetic_batch(a)
    labels = np.full((a.batch, a.seq_len), -100, np.int64)
    np.put_along_axis(labels, b["masked_positions"], b["masked_ids"], 1)
    inputs = dict(input_ids=torch.tensor(b["input_ids"], dtype=torch.long),
                  token_type_ids=torch.tensor(b["segment_ids"], dtype=torch.long),
                  attention_mask=torch.tensor(b["input_mask"], dtype=torch.long),
                  labels=torch.tensor(labels),
                  next_sentence_label=torch.tensor(b["next_sentence_label"], dtype=torch.long))

    def step():
        loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(a.warmup):
        step()
    times = []
    for _ in range(a.steps):
        t = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t)
    seconds = statistics.median(times)
    return {"system": "HF transformers BertForPreTraining (PyTorch, eager)",
            "step_ms": 1000 * seconds, "tokens_per_s": a.batch * a.seq_len / seconds,
            "flops_per_step": train_flops_per_step(a, full_vocab_head=True),
            "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "loss": float(loss), "device": "cpu", "torch": torch.__version__,
            "transformers": transformers.__version__}


def _worker(kind: str, argv: list[str]) -> dict:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--worker", kind],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


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
    peak = matmul_peak_flops()
    rows = [_worker("ours", argv)]
    if a.peer != "off" and have_peer:
        rows.append(_worker("peer", argv))
    for r in rows:
        r["mfu"] = r["flops_per_step"] / (r["step_ms"] / 1000) / peak
    print(f"model bert L{a.layers}/H{a.hidden}/A{a.heads} vocab {a.vocab} batch {a.batch} "
          f"seq {a.seq_len}; measured float32 matmul peak {peak / 1e9:.0f} GFLOP/s, "
          f"{os.cpu_count()} CPUs\n")
    print("| system | tokens/s | step ms | MFU | peak memory MB |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['system']} | {r['tokens_per_s']:.0f} | {r['step_ms']:.1f} | "
              f"{100 * r['mfu']:.1f}% | {r['peak_memory_mb']:.0f} |")
    ours = rows[0]
    result = {"model": a.model, "layers": a.layers, "hidden": a.hidden, "heads": a.heads,
              "vocab": a.vocab, "batch": a.batch, "seq_len": a.seq_len,
              "tokens_per_s": ours["tokens_per_s"], "mfu": ours["mfu"],
              "peak_memory_mb": ours["peak_memory_mb"], "matmul_peak_flops": peak,
              "step_ms": ours["step_ms"], "device": ours["device"]}
    if len(rows) > 1:
        peer = rows[1]
        result["peer"] = {k: peer[k] for k in ("system", "tokens_per_s", "mfu",
                                               "peak_memory_mb", "step_ms")}
        result["speedup_vs_peer"] = ours["tokens_per_s"] / peer["tokens_per_s"]
        print(f"\nspeed-up vs peer: {result['speedup_vs_peer']:.2f}x tokens/s")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
