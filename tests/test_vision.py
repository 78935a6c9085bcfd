"""The image encoders: patch embedding by hand, position handling under patch dropping,
pooling, and both encoders learning a small task."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ssl_jax.models.partitioning import init_unboxed
from ssl_jax.models.transformer import TransformerConfig
from ssl_jax.models.vision import (ConvNet, MaskedAutoencoder, Vit, VitConfig, patchify,
                                  sincos_positions, unpatchify)

CONFIG = VitConfig(image_size=16, patch_size=4, hidden_size=32, num_layers=2, num_heads=2,
                   mlp_dim=64, pooling="mean")


def _images(n=2, seed=0):
    return jax.random.uniform(jax.random.PRNGKey(seed), (n, 16, 16, 3))


def _stack_input(model, params, images) -> np.ndarray:
    """What the ViT feeds its transformer Stack (the embedded patches, positions added)."""
    captured = {}

    def spy(next_fn, args, kwargs, context):
        if context.module.name == "stack":
            captured["x"] = args[0]
        return next_fn(*args, **kwargs)

    with nn.intercept_methods(spy):
        model.apply({"params": params}, images)
    return np.asarray(captured["x"])


def test_patchify_row_major_by_hand():
    image = np.arange(16 * 16 * 3, dtype=np.float32).reshape(1, 16, 16, 3)
    patches = np.asarray(patchify(jnp.asarray(image), 4))  # [1, 16, 48]
    assert patches.shape == (1, 16, 48)
    # patch 5 = row 1, column 1: pixels [4:8, 4:8]
    np.testing.assert_array_equal(patches[0, 5], image[0, 4:8, 4:8].reshape(-1))


def test_patchify_round_trip_and_layout():
    rng = np.random.default_rng(6)
    images = rng.random((2, 12, 8, 3)).astype(np.float32)
    patches = patchify(images, 4)
    assert isinstance(patches, np.ndarray) and patches.shape == (2, 3 * 2, 4 * 4 * 3)
    # Patch 3 is grid row 1, column 1; its first pixel is image pixel (4, 4).
    np.testing.assert_array_equal(patches[:, 3, :3], images[:, 4, 4])
    np.testing.assert_array_equal(patches[:, 3].reshape(2, 4, 4, 3), images[:, 4:8, 4:8])
    np.testing.assert_array_equal(unpatchify(patches, 4, height=12, width=8), images)
    square = rng.random((3, 16, 16, 1))
    np.testing.assert_array_equal(unpatchify(patchify(square, 4), 4), square)
    jax_images = jnp.asarray(images)
    jax_patches = jax.jit(patchify, static_argnums=1)(jax_images, 4)
    assert isinstance(jax_patches, jax.Array)
    np.testing.assert_array_equal(np.asarray(jax_patches), patches)
    back = jax.jit(unpatchify, static_argnums=(1, 2, 3))(jax_patches, 4, 12, 8)
    np.testing.assert_array_equal(np.asarray(back), images)


@pytest.mark.parametrize("call, match", [
    (lambda: patchify(np.zeros((1, 10, 8, 3)), 4), "patch=4"),
    (lambda: patchify(np.zeros((1, 8, 8, 3)), 0), "patch=0"),
    (lambda: patchify(np.zeros((8, 8, 3)), 4), r"\[8, 8, 3\]"),
    (lambda: unpatchify(np.zeros((1, 6, 16)), 2), "6 patches"),
    (lambda: unpatchify(np.zeros((1, 4, 15)), 2), "patch=2"),
])
def test_bad_patch_layouts_raise_naming_the_value(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_patch_embedding_is_a_linear_map_of_each_patch_plus_its_position():
    model = Vit(CONFIG)
    images = _images()
    params = init_unboxed(model, jax.random.PRNGKey(1), images)["params"]
    captured = _stack_input(model, params, images)  # must be patches @ W + b + position
    kernel = params["patch_embedding"]["kernel"]
    bias = params["patch_embedding"]["bias"]
    expected = np.asarray(patchify(images, 4)) @ np.asarray(kernel) + np.asarray(bias)
    expected += np.asarray(params["position"])
    np.testing.assert_allclose(captured, expected, rtol=1e-5, atol=1e-5)


def test_dropped_patches_keep_their_positions():
    """Feeding every patch in a permuted order (keep = a permutation) permutes the outputs:
    positions travel with their patches (mean pooling, so no [CLS])."""
    model = Vit(CONFIG)
    images = _images()
    params = init_unboxed(model, jax.random.PRNGKey(2), images)["params"]
    full, pooled = model.apply({"params": params}, images)
    perm = np.random.default_rng(0).permutation(CONFIG.num_patches)
    keep = jnp.asarray(np.stack([perm, perm]), jnp.int32)
    shuffled, pooled_shuffled = model.apply({"params": params}, images, keep)
    np.testing.assert_allclose(shuffled, full[:, perm], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pooled_shuffled, pooled, rtol=1e-5, atol=1e-5)
    some, _ = model.apply({"params": params}, images, keep[:, :4])  # a quarter visible
    assert some.shape == (2, 4, 32)


def test_cls_pooling_and_bad_input():
    model = Vit(VitConfig(**{**CONFIG.__dict__, "pooling": "cls"}))
    images = _images()
    params = init_unboxed(model, jax.random.PRNGKey(3), images)["params"]
    tokens, pooled = model.apply({"params": params}, images)
    assert tokens.shape == (2, 17, 32)
    np.testing.assert_array_equal(pooled, tokens[:, 0])
    with pytest.raises(ValueError, match="does not divide"):
        VitConfig(image_size=30, patch_size=4)
    with pytest.raises(ValueError, match="pooling='max'"):
        VitConfig(pooling="max")
    with pytest.raises(ValueError, match=r"the model expects \(16, 16, 3\)"):
        model.apply({"params": params}, jnp.zeros((1, 32, 32, 3)))


def test_sincos_positions_by_hand():
    """MAE's fixed 2-D table: for dim 8, channels 0-3 = sin/cos of the row at frequencies
    1 and 1/100, channels 4-7 the same of the column; patch 6 of a 4x4 grid = row 1, col 2."""
    table = sincos_positions(4, 8)
    assert table.shape == (16, 8)
    row, col = 1, 2  # patch 6
    expected = [np.sin(row), np.sin(row / 100), np.cos(row), np.cos(row / 100),
                np.sin(col), np.sin(col / 100), np.cos(col), np.cos(col / 100)]
    np.testing.assert_allclose(table[6], expected, rtol=1e-6)
    np.testing.assert_allclose(table[0], [0, 0, 1, 1, 0, 0, 1, 1])
    assert len(np.unique(table.round(6), axis=0)) == 16  # every patch its own code
    with pytest.raises(ValueError, match="divisible by 4, got 6"):
        sincos_positions(4, 6)


def test_sincos_vit_adds_the_fixed_table_and_has_no_position_parameter():
    config = VitConfig(**{**CONFIG.__dict__, "position": "sincos"})
    model = Vit(config)
    images = _images()
    params = init_unboxed(model, jax.random.PRNGKey(1), images)["params"]
    assert "position" not in params
    embedded = np.asarray(patchify(images, 4)) @ np.asarray(params["patch_embedding"]["kernel"])
    embedded += np.asarray(params["patch_embedding"]["bias"]) + sincos_positions(4, 32)
    np.testing.assert_allclose(_stack_input(model, params, images), embedded, rtol=1e-5,
                               atol=1e-5)
    decoder = TransformerConfig(hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32)
    mae = MaskedAutoencoder(config, decoder, num_visible=4)  # MAE: fixed tables in both
    mae_params = init_unboxed(mae, jax.random.PRNGKey(2), images, jnp.arange(16)[None] % 4 > 0)["params"]
    assert "position" not in mae_params["encoder"] and "decoder_position" not in mae_params
    with pytest.raises(ValueError, match="position='rope'"):
        VitConfig(position="rope")
    with pytest.raises(ValueError, match="divisible by 4, got 30"):
        VitConfig(position="sincos", hidden_size=30, num_heads=3)


@pytest.mark.parametrize("encoder", ["vit", "convnet"])
def test_encoders_learn_to_tell_bright_from_dark_quadrants(encoder):
    """A linear head on each encoder learns which quadrant of the image is bright (4 classes)
    to near-perfect training accuracy in 60 steps; chance is 25%."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 64)
    images = rng.uniform(0, 0.3, (64, 16, 16, 3)).astype(np.float32)
    for i, q in enumerate(labels):
        r, c = divmod(q, 2)
        images[i, r * 8:(r + 1) * 8, c * 8:(c + 1) * 8] += 0.7
    model = Vit(CONFIG) if encoder == "vit" else ConvNet(channels=(16, 32), kernels=(3, 3),
                                                         pool_after=(True, False))
    head = jax.random.normal(jax.random.PRNGKey(5), (32, 4)) * 0.01
    params = {"encoder": init_unboxed(model, jax.random.PRNGKey(4), images[:1])["params"], "head": head}

    def loss_fn(p):
        _, pooled = model.apply({"params": p["encoder"]}, images)
        logits = pooled @ p["head"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits

    tx = optax.adam(3e-3)
    state = tx.init(params)
    step = jax.jit(lambda p, s: _update(tx, loss_fn, p, s))
    for _ in range(60):
        params, state, loss, logits = step(params, state)
    accuracy = float(np.mean(np.asarray(logits).argmax(-1) == labels))
    assert accuracy > 0.9, (encoder, float(loss), accuracy)


def _update(tx, loss_fn, params, state):
    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss, logits


# ----------------------------------------------------------------- probe layers, pretext nets

def test_layer_features_match_the_encoders_own_outputs():
    """ConvNet: the last layer's features are its pooled output (no pooling after it); an
    earlier layer = mean over space of ReLU(conv_i), by hand. ViT: the last block's [CLS]
    after the final LayerNorm is the pooled output."""
    from ssl_jax.models.vision import layer_features

    images = jax.random.uniform(jax.random.PRNGKey(1), (3, 16, 16, 3))
    conv = ConvNet((4, 6, 5), (3, 3, 3), (True, True, False))
    params = init_unboxed(conv, jax.random.PRNGKey(0), images)["params"]
    np.testing.assert_allclose(layer_features(conv, params, images, 2),
                               conv.apply({"params": params}, images)[1], rtol=1e-6)
    first = nn.Conv(4, (3, 3), padding="SAME").apply({"params": params["conv_0"]}, images)
    np.testing.assert_allclose(layer_features(conv, params, images, 0),
                               jnp.mean(nn.relu(first), axis=(1, 2)), rtol=1e-5, atol=1e-6)
    vit = Vit(VitConfig(image_size=16, patch_size=4, hidden_size=16, num_layers=2,
                        num_heads=2, mlp_dim=32))
    vparams = init_unboxed(vit, jax.random.PRNGKey(0), images)["params"]
    last = layer_features(vit, vparams, images, 1)  # block 1's [CLS], before the final LN
    normed = nn.LayerNorm(epsilon=1e-6).apply({"params": vparams["ln"]}, last)
    np.testing.assert_allclose(normed, vit.apply({"params": vparams}, images)[1], atol=1e-5)
    with pytest.raises(ValueError, match="probe layer=2"):
        layer_features(vit, vparams, images, 2)


def test_jigsaw_net_reads_tiles_in_their_order():
    """Tiles go through one shared encoder; the features are concatenated in the given order,
    so permuting the tiles changes the logits (the network can tell permutations apart), and
    the same tiles in the same order give the same logits in any batch position."""
    from ssl_jax.models.vision import JigsawNet

    tiles = jax.random.uniform(jax.random.PRNGKey(2), (2, 9, 8, 8, 3))
    net = JigsawNet(ConvNet((4, 8), (3, 3), (True, False)), num_permutations=7,
                    tile_features=6, hidden=10)
    params = init_unboxed(net, jax.random.PRNGKey(0), tiles)["params"]
    assert set(params) == {"encoder", "tile_fc", "fc", "classifier"}  # one encoder, shared
    logits = net.apply({"params": params}, tiles)
    assert logits.shape == (2, 7)
    swapped = tiles[:, jnp.array([1, 0, 2, 3, 4, 5, 6, 7, 8])]
    assert not np.allclose(net.apply({"params": params}, swapped), logits, atol=1e-4)
    np.testing.assert_allclose(net.apply({"params": params}, tiles[::-1]), logits[::-1],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("encoder", ["convnet", "vit"])
def test_context_encoder_predicts_every_pixel(encoder):
    from ssl_jax.models.vision import ContextEncoder

    images = jax.random.uniform(jax.random.PRNGKey(3), (2, 16, 16, 3))
    if encoder == "vit":
        enc = Vit(VitConfig(image_size=16, patch_size=4, hidden_size=16, num_layers=1,
                            num_heads=2, mlp_dim=32))
        model = ContextEncoder(enc, patch_size=4)
    else:
        model = ContextEncoder(ConvNet((4, 8), (3, 3), (True, True)))
    params = init_unboxed(model, jax.random.PRNGKey(0), images)["params"]
    out = model.apply({"params": params}, images)
    assert out.shape == images.shape and out.dtype == jnp.float32
    if encoder == "convnet":  # the channel-wise FC: one [h*w, h*w] map per channel
        assert params["channelwise_fc"].shape == (8, 16, 16)
