"""The README's planner table: python -m ssl_jax.plan for BERT-base/large, GPT-2 small..XL
and GPT-3 2.7B/6.7B/13B under dp / fsdp / fsdp_tp on 8 and 64 fake devices, one plan at a
time (each its own process), then the table in markdown.

    python benchmarks/plan_table.py --jsonl runs/plans.jsonl          # plan every row
    python benchmarks/plan_table.py --jsonl runs/plans.jsonl --only gpt3-13b
    python benchmarks/plan_table.py --jsonl runs/plans.jsonl --render  # table only

Each plan's JSON (or its error line) is appended to --jsonl as it finishes, so an
interrupted run keeps what it did; rows already in the file are not planned again. A plan
that does not fit is planned again with 2, 4, 8, ... microbatches (--grad-accum; the same
global batch) until one fits: the last column.
Global batches: BERT 256 x 512, GPT-2 512 x 1024, GPT-3 its paper's (2.7B: 1M tokens =
512 x 2048; 6.7B and 13B: 2M = 1024 x 2048). bfloat16 compute, float32 parameters and AdamW
state; scan + remat (the planner's default); the real vocabularies (30,522 WordPiece,
50,257 GPT-2 BPE).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BERT, GPT = "experiments/bert/pretrain.py", "experiments/gpt/pretrain.py"
MODELS = {  # name -> (config spec, global batch, vocabulary)
    "bert-base": (f"{BERT}:base,seq_len=512", 256, 30522),
    "bert-large": (f"{BERT}:large,seq_len=512", 256, 30522),
    "gpt2-small": (f"{GPT}:gpt2-small,seq_len=1024", 512, 50257),
    "gpt2-medium": (f"{GPT}:gpt2-medium,seq_len=1024", 512, 50257),
    "gpt2-large": (f"{GPT}:gpt2-large,seq_len=1024", 512, 50257),
    "gpt2-xl": (f"{GPT}:gpt2-xl,seq_len=1024", 512, 50257),
    "gpt3-2.7b": (f"{GPT}:gpt3-2.7b,seq_len=2048", 512, 50257),
    "gpt3-6.7b": (f"{GPT}:gpt3-6.7b,seq_len=2048", 1024, 50257),
    "gpt3-13b": (f"{GPT}:gpt3-13b,seq_len=2048", 1024, 50257),
}
LAYOUTS = {  # (rules, devices) -> --mesh
    ("dp", 8): "data=8", ("fsdp", 8): "fsdp=8", ("fsdp_tp", 8): "fsdp=4,tensor=2",
    ("dp", 64): "data=64", ("fsdp", 64): "fsdp=64", ("fsdp_tp", 64): "fsdp=16,tensor=4",
}


def plan_argv(model: str, rules: str, devices: int, accumulate: int = 1) -> list[str]:
    spec, batch, vocab = MODELS[model]
    return ["--config", spec, "--mesh", LAYOUTS[rules, devices], "--rules", rules,
            "--batch-size", str(batch), f"--config.model.vocab_size={vocab}",
            "--config.model.dtype=bfloat16", "--grad-accum", str(accumulate)]


def accumulations(model: str, rules: str, devices: int) -> list[int]:
    """2, 4, 8, ... up to one sequence per device per microbatch."""
    mesh = dict(part.split("=") for part in LAYOUTS[rules, devices].split(","))
    per_device = MODELS[model][1] // (int(mesh.get("data", 1)) * int(mesh.get("fsdp", 1)))
    return [2 ** i for i in range(1, per_device.bit_length()) if per_device % 2 ** i == 0]


def run_one(model: str, rules: str, devices: int, timeout: int, accumulate: int = 1) -> dict:
    key = {"model": model, "rules": rules, "devices": devices}
    try:
        done = subprocess.run([sys.executable, "-m", "ssl_jax.plan",
                               *plan_argv(model, rules, devices, accumulate)],
                              cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(key, error=f"timed out after {timeout} s")
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        return dict(key, error=errors[-1][7:] if errors else done.stderr[-500:])
    return dict(key, plan=json.loads(done.stdout.strip().splitlines()[-1]))


def _error(text: str) -> str:
    """A planner error, shortened where it is a parameter that does not divide."""
    m = re.search(r"parameter (\S+) of shape .*\((\w+=\d+)\) does not divide over mesh axis "
                  r"(\w+) of size (\d+)", text)
    return f"{m[2]} does not divide over {m[3]}={m[4]} ({m[1]})" if m else text


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f}"


def _accumulated(row: dict) -> str:
    if "accumulate" not in row:
        return ""  # fits as it is
    if row["accumulate"] is None:
        return "none (the state alone, or one sequence per device, is too big)"
    acc = row["accumulate"]
    return (f"k={acc['k']}: {_gb(acc['temp_bytes_per_device'])} temporaries, "
            f"{_gb(acc['bytes_per_device'])} total")


def render(rows: list[dict]) -> str:
    lines = ["| model | params | devices | rules (mesh) | params + AdamW / device GB | "
             "temporaries GB | total GB | fits 80 GB | step s (roofline) | tokens/s | "
             "compile s | fits with grad accum k |",
             "| --- | ---: | ---: | --- | ---: | ---: | ---: | :---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        layout = f"{r['rules']} ({LAYOUTS[r['rules'], r['devices']]})"
        if "error" in r:
            lines.append(f"| {r['model']} | | {r['devices']} | {layout} | n/a: {_error(r['error'])} "
                         f"| | | | | | | |")
            continue
        p = r["plan"]
        state = p["param_bytes_per_device"] + p["optimizer_bytes_per_device"]
        lines.append(
            f"| {r['model']} | {p['params'] / 1e9:.2f} B | {p['devices']} | {layout} | "
            f"{_gb(state)} | {_gb(p['temp_bytes_per_device'])} | {_gb(p['bytes_per_device'])} "
            f"| {'yes' if p['fits'] else 'no'} | {p['step_s']:.3f} | "
            f"{p['tokens_per_s']:,.0f} | {p['compile_s']:.0f} | {_accumulated(r)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jsonl", required=True, help="results file (appended, read back)")
    p.add_argument("--only", nargs="*", choices=list(MODELS), help="these models only")
    p.add_argument("--timeout", type=int, default=600, help="seconds per plan")
    p.add_argument("--render", action="store_true", help="print the table of --jsonl only")
    a = p.parse_args(argv)
    done = []
    if os.path.exists(a.jsonl):
        with open(a.jsonl) as f:
            done = [json.loads(line) for line in f if line.strip()]
    have = {(r["model"], r["rules"], r["devices"]) for r in done}
    if not a.render:
        for model in a.only or MODELS:
            for devices in (8, 64):
                for rules in ("dp", "fsdp", "fsdp_tp"):
                    if (model, rules, devices) in have:
                        continue
                    row = run_one(model, rules, devices, a.timeout)
                    if "plan" in row and not row["plan"]["fits"]:
                        row["accumulate"] = None  # no microbatch count fits
                        for k in accumulations(model, rules, devices):
                            tried = run_one(model, rules, devices, a.timeout, k)
                            if "plan" in tried and tried["plan"]["fits"]:
                                row["accumulate"] = {"k": k, **{
                                    f: tried["plan"][f] for f in (
                                        "temp_bytes_per_device", "bytes_per_device",
                                        "compile_s")}}
                                break
                    print(json.dumps({k: v for k, v in row.items() if k != "plan"}
                                     | ({"bytes_per_device": row["plan"]["bytes_per_device"],
                                         "compile_s": row["plan"]["compile_s"]}
                                        if "plan" in row else {})), flush=True)
                    with open(a.jsonl, "a") as f:
                        f.write(json.dumps(row) + "\n")
                    done.append(row)
    order = {m: i for i, m in enumerate(MODELS)}
    done.sort(key=lambda r: (order[r["model"]], r["devices"],
                             ("dp", "fsdp", "fsdp_tp").index(r["rules"])))
    print(render(done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
