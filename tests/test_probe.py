"""Linear probes: a known linearly separable case, the digits' pixels (a known strong
baseline) and a frozen random encoder's features."""
import jax
import numpy as np
import pytest

from ssl_jax.data.images import load_images
from ssl_jax.eval.probe import extract_features, linear_probe
from ssl_jax.models.vision import Vit, VitConfig


def test_separable_features_give_a_perfect_probe():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = rng.normal(size=(300, 5))
    x[:, 0] += 6 * y  # class = which band of the first coordinate
    got = linear_probe(x[:200], y[:200], x[200:], y[200:])
    assert got["accuracy"] == 1.0 and got["train_accuracy"] == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        linear_probe(x[:10], y[:9], x, y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        linear_probe(x[:5], np.zeros(5), x, y)


def test_probes_on_the_embedded_digits():
    """Pixels of the upsampled digits: logistic regression is known to reach ~95%; a frozen
    random ViT's mean-pooled features are far above chance (10%) but below the pixels."""
    train_x, train_y, _ = load_images("digits", "train", size=16)
    test_x, test_y, _ = load_images("digits", "test", size=16)
    pixels = linear_probe(train_x.reshape(len(train_x), -1), train_y,
                          test_x.reshape(len(test_x), -1), test_y)
    assert pixels["accuracy"] > 0.9, pixels
    model = Vit(VitConfig(image_size=16, patch_size=4, hidden_size=32, num_layers=2,
                          num_heads=2, mlp_dim=64, pooling="mean"))
    params = model.init(jax.random.PRNGKey(0), train_x[:1])["params"]
    encode = lambda images: model.apply({"params": params}, images)[1]
    features = [extract_features(encode, x, batch_size=512) for x in (train_x, test_x)]
    assert features[0].shape == (len(train_x), 32)
    np.testing.assert_allclose(features[1][:3], encode(test_x[:3]), rtol=1e-5, atol=1e-6)
    random_vit = linear_probe(features[0], train_y, features[1], test_y)
    assert 0.3 < random_vit["accuracy"] < pixels["accuracy"], (random_vit, pixels)
