"""A sweep's state on disk: what re-running its command skips, and what
`python -m ssl_jax.sweep status DIR` prints.

    DIR/sweep.json           the plan, in order: each point's name(s), directory, config hash
                             and the first cells of its table row (name, arg, same_run)
    DIR/<point>/point.json   the point's state, written by whoever trains it (this process, a
                             worker process, a submitit job): pending (submitted) | running |
                             done | stopped | failed, with its config hash, attempts, job id,
                             host, pid and, once it has ended, its table row

The tables (sweep.csv, sweep.md, sweep.png) are rebuilt from the point.json files of the
points that have ended, under a lock (jobs on several hosts may finish at once).
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import socket
from typing import Any, Iterator

from ssl_jax.files import write_atomic
from ssl_jax.sweep.tables import metric_columns, selection_key, write_tables
from ssl_jax.train.metrics import read_metrics

PLAN, POINT = "sweep.json", "point.json"
ENDED = ("done", "stopped", "failed")


def config_hash(config) -> str:
    """Equal for equal resolved configs: a re-run skips a point only if it is the same run."""
    text = json.dumps(config.to_dict(), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_plan(workdir: str, entries: list[dict], order: list[str] | None = None) -> None:
    """entries: {"name", "names", "dir", "config_hash", "row"} per point, in order. With
    `order` (every point name of the sweep: a run of some of its points), the points of
    earlier runs that this one does not train stay in the plan, in the sweep's order."""
    os.makedirs(workdir, exist_ok=True)
    if order is not None and os.path.exists(os.path.join(workdir, PLAN)):
        merged = {e["name"]: e for e in read_plan(workdir) if e["name"] in order}
        merged.update({e["name"]: e for e in entries})
        entries = sorted(merged.values(), key=lambda e: order.index(e["name"]))
    write_atomic(os.path.join(workdir, PLAN), json.dumps({"points": entries}, indent=2))


def read_plan(workdir: str) -> list[dict]:
    path = os.path.join(workdir, PLAN)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{workdir}: no {PLAN}; expected the --workdir of a sweep "
                                f"(python launch.py ... --sweep --workdir DIR)")
    with open(path) as f:
        return json.load(f)["points"]


def read_point(point_dir: str) -> dict[str, Any] | None:
    path = os.path.join(point_dir, POINT)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def update_point(point_dir: str, **fields) -> dict[str, Any]:
    """Merges `fields` into point.json (written whole), stamped with the time."""
    os.makedirs(point_dir, exist_ok=True)
    record = dict(read_point(point_dir) or {}, **fields,
                  updated=datetime.datetime.now().isoformat(timespec="seconds"))
    write_atomic(os.path.join(point_dir, POINT), json.dumps(record, indent=2))
    return record


def mark_running(point_dir: str, config_hash: str, job_id: str | None = None) -> None:
    """A point starts (or resumes) training here: one more attempt."""
    previous = read_point(point_dir) or {}
    same = previous.get("config_hash") == config_hash
    update_point(point_dir, state="running", config_hash=config_hash,
                 attempts=(previous.get("attempts", 0) if same else 0) + 1,
                 job_id=job_id if job_id is not None else previous.get("job_id"),
                 host=socket.gethostname(), pid=os.getpid(), row=None)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def busy_here(record: dict | None) -> bool:
    """Whether another live process on this host is training the point now."""
    return bool(record and record.get("state") == "running"
                and record.get("host") == socket.gethostname()
                and record.get("pid") not in (None, os.getpid()) and _alive(record["pid"]))


def shown_state(record: dict) -> str:
    """The state `status` prints: a point left "running" by a process of this host that is
    gone (killed, the machine restarted) is "interrupted" (a re-run resumes it)."""
    st = record.get("state", "pending")
    if (st == "running" and record.get("host") == socket.gethostname()
            and record.get("pid") is not None and not _alive(record["pid"])):
        return "interrupted"
    return st


def state_of(row: dict) -> str:
    """done | stopped | failed, from a finished point's table row."""
    if row["status"].startswith("failed"):
        return "failed"
    return "stopped" if "signal" in row else "done"


def needs_run(point_dir: str, config_hash: str, retry_failed: bool) -> bool:
    """A point trains unless it is done (the same config), or failed and not retried."""
    record = read_point(point_dir)
    if record is None or record.get("config_hash") != config_hash:
        return True
    if record.get("state") == "failed":
        return retry_failed
    return record.get("state") != "done"


def summary_row(base: dict, summary: dict, point_dir: str) -> dict:
    """A finished run's row of the table: its base cells (name, arg, same_run), how it
    ended, and its float metrics; `_measured` names those a run measured when it ended (a
    probe, ...) rather than logged while training."""
    logged = {k for r in read_metrics(os.path.join(point_dir, "metrics.jsonl")) for k in r}
    floats = {k: v for k, v in summary.items() if isinstance(v, float)}
    row = dict(base, status=summary["ended"], step=summary["step"],
               **({"signal": summary["signal"]} if "signal" in summary else {}),
               selection=summary.get("selection", "eval_loss:min"), **floats)
    row["_measured"] = sorted(k for k in floats if not k.startswith("eval_") and k not in logged)
    return row


def failed_row(base: dict, error: BaseException) -> dict:
    return dict(base, status=f"failed: {type(error).__name__}: {error}")


def record_end(workdir: str, point_dir: str, row: dict) -> None:
    """An ended point's row into its point.json, then the sweep's tables rebuilt."""
    update_point(point_dir, state=state_of(row), row=row, step=row.get("step"))
    rebuild_tables(workdir)


@contextlib.contextmanager
def _locked(workdir: str) -> Iterator[None]:
    with open(os.path.join(workdir, ".sweep.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ended_rows(workdir: str) -> list[dict]:
    """The rows of the plan's points that have ended (with their current config), in order."""
    rows = []
    for entry in read_plan(workdir):
        record = read_point(os.path.join(workdir, entry["dir"]))
        if (record and record.get("state") in ENDED and record.get("row")
                and record.get("config_hash") == entry["config_hash"]):
            rows.append(record["row"])
    return rows


def rebuild_tables(workdir: str) -> list[dict]:
    """sweep.csv / sweep.md / sweep.png from the points that have ended; -> their rows."""
    with _locked(workdir):
        rows = ended_rows(workdir)
        write_tables(rows, workdir)
    return rows


def status_rows(workdir: str) -> list[dict]:
    """One row per point of the plan: name, state, step, the selection metric, job id."""
    out = []
    rows = ended_rows(workdir)
    selection = selection_key(rows)
    metric = selection[0] if selection else (metric_columns(rows) or ["eval_loss"])[0]
    best = max if selection and selection[1] == "max" else min
    for entry in read_plan(workdir):
        point_dir = os.path.join(workdir, entry["dir"])
        record = read_point(point_dir) or {}
        if record.get("config_hash") != entry["config_hash"]:
            record = {}  # another run's record (the sweep's config changed): to be trained
        row = record.get("row") or {}
        step, value = row.get("step"), row.get(metric)
        if step is None:  # not ended: the last step it logged, its best evaluation so far
            logged = read_metrics(os.path.join(point_dir, "metrics.jsonl")) if record else []
            step = logged[-1]["step"] if logged else None
            values = [r[metric] for r in logged if isinstance(r.get(metric), float)]
            value = best(values) if values else None
        out.append({"name": entry["name"], "state": shown_state(record),
                    "step": "" if step is None else step,
                    metric: "" if value is None else f"{value:.4f}",
                    "attempts": record.get("attempts", 0), "job_id": record.get("job_id") or "",
                    "status": row.get("status", "")})
    return out


def format_status(rows: list[dict]) -> str:
    columns = list(rows[0]) if rows else ["name", "state"]
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(str(r[c]).ljust(w) for c, w in zip(columns, widths)).rstrip()
              for r in rows]
    return "\n".join(lines)
