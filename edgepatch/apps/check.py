"""``edgepatch check``: what train and convert will make of a Keras model, before any training.

``check_model`` reports everything at once: the rewrites into the canonical form
(``edgepatch.train.graph``), the sites and which kinds patch them, each kind's
parameter count, the preprocessing a task would record, and every layer convert
would refuse, each with one remedy. ``refusals`` is that scan: it walks the whole
graph (inputs, outputs, head, layers called twice, every layer) and never stops
at the first problem, unlike ``find_sites``, which raises on it. ``train`` runs
it too (``refuse_unconvertible``) and stops before the first epoch.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from edgepatch.errors import EdgepatchError, MissingFileError, ModelStructureError, UsageError

_CONV_REMEDY = ("rebuild it with data_format='channels_last' (the default) and copy the weights over "
                "(Keras keeps the same kernel layout); both runtimes run NHWC")
_CONV_ND_REMEDY = ("use Conv2D on (height, width, channels) images; edgepatch patches Conv2D, DepthwiseConv2D "
                   "and SeparableConv2D")
_TRANSPOSE_REMEDY = ("replace it by a Conv2D with padding='same' (UpSampling2D before a conv does not convert "
                     "either: the TFLite converter fails on it)")
_NORM_REMEDY = "replace it by BatchNormalization(axis=-1), which edgepatch folds into a site and patches"
_LAYER_REMEDIES = {
    "Dense": ("remove it, so that the head is the only Dense layer, or make it a 1x1 Conv2D on a "
              "Reshape((1, 1, C)) of its input"),
    "Conv1D": _CONV_ND_REMEDY, "Conv3D": _CONV_ND_REMEDY,
    "Conv1DTranspose": _TRANSPOSE_REMEDY, "Conv2DTranspose": _TRANSPOSE_REMEDY, "Conv3DTranspose": _TRANSPOSE_REMEDY,
    "LayerNormalization": _NORM_REMEDY, "GroupNormalization": _NORM_REMEDY,
    "PReLU": "use a weightless activation instead (ReLU, LeakyReLU)",
    "Embedding": "remove it: an edgepatch model takes (height, width, 3) images",
}
_GENERIC_REMEDY = ("rebuild it from Conv2D, DepthwiseConv2D, SeparableConv2D, BatchNormalization, Normalization "
                   "and weightless layers, with one Dense head")
_SHARED_REMEDY = ("give each call its own layer (type(layer).from_config(layer.get_config()), then copy the "
                  "weights with set_weights)")
_HEAD_REMEDY = "end the model with GlobalAveragePooling2D() and a Dense(classes) head that outputs logits"


@dataclass(frozen=True)
class Refusal:
    """One thing convert would refuse, and one concrete way to fix it."""

    layer: str  # the layer's name (the model's own name for a whole-model problem)
    type: str
    problem: str
    remedy: str


def _keras():
    import keras

    return keras


def _producer(tensor):
    return tensor._keras_history.operation


def _activation(layer) -> str:
    return getattr(layer.activation, "__name__", str(layer.activation))


def _model_refusal(model, problem: str, remedy: str) -> Refusal:
    return Refusal(model.name, type(model).__name__, problem, remedy)


def _graph_or_refusal(model):
    """(graph, None) for a model with a functional graph, else (None, the refusal saying why)."""
    from edgepatch.train.graph import functional_graph

    try:
        return functional_graph(model), None
    except ModelStructureError as error:
        remedy = ("start it with keras.Input((R, R, 3)) before its first layer"
                  if isinstance(model, _keras().Sequential) else
                  "rebuild it as a functional model, keras.Model(inputs, outputs), or a Sequential model "
                  "that starts with keras.Input((R, R, 3))")
        return None, _model_refusal(model, str(error), remedy)


def _input_refusals(graph) -> list[Refusal]:
    if len(graph.inputs) != 1:
        return [_model_refusal(graph, f"model `{graph.name}` has {len(graph.inputs)} inputs; edgepatch needs "
                                      "exactly one image input",
                               "give the model one input, keras.Input((R, R, 3)), and compute the rest inside it")]
    shape = tuple(graph.inputs[0].shape[1:])
    if len(shape) != 3 or shape[2] != 3:
        return [_model_refusal(graph, f"input shape {shape} is not (height, width, 3): edgepatch feeds RGB images",
                               "take RGB images, keras.Input((R, R, 3)); a Rescaling/Normalization layer may follow")]
    if shape[0] is None or shape[0] != shape[1]:
        return [_model_refusal(graph, f"input shape {shape} has no fixed square size; train needs one",
                               "build it at the size you train at, keras.Input((R, R, 3)); the shipped base still "
                               "takes any size")]
    return []


def _output_layer(tensor):
    """The layer producing an output tensor, looking through a softmax/sigmoid (canonical_model drops it)."""
    from edgepatch.train.graph import PROBABILITY_ACTIVATIONS

    layers = _keras().layers
    output = _producer(tensor)
    if isinstance(output, layers.Softmax) or (
            isinstance(output, layers.Activation) and _activation(output) in PROBABILITY_ACTIVATIONS):
        return _producer(output._inbound_nodes[tensor._keras_history.node_index].input_tensors[0])
    return output


def _head_and_refusals(graph) -> tuple[list, list[Refusal]]:
    """The Dense layers producing the outputs (the head) and what is wrong with the model's output."""
    from edgepatch.train.graph import PROBABILITY_ACTIVATIONS

    if len(graph.outputs) != 1:
        heads = [head for head in map(_output_layer, graph.outputs) if isinstance(head, _keras().layers.Dense)]
        return heads, [_model_refusal(graph, f"model `{graph.name}` must have exactly one output. "
                                             f"Received {len(graph.outputs)}",
                                      "keep one output: keras.Model(model.input, model.outputs[i])")]
    head = _output_layer(graph.outputs[0])
    if not isinstance(head, _keras().layers.Dense):
        return [], [Refusal(head.name, type(head).__name__,
                            f"model `{graph.name}`: the output must come from a Dense layer (the logits). "
                            f"Received `{head.name}` of type {type(head).__name__}", _HEAD_REMEDY)]
    activation = _activation(head)
    dropped = head is not _producer(graph.outputs[0])  # a softmax/sigmoid after the head
    if activation not in ("linear", *PROBABILITY_ACTIVATIONS) or (dropped and activation != "linear"):
        return [head], [Refusal(head.name, "Dense", f"head `{head.name}` must output logits (activation=None). "
                                                    f"Received activation='{activation}'",
                                f"build `{head.name}` with activation=None; edgepatch trains and ships logits")]
    return [head], []


def _shared_refusals(graph, by_name: dict) -> list[Refusal]:
    calls: dict[str, int] = {}
    for node in (node for depth in graph._nodes_by_depth.values() for node in depth):
        calls[node.operation.name] = calls.get(node.operation.name, 0) + 1
    return [Refusal(name, type(by_name[name]).__name__ if name in by_name else "Operation",
                    f"layer `{name}` is called {count} times in model `{graph.name}`; edgepatch needs each layer "
                    "called once", _SHARED_REMEDY)
            for name, count in calls.items() if count > 1]


def _all_layers(graph) -> tuple[list, list[Refusal]]:
    """Every layer of ``graph``, nested sub-models' layers in their place, and the sub-models without a graph."""
    keras = _keras()
    found, refused = [], []
    for layer in graph.layers:
        if not isinstance(layer, keras.Model):
            found.append(layer)
            continue
        inner, refusal = _graph_or_refusal(layer)
        if refusal is not None:
            refused.append(refusal)
        else:
            more, more_refused = _all_layers(inner)
            found += more
            refused += more_refused
    return found, refused


def _layer_refusal(layer, heads: list) -> Refusal | None:
    """What convert would refuse in this one layer, or None."""
    from converters.folded_model import unplaceable_layer

    layers = _keras().layers
    kind = type(layer).__name__
    if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D, layers.SeparableConv2D)) \
            and not isinstance(layer, layers.Conv2DTranspose):
        if layer.data_format == "channels_last":
            return None
        return Refusal(layer.name, kind, f"layer `{layer.name}`: only data_format='channels_last' is supported. "
                                         f"Received data_format='{layer.data_format}'", _CONV_REMEDY)
    if isinstance(layer, layers.BatchNormalization):
        axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
        if axis in (-1, 3):
            return None
        return Refusal(layer.name, kind, f"layer `{layer.name}`: BatchNormalization must normalise the channel "
                                         f"axis (-1 or 3). Received axis={layer.axis}",
                       "normalise the channel axis, BatchNormalization(axis=-1), on channels_last features")
    is_head = any(layer is head for head in heads)
    if is_head or isinstance(layer, layers.Normalization) or not getattr(layer, "weights", None):
        return None
    return Refusal(layer.name, kind, unplaceable_layer(layer), _LAYER_REMEDIES.get(kind, _GENERIC_REMEDY))


def refusals(model) -> list[Refusal]:
    """Every problem convert would refuse ``model`` for, in graph order, the output's last.

    Give it the canonical model (``canonical_model``); on a graph canonical_model cannot rewrite,
    nested sub-models are walked in place and a softmax head is taken as the logits it would become.
    """
    graph, refusal = _graph_or_refusal(model)
    if refusal is not None:
        return [refusal]
    found = _input_refusals(graph)
    heads, head_refusals = _head_and_refusals(graph)
    layers, nested = _all_layers(graph)
    found += nested + _shared_refusals(graph, {layer.name: layer for layer in layers})
    shared = {r.layer for r in found}
    found += [r for r in (_layer_refusal(layer, heads) for layer in layers) if r is not None and r.layer not in shared]
    return found + head_refusals


def refuse_unconvertible(model, source: str) -> None:
    """Raise ModelStructureError (one line) when convert would refuse ``model``; train calls it before training."""
    found = refusals(model)
    if found:
        first = found[0]
        raise ModelStructureError(f"model would be refused by convert: {first.problem} ({first.remedy}); "
                                  f"{len(found) - 1} more; run `edgepatch check {source}` for all")


def _sites(model, kinds) -> list[dict] | None:
    from edgepatch.kinds import get_kind
    from edgepatch.kinds.keras_sites import find_sites

    try:
        sites = find_sites(model)
    except ModelStructureError:
        return None  # the refusals say why
    reports = []
    for site in sites:
        owners = [get_kind(k) for k in kinds if get_kind(k).delta_roles(site)]
        reports.append({"name": site.name, "op": site.op, "bn": site.bn.name if site.bn is not None else None,
                        "kinds": {kind.name: list(kind.delta_roles(site)) for kind in owners},
                        "parameters": {kind.name: kind.layer_parameters(kind.site_layer(site)) for kind in owners}})
    return reports


def _parameters(model, kinds) -> dict:
    from edgepatch.kinds import get_kind

    counts = {}
    for name in kinds:
        try:
            counts[name] = get_kind(name).parameter_count(model)
        except ModelStructureError:
            counts[name] = None  # the kind cannot find its layers: a refusal says why
    known = [n for n in counts.values() if n is not None]
    return {"kinds": counts, "total": sum(known) if len(known) == len(counts) else None}


def _preprocessing(mode: str, model, family: str | None) -> dict:
    from edgepatch.train.models import BACKBONES
    from edgepatch.train.preprocessing import resolve_preprocessing

    try:
        chosen, recorded = resolve_preprocessing(mode, model, BACKBONES[family].preprocessing_mode if family else None)
    except UsageError as error:
        return {"mode": mode, "error": str(error)}
    return {"mode": chosen, "scale": list(recorded.scale), "offset": list(recorded.offset),
            "channels": recorded.channels}


def check_model(model, kinds, preprocessing_mode: str = "auto", family: str | None = None) -> dict:
    """The full report on ``model`` (see the module docstring); ``ok`` when convert would refuse nothing."""
    from edgepatch.train.graph import canonical_model

    try:
        canonical = canonical_model(model)
    except ModelStructureError as error:  # report it, and whatever else the original graph shows
        found = refusals(model) or [_model_refusal(model, str(error), _GENERIC_REMEDY)]
        return _report([], None, {"kinds": {k: None for k in kinds}, "total": None},
                       _preprocessing(preprocessing_mode, model, family), found)
    flat = canonical.model
    return _report(list(canonical.notes), _sites(flat, kinds), _parameters(flat, kinds),
                   _preprocessing(preprocessing_mode, flat, family), refusals(flat))


def _report(notes, sites, parameters, preprocessing, found: list[Refusal]) -> dict:
    return {"notes": notes, "sites": sites, "parameters": parameters, "preprocessing": preprocessing,
            "refused": [asdict(r) for r in found], "ok": not found}


def check_file(path: str, patch_spec: str = "scale_bias,logits", preprocessing: str = "auto",
               family: str | None = None) -> dict:
    """``check_model`` on a ``.keras`` file; bad options and unreadable files raise before TensorFlow loads."""
    from edgepatch.kinds import parse_trained_kinds
    from edgepatch.train.models import BACKBONES, load_checkpoint
    from edgepatch.train.preprocessing import PREPROCESSING_CHOICES

    kinds = parse_trained_kinds(patch_spec)
    if preprocessing not in PREPROCESSING_CHOICES:
        raise UsageError(f"--preprocessing must be one of {', '.join(PREPROCESSING_CHOICES)}. "
                         f"Received '{preprocessing}'")
    if family is not None and family not in BACKBONES:
        raise UsageError(f"--base must be one of {sorted(BACKBONES)}. Received '{family}'")
    if not os.path.exists(path):
        raise MissingFileError(f"model '{path}' does not exist")
    if not os.path.isfile(path) or not path.endswith(".keras"):
        raise UsageError(f"check reads a .keras model file. Received '{path}'")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    model = load_checkpoint(path)
    try:
        return {"model": path, **check_model(model, kinds, preprocessing, family)}
    except EdgepatchError:
        raise
    except (ValueError, TypeError, AttributeError, KeyError) as error:  # a graph Keras itself cannot replay
        raise ModelStructureError(f"cannot read the graph of '{path}': {type(error).__name__}: {error}") from None
