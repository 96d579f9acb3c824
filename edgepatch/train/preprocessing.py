"""The preprocessing a task records: ``keras.applications``' ``preprocess_input`` modes, plus ``raw``.

``tf``: x/127.5 - 1. ``torch``: x/255, then (x - mean)/std per channel (RGB).
``caffe``: BGR, minus the ImageNet channel means. ``raw``: pixels 0..255, for models that
rescale inside (a Rescaling/Normalization layer first). ``auto`` picks one of them
(``resolve_preprocessing``). TensorFlow is imported only to look at a model.
"""

from __future__ import annotations

from edgepatch.errors import UsageError
from edgepatch.format.task import Preprocessing

_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

PREPROCESSING_MODES = {
    "tf": Preprocessing(1 / 127.5, -1.0),
    "torch": Preprocessing(tuple(1 / (255.0 * s) for s in _TORCH_STD),
                           tuple(-m / s for m, s in zip(_TORCH_MEAN, _TORCH_STD))),
    "caffe": Preprocessing(1.0, tuple(-m for m in _CAFFE_MEAN_BGR), "bgr"),
    "raw": Preprocessing(1.0, 0.0),
}
PREPROCESSING_CHOICES = ("auto", *PREPROCESSING_MODES)
_RESCALING_LAYERS = ("Rescaling", "Normalization")


def _first_layer(model):
    """The first layer the input feeds (InputLayers skipped), inside nested sub-models too; None if none."""
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        inner = getattr(layer, "layers", None)
        return _first_layer(layer) if inner is not None else layer
    return None


def rescales_inside(model) -> bool:
    """Whether the model's input goes through a Rescaling or Normalization layer first."""
    first = _first_layer(model)
    return first is not None and type(first).__name__ in _RESCALING_LAYERS


def resolve_preprocessing(mode: str, model, family_mode: str | None) -> tuple[str, Preprocessing]:
    """The (mode, Preprocessing) a task trained on ``model`` records.

    ``auto``: ``raw`` when the model rescales inside, else ``family_mode`` (the backbone
    family's mode, ``BACKBONES[family].preprocessing_mode``; None for a checkpoint given
    without ``--base``). Raises UsageError for an unknown mode or when auto has nothing to go on.
    """
    if mode not in PREPROCESSING_CHOICES:
        raise UsageError(f"--preprocessing must be one of {', '.join(PREPROCESSING_CHOICES)}. Received '{mode}'")
    if mode == "auto":
        if model is not None and rescales_inside(model):
            mode = "raw"
        elif family_mode in PREPROCESSING_MODES:
            mode = family_mode
        else:
            raise UsageError("cannot tell the model's preprocessing (it does not start with Rescaling/"
                             "Normalization and no --base family was given): pass --preprocessing "
                             "tf|torch|caffe|raw")
    return mode, PREPROCESSING_MODES[mode]
