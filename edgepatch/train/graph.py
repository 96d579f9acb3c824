"""Bring a user's Keras model into the canonical form every later stage expects.

Users write models many ways; the sites (``edgepatch.kinds.keras_sites``) and
the folded base need one: a flat functional graph in which each layer is
called once. ``canonical_model`` rewrites, without changing what the model
computes:

- a Sequential model, or a functional model nesting sub-models (Keras'
  transfer-learning recipe ``base(inputs, training=False)``), into one flat
  functional graph: the nested layers become the model's own, so their
  BatchNorms train and ship;
- a ``SeparableConv2D`` into its ``DepthwiseConv2D`` (``<name>_depthwise``, a
  depthwise site) and a 1x1 ``Conv2D`` (``<name>``) into which its BN folds;
- a BatchNormalization that does not directly follow a linear conv feeding
  only it (pre-activation, after an Add or a concatenation) gets a 1x1
  identity ``DepthwiseConv2D`` (``<bn>_affine``) in front of it. The BN
  then folds into it: the base holds the BN as per-channel multiply/add
  vectors (kernel and bias of that op), which a delta writes in place like
  any other site;
- a softmax/sigmoid head into a logits head (the activation is dropped).

Raw Keras operations (``x + y``, ``ops.*``) pass through as they are. The
rewrite is idempotent, and names are chosen from the graph alone, so a
checkpoint rewritten at training time and again at conversion agrees.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgepatch.errors import ModelStructureError

IDENTITY_SUFFIX = "_affine"
SEPARABLE_DEPTHWISE_SUFFIX = "_depthwise"
PROBABILITY_ACTIVATIONS = ("softmax", "sigmoid")


@dataclass
class Canonical:
    """The canonical model and one line per rewrite made (empty when the model was already canonical)."""

    model: object
    notes: list[str] = field(default_factory=list)


def _keras():
    import keras

    return keras


def functional_graph(model):
    """The functional graph behind ``model`` (a Sequential model's own, built from its input)."""
    keras = _keras()
    if isinstance(model, keras.Sequential):
        graph = getattr(model, "_functional", None)
        if graph is None:
            raise ModelStructureError(
                f"Sequential model `{model.name}` has no input shape; start it with keras.Input(shape) "
                "so that its graph exists")
        return graph
    if not hasattr(model, "_nodes_by_depth") or not getattr(model, "_is_graph_network", True):
        raise ModelStructureError(
            f"model `{model.name}` ({type(model).__name__}) is a subclassed model without a graph; "
            "rebuild it as a functional or Sequential model")
    return model


def _is_model(operation) -> bool:
    return isinstance(operation, _keras().Model)


def _activation_name(layer) -> str:
    return getattr(layer.activation, "__name__", str(layer.activation))


class _Rewriter:
    """Replays a graph into new tensors, inlining sub-models and splitting separable convs."""

    def __init__(self, taken_names: set[str], notes: list[str]):
        self.taken = taken_names
        self.notes = notes
        self.changed = False

    def unique(self, name: str) -> str:
        candidate, n = name, 1
        while candidate in self.taken:
            candidate, n = f"{name}_{n}", n + 1
        self.taken.add(candidate)
        return candidate

    def replay(self, model, inputs, operation_fn):
        return functional_graph(model)._run_through_graph(inputs, operation_fn=operation_fn)

    def flatten_operation(self, operation):
        keras = _keras()
        if _is_model(operation):
            self.changed = True
            note = f"inlined sub-model `{operation.name}` so that its layers train and ship"
            if note not in self.notes:
                self.notes.append(note)
            return lambda inputs, *args, **kwargs: self.replay(operation, inputs, self.flatten_operation)
        if isinstance(operation, keras.layers.SeparableConv2D):
            self.changed = True
            return self._split_separable(operation)
        if _is_channelwise_conv(operation):
            self.changed = True
            return self._as_depthwise(operation)
        return operation

    def _as_depthwise(self, layer):
        """A Conv2D with one input channel per group is a depthwise conv (same output channel order)."""
        keras = _keras()
        height, width, _, outputs = layer.kernel.shape
        channels = layer.groups
        depthwise = keras.layers.DepthwiseConv2D(
            layer.kernel_size, strides=layer.strides, padding=layer.padding, depth_multiplier=outputs // channels,
            dilation_rate=layer.dilation_rate, use_bias=layer.use_bias, activation=layer.activation, name=layer.name)
        self.notes.append(f"Conv2D `{layer.name}` has groups = input channels: rebuilt as a DepthwiseConv2D")

        def call(inputs, *args, **kwargs):
            outputs_tensor = depthwise(inputs)
            kernel = layer.kernel.numpy().reshape(height, width, channels, outputs // channels)
            depthwise.set_weights([kernel] + ([layer.bias.numpy()] if layer.use_bias else []))
            return outputs_tensor

        return call

    def _split_separable(self, layer):
        keras = _keras()
        if layer.data_format != "channels_last":
            raise ModelStructureError(f"layer `{layer.name}`: only data_format='channels_last' is supported. "
                                      f"Received data_format='{layer.data_format}'")
        depthwise = keras.layers.DepthwiseConv2D(
            layer.kernel_size, strides=layer.strides, padding=layer.padding, depth_multiplier=layer.depth_multiplier,
            dilation_rate=layer.dilation_rate, use_bias=False,
            name=self.unique(layer.name + SEPARABLE_DEPTHWISE_SUFFIX))
        pointwise = keras.layers.Conv2D(layer.filters, 1, use_bias=layer.use_bias, activation=layer.activation,
                                        name=layer.name)
        self.notes.append(f"split SeparableConv2D `{layer.name}` into `{depthwise.name}` + 1x1 `{layer.name}`")

        def call(inputs, *args, **kwargs):
            outputs = pointwise(depthwise(inputs))
            depthwise.set_weights([layer.depthwise_kernel.numpy()])
            pointwise.set_weights([layer.pointwise_kernel.numpy()] + ([layer.bias.numpy()] if layer.use_bias else []))
            return outputs

        return call


def _is_channelwise_conv(layer) -> bool:
    layers = _keras().layers
    return (isinstance(layer, layers.Conv2D) and not isinstance(layer, (layers.Conv2DTranspose, layers.SeparableConv2D))
            and layer.groups > 1 and layer.kernel.shape[2] == 1 and layer.data_format == "channels_last")


def _producer(tensor):
    return tensor._keras_history.operation


def _input_of(tensor):
    """The (first) input tensor of the call that produced ``tensor``, in ``tensor``'s own graph."""
    history = tensor._keras_history
    return history.operation._inbound_nodes[history.node_index].input_tensors[0]


def _all_nodes(model) -> list:
    return [node for depth in model._nodes_by_depth.values() for node in depth]


def _folds_into(conv, consumers: dict[str, list]) -> bool:
    """Whether a BN right after ``conv`` folds into it: a linear channels-last conv feeding only the BN."""
    layers = _keras().layers
    is_conv = isinstance(conv, (layers.DepthwiseConv2D, layers.Conv2D)) and not isinstance(
        conv, (layers.Conv2DTranspose, layers.SeparableConv2D))
    return is_conv and _activation_name(conv) == "linear" and len(consumers.get(conv.name, [])) == 1


def unfoldable_batchnorms(model) -> list:
    """The BatchNormalization layers of a flat ``model`` that no conv can absorb."""
    layers = _keras().layers
    consumers: dict[str, list] = {}
    for node in _all_nodes(model):
        for tensor in node.input_tensors:
            consumers.setdefault(_producer(tensor).name, []).append(node.operation)
    lonely = []
    for node in _all_nodes(model):
        bn = node.operation
        if isinstance(bn, layers.BatchNormalization) and not _folds_into(_producer(node.input_tensors[0]), consumers):
            lonely.append(bn)
    return lonely


def _identity_before(rewriter: _Rewriter, lonely: list):
    """An operation_fn giving each BN in ``lonely`` a 1x1 identity depthwise conv to fold into."""
    keras = _keras()
    names = {bn.name for bn in lonely}

    def operation_fn(operation):
        if getattr(operation, "name", None) not in names or not isinstance(operation, keras.layers.BatchNormalization):
            return operation
        identity = keras.layers.DepthwiseConv2D(1, use_bias=False, depthwise_initializer="ones",
                                                name=rewriter.unique(operation.name + IDENTITY_SUFFIX))
        return lambda inputs, *args, **kwargs: operation(identity(inputs), *args, **kwargs)

    return operation_fn


def _rebuild(model, rewriter: _Rewriter, operation_fn):
    keras = _keras()
    graph = functional_graph(model)
    inputs = [keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype, name=_producer(tensor).name)
              for tensor in graph.inputs]
    outputs = rewriter.replay(graph, inputs if len(inputs) > 1 else inputs[0], operation_fn)
    return keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs, name=model.name)


def _logits_head(model, notes: list[str]):
    """``model`` with a probability output turned into logits, or ``model`` itself."""
    keras = _keras()
    if len(model.outputs) != 1:
        return model
    output = _producer(model.outputs[0])
    if isinstance(output, keras.layers.Softmax) or (
            isinstance(output, keras.layers.Activation) and _activation_name(output) in PROBABILITY_ACTIVATIONS):
        logits = _input_of(model.outputs[0])
        dense = _producer(logits)
        if isinstance(dense, keras.layers.Dense) and _activation_name(dense) == "linear":
            notes.append(f"dropped `{output.name}` ({type(output).__name__}) after the head: "
                         "edgepatch trains and ships logits")
            return keras.Model(model.inputs, logits, name=model.name)
        return model
    if isinstance(output, keras.layers.Dense) and _activation_name(output) in PROBABILITY_ACTIVATIONS:
        head = keras.layers.Dense(output.units, use_bias=output.use_bias, name=output.name + "_logits")
        logits = head(_input_of(model.outputs[0]))
        head.set_weights(output.get_weights())
        notes.append(f"head `{output.name}` applies {_activation_name(output)}; replaced by `{head.name}`, "
                     "its logits (same weights)")
        return keras.Model(model.inputs, logits, name=model.name)
    return model


def canonical_model(model) -> Canonical:
    """Rewrite ``model`` into the canonical form (module docstring); ``model`` itself when it already is."""
    keras = _keras()
    graph = functional_graph(model)
    notes: list[str] = []
    rewriter = _Rewriter({layer.name for layer in graph.operations if hasattr(layer, "name")}, notes)
    flat = _rebuild(model, rewriter, rewriter.flatten_operation) if (
        rewriter.changed or _needs_flattening(graph) or isinstance(model, keras.Sequential)) else graph
    if isinstance(model, keras.Sequential):
        notes.append(f"rebuilt Sequential model `{model.name}` as a functional model")
    lonely = unfoldable_batchnorms(flat)
    if lonely:
        notes.append(f"{len(lonely)} BatchNormalization layers follow no foldable conv (first: `{lonely[0].name}`); "
                     f"each folds into a 1x1 identity depthwise conv `<bn>{IDENTITY_SUFFIX}`, an affine site")
        flat = _rebuild(flat, rewriter, _identity_before(rewriter, lonely))
    flat = _logits_head(flat, notes)
    return Canonical(flat if notes else model, notes)


def _needs_flattening(graph) -> bool:
    layers = _keras().layers
    return any(_is_model(op) or isinstance(op, layers.SeparableConv2D) or _is_channelwise_conv(op)
               for op in graph.operations)
