"""HF-format checkpoints: MiniLM parity with transformers, bit-identical round trips (BERT,
scan_layers BERT, GPT-2, training workdirs), GPT-2 against a numpy forward pass, bad input."""
import dataclasses
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from safetensors.numpy import load_file, save_file

from ssl_jax.models.partitioning import init_unboxed
from ssl_jax.data import bpe
from ssl_jax.data import tokenizer as wordpiece_lib
from ssl_jax.interop import export, hf_bert, hf_gpt2
from ssl_jax.interop.pretrained import load_pretrained
from ssl_jax.models.bert import BertConfig, BertEncoder, BertForPreTraining
from ssl_jax.models.gpt import GptConfig, GptLM

REFERENCE = os.path.join(os.path.dirname(__file__), "fixtures/minilm/reference.npz")
WORDS = ("the a man is playing guitar cafe on corner hello world jax compiles programs "
         "short text with data ##s ##ing ##ed , . ! ?").split()
BERT = BertConfig(vocab_size=48, hidden_size=16, num_layers=2, num_heads=2, mlp_dim=32,
                  max_position_embeddings=24, type_vocab_size=3, layer_norm_eps=1e-7,
                  dropout_rate=0.05, attention_dropout_rate=0.0, initializer_range=0.03)
GPT = GptConfig(vocab_size=300, hidden_size=16, num_layers=2, num_heads=4, mlp_dim=48,
                max_len=24, attention_window=5)
TEXTS = ["Hello world, the quick brown fox!", "  spaces\tand\nnew lines; caf\u00e9 123",
         "<|endoftext|> after the end"]


def _wordpiece(directory, lowercase=True) -> wordpiece_lib.WordPiece:
    os.makedirs(directory, exist_ok=True)
    tokens = list(wordpiece_lib.SPECIAL_TOKENS) + ["[unused0]"] + WORDS
    path = os.path.join(directory, "vocab.txt")
    with open(path, "w") as f:
        f.write("".join(t + "\n" for t in tokens))
    return wordpiece_lib.load_vocab(path, lowercase)


def _random_params(params, seed: int):
    """Every leaf random (biases and LayerNorms too): a swapped tensor cannot go unseen."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: (0.2 * rng.standard_normal(x.shape)).astype(x.dtype), params)


def _bert_params(config: BertConfig, seed: int = 0):
    ids = jnp.zeros((1, 4), jnp.int32)
    return _random_params(jax.eval_shape(lambda: init_unboxed(BertForPreTraining(config), 
        jax.random.PRNGKey(0), ids, ids, ids))["params"], seed)


def _gpt_params(config: GptConfig, seed: int = 0):
    return _random_params(jax.eval_shape(lambda: init_unboxed(GptLM(config), 
        jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32)))["params"], seed)


def _assert_bit_identical(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


# --- MiniLM against transformers (tests/fixtures/minilm/make_reference.py) ------------------

@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return load_pretrained(minilm_dir)


def test_minilm_tokenizer_gives_hf_ids(minilm):
    reference = np.load(REFERENCE)
    wp = minilm.tokenizer
    for sentence, ids, n in zip(reference["sentences"], reference["input_ids"],
                                reference["lengths"]):
        ours = [wp.cls_id, *wp.encode_batch([str(sentence)])[0].tolist(), wp.sep_id]
        assert ours == ids[:n].tolist(), sentence


def test_minilm_hidden_states_match_transformers(minilm):
    """Our encoder with the imported weights, on the same padded batch as the reference."""
    reference = np.load(REFERENCE)
    assert minilm.kind == "bert" and set(minilm.params) == {"encoder"}
    assert (minilm.config.num_layers, minilm.config.hidden_size) == (6, 384)
    ids, lengths = reference["input_ids"], reference["lengths"]
    mask = (np.arange(ids.shape[1])[None] < lengths[:, None]).astype(np.int32)
    forward = jax.jit(lambda p, ids, mask: BertEncoder(minilm.config).apply(
        {"params": p}, ids, jnp.zeros_like(ids), mask)[0])
    sequence = np.asarray(forward(minilm.params["encoder"], ids, mask))
    ours = np.concatenate([sequence[i, :n] for i, n in enumerate(lengths)])
    assert np.abs(ours - reference["hidden"]).max() < 1e-4


# --- round trips ------------------------------------------------------------------------------

@pytest.mark.parametrize("heads, scan, lowercase, param_dtype", [
    (("mlm", "nsp"), False, True, jnp.float32), (("mlm", "nsp"), True, False, jnp.float32),
    ((), False, True, jnp.float32), (("mlm",), True, True, jnp.bfloat16)],
    ids=["pretraining", "scan_layers_cased", "bare_encoder", "mlm_only_bfloat16"])
def test_bert_export_import_is_bit_identical(tmp_path, heads, scan, lowercase, param_dtype):
    config = dataclasses.replace(BERT, scan_layers=scan, param_dtype=param_dtype)
    full = _bert_params(config)
    params = {k: v for k, v in full.items() if k == "encoder" or k in heads}
    wp = _wordpiece(str(tmp_path / "vocab"), lowercase)
    hf_bert.save(str(tmp_path / "hf"), config, params, wp)
    written = json.load(open(tmp_path / "hf/config.json"))
    assert written["architectures"] == [hf_bert.ARCHITECTURES["mlm" in heads, "nsp" in heads]]
    loaded = load_pretrained(str(tmp_path / "hf"))
    assert loaded.kind == "bert" and loaded.config == config
    _assert_bit_identical(loaded.params, params)
    assert loaded.tokenizer.tokenizer.get_vocab() == wp.tokenizer.get_vocab()
    assert loaded.tokenizer.tokenizer.normalizer.lowercase == lowercase
    text = "Hello World, the Man is playing!"
    assert loaded.tokenizer.encode_batch([text])[0].tolist() == wp.encode_batch([text])[0].tolist()


def test_layout_is_converted_on_request(tmp_path):
    """A scan_layers export read back per-layer: layer i is slice i of the stacked leaves."""
    config = dataclasses.replace(BERT, scan_layers=True)
    params = _bert_params(config)
    hf_bert.save(str(tmp_path / "hf"), config, params, _wordpiece(str(tmp_path / "v")))
    flat = load_pretrained(str(tmp_path / "hf"), scan_layers=False)
    assert flat.config == dataclasses.replace(config, scan_layers=False)
    stacked = params["encoder"]["stack"]["layers"]
    for i in range(config.num_layers):
        _assert_bit_identical(flat.params["encoder"]["stack"][f"layer_{i}"],
                              jax.tree.map(lambda x: x[i], stacked))
    _assert_bit_identical(flat.params["mlm"], params["mlm"])


def test_gpt2_export_import_is_bit_identical_with_openai_vocabulary(tmp_path, gpt2_bpe_dir):
    tokenizer = bpe.gpt2_bpe(gpt2_bpe_dir)
    config = dataclasses.replace(GPT, vocab_size=tokenizer.vocab_size, scan_layers=True)
    params = _gpt_params(config)
    hf_gpt2.save(str(tmp_path / "hf"), config, params, tokenizer)
    loaded = load_pretrained(str(tmp_path / "hf"))
    assert loaded.kind == "gpt" and loaded.config == config
    _assert_bit_identical(loaded.params, params)
    # vocab.json / merges.txt are OpenAI's encoder.json / vocab.bpe
    assert (json.load(open(tmp_path / "hf/vocab.json"))
            == json.load(open(os.path.join(gpt2_bpe_dir, "encoder.json"))))
    merges = lambda path: [l.split() for l in open(path, encoding="utf-8").read().split("\n")[1:]
                           if l.strip()]
    assert merges(tmp_path / "hf/merges.txt") == merges(os.path.join(gpt2_bpe_dir, "vocab.bpe"))
    for text in TEXTS:
        assert loaded.tokenizer.encode(text) == tokenizer.encode(text)


def _numpy_gpt2(t: dict, ids: np.ndarray, num_heads: int, eps: float) -> np.ndarray:
    """GPT-2's forward pass (Radford et al. 2019) on HF-named float64 tensors -> logits."""
    def norm(x, name):
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + eps) * t[name + ".weight"] + t[name + ".bias"]

    def gelu(x):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))

    n = len(ids)
    x = t["wte.weight"][ids] + t["wpe.weight"][:n]
    for i in range(sum(k.endswith("ln_1.weight") for k in t)):
        h = f"h.{i}."
        qkv = norm(x, h + "ln_1") @ t[h + "attn.c_attn.weight"] + t[h + "attn.c_attn.bias"]
        q, k, v = (a.reshape(n, num_heads, -1).transpose(1, 0, 2) for a in np.split(qkv, 3, -1))
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1])
        scores = np.where(np.tril(np.ones((n, n), bool)), scores, -np.inf)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        attended = (weights / weights.sum(-1, keepdims=True)) @ v  # [heads, n, head_dim]
        x = x + attended.transpose(1, 0, 2).reshape(n, -1) @ t[h + "attn.c_proj.weight"] \
            + t[h + "attn.c_proj.bias"]
        m = gelu(norm(x, h + "ln_2") @ t[h + "mlp.c_fc.weight"] + t[h + "mlp.c_fc.bias"])
        x = x + m @ t[h + "mlp.c_proj.weight"] + t[h + "mlp.c_proj.bias"]
    return norm(x, "ln_f") @ t["wte.weight"].T


def test_gpt_lm_matches_a_numpy_gpt2_on_the_exported_tensors(tmp_path):
    tokenizer = bpe.train_bpe([t * 3 for t in TEXTS] * 4, 300)
    config = dataclasses.replace(GPT, vocab_size=tokenizer.vocab_size)
    params = _gpt_params(config, seed=3)
    hf_gpt2.save(str(tmp_path / "hf"), config, params, tokenizer)
    tensors = {k.removeprefix("transformer."): v.astype(np.float64)
               for k, v in load_file(str(tmp_path / "hf/model.safetensors")).items()}
    ids = np.array(tokenizer.encode(TEXTS[1])[:20])
    reference = _numpy_gpt2(tensors, ids, config.num_heads, config.layer_norm_eps)
    ours = np.asarray(jax.jit(GptLM(config).apply)({"params": params}, ids[None]))[0]
    assert np.abs(ours - reference).max() < 1e-4


# --- training workdirs ------------------------------------------------------------------------

def _fake_run(workdir, config, model, inputs, tokenizer_save, losses):
    """A workdir as the loop writes it: config.json, tokenizer/, checkpoints whose eval
    losses are `losses` (the real loop's Checkpointer and TrainState)."""
    from ssl_jax.train.checkpoint import Checkpointer
    from ssl_jax.train.workdir import write_config
    from ssl_jax.train.step import TrainState

    os.makedirs(workdir)
    write_config(config, workdir)
    tokenizer_save(os.path.join(workdir, "tokenizer"))
    abstract = jax.eval_shape(lambda: init_unboxed(model, jax.random.PRNGKey(0), *inputs))["params"]
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
    saved = {}
    for step, loss in enumerate(losses, 1):
        saved[step] = _random_params(abstract, seed=step)
        state = TrainState.create(apply_fn=model.apply, params=saved[step], tx=optax.sgd(0.1))
        checkpointer.save(step, state, {"position": step}, metrics={"eval_loss": loss})
    checkpointer.close()
    return saved


def test_bert_workdir_exports_its_best_checkpoint(tmp_path):
    from ssl_jax.models.bert import bert_config
    from tests.conftest import tiny_config

    run = tiny_config()
    wp = _wordpiece(str(tmp_path / "vocab"))
    config = bert_config(run.model, wp.vocab_size)
    ids = jnp.zeros((1, 4), jnp.int32)
    saved = _fake_run(str(tmp_path / "run"), run, BertForPreTraining(config), (ids, ids, ids),
                      lambda d: wordpiece_lib.save(wp, d), losses=[2.0, 1.0, 3.0])
    pretrained = load_pretrained(str(tmp_path / "run"))
    assert pretrained.kind == "bert" and pretrained.config == config
    _assert_bit_identical(pretrained.params, saved[2])  # the best, not the latest
    _assert_bit_identical(load_pretrained(str(tmp_path / "run"), step=3).params, saved[3])
    assert export.main(["--workdir", str(tmp_path / "run"), "--output",
                        str(tmp_path / "hf")]) == 0
    config2, params, wp2 = hf_bert.load(str(tmp_path / "hf"))
    assert config2 == config and wp2.tokenizer.get_vocab() == wp.tokenizer.get_vocab()
    _assert_bit_identical(params, saved[2])
    # a run trained without NSP: its (untrained) NSP head is not part of the model
    path = tmp_path / "run/config.json"
    path.write_text(path.read_text().replace('"nsp": true', '"nsp": false'))
    assert set(load_pretrained(str(tmp_path / "run")).params) == {"encoder", "mlm"}


def test_gpt_workdir_exports_as_gpt2(tmp_path):
    from ssl_jax import config as config_lib
    from ssl_jax.models.gpt import gpt_config
    from tests.conftest import ROOT

    run = config_lib.load_config(os.path.join(ROOT, "experiments/gpt/pretrain.py:gpt-tiny"))
    tokenizer = bpe.train_bpe([t * 3 for t in TEXTS] * 4, 300)
    config = gpt_config(run.model, tokenizer.vocab_size)
    saved = _fake_run(str(tmp_path / "run"), run, GptLM(config), (jnp.zeros((1, 4), jnp.int32),),
                      tokenizer.save, losses=[1.0, 2.0])
    assert export.main(["--workdir", str(tmp_path / "run"), "--output",
                        str(tmp_path / "hf")]) == 0
    loaded = load_pretrained(str(tmp_path / "hf"))
    assert loaded.kind == "gpt" and loaded.config == config
    _assert_bit_identical(loaded.params, saved[1])
    for text in TEXTS:
        assert loaded.tokenizer.encode(text) == tokenizer.encode(text)
    assert loaded.tokenizer.decode(tokenizer.encode(TEXTS[1])) == TEXTS[1]


# --- bad input --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exported_bert(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("exported") / "bert")
    hf_bert.save(directory, BERT, _bert_params(BERT),
                 _wordpiece(str(tmp_path_factory.mktemp("vocab"))))
    return directory


def _edited_copy(source, target, tensors=None, config=None):
    shutil.copytree(source, target)
    if tensors is not None:
        weights = os.path.join(target, "model.safetensors")
        save_file(tensors(load_file(weights)), weights, metadata={"format": "pt"})
    if config is not None:
        path = os.path.join(target, "config.json")
        edited = config(json.load(open(path)))
        with open(path, "w") as f:
            json.dump(edited, f)
    return str(target)


def _without(name):
    return lambda t: {k: v for k, v in t.items() if k != name}


def _with(name, value):
    return lambda t: {**t, name: value}


BAD_TENSORS = [
    (_without("bert.encoder.layer.1.output.dense.weight"),
     "missing tensors (1): encoder.layer.1.output.dense.weight"),
    (_with("bert.pooler.dense.weight", np.zeros((16, 8), np.float32)),
     "pooler.dense.weight (16, 8) (expected (16, 16))"),
    (_with("bert.encoder.layer.2.output.dense.bias", np.zeros(16, np.float32)),
     "unexpected tensors (1): encoder.layer.2.output.dense.bias"),
    (_with("cls.predictions.decoder.weight", np.ones((48, 16), np.float32)),
     "cls.predictions.decoder.weight differs from embeddings.word_embeddings.weight"),
]


@pytest.mark.parametrize("edit, message", BAD_TENSORS,
                         ids=["missing", "wrong_shape", "unknown", "untied_decoder"])
def test_bad_tensors_are_named(exported_bert, tmp_path, edit, message):
    directory = _edited_copy(exported_bert, tmp_path / "bad", tensors=edit)
    with pytest.raises(ValueError, match="does not fit|differs") as error:
        hf_bert.load(directory)
    assert message in str(error.value)


BAD_CONFIGS = [
    (dict(position_embedding_type="relative_key"), "position_embedding_type='relative_key'"),
    (dict(hidden_act="silu"), "hidden_act='silu' is not supported"),
    (dict(num_attention_heads=3), "not divisible by model.num_heads=3"),
    (dict(is_decoder=True), "is_decoder=true is not supported"),
    (dict(model_type="roberta"), "an HF 'roberta' checkpoint; expected model_type 'bert'"),
    (dict(hidden_size=None), "lacks 'hidden_size'"),
]


@pytest.mark.parametrize("change, message", BAD_CONFIGS,
                         ids=["relative_positions", "activation", "heads", "decoder", "roberta",
                              "no_hidden_size"])
def test_unsupported_configs_are_rejected(exported_bert, tmp_path, change, message):
    directory = _edited_copy(exported_bert, tmp_path / "bad", config=lambda c: {**c, **change})
    with pytest.raises(ValueError, match="checkpoint") as error:
        load_pretrained(directory)
    assert message in str(error.value)


def test_what_has_no_gpt2_form_is_rejected(tmp_path):
    tokenizer = bpe.train_bpe(TEXTS * 4, 280)
    for change, message in ((dict(pre_ln=False), "post-LN"),
                            (dict(sparse_attention=True), "sparse_attention=True")):
        config = dataclasses.replace(GPT, vocab_size=tokenizer.vocab_size, **change)
        with pytest.raises(ValueError, match=message):
            hf_gpt2.save(str(tmp_path / "out"), config, _gpt_params(config), tokenizer)
        assert not os.path.exists(tmp_path / "out")


def test_not_a_model_and_existing_outputs_are_errors(exported_bert, tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other/config.json").write_text('{"name": "x"}')
    with pytest.raises(ValueError, match="neither 'model_type'.*nor 'task'"):
        load_pretrained(str(tmp_path / "other"))
    (tmp_path / "other/config.json").write_text('{"task": "rotation"}')
    with pytest.raises(ValueError, match="a 'rotation' run; expected a 'bert_pretrain'"):
        load_pretrained(str(tmp_path / "other"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_pretrained(str(tmp_path))
    config, params, wp = hf_bert.load(exported_bert)
    with pytest.raises(FileExistsError, match="not empty"):
        hf_bert.save(str(tmp_path / "other"), config, params, wp)
    no_vocab = _edited_copy(exported_bert, tmp_path / "no_vocab")
    os.remove(os.path.join(no_vocab, "vocab.txt"))
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        hf_bert.load(no_vocab)


def test_a_missing_pooler_is_freshly_initialised(exported_bert, tmp_path):
    directory = _edited_copy(exported_bert, tmp_path / "no_pooler", tensors=lambda t: {
        k: v for k, v in t.items() if not k.startswith("bert.pooler.")})
    with pytest.warns(UserWarning, match="no pooler"):
        config, params, _ = hf_bert.load(directory)
    pooler = params["encoder"]["pooler"]
    assert pooler["kernel"].shape == (16, 16) and not np.any(pooler["bias"])
    assert 0 < pooler["kernel"].std() < 2 * config.initializer_range
