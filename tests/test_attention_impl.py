"""model.attention_impl: "xla" is the attention of before for every mask kind; the cuDNN path's
translation (lengths, is_causal, dense masks) equals it when run by XLA; "cudnn" where it
cannot run is refused before any compute; "auto" falls back and says so once. And every row
of the BERT and GPT size tables builds."""
import dataclasses
import logging
import os
import sys
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import ROOT, run_main
from ssl_jax.models.partitioning import init_unboxed
from ssl_jax import config as config_lib
from ssl_jax.models import attention
from ssl_jax.models.attention import AttentionMask, fused_attention, heads_major_attention
from ssl_jax.models.bert import BERT_SIZES, BertForPreTraining
from ssl_jax.models.gpt import GPT_SIZES, GptConfig, GptLM, attention_masks, document_mask

sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
import make_attention_pins as pins  # noqa: E402

B, S, H, D = 2, 6, 3, 8


def _qkv(seed=0):
    rng = np.random.default_rng(seed)
    return tuple(jnp.asarray(rng.normal(size=(B, S, H, D)), jnp.float32) for _ in range(3))


def _mask_kinds() -> dict[str, AttentionMask]:
    """Every kind of mask the models build, as they build it."""
    valid = jnp.asarray([[1] * S, [1] * 4 + [0] * 2], jnp.int32)  # right padding
    left = jnp.asarray([[1] * S, [0] * 2 + [1] * 4], bool)  # left padding
    causal, _ = attention_masks(jnp.arange(S), None, S)
    left_causal, _ = attention_masks(jnp.arange(S), left, S)
    docs, _ = attention_masks(jnp.arange(S), None, S,
                              document_mask(jnp.asarray([[0, 0, 1, 1, 1, 2], [0, 1, 1, 1, 1, 1]])))
    _, band = attention_masks(jnp.arange(S), None, S, window=2)
    return {"padding": attention.right_padding_mask(valid),
            "causal": AttentionMask(causal, causal=True),
            "left_padded_causal": AttentionMask(left_causal), "documents": AttentionMask(docs),
            "band": AttentionMask(band)}


def _plain_attention(q, k, v, mask):
    """An independent reference on [batch, len, heads, head_dim]: softmax(q k^T / sqrt(d))
    over the keys the bool mask allows."""
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    logits = jnp.where(mask, logits, -1e30)
    weights = jnp.exp(logits - logits.max(-1, keepdims=True))
    weights = weights / weights.sum(-1, keepdims=True)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


def _xla_op(q, k, v, mask):
    """What MultiHeadAttention runs for attention_impl="xla" (on [b, len, heads, d])."""
    t = lambda x: x.transpose(0, 2, 1, 3)
    return t(heads_major_attention(t(q), t(k), t(v), attention.dense_mask(mask)))


def _value_and_grad(fn, q, k, v):
    weights = jnp.asarray(np.random.default_rng(9).normal(size=(B, S, H, D)), jnp.float32)
    loss = lambda q, k, v: jnp.sum(fn(q, k, v) * weights)
    return fn(q, k, v), jax.grad(loss, argnums=(0, 1, 2))(q, k, v)


@pytest.mark.parametrize("kind", list(_mask_kinds()))
def test_xla_op_equals_a_plain_reference_for_every_mask_kind(kind):
    mask = _mask_kinds()[kind]
    q, k, v = _qkv()
    out, grads = _value_and_grad(lambda *x: _xla_op(*x, mask), q, k, v)
    ref, ref_grads = _value_and_grad(lambda *x: _plain_attention(*x, mask.dense), q, k, v)
    np.testing.assert_allclose(out, ref, atol=1e-6, rtol=1e-6)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g, r, atol=1e-6, rtol=1e-6)


@pytest.fixture(scope="module")
def pinned():
    with np.load(os.path.join(ROOT, "tests", "fixtures", "attention_pins.npz")) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def cases_now():
    return pins.all_cases()


@pytest.mark.parametrize("case", ["bert_padding", "bert_padding_dropout", "gpt_causal",
                                  "gpt_post_ln_causal", "gpt_left_padded", "gpt_documents",
                                  "gpt_band", "gpt_band_scan", "gpt_decode"])
def test_models_compute_what_they_did_before_attention_impl(case, pinned, cases_now):
    """BERT and GPT (default attention_impl="xla") against outputs and gradients recorded
    with the code before AttentionMask existed (tests/fixtures/make_attention_pins.py)."""
    now = cases_now[case]
    for key, value in now.items():
        want = pinned[f"{case}/{key}"]
        if key == "grad_names":
            assert list(value) == list(want)
        else:  # gradients: 1e-5, as XLA:CPU's vector width (the CPU it runs on) reorders
            # their sums (the pins are from another CPU: 1.4e-6 apart on this one)
            tol = 1e-5 if key.startswith("grad") else 1e-6
            np.testing.assert_allclose(value, want, rtol=tol, atol=tol, err_msg=key)


@pytest.fixture
def fused_by_xla(monkeypatch):
    """The cuDNN path as written, with jax.nn.dot_product_attention's XLA implementation
    underneath (this CPU has no cuDNN), recording the arguments it was given."""
    calls = []
    real = jax.nn.dot_product_attention

    def recording(*args, **kw):
        calls.append(kw)
        return real(*args, **kw)

    monkeypatch.setattr(attention, "_FUSED_BACKEND", "xla")
    monkeypatch.setattr(jax.nn, "dot_product_attention", recording)
    return calls


@pytest.mark.parametrize("kind,passes", [
    ("padding", {"is_causal": False, "key_value_seq_lengths": [6, 4]}),
    ("causal", {"is_causal": True}),
    ("left_padded_causal", {"mask": True}), ("documents", {"mask": True}),
    ("band", {"mask": True})])
def test_cudnn_path_equals_our_op(kind, passes, fused_by_xla):
    """Padding goes in as lengths and plain causality as is_causal (no dense mask); other
    masks densely; the result equals our op, forward and backward."""
    mask = _mask_kinds()[kind]
    q, k, v = _qkv(1)
    out, grads = _value_and_grad(lambda *x: fused_attention(*x, mask), q, k, v)
    ref, ref_grads = _value_and_grad(lambda *x: _xla_op(*x, mask), q, k, v)
    np.testing.assert_allclose(out, ref, atol=2e-6, rtol=1e-5)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g, r, atol=2e-6, rtol=1e-5)
    kw = fused_by_xla[0]
    assert kw["implementation"] == "xla"
    assert set(kw) - {"implementation"} == set(passes)
    if "key_value_seq_lengths" in passes:
        assert kw["key_value_seq_lengths"].dtype == jnp.int32
        np.testing.assert_array_equal(kw["key_value_seq_lengths"], passes["key_value_seq_lengths"])
    if "is_causal" in passes:
        assert kw["is_causal"] == passes["is_causal"]


def test_jax_dot_product_attention_is_an_independent_reference_for_our_op():
    """jax.nn.dot_product_attention(implementation="xla") given the dense masks = our op."""
    q, k, v = _qkv(2)
    for kind, mask in _mask_kinds().items():
        ref = jax.nn.dot_product_attention(q, k, v, mask=mask.dense, implementation="xla")
        np.testing.assert_allclose(_xla_op(q, k, v, mask), ref, atol=2e-6, rtol=1e-5,
                                   err_msg=kind)


@pytest.fixture
def pretend_gpu(monkeypatch):
    """This process's first device looks like an H100 (for the decisions only)."""
    device = SimpleNamespace(platform="gpu", compute_capability="9.0",
                             client=SimpleNamespace(platform_version="cuda 12040"))
    monkeypatch.setattr(jax, "devices", lambda *a: [device])
    monkeypatch.setattr(attention, "_LOGGED", set())


@pytest.fixture
def cudnn_allowed(monkeypatch):
    """Model configs may say attention_impl="cudnn" here (in float32, to compare closely)."""
    monkeypatch.setattr(attention, "_cudnn_unsupported", lambda *a: None)


@pytest.mark.parametrize("gpt_kw", [{}, {"input_mask": "left"}, {"mask": "documents"},
                                    {"sparse": True}, {"sparse": True, "scan": True}])
def test_models_on_the_cudnn_path_equal_the_xla_path(gpt_kw, cudnn_allowed, fused_by_xla):
    """BERT (padding -> lengths) and GPT (causal flag; left padding, documents, bands dense)
    through attention_impl="cudnn" (run by XLA) compute what attention_impl="xla" does."""
    x = pins.inputs()
    gpt = dataclasses.replace(pins.GPT, num_layers=4 if gpt_kw.get("sparse") else 2,
                              sparse_attention=bool(gpt_kw.get("sparse")), attention_window=3,
                              scan_layers=bool(gpt_kw.get("scan")))
    kw = {}
    if gpt_kw.get("input_mask"):
        kw["input_mask"] = x["gpt_left_mask"]
    if gpt_kw.get("mask"):
        kw["mask"] = document_mask(jnp.asarray(x["gpt_documents"]))
    params = init_unboxed(GptLM(gpt), jax.random.PRNGKey(0), x["gpt_ids"])["params"]
    run = lambda c: GptLM(c).apply({"params": params}, x["gpt_ids"], **kw)
    cudnn = dataclasses.replace(gpt, attention_impl="cudnn")
    assert cudnn.attention_impl == "cudnn"
    np.testing.assert_allclose(run(cudnn), run(gpt), atol=2e-5, rtol=1e-5)
    plain = not gpt_kw or gpt_kw == {"sparse": True}  # the dense layers of a loop stack
    assert any(c.get("is_causal") for c in fused_by_xla) == plain
    if not gpt_kw:
        assert not any("mask" in c for c in fused_by_xla)
        bert = pins.BERT
        args = (x["bert_ids"], x["bert_segments"], x["bert_mask"])
        bert_params = init_unboxed(BertForPreTraining(bert), jax.random.PRNGKey(0), *args)["params"]
        out = lambda c: BertForPreTraining(c).apply({"params": bert_params}, *args)[0]
        np.testing.assert_allclose(out(dataclasses.replace(bert, attention_impl="cudnn")),
                                   out(bert), atol=2e-5, rtol=1e-5)
        lengths = [c["key_value_seq_lengths"] for c in fused_by_xla if "key_value_seq_lengths" in c]
        np.testing.assert_array_equal(lengths[0], [8, 5])


def test_decoding_keeps_the_xla_path_with_cudnn(cudnn_allowed, fused_by_xla):
    """The KV cache is heads-major: decode=True runs our op, whatever attention_impl says."""
    x = pins.inputs()
    cudnn = dataclasses.replace(pins.GPT, attention_impl="cudnn")
    params = init_unboxed(GptLM(pins.GPT), jax.random.PRNGKey(0), x["gpt_ids"])["params"]
    model = GptLM(cudnn, decode=True)
    cache = init_unboxed(model, jax.random.PRNGKey(0), jnp.zeros((2, 8), jnp.int32))["cache"]
    logits, _ = model.apply({"params": params, "cache": cache}, x["decode_prompt"],
                            input_mask=x["decode_prompt_mask"], last_only=True,
                            mutable=["cache"])
    assert not fused_by_xla
    with np.load(os.path.join(ROOT, "tests", "fixtures", "attention_pins.npz")) as f:
        np.testing.assert_allclose(logits[:, 0], f["gpt_decode/logits"][:, 0], atol=1e-6)


def test_which_models_cudnn_can_run(pretend_gpu):
    """On a (pretended) GPU: bf16 with a head size of a multiple of 8 and no attention
    dropout runs cuDNN; anything else is refused naming the field, and "auto" falls back."""
    bf16 = jnp.bfloat16
    resolve = attention.resolve_attention_impl
    assert resolve("cudnn", dtype=bf16, head_dim=64, dropout_rate=0.0) == "cudnn"
    assert resolve("auto", dtype=bf16, head_dim=64, dropout_rate=0.0) == "cudnn"
    for kw, named in [(dict(dtype=jnp.float32, head_dim=64, dropout_rate=0.0), "model.dtype"),
                      (dict(dtype=bf16, head_dim=12, dropout_rate=0.0), "head size"),
                      (dict(dtype=bf16, head_dim=512, dropout_rate=0.0), "at most 256"),
                      (dict(dtype=bf16, head_dim=64, dropout_rate=0.1),
                       "model.attention_dropout_rate=0.1")]:
        with pytest.raises(ValueError, match=f"model.attention_impl='cudnn' .*{named}"):
            resolve("cudnn", **kw)
        assert resolve("auto", **kw) == "xla"
    with pytest.raises(ValueError, match="model.attention_impl='cuda'; expected one of"):
        resolve("cuda", dtype=bf16, head_dim=64, dropout_rate=0.0)


def test_auto_falls_back_to_xla_on_cpu_and_logs_once(monkeypatch, caplog):
    monkeypatch.setattr(attention, "_LOGGED", set())
    caplog.set_level(logging.INFO, logger="ssl_jax.models.attention")
    configs = [GptConfig(vocab_size=61, hidden_size=32, num_layers=1, num_heads=4,
                         attention_impl="auto", dtype=jnp.bfloat16, attention_dropout_rate=0.0)
               for _ in range(3)]
    assert {c.attention_impl for c in configs} == {"xla"}
    records = [r.getMessage() for r in caplog.records if r.name == "ssl_jax.models.attention"]
    assert records == ["model.attention_impl='auto': XLA attention (cuDNN needs an NVIDIA GPU "
                       "with cuDNN and model.dtype='bfloat16'; this process runs on cpu)"]


@pytest.mark.parametrize("spec", ["experiments/bert/pretrain.py:tiny",
                                  "experiments/gpt/pretrain.py:gpt-tiny",
                                  "experiments/finetune/glue.py:task=sst2,variant=tiny",
                                  "experiments/vision/mae.py", "experiments/vision/jigsaw.py:encoder=vit"])
def test_cudnn_on_cpu_is_one_error_line_before_anything_is_written(spec, capsys, tmp_path):
    import launch
    done = run_main(capsys, launch.main, "--config", os.path.join(ROOT, spec),
                    "--workdir", tmp_path / "w", "--no-progress",
                    "--config.model.attention_impl=cudnn", "--config.model.dtype=bfloat16")
    assert done.returncode == 2, done
    assert done.stderr == ("error: model.attention_impl='cudnn' needs an NVIDIA GPU with cuDNN "
                           "and model.dtype='bfloat16'; this process runs on cpu (use 'xla' or "
                           "'auto')\n")
    assert not (tmp_path / "w").exists()


def test_a_cudnn_run_reads_as_auto_elsewhere(tmp_path):
    """A GPU run's config, read by a tool (generation, fine-tuning from it) on this CPU."""
    (tmp_path / "config.json").write_text(
        '{"task": "gpt_pretrain", "model": {"attention_impl": "cudnn"}}')
    assert config_lib.read_config(str(tmp_path)).model.attention_impl == "auto"


# --- the size tables --------------------------------------------------------------------------

def _param_count(model, *args) -> int:
    shapes = jax.eval_shape(lambda: init_unboxed(model, jax.random.PRNGKey(0), *args))["params"]
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes))


@pytest.mark.parametrize("variant", list(GPT_SIZES))
def test_every_gpt_size_builds(variant):
    """The experiment config builds (its task's checks pass) and the model initialises
    abstractly (no parameter is materialised); GPT-3's rows have the paper's sizes."""
    config = config_lib.load_config(os.path.join(ROOT, f"experiments/gpt/pretrain.py:{variant}"))
    from ssl_jax.tasks import get_compute
    task = get_compute("gpt_pretrain")(config, vocab_size=50257)
    count = _param_count(GptLM(task.model_config), jnp.zeros((1, 8), jnp.int32))
    paper = {"gpt3-small": 125e6, "gpt3-medium": 350e6, "gpt3-large": 760e6, "gpt3-xl": 1.3e9,
             "gpt3-2.7b": 2.7e9, "gpt3-6.7b": 6.7e9, "gpt3-13b": 13e9, "gpt3-175b": 175e9}
    if variant in paper:
        assert abs(count / paper[variant] - 1) < 0.05, count
    if variant == "gpt3-xl":
        assert (task.model_config.num_heads, task.model_config.hidden_size) == (16, 2048)


@pytest.mark.parametrize("variant", list(BERT_SIZES))
def test_every_bert_size_builds(variant):
    config = config_lib.load_config(os.path.join(ROOT, f"experiments/bert/pretrain.py:{variant}"))
    from ssl_jax.tasks import get_compute
    task = get_compute("bert_pretrain")(config, vocab_size=30522)
    ids = jnp.zeros((1, 8), jnp.int32)
    count = _param_count(BertForPreTraining(task.model_config), ids, ids, ids)
    paper = {"base": 110e6, "large": 340e6}
    if variant in paper:
        assert abs(count / paper[variant] - 1) < 0.05, count
