"""Image classification data as numpy arrays: the embedded digits, or a prepared TFDS dataset.

Every source comes out the same way, so every encoder and pretext task reads one format:
float32 [N, size, size, 3] in [0, 1] (grey images repeated to RGB), int32 labels, and the
class names.

  * "digits": scikit-learn's 1,797 handwritten digits (8x8, values 0..16, shipped inside the
    package, no download), upsampled bilinearly to `size`. Split deterministically: every
    5th image (index 4, 9, 14, ...) is "test" (359 images), the rest "train" (1,438).
  * any other name: a TFDS image-classification dataset (`cifar10`, `stl10`, `imagenette`,
    `imagenet2012`, ...) already prepared under `data_dir` as array_record, read through a
    TFDS data source (no TensorFlow); each image is centre-cropped to a square and resized.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from ssl_jax.data.corpora import default_data_dir, prepared_source

DIGITS = "digits"
DIGITS_SPLITS = ("train", "test")
DIGITS_TEST_EVERY = 5
DIGITS_MAX_VALUE = 16.0  # load_digits' pixel values are counts 0..16 of a 4x4 block


def load_images(source: str, split: str, *, size: int = 32, data_dir: str | None = None,
                limit: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images float32 [N, size, size, 3] in [0, 1], labels int32 [N], label names).

    `source` is "digits" (embedded) or the name of a TFDS dataset prepared under `data_dir`
    (default: `default_data_dir()`); `limit` keeps the first `limit` examples of the split.
    """
    if not isinstance(source, str) or not source:
        raise ValueError(f"image source {source!r} is not 'digits' or a TFDS dataset name")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"image size={size!r} must be a positive int")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit={limit!r} must be None or an int >= 0")
    if source == DIGITS:
        return _load_digits(split, size, limit)
    return _load_tfds(source, split, size, data_dir or default_data_dir(), limit)


# ----------------------------------------------------------------------------- digits

def digits_split_indices(num_images: int, split: str) -> np.ndarray:
    """Indices of `split` among `num_images` digits: every 5th image is held out as test."""
    if split not in DIGITS_SPLITS:
        raise ValueError(f"split={split!r}: the digits have splits {list(DIGITS_SPLITS)}")
    is_test = np.arange(num_images) % DIGITS_TEST_EVERY == DIGITS_TEST_EVERY - 1
    return np.flatnonzero(is_test if split == "test" else ~is_test)


def _load_digits(split: str, size: int, limit: int | None):
    from sklearn.datasets import load_digits  # local: sklearn is only needed for this source

    digits = load_digits()
    indices = digits_split_indices(len(digits.images), split)[:limit]
    gray = digits.images[indices].astype(np.float32) / DIGITS_MAX_VALUE  # [N, 8, 8]
    images = np.empty((len(indices), size, size, 3), np.float32)
    for i, image in enumerate(gray):
        images[i] = resize_gray(image, size)[:, :, None]
    labels = digits.target[indices].astype(np.int32)
    return images, labels, [str(name) for name in digits.target_names]


def resize_gray(image: np.ndarray, size: int) -> np.ndarray:
    """float32 [H, W] in [0, 1] -> float32 [size, size] in [0, 1], bilinear (PIL, which keeps
    pixel centres aligned and, when shrinking, averages over the whole footprint)."""
    resized = Image.fromarray(np.asarray(image, np.float32)).resize(
        (size, size), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, np.float32), 0.0, 1.0)


# ----------------------------------------------------------------------------- TFDS

def center_crop_resize(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H, W, C] (C = 1 or 3) -> float32 [size, size, 3] in [0, 1]: the largest centred
    square, resized bilinearly (antialiased when shrinking); grey is repeated to RGB."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3) or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image [H, W, 1 or 3], got {image.dtype} "
                         f"{list(image.shape)}")
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = image[top:top + side, left:left + side]  # [side, side, C]
    pil = Image.fromarray(square[:, :, 0] if square.shape[-1] == 1 else square)
    resized = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR), np.float32)
    resized = resized.reshape(size, size, -1) / 255.0
    return np.broadcast_to(resized, (size, size, 3))


def _load_tfds(name: str, split: str, size: int, data_dir: str, limit: int | None):
    source = prepared_source(name, split, data_dir, f"image source {name!r} (not 'digits')",
                             " or pass data_dir")
    features = source.dataset_info.features
    missing = [key for key in ("image", "label") if key not in features]
    if missing:
        raise ValueError(f"TFDS dataset {name!r} has no feature(s) {missing}; it has "
                         f"{sorted(features)}")
    count = len(source) if limit is None else min(limit, len(source))
    images = np.empty((count, size, size, 3), np.float32)
    labels = np.empty((count,), np.int32)
    for i in range(count):
        record = source[i]
        images[i] = center_crop_resize(record["image"], size)
        labels[i] = record["label"]
    names = getattr(features["label"], "names", None)
    if names is None:  # a plain integer label: name the classes by their ids
        names = [str(k) for k in range(int(labels.max()) + 1 if count else 0)]
    return images, labels, list(names)
