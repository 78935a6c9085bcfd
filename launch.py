"""Runs a config (or its sweep) through the generic train loop.

    python launch.py --config experiments/quickstart.py --workdir runs/quickstart
    python launch.py --config experiments/bert/pretrain.py:mini,nsp=False --workdir runs/x \
        --config.num_train_steps=500
    python launch.py --config experiments/bert/pretrain.py:tiny --workdir runs/sweep --sweep \
        --sweep-points size=tiny,size=mini
"""
from __future__ import annotations

import argparse
import json
import os
import sys


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[tuple[str, str]]]:
    """(flags, --config.a.b=v overrides); ValueError for a bad command line."""
    from ssl_jax import config as config_lib

    overrides, rest = config_lib.parse_override_args(argv)
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="FILE.py[:arg]")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--sweep", action="store_true", help="run every point of get_sweep()")
    parser.add_argument("--sweep-points", type=lambda s: [p for p in s.split(",") if p],
                        help="with --sweep: only these points (comma-separated names)")
    parser.add_argument("--sweep-workers", type=int, default=1,
                        help="train this many sweep points at once, each in its own process")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--distributed", action="store_true",
                        help="call jax.distributed.initialize() (multi-host)")
    args = parser.parse_args(rest)
    if args.sweep_points is not None and not args.sweep:
        raise ValueError("--sweep-points needs --sweep")
    return args, overrides


def main(argv: list[str]) -> int:
    from ssl_jax import config as config_lib

    try:
        args, overrides = parse_args(argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import jax
    if args.distributed:
        jax.distributed.initialize()
    from ssl_jax.sweep import run_sweep
    from ssl_jax.transfer import run

    path, arg = config_lib.split_spec(args.config)
    try:
        module = config_lib.load_module(path)
        train = lambda c, d: run(c, d, progress=not args.no_progress)
        if args.sweep:
            rows = run_sweep(module, arg, overrides, args.workdir, train, args.sweep_workers,
                             args.sweep_points)
            print(open(os.path.join(args.workdir, "sweep.md")).read())
            return 0 if all(not r["status"].startswith("failed") for r in rows) else 1
        summary = train(config_lib.build_config(module, arg, overrides), args.workdir)
    except (ValueError, FileNotFoundError, PermissionError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
