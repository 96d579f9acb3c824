"""Head-only training on cached features: the frozen backbone runs once, not once per epoch.

When the trained kinds own nothing but the head (``--patch logits``), every layer below it is
frozen, BatchNorm normalises with its moving statistics and the pipeline has no augmentation, so
the head's input for an image never changes. Its features are computed once (one pass over the
training images) and the head is fitted on them with the same optimizer, loss, batch size,
epochs and seed as a full pass would use. A model with a layer that acts randomly in training
(Dropout, noise, random augmentation) takes the full pass instead, so that its head sees what
the full pass would show it.
"""

from __future__ import annotations

import contextlib
import sys

import numpy as np

from edgepatch.kinds import owned_layer_ids
from edgepatch.kinds.keras_sites import head_input, head_layer

_RANDOM_IN_TRAINING = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
                       "GaussianDropout", "AlphaDropout", "RandomFlip", "RandomRotation", "RandomZoom",
                       "RandomTranslation", "RandomContrast", "RandomCrop", "RandomBrightness")


def _random_layer_types() -> tuple:
    import keras

    return tuple(getattr(keras.layers, name) for name in _RANDOM_IN_TRAINING if hasattr(keras.layers, name))


def caches_features(model, kinds) -> bool:
    """Whether ``kinds`` train only ``model``'s head, below which nothing acts randomly in training."""
    if owned_layer_ids(model, kinds) != {id(head_layer(model))}:
        return False
    random_types = _random_layer_types()
    return not any(isinstance(layer, random_types) for layer in model.layers)


def backbone_features(model, dataset) -> tuple[np.ndarray, np.ndarray]:
    """(head inputs, labels) for every batch of an unshuffled ``dataset``, in inference mode."""
    import keras

    features_model = keras.Model(model.inputs, head_input(model))
    # predict() runs the compiled graph (an eager call per batch is several times slower); the
    # labels come from a second pass, which the pipeline's cache serves without decoding again.
    features = features_model.predict(dataset.map(lambda images, labels: images), verbose=0)
    labels = np.concatenate([np.asarray(batch_labels) for _, batch_labels in dataset])
    return np.asarray(features), labels


def fit_head_on_features(model, dataset, *, learning_rate: float, epochs: int, batch_size: int, seed: int,
                         verbose: int) -> int:
    """Train ``model``'s head in place on the backbone features of ``dataset``; return the image count."""
    import keras
    import tensorflow as tf

    features, labels = backbone_features(model, dataset)
    # The same order of steps as the full pass (pipeline, compile, seed, fit), so its batches are the same.
    cached = tf.data.Dataset.from_tensor_slices((features, labels))
    cached = cached.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    inputs = keras.Input(features.shape[1:])
    head_model = keras.Model(inputs, head_layer(model)(inputs))  # the model's own head layer: its weights train
    head_model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    keras.utils.set_random_seed(seed)
    with contextlib.redirect_stdout(sys.stderr):
        head_model.fit(cached, epochs=epochs, verbose=1 if verbose else 0)
    return int(len(labels))
