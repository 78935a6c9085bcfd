"""Linear probes: frozen features -> a multinomial logistic regression (scikit-learn), the
standard measure of what a self-supervised encoder learned."""
from __future__ import annotations

from typing import Callable

import jax
import numpy as np


def extract_features(encode: Callable, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """encode(images [b, H, W, C]) -> features [b, D] (jittable; compiled once for the full
    batches and once for the last); returns float32 [N, D]."""
    if len(images) == 0:
        raise ValueError("no images to extract features from")
    fn = jax.jit(encode)
    out = [np.asarray(fn(images[i:i + batch_size]), np.float32)
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out).reshape(len(images), -1)


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                 test_y: np.ndarray, *, l2: float = 1.0, max_iter: int = 2000) -> dict[str, float]:
    """Standardised features (train statistics), L2-regularised logistic regression (C = 1/l2)
    fitted on train; {"accuracy" (test), "train_accuracy"}."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise ValueError(f"features and labels differ in length: train {len(train_x)} vs "
                         f"{len(train_y)}, test {len(test_x)} vs {len(test_y)}")
    if len(np.unique(train_y)) < 2:
        raise ValueError("a linear probe needs at least 2 classes in its training labels")
    if l2 <= 0:
        raise ValueError(f"l2={l2} must be > 0")
    scaler = StandardScaler().fit(train_x)
    model = LogisticRegression(C=1.0 / l2, max_iter=max_iter)
    model.fit(scaler.transform(train_x), train_y)
    return {"accuracy": float(model.score(scaler.transform(test_x), test_y)),
            "train_accuracy": float(model.score(scaler.transform(train_x), train_y))}
