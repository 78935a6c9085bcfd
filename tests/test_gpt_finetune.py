"""GPT fine-tuning (the GPT-1 recipe): input transforms, the auxiliary LM loss, multiple
choice and similarity against hand/NumPy references, a tiny pre-trained GPT fine-tuned above
the majority class, frozen decoders, and BERT-only heads refused."""
import csv
import json
import os

import jax
import numpy as np
import pytest

from ssl_jax import config as config_lib
from ssl_jax.data import bpe, finetune as finetune_data
from ssl_jax.models.gpt import GptConfig, GptLM
from ssl_jax.tasks.finetune import Finetune, FinetuneTask, encoder_multipliers
from ssl_jax.train.loop import train_and_evaluate
from tests.conftest import ROOT

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "the cat ran", "dogs and cats"] * 5
S = 16


@pytest.fixture(scope="module")
def recipe():
    tokenizer = bpe.train_bpe(TEXTS, 300)
    return finetune_data.gpt_recipe(tokenizer, tokenizer.vocab_size)


def test_input_transforms_by_hand(recipe):
    V = recipe.start_id
    assert (recipe.delim_id, recipe.extract_id) == (V + 1, V + 2)
    assert recipe.bpe.vocab_size == V + 3
    a, b = [5, 6, 7], [8, 9]
    f = recipe.encode(np.asarray(a), None, 8)  # classification
    assert f["input_ids"].tolist() == [V, 5, 6, 7, V + 2] + [recipe.bpe.eot_id] * 3
    assert f["input_mask"].tolist() == [1] * 5 + [0] * 3
    f = recipe.encode(np.asarray(a), np.asarray(b), 8)  # entailment: exactly full
    assert f["input_ids"].tolist() == [V, 5, 6, 7, V + 1, 8, 9, V + 2]
    f = recipe.encode(np.asarray(a), np.asarray(b), 7)  # the longer cut first
    assert f["input_ids"].tolist() == [V, 5, 6, V + 1, 8, 9, V + 2]
    f = recipe.encode_similar(np.asarray(a), np.asarray(b), 9)  # both orders
    assert f["input_ids"][:, :8].tolist() == [[V, 5, 6, 7, V + 1, 8, 9, V + 2],
                                              [V, 8, 9, V + 1, 5, 6, 7, V + 2]]
    # the special tokens are in the saved vocabulary, the text around them unchanged
    assert recipe.bpe.encode("<|start|>the cat<|extract|>") == [V] + recipe.bpe.encode(
        "the cat") + [V + 2]
    # multiple choice: one sequence per option
    source = finetune_data.ChoiceSource("test", [{"context": "the cat", "label": 1,
                                                  "options": ["sat", "ran", "dogs"]}], {})
    f = source._encode(recipe, source.train, 12)[0]
    enc = recipe.bpe.encode
    assert f["input_ids"].shape == (3, 12) and int(f["label"]) == 1
    for row, option in zip(f["input_ids"], ["sat", "ran", "dogs"]):
        want = [V] + enc("the cat") + [V + 1] + enc(option) + [V + 2]
        assert row[:len(want)].tolist() == want
        assert (row[len(want):] == recipe.bpe.eot_id).all()


def test_bert_features_unchanged_through_the_recipe():
    """A bare WordPiece and BertRecipe give encode_pair's features."""
    from ssl_jax.data import tokenizer
    wp = tokenizer.train_wordpiece(TEXTS, 200)
    source = finetune_data.PairSource([{"text_a": "the cat", "text_b": "a dog", "label": 0}],
                                      {}, ("a", "b"))
    source.name = "test"
    got = source.features(wp, S)[0][0]
    want = finetune_data.encode_pair(wp, wp.encode_batch(["the cat"])[0],
                                     wp.encode_batch(["a dog"])[0], S)
    assert all(np.array_equal(got[k], want[k]) for k in want)


def small_config(**fields):
    overrides = {"max_seq_len": str(S), "model.dropout_rate": "0.0",
                 "model.attention_dropout_rate": "0.0", "model.scan_layers": "False"}
    # set after loading: these compute halves get their GPT decoder directly, with no
    # finetune.init for the config check to see (it refuses lm_coef on a BERT init)
    lm_coef = fields.pop("finetune.lm_coef", None)
    overrides.update({k: str(v) for k, v in fields.items()})
    config = config_lib.load_config(os.path.join(ROOT, "experiments/finetune/glue.py:task=mrpc"),
                                    list(overrides.items()))
    if lm_coef is not None:
        config.finetune.lm_coef = float(lm_coef)
    return config


DECODER = GptConfig(vocab_size=40, hidden_size=16, num_layers=2, num_heads=2, mlp_dim=32,
                    max_len=32, dropout_rate=0.0, attention_dropout_rate=0.0)


def batch_of(rows, rng):
    """Right-padded random sequences [2, *rows, S] of lengths 3..S and their labels."""
    shape = (2,) + rows
    lengths = rng.integers(3, S + 1, size=shape)
    mask = (np.arange(S) < lengths[..., None]).astype(np.int32)
    ids = rng.integers(0, DECODER.vocab_size, size=shape + (S,)).astype(np.int32) * mask
    return {"input_ids": ids, "input_mask": mask, "example_weight": np.ones(2, np.float32),
            "label": np.asarray([0, 1], np.int32)}


def task_and_params(head, num_outputs, similarity=False, **fields):
    task = Finetune(small_config(**fields), vocab_size=DECODER.vocab_size, head=head,
                    num_outputs=num_outputs, decoder=DECODER, similarity=similarity)
    return task, jax.device_get(jax.jit(task.init_params)(jax.random.PRNGKey(0)))


def states(params, ids, mask):
    """GptLM applied by hand: the final hidden state at each row's last real token."""
    hidden = np.asarray(jax.jit(lambda p, i, m: GptLM(DECODER).apply(
        {"params": p}, i, m, return_hidden=True))(params["decoder"], ids, mask))
    return hidden[np.arange(len(ids)), mask.sum(-1) - 1]


def head_logits(task, params, batch):
    """The task model's head logits (jitted: a tiny model compiles faster than it runs
    op by op)."""
    return np.asarray(jax.jit(lambda p, b: task.build_model(train=False).apply(
        {"params": p}, **task.model_inputs(b))[0])(params, batch))


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_auxiliary_lm_loss_by_hand():
    task, params = task_and_params("sequence", 3, **{"finetune.lm_coef": 0.5})
    assert task.loss_terms == ("loss_ce", "loss_lm_weighted")
    batch = batch_of((), np.random.default_rng(0))
    stats = jax.device_get(jax.jit(lambda p, b: task.stats(p, b, None, train=False))(
        params, batch))
    logits = np.asarray(jax.jit(GptLM(DECODER).apply)(  # the LM's own logits
        {"params": params["decoder"]}, batch["input_ids"], batch["input_mask"]))
    lp = log_softmax(logits)[:, :-1]  # predicts positions 1..S-1
    targets = batch["input_ids"][:, 1:]
    weights = batch["input_mask"][:, 1:]
    nll = -np.take_along_axis(lp, targets[..., None], -1)[..., 0]
    total, count = stats["loss_lm"]
    assert float(count) == weights.sum() == batch["input_mask"].sum() - 2
    np.testing.assert_allclose(float(total), (nll * weights).sum(), rtol=1e-5)
    np.testing.assert_allclose(float(stats["loss_lm_weighted"][0]), 0.5 * float(total),
                               rtol=1e-6)
    # the head reads the [extract] (last real) state
    head = params["classifier"]
    want = states(params, batch["input_ids"], batch["input_mask"]) @ head["kernel"] + head["bias"]
    np.testing.assert_allclose(head_logits(task, params, batch), want, rtol=1e-5, atol=1e-6)
    off = Finetune(small_config(**{"finetune.lm_coef": 0.0}), vocab_size=DECODER.vocab_size,
                   head="sequence", num_outputs=3, decoder=DECODER)
    assert off.loss_terms == ("loss_ce",)


def test_multiple_choice_scores_softmax_over_options():
    task, params = task_and_params("choice", 3)
    batch = batch_of((3,), np.random.default_rng(1))
    ids, mask = batch["input_ids"].reshape(-1, S), batch["input_mask"].reshape(-1, S)
    head = params["classifier"]
    scores = (states(params, ids, mask) @ head["kernel"] + head["bias"]).reshape(2, 3)
    got = np.asarray(jax.jit(task.predict)(params, batch)["prediction"])
    np.testing.assert_array_equal(got, scores.argmax(-1))
    stats = jax.device_get(jax.jit(lambda p, b: task.stats(p, b, None, train=False))(
        params, batch))
    want = -log_softmax(scores)[np.arange(2), batch["label"]].sum()
    np.testing.assert_allclose(float(stats["loss_ce"][0]), want, rtol=1e-5)
    assert float(stats["loss_lm"][1]) == batch["input_mask"][..., 1:].sum()  # every option


def test_similarity_adds_both_orders_states():
    task, params = task_and_params("sequence", 1, similarity=True)
    batch = batch_of((2,), np.random.default_rng(2))
    h = [states(params, batch["input_ids"][:, k], batch["input_mask"][:, k]) for k in (0, 1)]
    head = params["classifier"]
    logits = head_logits(task, params, batch)
    np.testing.assert_allclose(np.asarray(logits), (h[0] + h[1]) @ head["kernel"] + head["bias"],
                               rtol=1e-5, atol=1e-6)


def test_multipliers_of_the_gpt_tree():
    task = Finetune(small_config(), vocab_size=DECODER.vocab_size, head="sequence",
                    num_outputs=2, decoder=DECODER)
    params = jax.eval_shape(task.init_params, jax.random.PRNGKey(0))  # shapes suffice
    m = encoder_multipliers(params, 2, freeze_embeddings=True, freeze_layers=1,
                            layer_decay=0.5)
    d = m["decoder"]
    assert float(d["token"]["embedding"]) == float(d["position"]["embedding"]) == 0.0
    assert float(jax.tree_util.tree_leaves(d["stack"]["layer_0"])[0]) == 0.0
    assert float(jax.tree_util.tree_leaves(d["stack"]["layer_1"])[0]) == 0.5
    assert float(jax.tree_util.tree_leaves(d["ln_final"])[0]) == 1.0
    assert float(m["classifier"]["kernel"]) == 1.0


def test_frozen_tables_get_no_gradient_through_the_lm_loss():
    """freeze_embeddings: the tied output layer of the auxiliary loss is the frozen token
    table, so no gradient reaches it; the layers and the head still learn."""
    task, params = task_and_params("sequence", 2, **{"finetune.freeze_embeddings": True})
    batch = batch_of((), np.random.default_rng(3))

    def loss(p):
        s = task.stats(p, batch, jax.random.PRNGKey(0), train=True)
        return s["loss_ce"][0] + s["loss_lm_weighted"][0]

    grads = jax.device_get(jax.jit(jax.grad(loss))(params))
    assert not np.any(grads["decoder"]["token"]["embedding"])
    assert not np.any(grads["decoder"]["position"]["embedding"])
    assert np.any(grads["decoder"]["ln_final"]["scale"]) and np.any(grads["classifier"]["kernel"])


# --- end to end: a tiny pre-trained GPT ---------------------------------------------------

@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory):
    """gpt-tiny (2 x 128), BPE vocab 1000, 64-token windows, 40 steps."""
    from ssl_jax.tasks import get_task

    workdir = str(tmp_path_factory.mktemp("gpt_ft_pretrain"))
    config = config_lib.load_config(
        os.path.join(ROOT, "experiments/gpt/pretrain.py:gpt-tiny,steps=40,vocab=1000,"
                           "seq_len=64,batch=16,lr=2e-3,dropout=0.0"),
        [("num_eval_batches", "1"), ("data_threads", "1")])
    train_and_evaluate(config, workdir, get_task("gpt_pretrain")(config, workdir),
                       progress=False)
    return workdir


def passage_config(init, steps, **fields):
    overrides = {"num_train_steps": steps, "eval_every_steps": steps,
                 "checkpoint_every_steps": steps, "batch_size": 32, "num_eval_batches": "None",
                 "data_threads": 1, "log_every_steps": steps, "model.dropout_rate": 0.0,
                 "model.attention_dropout_rate": 0.0, "finetune.num_documents": 4}
    overrides.update(fields)
    return config_lib.load_config(
        os.path.join(ROOT, f"experiments/finetune/passage_source.py:init={init},seq_len=64"),
        [(k, str(v)) for k, v in overrides.items()])


@pytest.mark.slow
def test_tiny_gpt_finetunes_above_the_majority_class(gpt_run, tmp_path):
    from ssl_jax.interop.pretrained import load_pretrained

    config = passage_config(gpt_run, 60, **{"optimizer.learning_rate": 1e-3})
    task = FinetuneTask(config, str(tmp_path))
    pre = load_pretrained(gpt_run).params
    fresh = jax.device_get(task.init_params(jax.random.PRNGKey(0)))
    moved = task.transfer(fresh)
    V = pre["token"]["embedding"].shape[0]
    np.testing.assert_array_equal(moved["decoder"]["token"]["embedding"][:V],
                                  pre["token"]["embedding"])  # pre-trained rows kept
    np.testing.assert_array_equal(moved["decoder"]["token"]["embedding"][V:],
                                  fresh["decoder"]["token"]["embedding"][V:])  # new: as init
    summary = train_and_evaluate(config, str(tmp_path), task=task, progress=False)
    facts = json.load(open(tmp_path / "facts.json"))
    assert facts["recipe"] == "gpt" and facts["special_tokens"] == {
        "start": V, "delim": V + 1, "extract": V + 2}
    assert "eval_loss_lm" in summary and "eval_loss_ce" in summary
    assert summary["eval_accuracy"] > facts["majority_class_accuracy"] + 0.15, (
        summary["eval_accuracy"], facts["majority_class_accuracy"])


@pytest.mark.slow
def test_linear_probe_leaves_the_decoder_unchanged(gpt_run, tmp_path):
    from ssl_jax.train.checkpoint import Checkpointer

    config = passage_config(gpt_run, 3, **{"finetune.linear_probe": True})
    task = FinetuneTask(config, str(tmp_path))
    start = task.transfer(jax.device_get(jax.jit(task.init_params)(
        jax.random.PRNGKey(config.seed))))
    train_and_evaluate(config, str(tmp_path), task=task, progress=False)
    ckpt = Checkpointer(os.path.join(str(tmp_path), "checkpoints"))
    after = jax.device_get(ckpt.restore_params(
        jax.eval_shape(task.init_params, jax.random.PRNGKey(0)), ckpt.latest_step()))
    ckpt.close()
    same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(
        jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
    assert same(after["decoder"], start["decoder"])
    assert not same(after["classifier"], start["classifier"])


@pytest.mark.slow
def test_launch_with_gpt_init_and_random_init(gpt_run, tmp_path, capsys):
    import launch

    config = os.path.join(ROOT, "experiments/finetune/passage_source.py")
    common = ["--no-progress", "--config.num_train_steps=2", "--config.batch_size=8",
              "--config.finetune.num_documents=2", "--config.data_threads=1",
              "--config.max_seq_len=32"]
    assert launch.main(["--config", f"{config}:init={gpt_run},random_init=True",
                        "--workdir", str(tmp_path / "random")] + common) == 0
    facts = json.load(open(tmp_path / "random" / "facts.json"))
    assert facts["recipe"] == "gpt" and facts["random_init"] is True


def write_swag(directory, rows):
    header = ["", "video-id", "fold-ind", "startphrase", "sent1", "sent2", "gold-source",
              "ending0", "ending1", "ending2", "ending3", "label"]
    os.makedirs(directory, exist_ok=True)
    for name in ("train.csv", "val.csv"):
        with open(os.path.join(directory, name), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            for i, (s1, s2, endings, label) in enumerate(rows):
                w.writerow([i, f"v{i}", i, f"{s1} {s2}", s1, s2, "gold", *endings, label])


@pytest.mark.slow
def test_swag_reader_and_bert_choice_head(tmp_path):
    """SWAG's released CSV -> examples; the BERT recipe's choice head trains a step."""
    from ssl_jax.data import swag

    rows = [("The cat sat.", "It", ["purred.", "flew away.", "sang.", "swam."], 0),
            ("A man runs.", "He", ["sleeps.", "stops, panting.", "melts.", "reads."], 1)] * 4
    write_swag(str(tmp_path / "swag"), rows)
    examples = swag.load_swag("validation", str(tmp_path / "swag"))
    assert examples[1] == {"context": "A man runs.", "label": 1,
                           "options": ["He sleeps.", "He stops, panting.", "He melts.",
                                       "He reads."]}
    config = config_lib.load_config(
        os.path.join(ROOT, f"experiments/finetune/swag.py:variant=tiny,steps=2,batch=4,"
                           f"seq_len=16,path={tmp_path / 'swag'}"),
        [("data.vocab_size", "300"), ("data_threads", "1"), ("log_every_steps", "1")])
    summary = train_and_evaluate(config, str(tmp_path / "run"), FinetuneTask, progress=False)
    assert summary["ended"] == "completed" and 0.0 <= summary["eval_accuracy"] <= 1.0


@pytest.fixture(scope="module")
def hf_gpt2_dir(tmp_path_factory):
    """A random GPT-2 (2 x 32, 64 positions) in transformers' directory format, written by
    our exporter: config.json, model.safetensors, vocab.json + merges.txt."""
    import flax.linen as nn
    from ssl_jax.interop import hf_gpt2

    tokenizer = bpe.train_bpe(TEXTS, 300)
    config = GptConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_layers=2,
                       num_heads=2, mlp_dim=64, max_len=64)
    params = nn.meta.unbox(jax.jit(GptLM(config).init)(
        jax.random.PRNGKey(0), np.zeros((1, 8), np.int32))["params"])
    directory = str(tmp_path_factory.mktemp("hf_gpt2") / "gpt2")
    hf_gpt2.save(directory, config, params, tokenizer)
    return directory


@pytest.mark.parametrize("spec,path", [("conll2003.py", "conll2003"), ("squad.py", "squad")])
def test_bert_only_heads_refuse_a_gpt_init(hf_gpt2_dir, spec, path, tmp_path, capsys):
    import launch

    code = launch.main(["--config", os.path.join(ROOT, "experiments/finetune", spec)
                        + f":init={hf_gpt2_dir},path={os.path.join(ROOT, 'tests/fixtures', path)}",
                        "--workdir", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: finetune.dataset=")
    assert f"finetune.init={hf_gpt2_dir!r} is a GPT" in err[0]


def test_bert_pooling_refuses_a_gpt_init(hf_gpt2_dir, tmp_path, capsys):
    import launch

    code = launch.main(["--config", os.path.join(ROOT, "experiments/finetune/passage_source.py")
                        + f":init={hf_gpt2_dir},pooling=mean", "--workdir", str(tmp_path / "run"),
                        "--no-progress"])
    # (the embedded corpus may be prepared first, which TFDS reports on stderr)
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: finetune.pooling='mean' is BERT's")


@pytest.mark.slow
def test_launch_with_an_hf_gpt2_init(hf_gpt2_dir, tmp_path):
    """An HF GPT-2 directory as init: the GPT recipe, its rows moved, both losses logged."""
    import launch

    config = os.path.join(ROOT, "experiments/finetune/passage_source.py")
    assert launch.main(["--config", f"{config}:init={hf_gpt2_dir}", "--workdir",
                        str(tmp_path / "run"), "--no-progress", "--config.num_train_steps=2",
                        "--config.batch_size=8", "--config.finetune.num_documents=2",
                        "--config.data_threads=1", "--config.max_seq_len=32"]) == 0
    facts = json.load(open(tmp_path / "run" / "facts.json"))
    V = bpe.train_bpe(TEXTS, 300).vocab_size
    assert facts["recipe"] == "gpt" and facts["vocab_size"] == V + 3
    summary = json.load(open(tmp_path / "run" / "summary.json"))
    assert {"eval_loss_ce", "eval_loss_lm", "eval_loss_lm_weighted"} <= set(summary)
