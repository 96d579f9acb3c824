"""BatchNorm statistics while a kind that owns them trains (``PatchKind.owns_bn_statistics``).

Keras' MobileNetV2 uses BN momentum 0.999, so in a short run the moving
statistics barely move, and γ/β fitted on batch statistics are then
evaluated on stale ones. A run therefore picks one of ``BN_STATS_MODES``;
it applies to every BN layer of the model when one of the trained kinds owns
the statistics, and to none otherwise (frozen BN layers normalise with the
base's moving statistics anyway).
"""

from __future__ import annotations

import contextlib

from edgepatch.kinds.forward import traced_forward
from edgepatch.kinds.registry import statistics_are_private

BN_STATS_MODES = {
    "frozen": "BN normalises with the base's moving statistics while gamma/beta train",
    "reestimate": "train on batch statistics, then re-estimate the moving statistics on the training data",
    "momentum": "train on batch statistics with BN momentum lowered to --bn-momentum",
}
DEFAULT_BN_STATS = "frozen"


def batch_norm_layers(model) -> list:
    """Every BatchNormalization layer of ``model``, in layer order."""
    import keras

    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def _owned_statistics(model, kinds, selection=None) -> list:
    """The BN layers whose statistics ``kinds`` own; a budget's ``selection`` keeps the others the base's."""
    if not statistics_are_private(kinds):
        return []
    return [layer for layer in batch_norm_layers(model) if selection is None or layer.name in selection]


def run_in_inference_mode(bn_layers) -> None:
    """Make BN layers normalise with their moving statistics even while fit() trains their gamma/beta.

    Keras 3 uses batch statistics whenever a trainable BN is called in
    training mode, and has no flag for "train gamma/beta on moving
    statistics", so the call is wrapped per instance (``restore_training_mode`` undoes it).
    """
    for layer in bn_layers:
        if "call" in vars(layer):
            continue  # already wrapped
        original = type(layer).call.__get__(layer)

        def call(inputs, training=None, mask=None, _original=original):
            return _original(inputs, training=False, mask=mask)

        layer.call = call


def restore_training_mode(bn_layers) -> None:
    for layer in bn_layers:
        if "call" in vars(layer):
            del layer.call


@contextlib.contextmanager
def statistics_frozen(bn_layers):
    """Run BN layers in inference mode (``run_in_inference_mode``) inside the block."""
    run_in_inference_mode(bn_layers)
    try:
        yield
    finally:
        restore_training_mode(bn_layers)


@contextlib.contextmanager
def lowered_momentum(bn_layers, momentum: float):
    saved = [layer.momentum for layer in bn_layers]
    for layer in bn_layers:
        layer.momentum = momentum
    try:
        yield
    finally:
        for layer, value in zip(bn_layers, saved):
            layer.momentum = value


def reestimate_statistics(model, dataset, max_batches: int, bn_layers=None) -> int:
    """Replace the moving statistics of ``bn_layers`` (default: every BN) by their average over ``max_batches`` batches.

    Returns the number of batches used. Every other BN layer normalises with its moving statistics.
    """
    bn_layers = batch_norm_layers(model) if bn_layers is None else bn_layers
    return average_batch_statistics([(model, dataset.take(max_batches))], bn_layers)


def average_batch_statistics(passes, bn_layers) -> int:
    """Set the moving statistics of ``bn_layers`` to the mean of their batch statistics over ``passes``.

    ``passes``: (model, dataset) pairs; a layer that several models share averages over all of
    their batches. The forward passes run in training mode, so every other BN layer of those models
    is made non-trainable for them: it normalises with, and keeps, its moving statistics (it may be
    shared with other tasks). Returns the number of batches run.
    """
    import numpy as np

    passes = list(passes)
    targets = {id(layer): layer for layer in bn_layers}
    every = {id(layer): layer for model, _ in passes for layer in batch_norm_layers(model)}
    saved = {key: (layer.trainable, layer.momentum) for key, layer in every.items()}
    sums = {key: [0.0, 0.0, 0] for key in targets}  # mean, variance, batches
    batches = 0
    try:
        for key, layer in every.items():
            layer.trainable = key in targets
            if key in targets:
                layer.momentum = 0.0  # after each batch, the moving values are that batch's statistics
        for model, dataset in passes:
            owned = [layer for layer in batch_norm_layers(model) if id(layer) in targets]
            forward = traced_forward(model, dataset, training=True)
            for images, _ in dataset:
                forward(images)
                batches += 1
                for layer in owned:
                    total = sums[id(layer)]
                    total[0] += np.asarray(layer.moving_mean, np.float64)
                    total[1] += np.asarray(layer.moving_variance, np.float64)
                    total[2] += 1
    finally:
        for key, layer in every.items():
            layer.trainable, layer.momentum = saved[key]
    for key, (mean, variance, count) in sums.items():
        if count:
            targets[key].moving_mean.assign((mean / count).astype(np.float32))
            targets[key].moving_variance.assign((variance / count).astype(np.float32))
    return batches


def statistics_during_training(model, kinds, mode: str, momentum: float):
    """The context to train ``kinds`` in under BN-statistics ``mode`` (one of ``BN_STATS_MODES``)."""
    bn_layers = _owned_statistics(model, kinds)
    if not bn_layers or mode == "reestimate":
        return contextlib.nullcontext()
    if mode == "frozen":
        return statistics_frozen(bn_layers)
    return lowered_momentum(bn_layers, momentum)


def statistics_after_training(model, kinds, mode: str, dataset, max_batches: int, selection=None) -> None:
    """Finish ``mode`` once ``kinds`` are trained: 'reestimate' re-estimates the owned statistics on ``dataset``."""
    bn_layers = _owned_statistics(model, kinds, selection)
    if bn_layers and mode == "reestimate":
        reestimate_statistics(model, dataset, max_batches, bn_layers)
