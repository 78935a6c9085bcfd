"""Fine-tuning: transfer from a pre-training run, freezing, linear probes, layer-wise decay,
and a fine-tuned model beating the majority class."""
import json
import os

import jax
import numpy as np
import pytest

from ssl_jax import config as config_lib
from ssl_jax.tasks.finetune import FinetuneTask, encoder_multipliers
from ssl_jax.train.checkpoint import Checkpointer
from ssl_jax.train.loop import train_and_evaluate
from tests.conftest import ROOT

FIXTURES = os.path.join(ROOT, "tests", "fixtures")
SMALL = {"max_seq_len": "64", "batch_size": "8", "data.vocab_size": "2000",
         "num_eval_batches": "None", "data_threads": "1", "log_every_steps": "1",
         "model.dropout_rate": "0.0", "model.attention_dropout_rate": "0.0"}


def ft_config(spec: str, **fields):
    """experiments/finetune/<spec> at test size."""
    overrides = dict(SMALL, **{k: str(v) for k, v in fields.items()})
    return config_lib.load_config(os.path.join(ROOT, "experiments/finetune", spec),
                                  list(overrides.items()))


def passage_config(init: str, steps: int, **fields):
    """The quickstart's label-free task (which document a sentence comes from)."""
    config = config_lib.load_config(os.path.join(ROOT, "experiments/quickstart.py")).finetune
    config.finetune.init = init
    config_lib.apply_overrides(config, list(dict(
        SMALL, num_train_steps=str(steps), eval_every_steps=str(steps),
        checkpoint_every_steps=str(steps), batch_size="32",
        **{k: str(v) for k, v in fields.items()}).items()))
    return config


def final_params(workdir: str, task) -> dict:
    abstract = jax.eval_shape(task.init_params, jax.random.PRNGKey(0))
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    params = ckpt.restore_params(abstract, ckpt.latest_step())
    ckpt.close()
    return jax.device_get(params)


def pretrained_encoder(workdir: str) -> dict:
    from ssl_jax.interop.pretrained import load_pretrained
    return jax.device_get(load_pretrained(workdir).params["encoder"])


def same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a),
                                                    jax.tree_util.tree_leaves(b)))


def test_multipliers_by_hand():
    params = {"encoder": {"embeddings": {"w": np.zeros(2)},
                          "stack": {f"layer_{i}": {"w": np.zeros(2)} for i in range(3)},
                          "pooler": {"w": np.zeros(2)}},
              "classifier": {"w": np.zeros(2)}}
    m = encoder_multipliers(params, 3, layer_decay=0.5)  # depth: emb 0, layer i i+1, top 4
    assert float(m["classifier"]["w"]) == 1.0 and float(m["encoder"]["pooler"]["w"]) == 1.0
    assert [float(m["encoder"]["stack"][f"layer_{i}"]["w"]) for i in range(3)] == [
        0.5 ** 3, 0.5 ** 2, 0.5]
    assert float(m["encoder"]["embeddings"]["w"]) == 0.5 ** 4
    m = encoder_multipliers(params, 3, freeze_embeddings=True, freeze_layers=2)
    assert [float(m["encoder"]["stack"][f"layer_{i}"]["w"]) for i in range(3)] == [0, 0, 1]
    assert float(m["encoder"]["embeddings"]["w"]) == 0.0
    m = encoder_multipliers(params, 3, freeze_layers=1)  # layers only: embeddings train
    assert float(m["encoder"]["embeddings"]["w"]) == 1.0
    m = encoder_multipliers(params, 3, linear_probe=True)
    assert all(float(x) == 0 for x in jax.tree_util.tree_leaves(m["encoder"]))
    assert float(m["classifier"]["w"]) == 1.0
    scanned = {"encoder": {"stack": {"layers": {"w": np.zeros((3, 4, 5))}}}}
    m = encoder_multipliers(scanned, 3, freeze_layers=1, layer_decay=0.5)
    assert m["encoder"]["stack"]["layers"]["w"].shape == (3, 1, 1)
    np.testing.assert_array_equal(m["encoder"]["stack"]["layers"]["w"].ravel(), [0, 0.25, 0.5])
    with pytest.raises(ValueError, match="freeze_layers=4"):
        encoder_multipliers(params, 3, freeze_layers=4)
    with pytest.raises(ValueError, match="layer_decay=0"):
        encoder_multipliers(params, 3, layer_decay=0.0)


def test_frozen_parameters_stay_bit_identical(pretrained_tiny, tmp_path):
    workdir = pretrained_tiny[0]
    encoder = pretrained_encoder(workdir)
    config = passage_config(workdir, 4, **{"finetune.freeze_embeddings": True,
                                           "finetune.freeze_layers": 1,
                                           "finetune.num_documents": 4})
    task = FinetuneTask(config, str(tmp_path / "frozen"))
    train_and_evaluate(config, str(tmp_path / "frozen"), task=task, progress=False)
    after = final_params(str(tmp_path / "frozen"), task)
    assert same(after["encoder"]["embeddings"], encoder["embeddings"])
    assert same(after["encoder"]["stack"]["layer_0"], encoder["stack"]["layer_0"])
    assert not same(after["encoder"]["stack"]["layer_1"], encoder["stack"]["layer_1"])

    config = passage_config(workdir, 4, **{"finetune.linear_probe": True,
                                           "finetune.num_documents": 4})
    task = FinetuneTask(config, str(tmp_path / "probe"))
    train_and_evaluate(config, str(tmp_path / "probe"), task=task, progress=False)
    after = final_params(str(tmp_path / "probe"), task)
    assert same(after["encoder"], encoder)  # the whole encoder, pooler included
    fresh = jax.device_get(jax.jit(task.init_params)(jax.random.PRNGKey(config.seed)))
    assert not same(after["classifier"], fresh["classifier"])


def test_finetuning_from_pretraining_beats_the_majority_class(pretrained_tiny, tmp_path):
    """The quickstart's task from the tiny pre-trained run (measured: 0.60 vs 0.24)."""
    config = passage_config(pretrained_tiny[0], 150, **{"finetune.num_documents": 8,
                                                        "optimizer.learning_rate": 1e-3})
    summary = train_and_evaluate(config, str(tmp_path), FinetuneTask, progress=False)
    with open(tmp_path / "facts.json") as f:
        majority = json.load(f)["majority_class_accuracy"]
    assert summary["selection"] == "eval_accuracy:max"
    assert summary["eval_accuracy"] > majority + 0.2, (summary["eval_accuracy"], majority)


def test_eval_scores_every_split_from_the_predictions(tmp_path):
    """MNLI (released TSVs): the loop's eval (padded batches, predict + score) equals the
    metrics computed here from the model's own logits, matched and mismatched apart; the
    cross-entropy stat equals the hand-computed mean."""
    from ssl_jax.data import glue
    from ssl_jax.train.loop import evaluate
    from ssl_jax.train.sharding import Parallel
    from ssl_jax.train.step import make_eval_step

    config = ft_config("glue.py:task=mnli,variant=tiny,steps=2",
                       **{"finetune.path": os.path.join(FIXTURES, "glue", "MNLI"),
                          "batch_size": "4"})
    task = FinetuneTask(config, str(tmp_path))
    params = jax.jit(task.init_params)(jax.random.PRNGKey(3))
    parallel = Parallel("jit")
    got = evaluate(task, parallel, parallel.wrap_eval_step(make_eval_step(task)), params, 4,
                   predict_step=parallel.wrap_predict_step(task.predict))
    features = task.eval_examples()
    batch = {k: np.stack([f[k] for f in features]) for k in features[0]}
    logits = np.asarray(task.build_model(train=False).apply({"params": params},
                                                            **task.model_inputs(batch)))
    predictions = logits.argmax(-1)
    matched = glue.load_glue("mnli", "validation_matched", os.path.join(FIXTURES, "glue", "MNLI"))
    n = len(matched)
    labels = batch["label"]
    assert len(features) > n  # mismatched follows matched
    assert got["eval_accuracy"] == pytest.approx(np.mean(predictions[:n] == labels[:n]))
    assert got["eval_validation_mismatched_accuracy"] == pytest.approx(
        np.mean(predictions[n:] == labels[n:]))
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -log_probs[np.arange(len(labels)), labels].mean()
    assert got["eval_loss"] == pytest.approx(nll, rel=1e-5)
    assert task.best_metric == "eval_accuracy" and task.best_mode == "max"


@pytest.mark.parametrize("arg,fields,message", [
    ("variant=tiny", {"finetune.dataset": "glue/colaa"}, "finetune.dataset='glue/colaa': unknown GLUE task"),
    ("variant=tiny", {"finetune.dataset": "imdb"}, "finetune.dataset='imdb'"),
    ("variant=tiny,path=/nonexistent/MRPC", {}, "/nonexistent/MRPC"),
    ("init=/nonexistent/run", {}, "'/nonexistent/run' is not a directory"),
    ("variant=tiny,random_init=True", {}, "finetune.random_init=True needs finetune.init"),
    ("variant=tiny,freeze_layers=5", {}, "finetune.freeze_layers=5: expected 0 to 2"),
    ("variant=tiny,layer_decay=1.5", {}, "finetune.layer_decay=1.5"),
    ("variant=tiny,pooling=max", {}, "finetune.pooling='max'"),
])
def test_bad_finetune_input_fails_before_training(arg, fields, message, tmp_path, capsys):
    import launch

    if "path=" not in arg:
        arg += ",path=" + os.path.join(FIXTURES, "glue", "MRPC")
    code = launch.main(["--config",
                        os.path.join(ROOT, "experiments/finetune/glue.py:task=mrpc," + arg),
                        "--workdir", str(tmp_path / "run"), "--no-progress"]
                       + [f"--config.{k}={v}" for k, v in fields.items()])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not (tmp_path / "run" / "checkpoints").exists()
