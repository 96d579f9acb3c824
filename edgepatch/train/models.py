"""Model builders: a table of backbones and one classifier builder.

A classifier is ``backbone (pooled features) -> Dense(num_classes)`` whose
output is logits. The head layer is named ``logits``; patch and delta files
key tensors by Keras variable path and layer name, so these names are the
contract with the files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from edgepatch.format.delta import Preprocessing
from edgepatch.errors import MissingFileError, UsageError

HEAD_NAME = "logits"
MOBILENET_V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone family."""

    name: str
    alphas: tuple[float, ...]
    preprocessing: Preprocessing
    build: Callable  # (alpha, resolution, weights) -> keras.Model with pooled features


def _build_mobilenet_v2(alpha: float, resolution: int, weights):
    import keras

    return keras.applications.MobileNetV2(
        input_shape=(resolution, resolution, 3),
        alpha=alpha,
        include_top=False,
        weights=weights,
        pooling="avg",
    )


BACKBONES = {
    "mobilenet_v2": BackboneSpec(
        name="mobilenet_v2",
        alphas=MOBILENET_V2_ALPHAS,
        preprocessing=Preprocessing(scale=1 / 127.5, offset=-1.0),
        build=_build_mobilenet_v2,
    ),
}


def _check_weights(weights: str) -> str | None:
    """Map the --weights option to Keras' argument: 'imagenet', a file path, or None."""
    if weights == "none":
        return None
    if weights == "imagenet":
        return "imagenet"  # the real Keras download; users have the network
    if not os.path.isfile(weights):
        raise MissingFileError(f"weights file '{weights}' does not exist")
    if not weights.endswith((".h5", ".weights.h5", ".keras")):
        raise UsageError(f"weights must be 'imagenet', 'none' or a .h5/.keras file. Received '{weights}'")
    return weights


def build_classifier(
    backbone: str = "mobilenet_v2",
    *,
    alpha: float = 1.0,
    resolution: int = 224,
    weights: str = "imagenet",
    num_classes: int,
    seed: int = 0,
):
    """Build ``backbone`` + a fresh ``logits`` Dense head.

    Args:
        backbone: a key of ``BACKBONES``.
        alpha: width multiplier, one of the backbone's ``alphas``.
        resolution: square input size in pixels, 32..1024.
        weights: 'imagenet' (Keras download), 'none' (random) or a path to a
            Keras .h5 no-top weights file.
        num_classes: head outputs, >= 2.
        seed: seeds the random head (and the backbone when weights='none').
    """
    if backbone not in BACKBONES:
        raise UsageError(f"backbone must be one of {sorted(BACKBONES)}. Received backbone='{backbone}'")
    spec = BACKBONES[backbone]
    if alpha not in spec.alphas:
        raise UsageError(f"{backbone} alpha must be one of {list(spec.alphas)}. Received alpha={alpha}")
    if not isinstance(resolution, int) or not 32 <= resolution <= 1024:
        raise UsageError(f"resolution must be an integer in 32..1024. Received resolution={resolution}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise UsageError(f"num_classes must be an integer >= 2. Received num_classes={num_classes}")
    keras_weights = _check_weights(weights)
    if keras_weights is not None and keras_weights.endswith(".keras"):
        raise UsageError(f"a .keras checkpoint is a whole model: pass it as the base, not as weights ('{weights}')")
    import keras

    keras.utils.set_random_seed(seed)
    features = spec.build(alpha, resolution, keras_weights)
    logits = keras.layers.Dense(num_classes, name=HEAD_NAME)(features.output)
    return keras.Model(features.inputs, logits, name=f"{backbone}_{alpha}_{resolution}")


def with_new_head(model, num_classes: int, seed: int = 0):
    """``model`` with its head replaced by a fresh Dense of ``num_classes`` (shares the other layers)."""
    import keras

    from edgepatch.kinds.keras_sites import head_input, head_layer

    keras.utils.set_random_seed(seed)
    logits = keras.layers.Dense(num_classes, name=head_layer(model).name)(head_input(model))
    return keras.Model(model.inputs, logits, name=model.name)


def clone_with_input(model, size: int | None = None, clone_function=None, input_name: str | None = None):
    """Rebuild ``model``'s graph on a new square input (``None``: any height and width).

    ``clone_function`` maps each layer to its clone (default: a fresh copy);
    returning the layer itself shares it. Weights of fresh copies are not copied.
    ``input_name`` names the input (default: Keras' counter, which depends on the process's history).
    """
    import keras

    inputs = keras.Input((size, size, model.inputs[0].shape[-1]), name=input_name)
    # A model loaded from .keras keeps its input as a one-element list; match its structure.
    structured = [inputs] if isinstance(model.input, list) else inputs
    return keras.models.clone_model(model, input_tensors=structured, clone_function=clone_function)


def load_checkpoint(path: str):
    """Load a whole-model ``.keras`` checkpoint written by ``edgepatch train``."""
    if not os.path.isfile(path):
        raise MissingFileError(f"model checkpoint '{path}' does not exist")
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for a bad file
        raise UsageError(f"'{path}' is not a loadable Keras model: {error}") from None
