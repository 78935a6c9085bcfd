"""Image sources: the embedded digits and a locally prepared TFDS dataset."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from sklearn.datasets import load_digits

from ssl_jax.data import images


# ----------------------------------------------------------------------------- digits

@pytest.fixture(scope="module")
def digits_splits():
    return {split: images.load_images("digits", split) for split in ("train", "test")}


def test_digits_shapes_range_and_labels(digits_splits):
    (train, train_labels, names), (test, test_labels, _) = (digits_splits["train"],
                                                            digits_splits["test"])
    assert train.shape == (1438, 32, 32, 3) and test.shape == (359, 32, 32, 3)
    assert train.dtype == test.dtype == np.float32
    assert train_labels.dtype == np.int32 and train_labels.shape == (1438,)
    assert 0.0 <= min(train.min(), test.min()) and max(train.max(), test.max()) <= 1.0
    assert train.max() == 1.0  # 16/16 survives the upsampling
    assert names == [str(d) for d in range(10)]
    assert len(train) + len(test) == 1797
    assert set(train_labels) == set(test_labels) == set(range(10))
    assert np.bincount(test_labels, minlength=10).min() >= 20  # every class is held out
    np.testing.assert_array_equal(train[..., 0], train[..., 2])  # grey repeated to RGB


def test_digits_upsampling_keeps_intensity(digits_splits):
    test, labels, _ = digits_splits["test"]
    digits = load_digits()
    index = images.digits_split_indices(1797, "test")
    original = digits.images[index] / 16.0  # [359, 8, 8]
    np.testing.assert_array_equal(labels, digits.target[index])
    # Bilinear 4x upsampling spreads each pixel over its 4x4 block: the mean is kept.
    np.testing.assert_allclose(test.mean(axis=(1, 2, 3)), original.mean(axis=(1, 2)),
                               atol=1e-5)
    # And the picture itself: each 4x4 block's average follows its original pixel (the
    # bilinear blur moves a little intensity between neighbouring blocks).
    blocks = test[..., 0].reshape(-1, 8, 4, 8, 4).mean(axis=(2, 4))
    assert np.corrcoef(blocks.ravel(), original.ravel())[0, 1] > 0.97
    small, _, _ = images.load_images("digits", "test", size=8, limit=5)
    np.testing.assert_allclose(small[..., 0], original[:5], atol=1e-6)  # same size: unchanged


def test_digits_split_is_deterministic_and_disjoint():
    train = images.digits_split_indices(1797, "train")
    test = images.digits_split_indices(1797, "test")
    np.testing.assert_array_equal(test[:3], [4, 9, 14])
    assert len(np.intersect1d(train, test)) == 0
    np.testing.assert_array_equal(np.union1d(train, test), np.arange(1797))
    a, labels_a, _ = images.load_images("digits", "test", size=16, limit=7)
    b, labels_b, _ = images.load_images("digits", "test", size=16, limit=7)
    assert a.shape == (7, 16, 16, 3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(labels_a, labels_b)


@pytest.mark.parametrize("kwargs, match", [
    (dict(source="digits", split="validation"), "split='validation'"),
    (dict(source="", split="train"), "source ''"),
    (dict(source="digits", split="train", size=0), "size=0"),
    (dict(source="digits", split="train", size=3.5), "size=3.5"),
    (dict(source="digits", split="train", limit=-1), "limit=-1"),
])
def test_bad_arguments_raise_naming_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        images.load_images(kwargs.pop("source"), kwargs.pop("split"), **kwargs)


# ----------------------------------------------------------------------------- TFDS

SHAPES = [(10, 20), (20, 10), (12, 12), (9, 15), (16, 6)]  # (height, width)


class TinyImagesStandIn(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """The features of a TFDS image-classification dataset (cifar10, imagenette, ...): images
    of varied shapes whose centred square is one colour and whose margins are white."""

    name = "ssl_jax_tiny_images"
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            # PNG via PIL: encoding a numpy image would need TensorFlow, which we do not use.
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
            "label": tfds.features.ClassLabel(names=["red", "green", "blue"])}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i, (height, width) in enumerate(SHAPES):
            image = np.full((height, width, 3), 255, np.uint8)
            side = min(height, width)
            top, left = (height - side) // 2, (width - side) // 2
            image[top:top + side, left:left + side] = _colour(i)
            yield i, {"image": Image.fromarray(image), "label": i % 3}


def _colour(i: int) -> np.ndarray:
    colour = np.zeros(3, np.uint8)
    colour[i % 3] = 40 * (i + 1)
    return colour


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds_images"))
    tfds.disable_progress_bar()
    TinyImagesStandIn(data_dir=data_dir).download_and_prepare(file_format="array_record")
    return data_dir


def test_tfds_source_prepared_locally(prepared_dir):
    x, labels, names = images.load_images("ssl_jax_tiny_images", "train", size=8,
                                          data_dir=prepared_dir)
    assert x.shape == (5, 8, 8, 3) and x.dtype == np.float32
    assert names == ["red", "green", "blue"]
    assert labels.dtype == np.int32
    # TFDS stores examples in key-hash order: match each image to its example by colour.
    matched = [[i for i in range(5) if np.allclose(image, _colour(i) / 255.0, atol=1 / 255)]
               for image in x]  # the centre crop drops the white margins
    assert sorted(sum(matched, [])) == list(range(5))
    assert [m[0] % 3 for m in matched] == labels.tolist()
    few, few_labels, _ = images.load_images("ssl_jax_tiny_images", "train[:2]", size=4,
                                            data_dir=prepared_dir, limit=1)
    assert few.shape == (1, 4, 4, 3) and len(few_labels) == 1


def test_center_crop_resize():
    image = np.zeros((6, 10, 3), np.uint8)
    image[:, 2:8] = 200  # the centred 6x6 square
    out = images.center_crop_resize(image, 3)
    assert out.shape == (3, 3, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, 200 / 255)
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4, 1) * 16
    out = images.center_crop_resize(grey, 4)  # same size: exact, repeated to RGB
    np.testing.assert_allclose(out, np.repeat(grey, 3, axis=-1) / 255.0, atol=1e-7)
    with pytest.raises(ValueError, match="float32"):
        images.center_crop_resize(np.zeros((4, 4, 3), np.float32), 2)


def test_tfds_unprepared_or_unknown_split_errors(prepared_dir, tmp_path):
    empty = str(tmp_path / "empty")
    with pytest.raises(ValueError, match=r"tfds build ssl_jax_tiny_images --data_dir .*empty "
                                         r"--file_format array_record"):
        images.load_images("ssl_jax_tiny_images", "train", data_dir=empty)
    with pytest.raises(ValueError, match="tfds build cifar10 --data_dir"):
        images.load_images("cifar10", "train", data_dir=empty)
    with pytest.raises(ValueError, match="split 'validation'"):
        images.load_images("ssl_jax_tiny_images", "validation", data_dir=prepared_dir)
