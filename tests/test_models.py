"""The shared attention op, block and BERT model against independent references."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.models.partitioning import init_unboxed
from ssl_jax.models import attention, transformer
from ssl_jax.models.bert import BertConfig, BertForPreTraining
from ssl_jax.models.dropout import keep_mask

TINY = BertConfig(vocab_size=97, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64,
                  max_position_embeddings=16, dropout_rate=0.0, attention_dropout_rate=0.0)


def _np_attention(q, k, v, mask):
    d = q.shape[-1]
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d)
    logits = np.where(mask, logits, -1e30)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", w, v)


def _attention(q, k, v, mask, **kwargs):
    """The attention op on [batch, len, heads, head_dim] inputs and outputs."""
    heads_major = lambda x: x.transpose(0, 2, 1, 3)
    out = attention.heads_major_attention(heads_major(q), heads_major(k), heads_major(v), mask,
                                          **kwargs)
    return heads_major(out)


def test_attention_matches_numpy_reference():
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(2, 5, 3, 8)).astype(np.float32) for _ in range(3))
    mask = rng.random((2, 1, 5, 5)) > 0.3
    mask[..., 0] = True
    out = _attention(q, k, v, mask)
    np.testing.assert_allclose(out, _np_attention(q, k, v, mask), rtol=1e-5, atol=1e-6)


def test_attention_softmax_runs_in_float32_for_bfloat16_inputs():
    rng = np.random.default_rng(1)
    q, k, v = (rng.normal(size=(1, 64, 2, 16)).astype(np.float32) for _ in range(3))
    ref = _np_attention(q, k, v, np.ones((1, 1, 64, 64), bool))
    out = _attention(*(jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)), None,
                     dtype=jnp.bfloat16)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=3e-2)


def _np_layernorm(x, scale, bias, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * scale + bias


@pytest.mark.parametrize("pre_ln", [False, True])
def test_block_matches_a_hand_written_reference(pre_ln):
    block = transformer.Block(num_heads=2, mlp_dim=16, pre_ln=pre_ln, dropout_rate=0.0,
                              attention_dropout_rate=0.0, layer_norm_eps=1e-6)
    x = np.random.default_rng(2).normal(size=(2, 4, 8)).astype(np.float32)
    params = init_unboxed(block, jax.random.PRNGKey(0), x, None)["params"]
    params = jax.tree_util.tree_map(
        lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(3), p.shape), params)
    out = block.apply({"params": params}, x, None)
    p = jax.tree_util.tree_map(np.asarray, params)
    a = p["attention"]

    def attn(h):
        q, k, v = (np.einsum("bsd,dhk->bshk", h, a[n]["kernel"]) + a[n]["bias"]
                   for n in ("query", "key", "value"))
        o = _np_attention(q, k, v, np.ones((1, 1, 4, 4), bool))
        return np.einsum("bshk,hkd->bsd", o, a["out"]["kernel"]) + a["out"]["bias"]

    def mlp(h):
        from scipy.special import erf
        m = p["mlp"]
        h = h @ m["fc_in"]["kernel"] + m["fc_in"]["bias"]
        h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
        return h @ m["fc_out"]["kernel"] + m["fc_out"]["bias"]

    ln = lambda h, n: _np_layernorm(h, p[n]["scale"], p[n]["bias"], 1e-6)
    if pre_ln:
        h = x + attn(ln(x, "ln_attention"))
        ref = h + mlp(ln(h, "ln_mlp"))
    else:
        h = ln(x + attn(x), "ln_attention")
        ref = ln(h + mlp(h), "ln_mlp")
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def _batch(seed=0, B=2, S=12, P=3):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, TINY.vocab_size, (B, S)).astype(np.int32)
    mask = np.ones((B, S), np.int32)
    mask[0, 8:] = 0  # the first example has 4 padding positions
    seg = np.zeros((B, S), np.int32)
    seg[:, 5:] = 1
    pos = np.stack([rng.choice(8, P, replace=False) for _ in range(B)]).astype(np.int32)
    return ids, seg, mask, pos


def _model_and_params(config=TINY):
    model = BertForPreTraining(config)
    ids, seg, mask, pos = _batch()
    return model, init_unboxed(model, jax.random.PRNGKey(0), ids, seg, mask, pos)["params"]


def test_gathered_mlm_head_equals_full_logits_at_those_positions():
    model, params = _model_and_params()
    ids, seg, mask, pos = _batch()
    gathered, nsp1 = model.apply({"params": params}, ids, seg, mask, pos)
    full, nsp2 = model.apply({"params": params}, ids, seg, mask, None)
    assert gathered.shape == (2, 3, TINY.vocab_size) and full.shape == (2, 12, TINY.vocab_size)
    np.testing.assert_allclose(gathered, np.take_along_axis(full, pos[..., None], 1),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(nsp1, nsp2, rtol=1e-6)


def test_padding_cannot_influence_real_positions():
    model, params = _model_and_params()
    ids, seg, mask, _ = _batch()
    encode = lambda i: model.apply({"params": params}, i, seg, mask, None,
                                   method=lambda m, *a: m.encoder(*a[:3])[0])
    base = encode(ids)
    perturbed = ids.copy()
    perturbed[0, 8:] = 7  # change only the padding tokens
    np.testing.assert_allclose(encode(perturbed)[0, :8], base[0, :8], rtol=1e-6, atol=1e-6)
    # and by gradient: d(real outputs)/d(padding embeddings) == 0
    emb = params["encoder"]["embeddings"]["word"]["embedding"]

    def real_output(x):  # x: the padded positions' input vectors
        def fn(m):
            h = m.encoder.embeddings(jnp.asarray(ids), jnp.asarray(seg))
            h = h.at[0, 8:].set(x)
            return m.encoder.stack(h, attention.padding_mask(jnp.asarray(mask)))
        return model.apply({"params": params}, method=fn)[0, :8].sum()

    grad = jax.grad(real_output)(jnp.asarray(emb[ids[0, 8:]]))
    assert float(jnp.abs(grad).max()) == 0.0


def test_positions_and_segments_change_the_encoding():
    model, params = _model_and_params()
    ids, seg, mask, pos = _batch()
    out = lambda i, s: model.apply({"params": params}, i, s, mask, None)[0]
    same_tokens = np.full_like(ids, 11)
    h = out(same_tokens, np.zeros_like(seg))
    assert float(jnp.abs(h[1, 0] - h[1, 1]).max()) > 1e-3  # learned positions differ
    assert float(jnp.abs(out(same_tokens, seg) - h).max()) > 1e-3  # segment ids matter


def test_scan_and_loop_stacks_compute_the_same_function():
    import dataclasses
    model, params = _model_and_params()
    scanned = BertForPreTraining(dataclasses.replace(TINY, scan_layers=True, remat=True))
    stack = params["encoder"]["stack"]
    layers = [stack[f"layer_{i}"] for i in range(TINY.num_layers)]
    stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *layers)
    scan_params = dict(params, encoder=dict(params["encoder"], stack={"layers": stacked}))
    ids, seg, mask, pos = _batch()
    a = model.apply({"params": params}, ids, seg, mask, pos)[0]
    b = scanned.apply({"params": scan_params}, ids, seg, mask, pos)[0]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_truncated_normal_init_and_tied_output():
    model, params = _model_and_params(BertConfig(vocab_size=2000, hidden_size=64, num_layers=1,
                                                 num_heads=2, mlp_dim=128))
    emb = np.asarray(params["encoder"]["embeddings"]["word"]["embedding"])
    assert abs(emb.std() - 0.02 * 0.88) < 0.002  # truncated at 2 std: std ~ 0.88 sigma
    assert np.abs(emb).max() <= 0.04 + 1e-6
    assert "bias" in params["mlm"] and not any("kernel" in k for k in params["mlm"]
                                               if k != "transform")


def test_dropout_keep_rate_and_independence():
    m1 = np.asarray(keep_mask(jax.random.PRNGKey(0), (256, 1024), 0.9))
    m2 = np.asarray(keep_mask(jax.random.PRNGKey(1), (256, 1024), 0.9))
    assert abs(m1.mean() - 0.9) < 0.002
    agree = (m1 == m2).mean()
    assert abs(agree - (0.9 ** 2 + 0.1 ** 2)) < 0.003  # independent masks agree at chance
    assert abs(m1[:, :-1][~m1[:, 1:]].mean() - 0.9) < 0.01  # neighbours uncorrelated


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="not divisible by model.num_heads=5"):
        BertConfig(hidden_size=32, num_heads=5)
    model, params = _model_and_params()
    ids = np.zeros((1, 17), np.int32)
    with pytest.raises(ValueError, match="exceeds max_position_embeddings=16"):
        model.apply({"params": params}, ids, ids, ids + 1, None)
