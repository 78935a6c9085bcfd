"""`python -m ssl_jax.preview` prints examples and, last, their statistics as JSON."""
import json
import os

from ssl_jax import preview
from tests.conftest import ROOT, run_main


def test_preview_statistics_match_the_config(capsys):
    out = run_main(capsys, preview.main, "--config",
                   os.path.join(ROOT, "experiments/quickstart.py"), "--num", "2",
                   "--config.pretrain.data.vocab_size=3000",
                   "--config.pretrain.data.dupe_factor=3")
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("--- example 0 (") and "[CLS]" in lines[1] and "[MASK]<" in lines[1]
    stats = json.loads(lines[-1])
    assert stats["num_sequences"] > 2000
    assert abs(stats["selected_fraction"] - 0.15) < 0.01
    assert abs(stats["mask_fraction"] - 0.8) < 0.02
    assert abs(stats["random_fraction"] - 0.1) < 0.015
    assert abs(stats["kept_fraction"] - 0.1) < 0.015
    assert abs(stats["is_next_fraction"] - 0.5) < 0.04
    assert 100 < stats["mean_tokens_per_sequence"] <= 128


def test_preview_rejects_a_bad_config(capsys):
    out = run_main(capsys, preview.main, "--config",
                   os.path.join(ROOT, "experiments/quickstart.py"),
                   "--config.pretrain.data.mask_rate=2")
    assert out.returncode == 2 and "data.mask_rate=2.0 must be in (0, 1)" in out.stderr
