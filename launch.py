"""Runs a config (or its sweep) through the generic train loop.

    python launch.py --config experiments/quickstart.py --workdir runs/quickstart
    python launch.py --config experiments/bert/pretrain.py:mini,nsp=False --workdir runs/x \
        --config.num_train_steps=500
    python launch.py --config experiments/bert/pretrain.py:tiny --workdir runs/sweep --sweep \
        --sweep-points size=tiny,size=mini

Multi-host (one such process per host; see README "Scaling"):
    srun python launch.py --config ... --workdir ... --distributed       # Slurm, TPU, Open MPI
    python launch.py ... --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0
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
                        help="one process of a multi-host run: jax.distributed.initialize() "
                             "detects the cluster (Slurm, TPU, Open MPI)")
    parser.add_argument("--coordinator", metavar="HOST:PORT",
                        help="multi-host without a detected cluster: process 0's address "
                             "(with --num-processes and --process-id; implies --distributed)")
    parser.add_argument("--num-processes", metavar="N", help="with --coordinator")
    parser.add_argument("--process-id", metavar="I", help="with --coordinator: 0 .. N-1")
    args = parser.parse_args(rest)
    if args.sweep_points is not None and not args.sweep:
        raise ValueError("--sweep-points needs --sweep")
    check_distributed_args(args)
    if args.distributed and args.sweep_workers != 1:
        raise ValueError(f"--sweep-workers={args.sweep_workers} with --distributed: a "
                         f"multi-host sweep trains its points one after another (every "
                         f"process takes part in each); drop --sweep-workers")
    return args, overrides


_TOGETHER = ("--coordinator", "--num-processes", "--process-id")


def check_distributed_args(args: argparse.Namespace) -> None:
    """--coordinator HOST:PORT --num-processes N --process-id I: all three or none, each
    checked (they imply --distributed); num_processes and process_id become ints."""
    given = {flag: getattr(args, flag[2:].replace("-", "_")) for flag in _TOGETHER}
    if all(v is None for v in given.values()):
        return
    missing = [flag for flag, v in given.items() if v is None]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}: {', '.join(_TOGETHER)} go together "
                         f"(or use --distributed alone in a Slurm, TPU or Open MPI job)")
    host, _, port = args.coordinator.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--coordinator={args.coordinator!r}: expected HOST:PORT (process "
                         f"0's address and a free port, e.g. 10.0.0.1:1234)")
    args.num_processes = _integer("--num-processes", args.num_processes, "an integer >= 1")
    if args.num_processes < 1:
        raise ValueError(f"--num-processes={args.num_processes}: expected an integer >= 1")
    args.process_id = _integer("--process-id", args.process_id,
                               f"an integer in 0..{args.num_processes - 1}")
    if not 0 <= args.process_id < args.num_processes:
        raise ValueError(f"--process-id={args.process_id}: expected an integer in "
                         f"0..{args.num_processes - 1} (--num-processes={args.num_processes})")
    args.distributed = True


def _integer(flag: str, text: str, expected: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{flag}={text!r}: expected {expected}") from None


NO_CLUSTER = ("--distributed: no cluster environment found (Slurm, TPU, Open MPI); pass "
              "--coordinator HOST:PORT --num-processes N --process-id I")


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """jax.distributed.initialize: the cluster's own settings (auto-detected) or the given
    ones. Before it, CPU-only hosts get gloo collectives (cross-process all-reduces on CPU;
    JAX 0.10 defaults to gloo, older versions to none). ValueError, one line, when it fails
    (no cluster found, a coordinator that cannot be reached, ...)."""
    import jax

    if _cpu_only() and "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in os.environ:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator, num_processes, process_id)
    except ValueError as e:  # jax: "coordinator_address should be defined." and the like
        if coordinator is None:
            raise ValueError(NO_CLUSTER) from None
        raise ValueError(f"--distributed: {_first_line(e)}") from None
    except Exception as e:  # an unreachable coordinator, a second initialize, ...
        where = f" (coordinator {coordinator})" if coordinator else ""
        raise ValueError(f"--distributed: jax.distributed.initialize failed{where}: "
                         f"{type(e).__name__}: {_first_line(e)}") from None


def _cpu_only() -> bool:
    """No accelerator for JAX here: JAX_PLATFORMS=cpu, or no GPU/TPU plugin installed."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return platforms.split(",") == ["cpu"]
    from importlib import metadata, util
    return not metadata.entry_points(group="jax_plugins") and util.find_spec("libtpu") is None


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0]


def main(argv: list[str]) -> int:
    from ssl_jax import config as config_lib

    try:
        args, overrides = parse_args(argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.distributed:
        try:
            initialize_distributed(args.coordinator, args.num_processes, args.process_id)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    import jax
    from ssl_jax.sweep import run_sweep, stopped_signal
    from ssl_jax.transfer import run

    path, arg = config_lib.split_spec(args.config)
    try:
        module = config_lib.load_module(path)
        train = lambda c, d: run(c, d, progress=not args.no_progress)
        if args.sweep:
            rows = run_sweep(module, arg, overrides, args.workdir, train, args.sweep_workers,
                             args.sweep_points)
            if jax.process_index() == 0:  # process 0 writes the sweep's tables
                print(open(os.path.join(args.workdir, "sweep.md")).read())
            stopped = stopped_signal(rows)
            if stopped:
                return exit_status({"signal": stopped})
            return 0 if all(not r["status"].startswith("failed") for r in rows) else 1
        summary = train(config_lib.build_config(module, arg, overrides), args.workdir)
    except (ValueError, FileNotFoundError, PermissionError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if jax.process_index() == 0:
        print(json.dumps(summary))
    return exit_status(summary)


def exit_status(summary: dict) -> int:
    """0 for a finished (or paused) run; 128 + the signal's number for a run stopped by a
    signal (SIGTERM: 143, SIGINT: 130), as a shell reports a process the signal killed, so a
    scheduler can tell a pre-emption from success (the checkpoint is saved; re-run to resume)."""
    import signal
    return 128 + signal.Signals[summary["signal"]].value if "signal" in summary else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
