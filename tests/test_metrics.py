"""ssl_jax.train.metrics: metrics.jsonl written and read back exactly, TensorBoard events,
and a resume dropping the records a crashed run wrote after its last checkpoint."""
import json
import math
import os

import jax.numpy as jnp
import numpy as np

from ssl_jax.train.metrics import MetricWriter, read_metrics


def test_records_round_trip_as_floats(tmp_path):
    writer = MetricWriter(str(tmp_path))
    first = writer.write(1, {"loss": jnp.float32(2.5), "accuracy": np.float64(0.25), "n": 3})
    writer.write(2, {"loss": 1.75, "eval_loss": float("nan")})
    writer.close()
    assert first == {"step": 1, "loss": 2.5, "accuracy": 0.25, "n": 3.0}
    assert all(type(v) is float for k, v in first.items() if k != "step")
    records = read_metrics(str(tmp_path / "metrics.jsonl"))
    assert records[0] == first
    assert records[1]["step"] == 2 and records[1]["loss"] == 1.75
    assert math.isnan(records[1]["eval_loss"])  # kept in the file (JSON NaN), not in TB
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tb"))


def test_resume_drops_records_after_the_checkpoint_and_appends(tmp_path):
    writer = MetricWriter(str(tmp_path), tensorboard=False)
    for step in range(1, 6):  # a run that logged to step 5, checkpointed at 3, then crashed
        writer.write(step, {"loss": float(10 - step)})
    writer.close()
    resumed = MetricWriter(str(tmp_path), resume_step=3, tensorboard=False)
    assert [r["step"] for r in read_metrics(resumed.path)] == [1, 2, 3]
    resumed.write(4, {"loss": 0.5})
    resumed.close()
    records = read_metrics(str(tmp_path / "metrics.jsonl"))
    assert [(r["step"], r["loss"]) for r in records] == [(1, 9.0), (2, 8.0), (3, 7.0), (4, 0.5)]


def test_a_fresh_run_starts_a_new_file_and_a_missing_file_reads_empty(tmp_path):
    assert read_metrics(str(tmp_path / "metrics.jsonl")) == []
    (tmp_path / "metrics.jsonl").write_text('{"step": 7, "loss": 1.0}\n\n')
    assert read_metrics(str(tmp_path / "metrics.jsonl")) == [{"step": 7, "loss": 1.0}]
    writer = MetricWriter(str(tmp_path), resume_step=None, tensorboard=False)  # no checkpoint
    writer.write(1, {"loss": 3.0})
    writer.close()
    assert read_metrics(str(tmp_path / "metrics.jsonl")) == [{"step": 1, "loss": 3.0}]
