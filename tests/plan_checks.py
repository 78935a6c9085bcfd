"""The child process of tests/test_plan.py (it must start with the fake-device flag set
before JAX loads): a real run of a small config, measured, and every size-table row built
abstractly.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/plan_checks.py ARGS.json

ARGS.json: {"measure": [planner argv of the real run], "rows": {name: [planner argv]},
"plans": {name: [planner argv]}}. Prints one JSON line {"measure": {...}, "rows": {name:
{...}}, "plans": {name: the planner's JSON}}.

measure: the loop's own state (ssl_jax.train.loop.build_state: parameters initialised into
their shardings) and train step (Parallel.wrap_train_step) run one step on a dummy batch;
then what one device holds: the bytes of every live array's shards on that device (the
state after the step, the batch, the metrics), the largest over the devices, plus the
temporaries XLA assigned to that compiled step (memory_analysis of the step compiled for
these arrays: XLA:CPU has no allocator statistics to read instead).
rows: ssl_jax.plan's abstract inputs (eval_shape of the init, the shardings, checked) with
no compile; each row's parameter count, bytes (all, on one device, of the leaves no rule
shards) and per-device optimizer bytes.
plans: the planner itself (ssl_jax.plan.main) in this process, on these devices.
"""
import json
import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def device_bytes(arrays, device) -> int:
    return sum(s.data.nbytes for x in arrays for s in x.addressable_shards
               if s.device == device)


def planned_task(argv: list[str]):
    """The planner's command line -> (config, the task's compute half, its layout), built
    as the planner builds them."""
    from ssl_jax import plan
    from ssl_jax.tasks import get_compute
    from ssl_jax.train.loop import check_config

    args, overrides = plan.parse_args(argv)
    config, _ = plan.planning_config(args, overrides)
    facts, _ = plan.task_facts(config)
    parallel = check_config(config)
    return config, get_compute(config.task)(config, **facts), parallel


def measure(argv: list[str]) -> dict:
    import gc

    import jax

    from ssl_jax.train.loop import build_state
    from ssl_jax.train.step import make_train_step

    config, task, parallel = planned_task(argv)
    state, shardings, schedule = build_state(config, task, parallel, fresh=False)
    step = parallel.wrap_train_step(
        make_train_step(task, config.seed, schedule, parallel.axis_name,
                        config.get("grad_accum_steps", 1)), shardings)
    batch = parallel.put_batch(task.dummy_batch(config.batch_size))
    compiled = step.lower(state, batch).compile()  # the step's one compile
    temp = compiled.memory_analysis().temp_size_in_bytes
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    gc.collect()
    live = jax.live_arrays()
    devices = jax.devices()
    per_device = [device_bytes(live, d) for d in devices]
    leaves = jax.tree_util.tree_leaves
    return {"devices": len(devices), "live_bytes_per_device": max(per_device),
            "live_bytes_min": min(per_device), "temp_bytes_per_device": temp,
            "bytes_per_device": max(per_device) + temp,
            "param_bytes_per_device": max(device_bytes(leaves(state.params), d)
                                          for d in devices),
            "optimizer_bytes_per_device": max(device_bytes(leaves(state.opt_state), d)
                                              for d in devices),
            "loss": float(metrics["loss"])}


def build(argv: list[str]) -> dict:
    import jax

    from ssl_jax import plan

    config, task, parallel = planned_task(argv)
    _, state, _ = plan.abstract_inputs(config, task, parallel)
    params = jax.tree_util.tree_leaves(state.params)
    unsharded = [x for x in params if x.sharding.is_fully_replicated]
    return {"params": sum(math.prod(x.shape) for x in params),
            "param_bytes": plan.tree_bytes(state.params),
            "unsharded_bytes": plan.tree_bytes(unsharded),
            "param_bytes_per_device": plan.shard_bytes(state.params),
            "optimizer_bytes_per_device": plan.shard_bytes(state.opt_state)}


def run_plan(argv: list[str]) -> dict:
    """`python -m ssl_jax.plan ARGV` in this process (its devices are the plan's): the
    planner's JSON line."""
    import contextlib
    import io

    from ssl_jax import plan

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = plan.main(argv)
    if code != 0:
        raise SystemExit(f"plan {argv} exited {code}")
    return json.loads(out.getvalue().strip().splitlines()[-1])


if __name__ == "__main__":
    spec = json.load(open(sys.argv[1]))
    out = {"rows": {name: build(argv) for name, argv in spec.get("rows", {}).items()},
           "plans": {name: run_plan(argv) for name, argv in spec.get("plans", {}).items()}}
    if spec.get("measure"):
        out["measure"] = measure(spec["measure"])
    print(json.dumps(out))
