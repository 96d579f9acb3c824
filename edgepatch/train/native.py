"""The Keras-native API: patch a model, train it in your own loop, save the patch.

In the spirit of PEFT's ``get_peft_model``::

    task_model = edgepatch.patch_model(model, kinds=("scale_bias", "logits"), num_classes=5)
    task_model.compile(...); task_model.fit(my_dataset, callbacks=my_callbacks)
    edgepatch.save_patch(task_model, "flowers.patch", task="flowers", classes=names, preprocessing="tf")
    # then: edgepatch convert --model base.keras --patch flowers.patch   (base.keras: ``model``, untouched)

``patch_model`` returns a canonical copy (``edgepatch.train.graph``) of ``model`` in which exactly
the kinds' variables are trainable and BatchNorm runs in the chosen statistics mode; ``model``
itself is left as it is, so it stays the shared base. ``edgepatch train`` uses the same two steps.
"""

from __future__ import annotations

import numpy as np

from edgepatch.errors import UsageError
from edgepatch.format.task import Preprocessing, TaskInfo
from edgepatch.kinds import (
    BN_STATS_MODES,
    DEFAULT_BN_STATS,
    batch_norm_layers,
    makes_patch,
    owned_layer_ids,
    parameter_count,
    parse_kinds,
    statistics_are_private,
    with_head,
)
from edgepatch.kinds.bn_statistics import run_in_inference_mode
from edgepatch.train.patchfile import TaskPatch, extract_patch, write_patch

_KINDS_ATTRIBUTE = "_edgepatch_kinds"  # set on a patched model: the kinds it trains
_SELECTION_ATTRIBUTE = "_edgepatch_selection"  # ... and the layers a budget kept private (None: all)


def prepare_for_training(model, kinds, bn_stats: str = DEFAULT_BN_STATS, bn_momentum: float = 0.9,
                         selection=None) -> int:
    """Make exactly ``kinds``' layers of ``model`` trainable and set the BN mode, in place; return the parameter count.

    ``bn_stats``: 'frozen' (BN normalises with the base's moving statistics while γ/β train),
    'momentum' (batch statistics, momentum ``bn_momentum``) or 'reestimate' (batch statistics;
    call ``edgepatch.kinds.reestimate_statistics`` on your data before saving).
    ``selection``: layer names a parameter budget keeps private (``edgepatch.train.budget``);
    the selectable kinds' other layers stay frozen as the base has them, statistics included.
    """
    if bn_stats not in BN_STATS_MODES:
        raise UsageError(f"bn_stats must be one of {list(BN_STATS_MODES)}. Received '{bn_stats}'")
    if not 0.0 <= bn_momentum < 1.0:
        raise UsageError(f"bn_momentum must be in [0, 1). Received {bn_momentum}")
    parameters = freeze_outside(model, kinds, selection)
    if statistics_are_private(kinds):
        if bn_stats == "frozen":
            run_in_inference_mode(batch_norm_layers(model))
        elif bn_stats == "momentum":
            for layer in batch_norm_layers(model):
                layer.momentum = bn_momentum
    setattr(model, _KINDS_ATTRIBUTE, tuple(kinds))
    setattr(model, _SELECTION_ATTRIBUTE, None if selection is None else tuple(selection))
    return parameters


def freeze_outside(model, kinds, selection=None) -> int:
    """Make only the layers of ``kinds`` (narrowed by ``selection``) trainable; return the trained parameter count."""
    trainable_layers = owned_layer_ids(model, kinds, selection)
    for layer in model.layers:
        layer.trainable = id(layer) in trainable_layers
    return parameter_count(model, kinds, selection)


def patch_model(model, kinds=("scale_bias", "logits"), *, num_classes: int | None = None,
                bn_stats: str = DEFAULT_BN_STATS, bn_momentum: float = 0.9, seed: int = 0, selection=None):
    """A trainable task copy of ``model``: exactly the patch of ``kinds`` trains.

    Args:
        model: any Keras CNN edgepatch can convert (functional, Sequential or nested).
        kinds: patch kinds (``edgepatch.kinds.patch_kind_names()``), e.g. ("scale_bias", "logits").
        num_classes: give the copy a fresh logits head of this width (None: keep the model's head).
        bn_stats / bn_momentum: the BatchNorm statistics mode (``prepare_for_training``).
        seed: seeds the fresh head.
        selection: layer names a parameter budget keeps private (``edgepatch.train.budget.select_layers``);
            None: every layer of the kinds.
    Returns:
        The Keras model to compile and fit; ``model`` is not changed.
    """
    import keras

    from edgepatch.train.graph import canonical_model
    from edgepatch.train.models import with_new_head

    kinds = parse_kinds(list(kinds))
    if not makes_patch(kinds):
        raise UsageError(f"patch_model needs patch kinds; {list(kinds)} train the whole model")
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    task_model = canonical_model(copy).model
    if num_classes is not None:
        task_model = with_new_head(task_model, num_classes, seed)
    prepare_for_training(task_model, kinds, bn_stats, bn_momentum, selection)
    return task_model


def task_patch(model, task: TaskInfo, kinds=None, training: dict | None = None) -> TaskPatch:
    """The patch of a model prepared by ``patch_model``/``prepare_for_training`` (or of ``kinds``)."""
    selection = getattr(model, _SELECTION_ATTRIBUTE, None)
    kinds = tuple(kinds) if kinds is not None else getattr(model, _KINDS_ATTRIBUTE, None)
    if kinds is None:
        raise UsageError("model was not made by edgepatch.patch_model; pass kinds=(...) to say what it trained")
    return extract_patch(model, task, with_head(kinds), kinds, dict(training or {}), selection)


def _preprocessing(value) -> Preprocessing:
    from edgepatch.train.preprocessing import PREPROCESSING_MODES

    if isinstance(value, Preprocessing):
        return value
    if value in PREPROCESSING_MODES:
        return PREPROCESSING_MODES[value]
    raise UsageError(f"preprocessing must be a Preprocessing or one of {sorted(PREPROCESSING_MODES)}. "
                     f"Received {value!r}")


def save_patch(model, path: str, *, task: str, classes, preprocessing, resolution: int | None = None,
               kinds=None, training: dict | None = None) -> TaskPatch:
    """Write the ``.patch`` of a model trained after ``patch_model``; ``convert`` takes it as it is.

    ``preprocessing``: a mode ('tf', 'torch', 'caffe', 'raw') or a ``Preprocessing``.
    ``resolution``: the task's input size (default: the model's fixed input size).
    """
    size = resolution if resolution is not None else model.inputs[0].shape[1]
    if size is None:
        raise UsageError("the model takes any input size: pass resolution=")
    classes = tuple(str(name) for name in classes)
    head_width = int(np.prod(model.outputs[0].shape[-1:]))
    if len(classes) != head_width:
        raise UsageError(f"classes has {len(classes)} names, the model's head has {head_width} outputs")
    info = TaskInfo(task, classes, int(size), _preprocessing(preprocessing))
    patch = task_patch(model, info, kinds, training)
    write_patch(path, patch)
    return patch
