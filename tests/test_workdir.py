"""The workdir contract (ssl_jax.train.workdir): another run is refused naming its fields and
writing nothing; a longer run extends (recorded, bit-identical to a straight run); a shorter
one than reached is refused; a failure before the first step leaves nothing behind."""
import hashlib
import json
import os

import pytest

from ssl_jax import config as config_lib
from ssl_jax.train.loop import train_and_evaluate
from ssl_jax.train.metrics import read_metrics
from ssl_jax.train.workdir import RUN_CONTROL, check_resume, config_dict, read_history
from ssl_jax.transfer import run_transfer
from ssl_jax.tasks.bert_pretrain import BertPretrainTask
from tests.conftest import ROOT, tiny_config

import launch

CONSTANT_LR = {"optimizer.decay": "constant", "optimizer.warmup_steps": 0,
               "data.masking": "dynamic", "checkpoint_every_steps": 3, "eval_every_steps": 3}


def _snapshot(directory) -> dict[str, str]:
    """Every file under `directory` -> a digest of its bytes (what "nothing written" compares)."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _losses(workdir):
    return {r["step"]: r["loss"] for r in read_metrics(os.path.join(workdir, "metrics.jsonl"))}


def test_grown_run_is_recorded_and_equals_a_straight_run_another_run_or_shorter_is_refused(
        tmp_path):
    straight, grown = str(tmp_path / "straight"), str(tmp_path / "grown")
    train_and_evaluate(tiny_config(num_train_steps=6, **CONSTANT_LR), straight,
                       BertPretrainTask, progress=False)
    first = train_and_evaluate(tiny_config(num_train_steps=3, **CONSTANT_LR), grown,
                               BertPretrainTask, progress=False)
    assert first["ended"] == "completed" and first["step"] == 3
    before = _snapshot(grown)

    # another run: refused before anything is written, naming each field old -> new
    other = tiny_config("mini", num_train_steps=3, **CONSTANT_LR,
                        **{"optimizer.learning_rate": 5e-4})
    with pytest.raises(ValueError) as refused:
        train_and_evaluate(other, grown, BertPretrainTask, progress=False)
    message = str(refused.value)
    assert "\n" not in message
    assert "model.hidden_size: 128 -> 256" in message, message
    assert "model.variant: \"tiny\" -> \"mini\"" in message, message
    assert "optimizer.learning_rate: 0.0001 -> 0.0005" in message, message
    assert "num_train_steps" not in message.split(";")[0]  # run-control fields are not named
    assert _snapshot(grown) == before

    # shorter than the step reached: refused, nothing written
    with pytest.raises(ValueError, match=r"num_train_steps=2 is below step 3"):
        train_and_evaluate(tiny_config(num_train_steps=2, **CONSTANT_LR), grown,
                           BertPretrainTask, progress=False)
    assert _snapshot(grown) == before

    # longer: the run continues from step 3, recorded; with a constant learning rate the
    # extended run is bit-identical to the one trained straight to 6 steps
    second = train_and_evaluate(tiny_config(num_train_steps=6, num_eval_batches=1,
                                            **CONSTANT_LR), grown, BertPretrainTask,
                                progress=False)
    assert second["resumed_from"] == 3 and second["step"] == 6
    a, b = _losses(straight), _losses(grown)
    assert sorted(a) == sorted(b) == list(range(1, 7))
    for step in a:
        assert a[step] == b[step], (step, a[step], b[step])
    [entry] = read_history(grown)
    assert entry["step"] == 3
    assert entry["changed"] == {"num_train_steps": [3, 6], "num_eval_batches": [2, 1]}
    saved = json.load(open(os.path.join(grown, "config.json")))
    assert saved["num_train_steps"] == 6 and saved["num_eval_batches"] == 1
    # the same run again: resumes (finished), nothing new in the history
    again = train_and_evaluate(tiny_config(num_train_steps=6, num_eval_batches=1,
                                           **CONSTANT_LR), grown, BertPretrainTask,
                               progress=False)
    assert again["resumed_from"] == 6 and len(read_history(grown)) == 1


def _missing_corpus(**fields):
    return tiny_config(**{"data.corpus": "files", "data.files": "/nonexistent/*.txt", **fields})


def test_a_failure_before_the_first_step_leaves_no_workdir(tmp_path):
    fresh = tmp_path / "new" / "run"
    with pytest.raises(FileNotFoundError, match="matches no file"):
        train_and_evaluate(_missing_corpus(), str(fresh), BertPretrainTask, progress=False)
    assert not (tmp_path / "new").exists()  # the parent this call created goes too

    existing = tmp_path / "mine"  # a directory the user made: kept, with its files
    existing.mkdir()
    (existing / "notes.txt").write_text("keep me")
    with pytest.raises(FileNotFoundError):
        train_and_evaluate(_missing_corpus(), str(existing), BertPretrainTask, progress=False)
    assert sorted(os.listdir(existing)) == ["notes.txt"]
    assert (existing / "notes.txt").read_text() == "keep me"


def test_the_refusal_is_one_line_and_exit_2_through_launch(tmp_path, capsys):
    workdir = tmp_path / "run"
    workdir.mkdir()
    config = tiny_config()
    (workdir / "config.json").write_text(json.dumps(config_dict(config)))
    before = _snapshot(workdir)
    argv = ["--config", os.path.join(ROOT, "experiments/bert/pretrain.py:tiny,steps=4"),
            "--workdir", str(workdir), "--no-progress", "--config.max_seq_len=32"]
    assert launch.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: workdir ") and err.count("\n") == 1, err
    assert "max_seq_len: 64 -> 32" in err and "data.vocab_size: 2000 -> 30000" in err, err
    assert _snapshot(workdir) == before


def test_check_resume_rules():
    assert set(RUN_CONTROL) >= {"num_train_steps", "log_every_steps", "eval_every_steps",
                                "checkpoint_every_steps", "checkpoint_keep",
                                "num_eval_batches", "data_threads", "parallel", "mesh.fsdp",
                                "sharding_rules", "grad_accum_steps"}
    for field in ("seed", "task", "model.num_layers", "data.mask_rate",
                  "optimizer.weight_decay"):
        assert field not in RUN_CONTROL


def test_check_resume_allows_run_control_and_a_new_dir(tmp_path):
    check_resume(tiny_config(), str(tmp_path / "absent"))  # a new workdir: nothing to compare
    (tmp_path / "config.json").write_text(json.dumps(config_dict(tiny_config())))
    check_resume(tiny_config(num_train_steps=50, log_every_steps=5, eval_every_steps=7,
                             checkpoint_every_steps=9, checkpoint_keep=1, num_eval_batches=3,
                             data_threads=2), str(tmp_path))
    with pytest.raises(ValueError, match=r"seed: 0 -> 1[;,]"):
        check_resume(tiny_config(seed=1), str(tmp_path))
    (tmp_path / "notes.txt").write_text("a file")
    with pytest.raises(ValueError, match="notes.txt' is a file; expected a directory"):
        check_resume(tiny_config(), str(tmp_path / "notes.txt"))
    (tmp_path / "config.json").unlink()
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(ValueError, match="has checkpoints/ but no config.json"):
        check_resume(tiny_config(), str(tmp_path))


def test_transfer_checks_every_stage_before_training_any(tmp_path):
    """A changed fine-tuning field is refused before the pre-training stage is touched."""
    config = config_lib.load_config(os.path.join(ROOT, "experiments/quickstart.py"))
    stage = tmp_path / "finetune_pretrained"
    stage.mkdir()
    other = config_lib.load_config(os.path.join(ROOT, "experiments/quickstart.py"),
                                   [("finetune.optimizer.learning_rate", "0.5")])
    other.finetune.finetune.init = str(tmp_path / "pretrain")
    (stage / "config.json").write_text(json.dumps(config_dict(other.finetune)))
    trained = []
    with pytest.raises(ValueError, match=r"finetune_pretrained' holds another run: "
                                         r"optimizer.learning_rate: 0.5 -> 0.0003;"):
        run_transfer(config, str(tmp_path), lambda c, d: trained.append(d))
    assert trained == [] and not (tmp_path / "pretrain").exists()
