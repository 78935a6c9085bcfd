"""Linear probes: frozen features -> a multinomial logistic regression (scikit-learn), the
standard measure of what a self-supervised encoder learned; and full fine-tuning of the
encoder with a linear layer on labelled images (what a pre-trained encoder is used for)."""
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


def check_probe_config(probe, train_labels: np.ndarray) -> None:
    """config.probe's values, checked against the labelled training images (before any
    compute): layer (int >= -1), l2 > 0, labels_per_class (0 = all, or at most the smallest
    class's count), draws >= 1, finetune_steps >= 0, finetune_learning_rate > 0."""
    for name in ("layer", "labels_per_class", "draws", "finetune_steps"):
        if isinstance(probe[name], bool) or not isinstance(probe[name], int):
            raise ValueError(f"probe.{name}={probe[name]!r} must be an int")
    if probe.finetune_steps < 0 or not probe.finetune_learning_rate > 0:
        raise ValueError(f"probe.finetune_steps={probe.finetune_steps} must be >= 0 and "
                         f"probe.finetune_learning_rate={probe.finetune_learning_rate} > 0")
    if probe.layer < -1:
        raise ValueError(f"probe.layer={probe.layer} must be -1 (the encoder's output) or a "
                         f"layer index >= 0")
    if not probe.l2 > 0:
        raise ValueError(f"probe.l2={probe.l2!r} must be > 0")
    if probe.draws < 1:
        raise ValueError(f"probe.draws={probe.draws} must be >= 1")
    smallest = int(np.unique(train_labels, return_counts=True)[1].min()) if len(train_labels) else 0
    if probe.labels_per_class < 0 or probe.labels_per_class > smallest:
        raise ValueError(f"probe.labels_per_class={probe.labels_per_class} must be 0 (all "
                         f"labels) or in [1, {smallest}] (the smallest class's training "
                         f"images)")


def labelled_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of `per_class` images of every class, drawn without replacement."""
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
             for c in np.unique(labels)]
    return np.sort(np.concatenate(picks))


# probe_encoder's / finetune_encoder's numbers that join a run's summary (and a sweep's row)
SUMMARY_KEYS = ("probe_accuracy", "probe_accuracy_std", "probe_accuracy_all_labels",
                "probe_train_accuracy_all_labels", "finetune_accuracy")


def probe_encoder(encode: Callable, task, probe) -> dict:
    """Linear probes of encode(images) -> [b, D] on the task's labelled images (train split
    to fit, held-out split to score): the numbers (SUMMARY_KEYS) and the protocol's facts.

    probe_accuracy is the configured protocol: all labels (labels_per_class=0), or the mean
    over `draws` seeded draws of labels_per_class labelled images per class (the low-label
    regime, where representations differ most); probe_accuracy_all_labels is always given."""
    train_x = extract_features(encode, task.train_images)
    test_x = extract_features(encode, task.eval_images)
    train_y, test_y = task.train_labels, task.eval_labels
    full = linear_probe(train_x, train_y, test_x, test_y, l2=probe.l2)
    result = {"probe_accuracy_all_labels": full["accuracy"],
              "probe_train_accuracy_all_labels": full["train_accuracy"]}
    draws = []
    if probe.labels_per_class:
        for seed in range(probe.draws):
            idx = labelled_subset(train_y, probe.labels_per_class, seed)
            draws.append(linear_probe(train_x[idx], train_y[idx], test_x, test_y,
                                      l2=probe.l2)["accuracy"])
        result["probe_accuracy"] = float(np.mean(draws))
        result["probe_accuracy_std"] = float(np.std(draws))
    else:
        result["probe_accuracy"] = full["accuracy"]
    return dict(result, layer=probe.layer, l2=probe.l2,
                labels_per_class=probe.labels_per_class, draws=draws,
                feature_dim=int(train_x.shape[1]), train_images=len(train_x),
                test_images=len(test_x))


def finetune_encoder(encode: Callable, encoder_params, task, probe, batch_size: int = 64,
                     seed: int = 0) -> dict:
    """Full fine-tuning: encode(encoder_params, images) -> [b, D], standardised with the
    starting encoder's training-feature statistics (fixed; the probe's StandardScaler, as
    MAE puts a BatchNorm before its head), then a fresh zero-initialised linear layer; every
    parameter trained (AdamW, cosine decay, probe.finetune_steps steps) on the labelled
    training images (labels_per_class of them if set: the first probe draw); accuracy on
    the held-out images (finetune_accuracy) and the recipe's facts."""
    import jax.numpy as jnp
    import optax

    train_x, train_y = task.train_images, task.train_labels
    if probe.labels_per_class:
        idx = labelled_subset(train_y, probe.labels_per_class, 0)
        train_x, train_y = train_x[idx], train_y[idx]
    num_classes = int(max(train_y.max(), task.eval_labels.max())) + 1
    start = extract_features(lambda x: encode(encoder_params, x), train_x)  # [n, D]
    mean = start.mean(0, keepdims=True)  # [1, D]
    scale = 1.0 / (start.std(0, keepdims=True) + 1e-6)  # [1, D]
    params = {"encoder": encoder_params,
              "head": {"kernel": jnp.zeros((start.shape[1], num_classes)),
                       "bias": jnp.zeros(num_classes)}}
    schedule = optax.cosine_decay_schedule(probe.finetune_learning_rate, probe.finetune_steps)
    tx = optax.adamw(schedule, weight_decay=1e-4)

    def logits(p, x):
        features = (encode(p["encoder"], x) - mean) * scale
        return features @ p["head"]["kernel"] + p["head"]["bias"][None, :]

    @jax.jit
    def step(p, opt_state, x, y):
        loss = lambda q: optax.softmax_cross_entropy_with_integer_labels(logits(q, x), y).mean()
        grads = jax.grad(loss)(p)
        updates, opt_state = tx.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state

    opt_state = tx.init(params)
    rng = np.random.default_rng(seed)
    for _ in range(probe.finetune_steps):
        batch = rng.integers(len(train_x), size=min(batch_size, len(train_x)))
        params, opt_state = step(params, opt_state, train_x[batch], train_y[batch])
    predicted = extract_features(lambda x: jnp.argmax(logits(params, x), -1)[:, None],
                                 task.eval_images)[:, 0]
    return {"finetune_accuracy": float(np.mean(predicted == task.eval_labels)),
            "finetune_steps": probe.finetune_steps,
            "finetune_learning_rate": probe.finetune_learning_rate,
            "finetune_train_images": len(train_x)}
