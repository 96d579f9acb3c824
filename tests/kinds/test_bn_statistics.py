"""The BN-statistics policy: it applies to the model's BN layers exactly when a trained kind owns them."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.models import small_cnn

from edgepatch.kinds import batch_norm_layers, statistics_after_training, statistics_during_training


@pytest.fixture()
def model():
    return small_cnn(num_classes=4)


def _images(count=8, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (count, 32, 32, 3)).astype("float32")


def test_frozen_statistics_normalise_with_the_moving_ones_in_training(model):
    x = _images()
    batch_statistics = np.asarray(model(x, training=True))  # also moves the moving statistics
    inference = np.asarray(model(x, training=False))
    assert not np.allclose(batch_statistics, inference, atol=1e-4)
    with statistics_during_training(model, ("scale_bias", "logits"), "frozen", 0.9):
        np.testing.assert_allclose(np.asarray(model(x, training=True)), inference, atol=1e-5)
    assert not any("call" in vars(layer) for layer in batch_norm_layers(model))  # restored


@pytest.mark.parametrize("kinds", [("logits",), ("depthwise", "logits")])
def test_kinds_without_statistics_leave_bn_alone(model, kinds):
    before = [layer.momentum for layer in batch_norm_layers(model)]
    with statistics_during_training(model, kinds, "frozen", 0.5):
        assert not any("call" in vars(layer) for layer in batch_norm_layers(model))
    with statistics_during_training(model, kinds, "momentum", 0.5):
        assert [layer.momentum for layer in batch_norm_layers(model)] == before
    means = [np.asarray(layer.moving_mean).copy() for layer in batch_norm_layers(model)]
    statistics_after_training(model, kinds, "reestimate", _dataset(), 2)
    assert all(np.array_equal(m, np.asarray(layer.moving_mean)) for m, layer in zip(means, batch_norm_layers(model)))


@pytest.mark.parametrize("kinds", [("scale_bias",), ("full",)])
def test_momentum_mode_lowers_then_restores(model, kinds):
    before = [layer.momentum for layer in batch_norm_layers(model)]
    with statistics_during_training(model, kinds, "momentum", 0.5):
        assert [layer.momentum for layer in batch_norm_layers(model)] == [0.5] * len(before)
    assert [layer.momentum for layer in batch_norm_layers(model)] == before


def _dataset():
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((_images(16, 1), np.zeros(16))).batch(8)


def test_reestimate_mode_sets_the_mean_of_the_batch_statistics(model):
    with statistics_during_training(model, ("scale_bias",), "reestimate", 0.9):
        assert not any("call" in vars(layer) for layer in batch_norm_layers(model))  # batch statistics
    statistics_after_training(model, ("scale_bias",), "reestimate", _dataset(), 2)
    stem = model.get_layer("stem")
    features = [np.asarray(stem(x)).reshape(-1, 8) for x, _ in _dataset()]
    np.testing.assert_allclose(np.asarray(model.get_layer("stem_norm").moving_mean),
                               np.mean([f.mean(axis=0) for f in features], axis=0), atol=1e-5)
