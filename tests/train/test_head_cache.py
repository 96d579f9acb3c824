"""Head-only training on cached backbone features equals the full pass, and is used only where exact."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.models import small_cnn


def _folders(root, classes=3, per_class=8, size=32):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("test", 3)):
        for label in range(classes):
            folder = root / split / f"class_{label}"
            folder.mkdir(parents=True)
            for i in range(count):  # class-tinted noise, so the head has something to learn
                pixels = rng.integers(0, 128, (size, size, 3)) + np.eye(3, dtype=int)[label] * 120
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    return str(root)


def _train(tmp_path, cached: bool, monkeypatch):
    from edgepatch.format.task import Preprocessing, TaskInfo
    from edgepatch.train import transfer
    from edgepatch.train.data import scan_image_folders

    split = scan_image_folders(_folders(tmp_path / ("cached" if cached else "full")))
    model = small_cnn(num_classes=3)
    task = TaskInfo("tint", split.classes, 32, Preprocessing(1 / 127.5, -1.0))
    config = transfer.TrainConfig(trained=("logits",), epochs=3, batch_size=8, learning_rate=1e-2, seed=4,
                                  cache_features=cached)
    used = []
    real = transfer.fit_head_on_features
    monkeypatch.setattr(transfer, "fit_head_on_features", lambda *a, **k: used.append(1) or real(*a, **k))
    result = transfer.train(model, split, task, config, verbose=0)
    assert bool(used) == cached
    return result


def test_cached_features_train_the_same_head_as_the_full_pass(tmp_path, monkeypatch):
    cached = _train(tmp_path, True, monkeypatch)
    full = _train(tmp_path, False, monkeypatch)
    head_cached, head_full = (r.model.get_layer("classifier").get_weights() for r in (cached, full))
    initial = small_cnn(num_classes=3).get_layer("classifier").get_weights()
    assert np.max(np.abs(head_full[0] - initial[0])) > 1e-2  # training moved the head
    for a, b in zip(head_cached, head_full):
        np.testing.assert_allclose(a, b, atol=1e-4)
    assert cached.test_accuracy == full.test_accuracy and cached.trained_parameters == full.trained_parameters
    assert set(cached.patch.tensors) == set(full.patch.tensors)


@pytest.mark.parametrize("kinds, extra_layer, expected", [
    (("logits",), None, True),
    (("scale_bias", "logits"), None, False),  # BN γ/β below the head train: features change every step
    (("logits",), "dropout", False),  # random in training: the full pass shows the head other inputs
    (("logits",), "flip", False),
])
def test_caching_is_chosen_by_structure(kinds, extra_layer, expected):
    import keras

    from edgepatch.train.head_cache import caches_features

    model = small_cnn(num_classes=3)
    if extra_layer:
        features = model.get_layer("classifier").input
        layer = keras.layers.Dropout(0.3) if extra_layer == "dropout" else keras.layers.RandomFlip()
        model = keras.Model(model.inputs, keras.layers.Dense(3, name="classifier2")(layer(features)))
    assert caches_features(model, kinds) is expected
