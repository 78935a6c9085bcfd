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
    records a crashed or pre-empted run wrote after its last checkpoint."""

    def __init__(self, workdir: str, resume_step: int | None = None, tensorboard: bool = True):
        self.path = os.path.join(workdir, "metrics.jsonl")
        if resume_step is not None and os.path.exists(self.path):
            kept = [r for r in read_metrics(self.path) if r["step"] <= resume_step]
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in kept)
            os.replace(tmp, self.path)
        elif resume_step is None and os.path.exists(self.path):
            os.remove(self.path)
        self._file = open(self.path, "a")
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(os.path.join(workdir, "tb"), flush_secs=30)

    def write(self, step: int, metrics: dict) -> dict:
        record = {"step": int(step)}
        record.update({k: _to_float(v) for k, v in metrics.items()})
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in record.items():
                if k != "step" and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)
        return record

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
