"""Multi-host start-up: jax.distributed.initialize from a detected cluster (Slurm, TPU,
Open MPI), from explicit --coordinator/--num-processes/--process-id, or from a submitit job's
environment (ssl_jax.cluster.job), with gloo collectives on CPU-only hosts."""
from __future__ import annotations

import argparse
import os


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
                           process_id: int | None = None,
                           local_device_ids: list[int] | None = None) -> None:
    """jax.distributed.initialize: the cluster's own settings (auto-detected) or the given
    ones. Before it, CPU-only hosts get gloo collectives (cross-process all-reduces on CPU;
    JAX 0.10 defaults to gloo, older versions to none). ValueError, one line, when it fails
    (no cluster found, a coordinator that cannot be reached, ...)."""
    import jax

    if _cpu_only() and "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in os.environ:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator, num_processes, process_id,
                                   local_device_ids=local_device_ids)
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
