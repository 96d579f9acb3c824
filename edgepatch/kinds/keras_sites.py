"""Find the patch sites of a Keras functional model by walking its graph.

A *site* is a layer whose weights survive into the BN-folded model:
- a ``Conv2D`` or ``DepthwiseConv2D`` (op ``conv`` / ``depthwise``), together
  with the ``BatchNormalization`` that is its only consumer, if there is one;
- the classifier head: the ``Dense`` layer that produces the model output
  (op ``dense``).

Sites are found by structure (layer classes and graph edges), never by
matching layer names, so any Conv/BN CNN works, not just MobileNetV2.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgepatch.errors import ModelStructureError
from edgepatch.format.names import CONV_OP, DENSE_OP, DEPTHWISE_OP


@dataclass(frozen=True)
class Site:
    """One patchable layer: its name is the exact key in patch and delta files."""

    name: str
    op: str  # "conv" | "depthwise" | "dense"
    layer: object  # the Keras conv/dense layer
    bn: object | None  # the BatchNormalization folded into it, if any


def _keras():
    import keras

    return keras


def _producer(tensor):
    return tensor._keras_history.operation


def _model_nodes(model) -> list:
    """The call events (nodes) of ``model``'s own graph.

    A layer shared with other models (multi-task training shares the backbone)
    has nodes in each; only this model's count.
    """
    nodes = [node for depth in model._nodes_by_depth.values() for node in depth]
    calls: dict[str, int] = {}
    for node in nodes:
        calls[node.operation.name] = calls.get(node.operation.name, 0) + 1
    repeated = sorted(name for name, count in calls.items() if count > 1)
    if repeated:
        raise ModelStructureError(
            f"layers {repeated[:3]} are called more than once in model `{model.name}`; "
            "edgepatch needs a functional model where each layer is called once"
        )
    return nodes


def consumers_by_layer(model) -> dict[str, list]:
    """Map each layer name to the layers that consume its output in ``model``."""
    consumers: dict[str, list] = {layer.name: [] for layer in model.layers}
    for node in _model_nodes(model):
        for tensor in node.input_tensors:
            consumers.setdefault(_producer(tensor).name, []).append(node.operation)
    return consumers


def is_constant_layer(layer) -> bool:
    """A layer the base keeps as constants: input normalisation, never trained by a kind."""
    return isinstance(layer, _keras().layers.Normalization)


def _op_of(layer) -> str | None:
    layers = _keras().layers
    # DepthwiseConv2D is not a Conv2D subclass in Keras 3, so test it first and apart.
    if isinstance(layer, layers.DepthwiseConv2D):
        return DEPTHWISE_OP
    if isinstance(layer, layers.Conv2D) and not isinstance(layer, layers.Conv2DTranspose):
        return CONV_OP
    return None


def _check_conv(layer, op: str) -> None:
    if layer.data_format != "channels_last":
        raise ModelStructureError(
            f"layer `{layer.name}`: only data_format='channels_last' is supported. "
            f"Received data_format='{layer.data_format}'"
        )


def _check_bn(bn, conv) -> None:
    axis = bn.axis if isinstance(bn.axis, int) else (bn.axis[0] if len(bn.axis) == 1 else None)
    if axis not in (-1, 3):
        raise ModelStructureError(
            f"layer `{bn.name}`: BatchNormalization must normalise the channel axis (-1 or 3). "
            f"Received axis={bn.axis}"
        )
    activation = getattr(conv.activation, "__name__", str(conv.activation))
    if activation != "linear":
        raise ModelStructureError(
            f"layer `{conv.name}` applies activation '{activation}' before `{bn.name}`; "
            "BN can be folded only into a linear conv"
        )


def head_layer(model):
    """The Dense layer producing the model's single output."""
    if len(model.outputs) != 1:
        raise ModelStructureError(
            f"model `{model.name}` must have exactly one output. Received {len(model.outputs)}"
        )
    head = _producer(model.outputs[0])
    if not isinstance(head, _keras().layers.Dense):
        raise ModelStructureError(
            f"model `{model.name}`: the output must come from a Dense layer (the logits). "
            f"Received `{head.name}` of type {type(head).__name__}"
        )
    activation = getattr(head.activation, "__name__", str(head.activation))
    if activation != "linear":
        raise ModelStructureError(
            f"head `{head.name}` must output logits (activation=None). Received activation='{activation}'"
        )
    return head


def head_input(model):
    """The tensor feeding the head in ``model``'s own graph (the head may be shared with other models)."""
    head = head_layer(model)
    node = next(n for n in _model_nodes(model) if n.operation is head)
    return node.input_tensors[0]


def find_sites(model) -> list[Site]:
    """Return the model's sites in graph order; raise if a BN cannot be folded."""
    layers = _keras().layers
    consumers = consumers_by_layer(model)
    sites: list[Site] = []
    folded_bns: set[str] = set()
    for layer in model.layers:
        op = _op_of(layer)
        if op is None:
            continue
        _check_conv(layer, op)
        users = consumers[layer.name]
        bn = users[0] if len(users) == 1 and isinstance(users[0], layers.BatchNormalization) else None
        if bn is not None:
            _check_bn(bn, layer)
            folded_bns.add(bn.name)
        sites.append(Site(layer.name, op, layer, bn))
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization) and layer.name not in folded_bns:
            raise ModelStructureError(
                f"BatchNormalization `{layer.name}` does not directly follow a Conv2D/DepthwiseConv2D "
                "that feeds only it, so it cannot be folded"
            )
    head = head_layer(model)
    sites.append(Site(head.name, DENSE_OP, head, None))
    return sites
