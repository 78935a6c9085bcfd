"""One run as a submitit job: a sweep point (its point.json kept up to date) or a single run.

Only primitives travel to the job (the config file's path and arg, the overrides, the
workdir). A job of several tasks (nodes x tasks_per_node) starts jax.distributed from
submitit's job environment, the first host being the coordinator; the run is then the
multi-host run of ssl_jax.train (process-local data, process 0 writes the workdir).

Pre-emption: Slurm (and submitit's local controller at the time limit) sends SIGUSR2. The
train loop saves a checkpoint and returns; the job then hands the signal back to submitit,
whose handler requeues it (this class is Checkpointable: the requeued job is the same call)
and the requeued job resumes from the checkpoint. SIGTERM or SIGINT stop it without requeue,
exit status 128 + the signal's number.
"""
from __future__ import annotations

import os
import signal
import sys
import zlib

import submitit

from ssl_jax import config as config_lib
from ssl_jax.cluster import exit_status
from ssl_jax.cluster.distributed import initialize_distributed
from ssl_jax.sweep import state


def coordinator_port(job_id: str) -> int:
    """A port from the job id: every task of the job computes the same one."""
    return 20000 + zlib.crc32(job_id.encode()) % 20000


class RunJob(submitit.helpers.Checkpointable):
    """`RunJob()(config_spec, overrides, workdir, sweep_dir, devices_per_task)` in a job."""

    def __call__(self, config_spec: str, overrides: list[tuple[str, str]], workdir: str,
                 sweep_dir: str | None = None, devices_per_task: int | None = None) -> dict:
        env = submitit.JobEnvironment()
        if env.num_tasks > 1:
            host = "127.0.0.1" if env.cluster == "local" else env.hostnames[0]
            local_ids = (None if devices_per_task is None else
                         list(range(env.local_rank * devices_per_task,
                                    (env.local_rank + 1) * devices_per_task)))
            initialize_distributed(f"{host}:{coordinator_port(env.job_id)}", env.num_tasks,
                                   env.global_rank, local_ids)
        from ssl_jax.transfer import run  # after jax.distributed is up

        path, arg = config_lib.split_spec(config_spec)
        config = config_lib.build_config(config_lib.load_module(path), arg, overrides)
        primary = env.global_rank == 0
        entry = _plan_entry(sweep_dir, workdir) if sweep_dir else None
        if entry and primary:
            state.mark_running(workdir, entry["config_hash"], job_id=env.job_id)
        try:
            summary = run(config, workdir, progress=False)
        except Exception as e:
            if entry and primary:
                state.record_end(sweep_dir, workdir, state.failed_row(entry["row"], e))
            raise
        if entry and primary:
            state.record_end(sweep_dir, workdir, state.summary_row(entry["row"], summary, workdir))
        if "signal" in summary:
            if summary["signal"] == "SIGUSR2":
                # submitit's handler (back in place now the loop has returned): task 0
                # requeues the job and exits; the other tasks get back here
                signal.raise_signal(signal.SIGUSR2)
            sys.exit(exit_status(summary))
        return summary


def _plan_entry(sweep_dir: str, point_dir: str) -> dict:
    name = os.path.basename(os.path.normpath(point_dir))
    return next(e for e in state.read_plan(sweep_dir) if e["dir"] == name)

