"""--executor local|slurm: a run, or each point of a sweep, as a submitit job.

    --executor slurm --slurm.partition gpu --slurm.gpus_per_node 8 --slurm.nodes 2
                     --slurm.time_min 240 [--slurm.array_parallelism 4 ...] [--wait]
    --executor local [--slurm.tasks_per_node 2] [--sweep-workers K]

A sweep's points become the tasks of one Slurm job array (at most array_parallelism of them
at once); submission prints each job id and its log, and returns (--wait: waits for the
jobs and prints the sweep's table). The local executor runs the same jobs as processes on
this machine (K at a time) and always waits. Jobs and logs go under DIR/jobs/<job id>/.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from typing import Any

EXECUTORS = ("inline", "local", "slurm")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError("expected an integer >= 1")
    return int(text)


def _seconds(text: str) -> int:
    if not text.isdigit():
        raise ValueError("expected an integer >= 0 (seconds)")
    return int(text)


def _name(text: str) -> str:
    if not text or any(c.isspace() for c in text):
        raise ValueError("expected a name without spaces")
    return text


# --slurm.NAME -> (parse, submitit's Slurm parameter, also taken by the local executor)
OPTIONS: dict[str, tuple[Any, str, bool]] = {
    "partition": (_name, "partition", False),
    "nodes": (_positive, "nodes", False),
    "tasks_per_node": (_positive, "ntasks_per_node", True),
    "gpus_per_node": (_positive, "gpus_per_node", True),
    "cpus_per_task": (_positive, "cpus_per_task", False),
    "mem_gb": (_positive, "mem", False),
    "time_min": (_positive, "time", True),
    "array_parallelism": (_positive, "array_parallelism", False),
    "signal_delay_s": (_seconds, "signal_delay_s", True),
    "account": (_name, "account", False),
    "qos": (_name, "qos", False),
    "constraint": (_name, "constraint", False),
    "exclude": (_name, "exclude", False),
    "job_name": (_name, "job_name", False),
}
LOCAL_TIME_MIN = 7 * 24 * 60  # the local controller's time limit (it sends SIGUSR2 before)


def split_slurm_args(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """--slurm.NAME=VALUE or --slurm.NAME VALUE pulled out of argv -> ({NAME: VALUE}, rest)."""
    from ssl_jax import config as config_lib

    options, rest = config_lib.pull_prefixed_args(
        argv, "--slurm.", "--slurm.{key}: expected a value (--slurm.{key}=VALUE)")
    return dict(options), rest


def check_executor_args(args) -> None:
    """Checks --executor, its --slurm.* options (typed in place, args.slurm) and the flags
    they cannot go with, before anything is submitted; ValueError, one line."""
    given, kind = args.slurm, args.executor
    if kind == "inline":
        if given:
            raise ValueError(f"--slurm.{next(iter(given))} needs --executor slurm (or local)")
        if args.wait:
            raise ValueError("--wait needs --executor slurm (the local executor always waits)")
        return
    for key in given:
        if key not in OPTIONS:
            raise ValueError(f"--slurm.{key}: unknown option; expected one of "
                             f"{', '.join(OPTIONS)}")
        if kind == "local" and not OPTIONS[key][2]:
            local = ", ".join(k for k, v in OPTIONS.items() if v[2])
            raise ValueError(f"--slurm.{key} is a Slurm option; the local executor runs on this "
                             f"machine and takes only {local}")
    typed = {}
    for key, text in given.items():
        try:
            typed[key] = OPTIONS[key][0](text)
        except ValueError as e:
            raise ValueError(f"--slurm.{key}={text!r}: {e}") from None
    args.slurm = typed
    if args.distributed:
        raise ValueError(f"--executor {kind} with --distributed/--coordinator: a job starts "
                         f"jax.distributed itself (--slurm.nodes, --slurm.tasks_per_node)")
    if kind == "local" and args.wait:
        raise ValueError("--wait: the local executor always waits; drop it")
    if kind == "slurm":
        if args.sweep_workers != 1:
            raise ValueError(f"--sweep-workers={args.sweep_workers} with --executor slurm: the "
                             f"array's tasks run at once; cap them with "
                             f"--slurm.array_parallelism")
        if "time_min" not in typed:
            raise ValueError("--executor slurm needs --slurm.time_min MINUTES (the job's time "
                             "limit; Slurm's default would stop it after 5 minutes)")
        missing = [tool for tool in ("sbatch", "srun", "squeue") if shutil.which(tool) is None]
        if missing:
            raise ValueError(f"--executor slurm: {' and '.join(missing)} not on PATH; submit "
                             f"from a Slurm login node")


def make_executor(kind: str, folder: str, options: dict[str, Any]):
    """submitit's executor with the options; every job imports this checkout's ssl_jax."""
    import submitit

    setup = [f"export PYTHONPATH={shlex.quote(ROOT)}${{PYTHONPATH:+:$PYTHONPATH}}"]
    if kind == "local":
        executor = submitit.LocalExecutor(folder)
        executor.update_parameters(
            timeout_min=options.get("time_min", LOCAL_TIME_MIN), setup=setup,
            tasks_per_node=options.get("tasks_per_node", 1),
            **{k: options[k] for k in ("gpus_per_node", "signal_delay_s") if k in options})
        return executor
    executor = submitit.SlurmExecutor(folder)
    params = {OPTIONS[k][1]: v for k, v in options.items()}
    if "mem" in params:
        params["mem"] = f"{params['mem']}GB"
    params.setdefault("job_name", "ssl_jax")
    executor.update_parameters(setup=setup, **params)
    return executor


def _devices_per_task(options: dict) -> int | None:
    """GPUs of each task when a node runs several (each task then sees its own)."""
    tasks, gpus = options.get("tasks_per_node", 1), options.get("gpus_per_node")
    return gpus // tasks if gpus and tasks > 1 and gpus % tasks == 0 else None


def _jobs_folder(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "jobs", "%j")


def _announce(job, what: str) -> None:
    print(f"submitted {what}: job {job.job_id}, log {job.paths.stdout}", flush=True)


def submit_run(kind: str, options: dict, config_spec: str, overrides, workdir: str,
               wait: bool) -> dict | None:
    """A single run as one job; waits (local, or --wait) and returns its summary.json, else
    None once submitted."""
    from ssl_jax.cluster.job import RunJob

    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    executor = make_executor(kind, _jobs_folder(workdir), options)
    job = executor.submit(RunJob(), _absolute_spec(config_spec), list(overrides), workdir,
                          None, _devices_per_task(options))
    _announce(job, workdir)
    if kind == "slurm" and not wait:
        return None
    _wait([job])
    try:
        return job.results()[0]  # task 0: the one that writes the workdir
    except Exception:  # stopped by a signal (exit 128 + N, summary.json says so) or failed
        summary = _read_summary(workdir)
        if "signal" not in summary:
            raise RuntimeError(f"the job failed; see {job.paths.stderr}") from None
        return summary


def submitter(kind: str, options: dict, config_path: str, concurrency: int, wait: bool):
    """run_sweep's `submit`: each point a job (Slurm: one job array); the local executor runs
    `concurrency` at a time and waits, Slurm returns after submission unless `wait`."""
    from ssl_jax.cluster.job import RunJob
    from ssl_jax.sweep import state

    def submit(points, workdir: str) -> None:
        workdir = os.path.abspath(workdir)
        if kind == "slurm":  # a re-run while the array is queued: no second job per point
            queued = _queued_slurm_jobs()
            for point in list(points):
                job_id = (state.read_point(point.dir(workdir)) or {}).get("job_id")
                if job_id in queued:
                    print(f"sweep: {point.name} is still queued or running as job {job_id}; "
                          f"skipped", file=sys.stderr)
                    points.remove(point)
        if not points:
            return
        executor = make_executor(kind, _jobs_folder(workdir), options)

        def args(point):
            spec = _absolute_spec(config_path if point.arg is None
                                  else f"{config_path}:{point.arg}")
            return (spec, list(point.overrides), point.dir(workdir), workdir,
                    _devices_per_task(options))

        def pending(point, job):
            state.update_point(point.dir(workdir), state="pending", config_hash=point.hash,
                               job_id=str(job.job_id), row=None)
            _announce(job, point.name)

        if kind == "slurm":
            with executor.batch():  # one array
                jobs = [executor.submit(RunJob(), *args(p)) for p in points]
            for point, job in zip(points, jobs):
                pending(point, job)
            if wait:
                _wait(jobs)
            return
        queue, running = list(points), []
        while queue or running:
            while queue and len(running) < concurrency:
                point = queue.pop(0)
                job = executor.submit(RunJob(), *args(point))
                pending(point, job)
                running.append(job)
            _wait(running, any_one=True)
            running = [j for j in running if not j.done()]

    return submit


def _queued_slurm_jobs() -> set[str]:
    """Ids of this user's jobs Slurm still holds (pending, running, requeued), array tasks
    one by one ("81234_3")."""
    import getpass

    done = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-u", getpass.getuser()],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise ValueError(f"squeue failed ({done.stderr.strip() or done.returncode}); cannot tell "
                         f"which points are still queued")
    return set(done.stdout.split())


def _wait(jobs, any_one: bool = False, poll_s: float = 1.0) -> None:
    while not (any if any_one else all)(j.done() for j in jobs):
        time.sleep(poll_s)


def _absolute_spec(spec: str) -> str:
    path, colon, arg = spec.partition(":")
    return os.path.abspath(path) + colon + arg


def _read_summary(workdir: str) -> dict:
    path = os.path.join(workdir, "summary.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)
