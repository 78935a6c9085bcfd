"""Where a decoded token's time goes: batch-1 greedy decoding of the throughput benchmark's
GPT-2-style model, split into parts, each timed as its own jitted while_loop of --new-tokens
steps, alternated A B C ... A B C ... --rounds times (medians), next to the memory-bandwidth
floor measured in the same process (benchmarks/throughput.py's `streaming_pass`, timed in
the same rounds).

    python benchmarks/decode_profile.py [--layers 6 --hidden 384 --heads 6 --vocab 50257
                                         --prompt-len 32 --new-tokens 128 --rounds 5]

Parts: `generate` (generate_ids, the whole program), `layers` (the decode-mode model up to
the final LayerNorm, with its KV cache; no logits), `logits` (the tied 50257-way logits of a
carried hidden state + the greedy token + its embedding row; no layers), `logits_int8` and
`logits_bf16` (the same with the table stored as weight-only int8, a float32 scale per row,
converted at the product, or as bfloat16: whether XLA:CPU reads fewer bytes faster), `loop`
(an empty while_loop of the same trip count). ms/token = the loop's time / --new-tokens.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import throughput  # noqa: E402  (ROOT on sys.path, the model builder, the floor)


def parts(a):
    """(weight bytes, the streaming pass, name -> a no-argument callable that runs one whole
    loop and blocks)."""
    import jax
    import jax.numpy as jnp

    from ssl_jax.eval.generation import generate_ids, greedy_token
    from ssl_jax.models.gpt import GptLM
    from ssl_jax.models.partitioning import init_unboxed

    config = throughput.gpt_config(a)
    prompts = throughput.synthetic_prompts(a).tolist()
    params = init_unboxed(GptLM(config), jax.random.PRNGKey(0), jnp.asarray(prompts))["params"]
    n, total = a.new_tokens, a.prompt_len + a.new_tokens
    model = GptLM(config, decode=True)
    cache0 = jax.eval_shape(lambda: init_unboxed(
        model, jax.random.PRNGKey(0), jnp.zeros((1, total), jnp.int32)))["cache"]

    @jax.jit
    def layers(params, prompt):
        cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), cache0)
        _, v = model.apply({"params": params, "cache": cache}, prompt, return_hidden=True,
                           mutable=["cache"])

        def body(state):
            step, token, cache = state
            hidden, v = model.apply({"params": params, "cache": cache}, token[:, None],
                                    return_hidden=True, mutable=["cache"])
            # a data-dependent next token, without the logits
            nxt = greedy_token(hidden[:, -1])
            return step + 1, nxt, v["cache"]

        return jax.lax.while_loop(lambda s: s[0] < n, body,
                                  (jnp.int32(0), prompt[:, -1], v["cache"]))[1]

    def logits_loop(scores_of):
        """A jitted loop: the logits scores_of(weights, x) [1, vocab] of a carried hidden
        state, their greedy token, its float32 embedding row as the next state."""
        @jax.jit
        def run(weights, table, prompt):
            def body(state):
                step, x = state
                return step + 1, table[greedy_token(scores_of(weights, x))]

            return jax.lax.while_loop(lambda s: s[0] < n, body,
                                      (jnp.int32(0), table[prompt[:, -1]]))[1]
        return run

    contract = (((1,), (1,)), ((), ()))  # x [1, hidden] . table [vocab, hidden]
    table = params["token"]["embedding"]
    scale = jnp.max(jnp.abs(table), axis=1) / 127  # weight-only int8: a scale per row
    table_int8 = jnp.round(table / scale[:, None]).astype(jnp.int8)
    table_bf16 = table.astype(jnp.bfloat16)
    logits = logits_loop(lambda w, x: jax.lax.dot_general(x, w, contract))
    logits_int8 = logits_loop(lambda w, x: jax.lax.dot_general(
        x, w[0].astype(jnp.float32), contract) * w[1][None, :])
    logits_bf16 = logits_loop(lambda w, x: jax.lax.dot_general(
        x.astype(jnp.bfloat16), w, contract, preferred_element_type=jnp.float32))

    @jax.jit
    def loop(prompt):
        return jax.lax.while_loop(lambda s: s[0] < n, lambda s: (s[0] + 1, s[1] + 1),
                                  (jnp.int32(0), prompt[:, -1]))[1]

    prompt = jnp.asarray(prompts, jnp.int32)
    stream, weight_bytes = throughput.streaming_pass(a, params)
    return weight_bytes, stream, {
        "generate": lambda: generate_ids(config, params, prompts, max_new_tokens=n),
        "layers": lambda: layers(params, prompt).block_until_ready(),
        "logits": lambda: logits(table, table, prompt).block_until_ready(),
        "logits_int8": lambda: logits_int8((table_int8, scale), table, prompt).block_until_ready(),
        "logits_bf16": lambda: logits_bf16(table_bf16, table, prompt).block_until_ready(),
        "loop": lambda: loop(prompt).block_until_ready(),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--hidden", type=int, default=384)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args(argv)
    if min(a.layers, a.hidden, a.heads, a.vocab, a.prompt_len, a.new_tokens, a.rounds) < 1:
        p.error("every size and --rounds must be >= 1")
    if a.hidden % a.heads:
        p.error(f"--heads {a.heads} does not divide --hidden {a.hidden}")
    a.batch, a.seq_len = 1, 2  # the throughput model builder's other fields
    weight_bytes, stream, runs = parts(a)
    for fn in (stream, *runs.values()):  # compile + warm up
        fn()
    times = {name: [] for name in runs}
    floors = []
    for _ in range(a.rounds):
        floors.append(throughput.floor_ms_per_token(a, weight_bytes, stream()))
        for name, fn in runs.items():
            t = time.perf_counter()
            fn()
            times[name].append(1000 * (time.perf_counter() - t) / a.new_tokens)
    floor = statistics.median(floors)
    print(f"batch-1 greedy decode, L{a.layers}/H{a.hidden}/A{a.heads} vocab {a.vocab}, prompt "
          f"{a.prompt_len} + {a.new_tokens} new; medians of {a.rounds} alternating rounds")
    print(f"floor (bytes per token / streaming bandwidth): {floor:.2f} ms/token")
    print("| part | ms/token | x floor |")
    print("| --- | ---: | ---: |")
    for name, ts in times.items():
        ms = statistics.median(ts)
        print(f"| {name} | {ms:.2f} | {ms / floor:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
