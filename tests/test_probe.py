"""Linear probes: a known linearly separable case, the digits' pixels (a known strong
baseline) and a frozen random encoder's features."""
import jax
import numpy as np
import pytest

from ssl_jax.models.partitioning import init_unboxed
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
    params = init_unboxed(model, jax.random.PRNGKey(0), train_x[:1])["params"]
    encode = lambda images: model.apply({"params": params}, images)[1]
    features = [extract_features(encode, x, batch_size=512) for x in (train_x, test_x)]
    assert features[0].shape == (len(train_x), 32)
    np.testing.assert_allclose(features[1][:3], encode(test_x[:3]), rtol=1e-5, atol=1e-6)
    random_vit = linear_probe(features[0], train_y, features[1], test_y)
    assert 0.3 < random_vit["accuracy"] < pixels["accuracy"], (random_vit, pixels)


# ----------------------------------------------------------------- the run's measurement

def _probe_config(**kw):
    import ml_collections

    fields = dict(layer=-1, l2=1.0, labels_per_class=0, draws=3, finetune_steps=0,
                  finetune_learning_rate=1e-3)
    fields.update(kw)
    return ml_collections.ConfigDict(fields)


class _Digits:
    """What probe_encoder reads from a task: labelled train and held-out images."""

    def __init__(self, size=8):
        self.train_images, self.train_labels, _ = load_images("digits", "train", size=size)
        self.eval_images, self.eval_labels, _ = load_images("digits", "test", size=size)


def test_labelled_subsets_and_probe_config_checks():
    from ssl_jax.eval.probe import check_probe_config, labelled_subset

    labels = np.repeat(np.arange(4), [5, 7, 3, 9])
    idx = labelled_subset(labels, 3, seed=0)
    np.testing.assert_array_equal(np.bincount(labels[idx]), [3, 3, 3, 3])
    assert len(np.unique(idx)) == 12 and np.array_equal(idx, np.sort(idx))
    assert not np.array_equal(idx, labelled_subset(labels, 3, seed=1))
    check_probe_config(_probe_config(labels_per_class=3), labels)
    with pytest.raises(ValueError, match=r"labels_per_class=4 .* \[1, 3\]"):
        check_probe_config(_probe_config(labels_per_class=4), labels)
    with pytest.raises(ValueError, match="probe.layer=-2"):
        check_probe_config(_probe_config(layer=-2), labels)
    with pytest.raises(ValueError, match="probe.l2=0"):
        check_probe_config(_probe_config(l2=0), labels)
    with pytest.raises(ValueError, match="finetune_steps=-1"):
        check_probe_config(_probe_config(finetune_steps=-1), labels)


def test_probe_encoder_and_finetuning_on_pixels():
    """The identity encoder (pixels): probe_encoder = linear_probe on the flattened pixels;
    the low-label protocol averages the draws; fine-tuning a linear layer on the pixels with
    AdamW reaches a logistic regression's accuracy (~95%); the protocol's facts come along."""
    from ssl_jax.eval.probe import finetune_encoder, labelled_subset, probe_encoder

    task = _Digits()
    flat = lambda x: x.reshape(len(x), -1)
    got = probe_encoder(flat, task, _probe_config(labels_per_class=5))
    want = linear_probe(flat(task.train_images), task.train_labels, flat(task.eval_images),
                        task.eval_labels)
    assert got["probe_accuracy_all_labels"] == want["accuracy"]
    draws = []
    for seed in range(3):
        idx = labelled_subset(task.train_labels, 5, seed)
        draws.append(linear_probe(flat(task.train_images[idx]), task.train_labels[idx],
                                  flat(task.eval_images), task.eval_labels)["accuracy"])
    np.testing.assert_allclose(got["probe_accuracy"], np.mean(draws))
    assert got["probe_accuracy"] < got["probe_accuracy_all_labels"]
    tuned = finetune_encoder(lambda params, x: flat(x) * params["scale"], {"scale": 1.0},
                             task, _probe_config(finetune_steps=200, finetune_learning_rate=1e-2))
    assert tuned["finetune_accuracy"] > 0.9, tuned
    assert tuned["finetune_steps"] == 200
    assert tuned["finetune_train_images"] == len(task.train_images)
    assert got["draws"] == draws and got["feature_dim"] == 8 * 8 * 3
