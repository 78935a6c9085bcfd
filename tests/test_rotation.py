"""Rotation prediction (RotNet): the four rotations by hand, their labels, all four of each
image in one batch (padding left out), the one-rotation ablation's examples, a short run far
above chance on held-out images, and the comparison's random-init baseline."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import config as config_lib
from ssl_jax.tasks.rotation import Rotation, RotationTask, rotations
from ssl_jax.train.loop import train_and_evaluate
from tests.conftest import ROOT

SMALL = [("model.channels", "[8, 16]"), ("model.kernels", "[3, 3]"),
         ("model.pool_after", "[True, True]"), ("data_threads", "1")]


def _config(arg="", overrides=(), file="rotation.py"):
    return config_lib.load_config(os.path.join(ROOT, "experiments/vision", f"{file}:{arg}"),
                                  SMALL + list(overrides))


def test_rotations_by_hand():
    """Label k = k * 90 degrees counter-clockwise; image i's rotations at 4 i .. 4 i + 3."""
    first = np.array([[1, 2], [3, 4]])  # [H, W]
    second = np.array([[5, 6], [7, 8]])
    images = np.stack([first, second])[..., None]  # [2, 2, 2, 1]
    turned, labels = rotations(images)
    want = [[[1, 2], [3, 4]], [[2, 4], [1, 3]], [[4, 3], [2, 1]], [[3, 1], [4, 2]],
            [[5, 6], [7, 8]], [[6, 8], [5, 7]], [[8, 7], [6, 5]], [[7, 5], [8, 6]]]
    np.testing.assert_array_equal(turned[..., 0], want)
    np.testing.assert_array_equal(labels, [0, 1, 2, 3, 0, 1, 2, 3])
    on_device, device_labels = rotations(jnp.asarray(images))  # the step's (jax) path
    np.testing.assert_array_equal(np.asarray(on_device), turned)
    np.testing.assert_array_equal(np.asarray(device_labels), labels)


def test_every_image_of_a_batch_is_classified_in_all_four_rotations():
    """The compute half, no data: the stats of a 2-image batch (the second padding) are the
    mean cross-entropy / accuracy of the model's logits on the first image's four rotations
    against labels 0..3, counted 4 times."""
    task = Rotation(_config("image_size=16"), channels=3)
    params = task.init_params(jax.random.PRNGKey(0))
    image = np.random.default_rng(0).random((16, 16, 3), dtype=np.float32)
    batch = {"image": np.stack([image, image[::-1]]),
             "example_weight": np.array([1.0, 0.0], np.float32)}
    stats = task.stats(params, batch, None, train=False)
    model = task.build_model(train=False)
    four = np.stack([np.rot90(image, k) for k in range(4)])
    logits = np.asarray(model.apply({"params": params}, four), np.float64)  # [4, 4]
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    loss_sum, count = stats["rotation_loss"]
    assert float(count) == 4.0 and float(stats["rotation_accuracy"][1]) == 4.0
    np.testing.assert_allclose(float(loss_sum), -sum(log_p[k, k] for k in range(4)), rtol=1e-5)
    hits = sum(int(np.argmax(logits[k]) == k) for k in range(4))
    assert float(stats["rotation_accuracy"][0]) == hits
    assert task.dummy_batch(3)["image"].shape == (3, 16, 16, 3)


def test_one_random_rotation_per_image_is_the_ablation(tmp_path):
    task = RotationTask(_config("image_size=16,all_rotations=False,steps=1"), str(tmp_path))
    examples = task.eval_examples()
    labels = np.array([e["rotation"] for e in examples])
    assert set(labels) == {0, 1, 2, 3} and len(examples) == len(task.eval_images) == 359
    for e, x in zip(examples[:20], task.eval_images[:20]):
        np.testing.assert_array_equal(e["image"], np.rot90(x, int(e["rotation"])))
    assert task.tokens_per_example() == 1


def test_short_run_is_far_above_chance_on_held_out_images(tmp_path):
    """150 steps of 32 digits x 4 rotations (chance 25%): most held-out rotations right, the
    probe and the picture written."""
    config = _config("image_size=16,steps=150,batch=32,lr=3e-3")
    summary = train_and_evaluate(config, str(tmp_path), RotationTask, progress=False)
    assert summary["eval_rotation_accuracy"] > 0.55, summary  # > 2.2x chance (measured 0.65)
    assert summary["eval_rotation_loss"] < 0.8 * np.log(4)
    assert 0.5 < summary["probe_accuracy"] <= 1.0
    assert (tmp_path / "rotations.png").exists() and (tmp_path / "probe.json").exists()


def test_the_comparisons_random_init_point_is_the_untrained_encoder(tmp_path):
    """compare.py:pretext=rotation,random_init=True: zero steps of rotation.py's run; its
    held-out rotation accuracy is near chance and its probe is measured."""
    compare = os.path.join(ROOT, "experiments/vision/compare.py")
    trained = config_lib.load_config(f"{compare}:pretext=rotation")
    from ssl_jax.tasks import TASKS
    assert (trained.task, trained.num_train_steps) == ("rotation", TASKS["rotation"].compare_steps)
    config = config_lib.load_config(
        f"{compare}:pretext=rotation,random_init=True,finetune_steps=0",
        SMALL + [("data.image_size", "16")])
    assert (config.task, config.num_train_steps) == ("rotation", 0)
    summary = train_and_evaluate(config, str(tmp_path), RotationTask, progress=False)
    assert summary["step"] == 0 and abs(summary["eval_rotation_accuracy"] - 0.25) < 0.1
    assert 0.3 < summary["probe_accuracy"] <= 1.0


@pytest.mark.parametrize("arg", ["all_rotations=True", "all_rotations=False"])
def test_sweep_points_are_the_ablation(arg):
    from ssl_jax.sweep import plan_sweep

    module = config_lib.load_module(os.path.join(ROOT, "experiments/vision/rotation.py"))
    points = {p.names[0]: p for p in plan_sweep(module, None, SMALL)}
    assert sorted(points) == ["all_rotations=False", "all_rotations=True"]
    point = points[arg]
    config = config_lib.build_config(module, point.arg, point.overrides)
    assert config.pretext.all_rotations == (arg == "all_rotations=True")
    assert config.pretext.all_rotations == _config(arg).pretext.all_rotations
