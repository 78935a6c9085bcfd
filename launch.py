"""Runs a config (or its sweep) through the generic train loop, here or as scheduler jobs.

    python launch.py --config experiments/quickstart.py --workdir runs/quickstart
    python launch.py --config experiments/bert/pretrain.py:mini,nsp=False --workdir runs/x \
        --config.num_train_steps=500
    python launch.py --config experiments/bert/pretrain.py:tiny --workdir runs/sweep --sweep \
        --sweep-points size=tiny,size=mini

Clusters (see README "Running on a cluster"):
    ... --executor slurm --slurm.partition gpu --slurm.gpus_per_node 8 --slurm.time_min 240
    ... --executor local                          # the same jobs as processes on this machine
    ... --tpu NAME --zone Z [--project P] [--run] # every host of a TPU pod slice
    srun python launch.py --config ... --workdir ... --distributed       # Slurm, TPU, Open MPI
    python launch.py ... --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from ssl_jax.cluster import executors, exit_status
from ssl_jax.cluster.distributed import check_distributed_args, initialize_distributed
from ssl_jax.cluster.executors import EXECUTORS, check_executor_args, split_slurm_args
from ssl_jax.cluster.tpu import check_tpu_args, run_on_tpu


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[tuple[str, str]]]:
    """(flags, --config.a.b=v overrides); ValueError for a bad command line."""
    from ssl_jax import config as config_lib

    overrides, rest = config_lib.parse_override_args(argv)
    slurm, rest = split_slurm_args(rest)
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--config", required=True, help="FILE.py[:arg]")
    add("--workdir", required=True)
    add("--sweep", action="store_true", help="run every point of get_sweep()")
    add("--sweep-points", type=lambda s: [p for p in s.split(",") if p],
        help="with --sweep: only these points (comma-separated names)")
    add("--sweep-workers", type=int, default=1,
        help="train this many sweep points at once, each in its own process (or local job)")
    add("--retry-failed", action="store_true",
        help="with --sweep: re-run the points that failed (a re-run skips them otherwise)")
    add("--no-progress", action="store_true")
    add("--executor", choices=EXECUTORS, default="inline",
        help="inline: this process; local / slurm: submitit jobs (--slurm.NAME=VALUE options)")
    add("--wait", action="store_true", help="--executor slurm: wait for the jobs to end")
    add("--tpu", metavar="NAME", help="print the command that runs this on every host of a "
                                      "TPU pod slice (with --zone, --project; --run runs it)")
    add("--zone")
    add("--project")
    add("--run", action="store_true", help="with --tpu: execute the gcloud command")
    add("--distributed", action="store_true",
        help="one process of a multi-host run: jax.distributed.initialize() detects the "
             "cluster (Slurm, TPU, Open MPI)")
    add("--coordinator", metavar="HOST:PORT",
        help="multi-host without a detected cluster: process 0's address (with "
             "--num-processes and --process-id; implies --distributed)")
    add("--num-processes", metavar="N", help="with --coordinator")
    add("--process-id", metavar="I", help="with --coordinator: 0 .. N-1")
    args = parser.parse_args(rest)
    args.slurm = slurm
    for flag, needs_sweep in (("--sweep-points", args.sweep_points is not None),
                              ("--retry-failed", args.retry_failed)):
        if needs_sweep and not args.sweep:
            raise ValueError(f"{flag} needs --sweep")
    check_distributed_args(args)
    if args.distributed and args.sweep_workers != 1:
        raise ValueError(f"--sweep-workers={args.sweep_workers} with --distributed: a "
                         f"multi-host sweep trains its points one after another (every "
                         f"process takes part in each); drop --sweep-workers")
    check_executor_args(args)
    check_tpu_args(args)
    return args, overrides


def main(argv: list[str]) -> int:
    from ssl_jax import config as config_lib

    try:
        args, overrides = parse_args(argv)
        if args.tpu:
            return run_on_tpu(argv, args)
        if args.distributed:
            initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import jax
    from ssl_jax.sweep import run_sweep, stopped_signal
    from ssl_jax.transfer import run

    path, arg = config_lib.split_spec(args.config)
    jobs = args.executor != "inline"
    try:
        module = config_lib.load_module(path)
        train = lambda c, d: run(c, d, progress=not args.no_progress)
        if args.sweep:
            submit = (executors.submitter(args.executor, args.slurm, path, args.sweep_workers,
                                          args.wait) if jobs else None)
            rows = run_sweep(module, arg, overrides, args.workdir, train,
                             1 if jobs else args.sweep_workers, args.sweep_points,
                             retry_failed=args.retry_failed, submit=submit)
            if args.executor == "slurm" and not args.wait:
                return 0  # submitted: `python -m ssl_jax.sweep status DIR` follows them
            if jax.process_index() == 0:  # process 0 writes the sweep's tables
                print(open(os.path.join(args.workdir, "sweep.md")).read())
            stopped = stopped_signal(rows)
            if stopped:
                return exit_status({"signal": stopped})
            return 0 if all(not r["status"].startswith("failed") for r in rows) else 1
        if jobs:
            config_lib.build_config(module, arg, overrides)  # bad overrides: before submitting
            summary = executors.submit_run(args.executor, args.slurm, args.config, overrides,
                                           args.workdir, args.wait)
            if summary is None:
                return 0
        else:
            summary = train(config_lib.build_config(module, arg, overrides), args.workdir)
    except (ValueError, FileNotFoundError, PermissionError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second signal while stopping
        print(f"error: interrupted; the last saved checkpoint in {args.workdir} is kept (the "
              f"same command resumes from it)", file=sys.stderr)
        return 130
    if jax.process_index() == 0:
        print(json.dumps(summary))
    return exit_status(summary)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
