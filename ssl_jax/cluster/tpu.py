"""--tpu NAME --zone Z [--project P] [--run]: the gcloud line that starts this same launch.py
on every host of a TPU pod slice, each with --distributed (jax.distributed.initialize finds
the slice's hosts itself). The workdir must be a path every host sees (a shared disk or a
gcsfuse-mounted bucket), so it must be absolute."""
from __future__ import annotations

import os
import shlex
import subprocess

CODE_DIR = "~/ssl_jax"  # where the README's flow copies the repository on each host

# flags of this launch.py command that stay on this machine
_LOCAL_FLAGS = {"--tpu": 1, "--zone": 1, "--project": 1, "--run": 0}


def remote_argv(argv: list[str]) -> list[str]:
    """launch.py's arguments for the hosts: the TPU flags dropped, --distributed added."""
    out, i = [], 0
    while i < len(argv):
        flag, eq, _ = argv[i].partition("=")
        if flag in _LOCAL_FLAGS:
            i += 1 if eq else 1 + _LOCAL_FLAGS[flag]
            continue
        out.append(argv[i])
        i += 1
    return out + ([] if "--distributed" in out else ["--distributed"])


def check_tpu_args(args) -> None:
    if args.tpu is None:
        for flag in ("zone", "project"):
            if getattr(args, flag) is not None:
                raise ValueError(f"--{flag} needs --tpu NAME")
        if args.run:
            raise ValueError("--run needs --tpu NAME")
        return
    if args.zone is None:
        raise ValueError(f"--tpu {args.tpu} needs --zone ZONE (the slice's zone, e.g. "
                         f"us-central2-b)")
    if args.executor != "inline":
        raise ValueError(f"--tpu with --executor {args.executor}: a TPU slice runs the command "
                         f"on its own hosts; drop --executor")
    if args.distributed:
        raise ValueError("--tpu adds --distributed to the hosts' command itself; drop "
                         "--distributed/--coordinator")
    if not os.path.isabs(args.workdir):
        raise ValueError(f"--workdir {args.workdir}: with --tpu it must be a path every host "
                         f"of the slice sees (an absolute path on a shared disk or a "
                         f"gcsfuse-mounted bucket, e.g. /mnt/runs/x)")


def tpu_command(argv: list[str], name: str, zone: str, project: str | None = None) -> list[str]:
    """gcloud compute tpus tpu-vm ssh NAME --zone=Z [--project=P] --worker=all --command ..."""
    remote = f"cd {CODE_DIR} && python3 launch.py {shlex.join(remote_argv(argv))}"
    return (["gcloud", "compute", "tpus", "tpu-vm", "ssh", name, f"--zone={zone}"]
            + ([f"--project={project}"] if project else [])
            + ["--worker=all", f"--command={remote}"])


def run_on_tpu(argv: list[str], args) -> int:
    """Prints the command; with --run, executes it (gcloud's exit status)."""
    command = tpu_command(argv, args.tpu, args.zone, args.project)
    print(shlex.join(command), flush=True)
    if not args.run:
        return 0
    return subprocess.run(command).returncode
