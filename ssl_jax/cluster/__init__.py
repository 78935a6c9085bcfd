"""Where a run executes: multi-host start-up (distributed), submitit jobs on Slurm or as local
processes (executors, job), and the command that starts a run on every host of a TPU pod
slice (tpu). launch.py's --distributed / --executor / --tpu are thin calls into these."""

import signal


def exit_status(summary: dict) -> int:
    """0 for a finished (or paused) run; 128 + the signal's number for a run stopped by a
    signal (SIGTERM: 143, SIGINT: 130, SIGUSR2: 140), as a shell reports a process the signal
    killed, so a scheduler can tell a pre-emption from success (the checkpoint is saved; the
    same command resumes)."""
    return 128 + signal.Signals[summary["signal"]].value if "signal" in summary else 0
