"""Metric sinks: metrics.jsonl (one JSON object per logged step), TensorBoard events."""
from __future__ import annotations

import json
import math
import os

import numpy as np


def _to_float(value) -> float:
    return float(np.asarray(value))


class MetricWriter:
    """Appends to DIR/metrics.jsonl and DIR/tb/. On resume from `resume_step`, drops the
    records a crashed or pre-empted run wrote after its last checkpoint; `previous` holds
    the records kept.

    primary=False (the other processes of a multi-host run): writes nothing, returns the
    same records; process 0 is the workdir's one writer (one metrics.jsonl, one TensorBoard
    event stream)."""

    def __init__(self, workdir: str, resume_step: int | None = None, tensorboard: bool = True,
                 primary: bool = True):
        self.path = os.path.join(workdir, "metrics.jsonl")
        # read before process 0 rewrites the file; the same records either way
        self.previous = ([] if resume_step is None else
                         [r for r in read_metrics(self.path) if r["step"] <= resume_step])
        self._file = self._tb = None
        if not primary:
            return
        if resume_step is not None and os.path.exists(self.path):
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in self.previous)
            os.replace(tmp, self.path)
        elif resume_step is None and os.path.exists(self.path):
            os.remove(self.path)
        self._file = open(self.path, "a")
        if tensorboard:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(os.path.join(workdir, "tb"), flush_secs=30)

    def write(self, step: int, metrics: dict) -> dict:
        record = {"step": int(step)}
        record.update({k: _to_float(v) for k, v in metrics.items()})
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        if self._tb is not None:
            for k, v in record.items():
                if k != "step" and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)
        return record

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
