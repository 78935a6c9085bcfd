"""Ahead-of-time planner: compiles a config's real train step for N fake devices from
abstract inputs (no parameter is materialised) and says what one device holds and how fast
a step could run on a given chip.

    python -m ssl_jax.plan --config experiments/gpt/pretrain.py:gpt3-2.7b,seq_len=2048 \
        --mesh fsdp=64 --rules fsdp --batch-size 512 --config.model.vocab_size=50257
    python -m ssl_jax.plan --config experiments/bert/pretrain.py:large,seq_len=512 \
        --mesh fsdp=16,tensor=4 --rules fsdp_tp --batch-size 256 --device-memory 80GB

It runs on the CPU with N = the product of the --mesh sizes fake devices
(XLA_FLAGS=--xla_force_host_platform_device_count=N, JAX_PLATFORMS=cpu; a process whose JAX
already runs with other devices re-runs the planner in a child process), with LLVM's
optimisation off (--xla_backend_optimization_level=0: the program is never run). The train step is
the loop's own (ssl_jax.train.step.make_train_step under Parallel.wrap_train_step, gradient
accumulation included), lowered from jax.ShapeDtypeStructs that carry the state's and the
batch's shardings, and compiled by XLA:CPU's SPMD partitioner.

Unless --no-scan, the plan turns on model.scan_layers and model.remat (one compiled layer
body, activations recomputed in the backward pass): how full-size models are trained, and
what keeps the compile to seconds. The table says which settings were used.

Per device (the JSON's fields, bytes):
  param_bytes_per_device, optimizer_bytes_per_device   each leaf's shard (its sharding's
      shard shape x its dtype), summed: exact, the train state's layout
  argument/output/alias/temp_bytes_per_device   compiled.memory_analysis() of the step
  bytes_per_device = argument + output - alias + temp: the state and the batch, the outputs
      not written in place of a donated argument, and XLA's temporaries (activations kept
      for the backward pass, gradients, collectives' buffers). XLA:CPU's buffer assignment:
      an accelerator's compiler fuses differently, so read it as an estimate
  fits = bytes_per_device <= --device-memory

Time per step (global, a roofline; stated so it can be argued with):
  flops_per_step (model FLOPs, what MFU counts): forward + backward = 3 x the forward's
      matmul FLOPs. Transformers: 2 FLOPs per weight per token in every layer's q/k/v/out
      and MLP matrices, 4*T*H per token per layer for q.k and weights.v over the whole
      context, and the output layer (GPT: 2*H*V at every position; BERT: the MLM transform
      and tied decoder at the P gathered positions, pooler and NSP). So GPT's is
      6*N_layers*tokens + 12*L*H*T*tokens + 6*H*V*tokens. Other models: 6 x parameters x
      tokens. (compiled.cost_analysis() counts a scanned body once - the layers under
      scan_layers, the chunks of GPT's output layer -: its figure is reported as
      xla_flops_per_device, not used.)
  hardware_flops_per_step: + one more forward of the layers under remat
  compute_s = hardware_flops_per_step / (devices x --peak-tflops)
  memory_s = per-device HBM traffic / --hbm-tbps, a lower bound: every weight read (in the
      compute dtype, gathered whole) once forward, once more under remat, once backward,
      and the optimizer update reading parameters, gradients and moments and writing
      parameters and moments (activations' traffic left out)
  step_s = max(compute_s, memory_s); tokens_per_s = tokens per step / step_s. Collectives'
      time (FSDP all-gathers, TP all-reduces) is not modelled: the plan assumes it overlaps.

The last line printed is one JSON object of every number above.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MESH_AXES = ("data", "fsdp", "tensor")  # = ssl_jax.train.sharding.MESH_AXES (checked there)
RULE_PRESETS = ("dp", "fsdp", "fsdp_tp")
_COUNT_FLAG = "--xla_force_host_platform_device_count"
_OPT_FLAG = "--xla_backend_optimization_level"
_UNITS = {"": 1, "b": 1, "kb": 10 ** 3, "mb": 10 ** 6, "gb": 10 ** 9, "tb": 10 ** 12,
          "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "tib": 2 ** 40}


# --- the command line (no JAX backend yet) --------------------------------------------------
def parse_mesh(text: str) -> dict[str, int]:
    """'fsdp=16,tensor=4' -> {data: 1, fsdp: 16, tensor: 4} (axes not named are 1)."""
    sizes = dict.fromkeys(MESH_AXES, 1)
    seen = set()
    for part in text.split(","):
        axis, eq, size = part.strip().partition("=")
        if not eq:
            raise ValueError(f"--mesh {text!r}: expected axis=size pairs like fsdp=16,tensor=4")
        if axis not in MESH_AXES:
            raise ValueError(f"--mesh {text!r}: unknown mesh axis {axis!r}; expected one of "
                             f"{MESH_AXES}")
        if axis in seen:
            raise ValueError(f"--mesh {text!r}: axis {axis!r} given twice")
        if not re.fullmatch(r"[0-9]+", size.strip()) or int(size) < 1:
            raise ValueError(f"--mesh {text!r}: {axis}={size!r} is not a positive integer "
                             f"(the planner's device count is the product of the sizes)")
        seen.add(axis)
        sizes[axis] = int(size)
    return sizes


def parse_bytes(text: str) -> int:
    """'80GB' (10^9), '80GiB' (2^30), '512MB', '1.5e10' -> bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"--device-memory {text!r}: expected a size like 80GB, 80GiB or "
                         f"16e9 (units {', '.join(u for u in _UNITS if u)}, any case)")
    value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if value <= 0:
        raise ValueError(f"--device-memory {text!r} must be positive")
    return int(value)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[tuple[str, str]]]:
    """(flags, --config.a.b=v overrides); ValueError for a bad value, before JAX starts."""
    from ssl_jax import config as config_lib

    overrides, rest = config_lib.parse_override_args(argv)
    p = argparse.ArgumentParser(prog="python -m ssl_jax.plan", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="FILE.py[:arg]")
    p.add_argument("--mesh", required=True,
                   help="mesh sizes, e.g. fsdp=64 or data=2,fsdp=8,tensor=4 (missing axes: 1)")
    p.add_argument("--rules", help=f"sharding rules: {'|'.join(RULE_PRESETS)} (default: the "
                                   f"config's sharding_rules)")
    p.add_argument("--device-memory", default="80GB", help="per device (default 80GB: H100)")
    p.add_argument("--peak-tflops", type=float, default=989.0,
                   help="per-device peak in the compute dtype (default 989: H100 SXM dense "
                        "bf16)")
    p.add_argument("--hbm-tbps", type=float, default=3.35,
                   help="per-device memory bandwidth, TB/s (default 3.35: H100 SXM)")
    p.add_argument("--batch-size", type=int, help="global batch (default: the config's)")
    p.add_argument("--grad-accum", type=int, help="microbatches per step (config.grad_accum_"
                                                  "steps; default: the config's)")
    p.add_argument("--no-scan", action="store_true",
                   help="keep the config's model.scan_layers and model.remat")
    args = p.parse_args(rest)
    args.mesh_sizes = parse_mesh(args.mesh)
    args.devices = math.prod(args.mesh_sizes.values())
    args.device_bytes = parse_bytes(args.device_memory)
    if args.rules is not None and args.rules not in RULE_PRESETS:
        raise ValueError(f"--rules {args.rules!r}; expected one of {list(RULE_PRESETS)} (or "
                         f"--config.sharding_rules=[(logical, mesh axes), ...])")
    for flag, value in (("--peak-tflops", args.peak_tflops), ("--hbm-tbps", args.hbm_tbps)):
        if not value > 0:
            raise ValueError(f"{flag} {value} must be positive")
    for flag, value in (("--batch-size", args.batch_size), ("--grad-accum", args.grad_accum)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} {value} must be a positive integer")
    owned = {"mesh.": "--mesh", "sharding_rules": "--rules", "batch_size": "--batch-size",
             "grad_accum_steps": "--grad-accum"}
    for key, _ in overrides:
        for prefix, flag in owned.items():
            if key.startswith(prefix) and (flag == "--mesh" or getattr(
                    args, flag[2:].replace("-", "_")) is not None):
                raise ValueError(f"--config.{key} and {flag} both set it; give only {flag}")
    return args, overrides


def planning_config(args, overrides):
    """The config with the planner's flags applied as overrides; (config, notes)."""
    from ssl_jax import config as config_lib

    extra = [(f"mesh.{a}", str(s)) for a, s in args.mesh_sizes.items()]
    if args.rules is not None:
        extra.append(("sharding_rules", args.rules))
    if args.batch_size is not None:
        extra.append(("batch_size", str(args.batch_size)))
    if args.grad_accum is not None:
        extra.append(("grad_accum_steps", str(args.grad_accum)))
    config = config_lib.load_config(args.config, list(overrides) + extra)
    if config.get("parallel", "jit") != "jit":
        raise ValueError(f"config.parallel={config.parallel!r}: the planner compiles the "
                         f"jitted step (config.parallel='jit'; pmap is plain data parallelism "
                         f"= --rules dp)")
    shards = args.mesh_sizes["data"] * args.mesh_sizes["fsdp"]
    accumulate = config.get("grad_accum_steps", 1)
    for name, value in (("batch_size", config.batch_size), ("grad_accum_steps", accumulate)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"config.{name}={value!r} must be a positive integer")
    if config.batch_size % (shards * accumulate):
        raise ValueError(f"batch size {config.batch_size} is not divisible by the {shards} "
                         f"batch shards (--mesh data x fsdp)"
                         + (f" x {accumulate} microbatches" if accumulate > 1 else ""))
    notes = []
    model = config.get("model")
    if not args.no_scan and model is not None and "scan_layers" in model:
        turned = [k for k in ("scan_layers", "remat") if not model[k]]
        model.scan_layers = model.remat = True
        if turned:
            notes.append(f"planned with model.{' and model.'.join(turned)}=True (the config "
                         f"has False; --no-scan keeps the config's)")
    return config, notes


# --- the devices -----------------------------------------------------------------------------
def _with_device_count(flags: str, devices: int) -> str:
    """XLA_FLAGS for the plan: `devices` fake CPU devices, and LLVM's optimisation off unless
    the flags set it (the program is compiled, never run; the HLO passes, buffer assignment
    and memory_analysis are the same: GPT-2 small under fsdp=8 gave identical bytes in 10 s
    instead of 15)."""
    kept = [f for f in flags.split() if not f.startswith(_COUNT_FLAG)]
    if not any(f.startswith(_OPT_FLAG) for f in kept):
        kept.append(f"{_OPT_FLAG}=0")
    return " ".join(kept + [f"{_COUNT_FLAG}={devices}"])


def devices_ready(devices: int) -> bool:
    """Sets up `devices` fake CPU devices if JAX has not started its backend yet; False if it
    already runs with other devices (the caller re-runs the planner in a child process)."""
    import jax
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        return jax.default_backend() == "cpu" and jax.device_count() == devices
    os.environ["XLA_FLAGS"] = _with_device_count(os.environ.get("XLA_FLAGS", ""), devices)
    os.environ["JAX_PLATFORMS"] = "cpu"
    jax.config.update("jax_platforms", "cpu")
    return jax.device_count() == devices


def rerun_in_child(argv: list[str], devices: int) -> int:
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=_with_device_count(os.environ.get("XLA_FLAGS", ""), devices),
               PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")]
                                                    if p]))
    return subprocess.run([sys.executable, "-m", "ssl_jax.plan", *argv], env=env).returncode


# --- the task and its abstract inputs -------------------------------------------------------
def task_facts(config) -> tuple[dict[str, Any], str]:
    """The facts a task's data would give, from the config alone; (facts, where from)."""
    from ssl_jax.tasks import TASKS

    family = TASKS[config.task].family if config.task in TASKS else None
    if family == "text_pretrain":
        model, data = config.model, config.data
        if model.get("vocab_size"):
            return {"vocab_size": model.vocab_size}, "model.vocab_size"
        if config.task == "gpt_pretrain" and data.get("tokenizer_path"):
            from ssl_jax.data.bpe import load_tokenizer
            return ({"vocab_size": load_tokenizer(data.tokenizer_path).vocab_size},
                    f"the tokenizer in {data.tokenizer_path}")
        if config.task == "bert_pretrain" and data.get("vocab_path"):
            if not os.path.isfile(data.vocab_path):
                raise FileNotFoundError(f"data.vocab_path={data.vocab_path!r} does not exist")
            with open(data.vocab_path, encoding="utf-8") as f:
                return {"vocab_size": sum(1 for _ in f)}, f"data.vocab_path"
        return {"vocab_size": data.vocab_size}, "data.vocab_size (the tokenizer trained)"
    if family == "vision_pretext":
        import numpy as np
        facts = {"channels": 3}  # ssl_jax.data.images gives RGB for every source
        if config.task == "inpaint":
            facts["fill"] = np.zeros(3, np.float32)
        return facts, "RGB images"
    raise ValueError(f"config.task={config.task!r}: the planner plans the pre-training tasks "
                     f"({', '.join(n for n, e in TASKS.items() if e.family != 'finetune')}); "
                     f"a fine-tuning head's facts come from its dataset")


def abstract_inputs(config, task, parallel):
    """(the jitted train step, abstract TrainState, abstract batch, state shardings): the
    loop's build_state without values (jax.eval_shape), each leaf a ShapeDtypeStruct with its
    sharding."""
    import jax
    import jax.numpy as jnp

    from ssl_jax.models.partitioning import unbox
    from ssl_jax.train.optim import make_optimizer
    from ssl_jax.train.step import TrainState, make_train_step

    rng = jax.random.PRNGKey(config.seed)
    boxed = jax.eval_shape(task.init_boxed, rng)
    param_shardings = parallel.param_shardings(boxed)  # checks every sharded dimension
    params = unbox(boxed)
    tx, schedule = make_optimizer(config, task.update_multipliers(params))
    apply_fn = task.build_model(train=True).apply

    def create(p):
        state = TrainState.create(apply_fn=apply_fn, params=p, tx=tx)
        return state.replace(step=jnp.zeros((), jnp.int32))

    state = jax.eval_shape(create, params)
    shardings = parallel.state_shardings(state, param_shardings, tx)
    state = jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
    one = task.dummy_batch(1)
    batch = {k: jax.ShapeDtypeStruct((config.batch_size,) + v.shape[1:], v.dtype,
                                     sharding=parallel.batch_sharding) for k, v in one.items()}
    step = parallel.wrap_train_step(
        make_train_step(task, config.seed, schedule, parallel.axis_name,
                        config.get("grad_accum_steps", 1)), shardings)
    return step, state, batch


def shard_bytes(tree) -> int:
    """Bytes one device holds of a tree of sharded ShapeDtypeStructs (or arrays): each leaf's
    shard shape x its item size. Every device holds the same under these layouts."""
    import jax
    import numpy as np

    return sum(math.prod(x.sharding.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize
               for x in jax.tree_util.tree_leaves(tree))


def tree_bytes(tree) -> int:
    import jax
    import numpy as np
    return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize
               for x in jax.tree_util.tree_leaves(tree))


# --- FLOPs and the roofline -----------------------------------------------------------------
def train_flops(config, task, num_params: int) -> tuple[float, float, str]:
    """(model FLOPs per step, the layers' forward FLOPs per step, formula) of one global
    batch: see the module docstring."""
    B, T = config.batch_size, config.max_seq_len
    m = getattr(task, "model_config", None)
    if config.task in ("gpt_pretrain", "bert_pretrain") and m is not None:
        H, L, M, V = m.hidden_size, m.num_layers, m.mlp_dim, m.vocab_size
        layers = B * T * L * (2 * (4 * H * H + 2 * H * M) + 4 * T * H)
        if config.task == "gpt_pretrain":
            head = B * T * 2 * H * V
            formula = "3 x (2*L*(4H^2+2HM)*tokens + 4*L*T*H*tokens + 2*H*V*tokens)"
        else:
            P = task.spec.max_predictions
            head = B * (P * 2 * (H * H + H * V) + 2 * H * H + (2 * 2 * H if task.nsp else 0))
            formula = ("3 x (2*L*(4H^2+2HM)*tokens + 4*L*T*H*tokens + B*P*2*(H^2+H*V) "
                       "+ pooler/NSP)")
        return 3.0 * (layers + head), float(layers), formula
    tokens = B * task.tokens_per_example()
    return 6.0 * num_params * tokens, 2.0 * num_params * tokens, "6 x params x tokens"


def roofline(flops: float, hardware_flops: float, devices: int, peak: float, hbm: float,
             gathered_weight_bytes: float, param_bytes: int, optimizer_bytes: int,
             remat: bool) -> dict[str, float]:
    compute_s = hardware_flops / (devices * peak)
    weight_reads = (3 if remat else 2) * gathered_weight_bytes
    update = 3 * param_bytes + 2 * optimizer_bytes  # read p, g, moments; write p, moments
    memory_s = (weight_reads + update) / hbm
    step_s = max(compute_s, memory_s)
    return {"compute_s": compute_s, "memory_s": memory_s, "step_s": step_s,
            "roofline_mfu": flops / (step_s * devices * peak)}


# --- the plan --------------------------------------------------------------------------------
def make_plan(args, config, facts: dict[str, Any], facts_from: str,
              notes: list[str]) -> dict[str, Any]:
    import jax
    import numpy as np

    from ssl_jax.models.transformer import DTYPES
    from ssl_jax.tasks import get_compute
    from ssl_jax.train.loop import check_config

    parallel = check_config(config)  # mesh, rules, batch divisibility
    task = get_compute(config.task)(config, **facts)
    step, state, batch = abstract_inputs(config, task, parallel)
    params_count = sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(state.params))
    param_bytes = shard_bytes(state.params)
    optimizer_bytes = shard_bytes(state.opt_state)

    t0 = time.perf_counter()
    lowered = step.lower(state, batch)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost

    model = config.get("model", {})
    compute_dtype = np.dtype(DTYPES.get(model.get("dtype", "float32"), np.float32))
    flops, layer_forward, formula = train_flops(config, task, params_count)
    remat = bool(model.get("remat", False))
    hardware = flops + (layer_forward if remat else 0.0)
    tokens = config.batch_size * task.tokens_per_example()
    peak, hbm = args.peak_tflops * 1e12, args.hbm_tbps * 1e12
    times = roofline(flops, hardware, args.devices, peak, hbm,
                     params_count * compute_dtype.itemsize, param_bytes, optimizer_bytes, remat)
    total = (mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
             + mem.temp_size_in_bytes)
    vocab = facts.get("vocab_size")
    return {
        "config": args.config, "task": config.task, "mesh": dict(parallel.mesh.shape),
        "devices": args.devices, "rules": config.sharding_rules,
        "batch_size": config.batch_size, "seq_len": config.max_seq_len,
        "tokens_per_step": tokens, "grad_accum_steps": config.get("grad_accum_steps", 1),
        "dtype": model.get("dtype"), "param_dtype": model.get("param_dtype"),
        "scan_layers": model.get("scan_layers"), "remat": model.get("remat"),
        "vocab_size": vocab, "vocab_from": facts_from if vocab else None,
        "params": params_count,
        "param_bytes_per_device": param_bytes,
        "optimizer_bytes_per_device": optimizer_bytes,
        "batch_bytes_per_device": shard_bytes(batch),
        "argument_bytes_per_device": mem.argument_size_in_bytes,
        "output_bytes_per_device": mem.output_size_in_bytes,
        "alias_bytes_per_device": mem.alias_size_in_bytes,
        "temp_bytes_per_device": mem.temp_size_in_bytes,
        "bytes_per_device": total,
        "device_memory": args.device_bytes, "fits": total <= args.device_bytes,
        "flops_per_step": flops, "hardware_flops_per_step": hardware, "flops_formula": formula,
        "xla_flops_per_device": float((cost or {}).get("flops", float("nan"))),
        "peak_flops_per_device": peak, "hbm_bytes_per_s": hbm, **times,
        "tokens_per_s": tokens / times["step_s"],
        "lower_s": t1 - t0, "compile_s": t2 - t1, "notes": notes,
    }


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.2f} MB"


def table(plan: dict[str, Any]) -> str:
    mesh = ",".join(f"{a}={s}" for a, s in plan["mesh"].items())
    rows = [
        ("config", plan["config"]),
        ("task / parameters", f"{plan['task']} / {plan['params'] / 1e6:,.1f} M"
                              + (f" (vocab {plan['vocab_size']}: {plan['vocab_from']})"
                                 if plan["vocab_size"] else "")),
        ("mesh / rules", f"{mesh} ({plan['devices']} devices) / {plan['rules']}"),
        ("batch", f"{plan['batch_size']} x {plan['seq_len']} = {plan['tokens_per_step']:,} "
                  f"tokens, {plan['grad_accum_steps']} microbatch(es)"),
        ("dtype / params / scan / remat", f"{plan['dtype']} / {plan['param_dtype']} / "
                                          f"{plan['scan_layers']} / {plan['remat']}"),
        ("params per device", _gb(plan["param_bytes_per_device"])),
        ("optimizer per device", _gb(plan["optimizer_bytes_per_device"])),
        ("batch per device", _gb(plan["batch_bytes_per_device"])),
        ("temporaries per device", _gb(plan["temp_bytes_per_device"])),
        ("total per device", f"{_gb(plan['bytes_per_device'])} of "
                             f"{_gb(plan['device_memory'])}: "
                             f"{'fits' if plan['fits'] else 'DOES NOT FIT'}"),
        ("FLOPs per step", f"{plan['flops_per_step']:.3e} model, "
                           f"{plan['hardware_flops_per_step']:.3e} with remat"),
        ("step (roofline)", f"{plan['step_s'] * 1e3:.1f} ms (compute "
                            f"{plan['compute_s'] * 1e3:.1f} ms, memory "
                            f"{plan['memory_s'] * 1e3:.1f} ms) at "
                            f"{plan['peak_flops_per_device'] / 1e12:.0f} TFLOP/s, "
                            f"{plan['hbm_bytes_per_s'] / 1e12:.2f} TB/s"),
        ("tokens/s", f"{plan['tokens_per_s']:,.0f} ({plan['tokens_per_s'] / plan['devices']:,.0f}"
                     f" per device), MFU at the roofline {100 * plan['roofline_mfu']:.0f}%"),
        ("lower / compile", f"{plan['lower_s']:.1f} s / {plan['compile_s']:.1f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    return "\n".join(lines + [f"note: {n}" for n in plan["notes"]])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, overrides = parse_args(argv)
        config, notes = planning_config(args, overrides)
        facts, facts_from = task_facts(config)  # before any device is made
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not devices_ready(args.devices):
        return rerun_in_child(argv, args.devices)
    try:
        plan = make_plan(args, config, facts, facts_from, notes)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table(plan))
    print(json.dumps(plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
