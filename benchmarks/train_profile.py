"""Where a train step's time goes: the throughput benchmark's step (the real pre-training
task at its sizes, one device), split into parts, each its own jitted program, alternated
A B C ... A B C ... --rounds times in one process (medians, ms per step).

    python benchmarks/train_profile.py --model gpt --layers 6 --hidden 384 --heads 6 \
        --vocab 50257 --batch 16 --seq-len 256 [--rounds 3]
    python benchmarks/train_profile.py --model bert --layers 4 --hidden 256 --heads 4 \
        --vocab 30522 --batch 32 --seq-len 128

Parts: `step` (the whole train step: forward, backward, AdamW), `forward+backward` (the
loss's value and gradient, no optimizer), `forward` (the loss alone), `optimizer` (AdamW's
update and its application, on the gradients), and for GPT `output layer` (the tied
50,257-way softmax cross-entropy's value and gradient on a fixed hidden state, no layers),
and `batch to device` (the host batch's transfer). Also: the step's matmul FLOPs per second.
"""
from __future__ import annotations

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import throughput  # noqa: E402  (ROOT on sys.path, the task builder, the synthetic batch)


def parts(a) -> dict:
    """name -> a no-argument callable that runs that part once and blocks."""
    import jax
    import jax.numpy as jnp
    import ml_collections
    import optax

    from ssl_jax.models.losses import tied_cross_entropy
    from ssl_jax.train.optim import make_optimizer
    from ssl_jax.train.step import TrainState, make_train_step

    task = throughput.pretrain_task(a)
    host_batch = throughput.synthetic_batch(a)
    batch = jax.device_put(host_batch)
    params = jax.jit(task.init_params)(jax.random.PRNGKey(0))
    run = ml_collections.ConfigDict(dict(num_train_steps=1000, optimizer=throughput.OPTIMIZER))
    tx, schedule = make_optimizer(run)
    # the step donates its state: its own copy of the parameters
    state = TrainState.create(apply_fn=None, params=jax.tree.map(jnp.copy, params), tx=tx)
    step = jax.jit(make_train_step(task, 0, schedule), donate_argnums=(0,))
    rng = jax.random.PRNGKey(1)

    def loss(p):
        stats = task.stats(p, batch, rng, train=True)
        return sum(stats[t][0] / stats[t][1] for t in task.loss_terms)

    forward = jax.jit(loss)
    value_and_grad = jax.jit(jax.value_and_grad(loss))
    grads = value_and_grad(params)[1]
    opt_state = tx.init(params)

    @jax.jit
    def optimizer(params, opt_state, grads):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    holder = {"state": state}

    def whole_step():
        holder["state"], metrics = step(holder["state"], batch)
        jax.block_until_ready(metrics)

    out = {"step": whole_step,
           "forward+backward": lambda: jax.block_until_ready(value_and_grad(params)),
           "forward": lambda: jax.block_until_ready(forward(params)),
           "optimizer": lambda: jax.block_until_ready(optimizer(params, opt_state, grads)),
           "batch to device": lambda: jax.block_until_ready(jax.device_put(host_batch))}
    if a.model == "gpt":
        tokens = a.batch * a.seq_len
        hidden = jax.random.normal(jax.random.PRNGKey(2), (tokens, a.hidden)) * 0.5
        embedding = params["token"]["embedding"]
        targets = jnp.asarray(host_batch["target_ids"].reshape(-1))
        weights = jnp.asarray(host_batch["target_weights"].reshape(-1))
        head = jax.jit(jax.value_and_grad(
            lambda h, e: tied_cross_entropy(h, e, targets, weights)[0], argnums=(0, 1)))
        out["output layer"] = lambda: jax.block_until_ready(head(hidden, embedding))
    return out


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rounds = 3
    if "--rounds" in argv:
        i = argv.index("--rounds")
        rounds = int(argv[i + 1])
        del argv[i:i + 2]
    a = throughput.parse(argv)
    runs = parts(a)
    for fn in runs.values():  # compile, warm caches
        fn()
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            per_round = []
            for _ in range(max(1, a.steps // 3)):
                t = time.perf_counter()
                fn()
                per_round.append(time.perf_counter() - t)
            times[name].append(statistics.median(per_round))
    ms = {name: 1000 * statistics.median(ts) for name, ts in times.items()}
    flops = throughput.train_flops_per_step(a, full_vocab_head=False)
    print(f"train {a.model} L{a.layers}/H{a.hidden}/A{a.heads} vocab {a.vocab} batch {a.batch} "
          f"seq {a.seq_len}; medians of {rounds} alternating rounds")
    print("\n| part | ms per step | share of the step |\n| --- | ---: | ---: |")
    for name, value in ms.items():
        print(f"| {name} | {value:.1f} | {100 * value / ms['step']:.0f}% |")
    print(f"\nstep: {flops / (ms['step'] / 1000) / 1e9:.0f} GFLOP/s of model matmuls")
    return 0


if __name__ == "__main__":
    sys.exit(main())
