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
from edgepatch.train.preprocessing import PREPROCESSING_MODES

HEAD_NAME = "logits"
MOBILENET_V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
MOBILENET_V3_ALPHAS = (0.75, 1.0)


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone family."""

    name: str
    alphas: tuple[float, ...]
    preprocessing: Preprocessing
    build: Callable  # (alpha, resolution, weights) -> keras.Model with pooled features
    preprocessing_mode: str = "tf"  # the key of PREPROCESSING_MODES that ``preprocessing`` is
    min_resolution: int = 32  # smallest input Keras builds it at


def _check_min_resolution(name: str, resolution: int, minimum: int) -> None:
    if resolution < minimum:
        raise UsageError(f"{name} needs --resolution >= {minimum}. Received resolution={resolution}")


def _build_mobilenet_v2(alpha: float, resolution: int, weights):
    import keras

    return keras.applications.MobileNetV2(
        input_shape=(resolution, resolution, 3),
        alpha=alpha,
        include_top=False,
        weights=weights,
        pooling="avg",
    )


def _mobilenet_v3_builder(size: str):
    def build(alpha: float, resolution: int, weights):
        import keras

        _check_min_resolution(f"mobilenet_v3_{size.lower()}", resolution, 32)
        application = getattr(keras.applications, f"MobileNetV3{size}")
        return application(input_shape=(resolution, resolution, 3), alpha=alpha, include_top=False,
                           weights=weights, pooling="avg", include_preprocessing=True)

    return build


def _fixed_width_builder(name: str, application: str, minimum: int):
    """A family without a width multiplier (alpha 1.0 only)."""
    def build(alpha: float, resolution: int, weights):
        import keras

        _check_min_resolution(name, resolution, minimum)
        return getattr(keras.applications, application)(input_shape=(resolution, resolution, 3),
                                                        include_top=False, weights=weights, pooling="avg")

    return build


def _spec(name: str, alphas: tuple, mode: str, build: Callable, min_resolution: int = 32) -> BackboneSpec:
    return BackboneSpec(name=name, alphas=alphas, preprocessing=PREPROCESSING_MODES[mode], build=build,
                        preprocessing_mode=mode, min_resolution=min_resolution)


# MobileNetV3 and EfficientNet rescale inside (raw pixels in); ResNet50 wants caffe (BGR minus means).
BACKBONES = {
    "mobilenet_v2": _spec("mobilenet_v2", MOBILENET_V2_ALPHAS, "tf", _build_mobilenet_v2),
    "mobilenet_v3_small": _spec("mobilenet_v3_small", MOBILENET_V3_ALPHAS, "raw", _mobilenet_v3_builder("Small")),
    "mobilenet_v3_large": _spec("mobilenet_v3_large", MOBILENET_V3_ALPHAS, "raw", _mobilenet_v3_builder("Large")),
    "efficientnet_b0": _spec("efficientnet_b0", (1.0,), "raw",
                             _fixed_width_builder("efficientnet_b0", "EfficientNetB0", 32)),
    "resnet50": _spec("resnet50", (1.0,), "caffe", _fixed_width_builder("resnet50", "ResNet50", 32)),
    "inception_v3": _spec("inception_v3", (1.0,), "tf",
                          _fixed_width_builder("inception_v3", "InceptionV3", 75), min_resolution=75),
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
