"""Emit the shared ONNX base from the BN-free Keras model.

tf2onnx converts the folded model; then each site's weights are located by
walking the graph (Conv inputs 1 and 2; MatMul input 1 and the Add after
it), checked value-for-value against the folded weights, and given their own
initializers with their stable names (spec: *Site naming*). That
also undoes any sharing of identical constants and restores a head bias the
converter dropped for being all zeros.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections import Counter

import numpy as np

from converters.fold import FoldedSite, expected_weights
from converters.folded_model import BASE_INPUT_NAME
from edgepatch.errors import FoldError
from edgepatch.format.names import BIAS, DENSE_OP, KERNEL, tensor_name

log = logging.getLogger(__name__)
OPSET = 17
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div"}  # ops that broadcast a [1] constant as they do a scalar


def _convert(folded_model):
    import tensorflow as tf
    import tf2onnx

    from tf2onnx.graph import GraphUtil

    signature = [tf.TensorSpec((None, None, None, folded_model.inputs[0].shape[-1]), tf.float32, name=BASE_INPUT_NAME)]
    with contextlib.redirect_stdout(io.StringIO()):
        proto, _ = tf2onnx.convert.from_keras(folded_model, input_signature=signature, opset=OPSET, optimizers={})
        _scalar_constants_as_vectors(proto.graph)
        return GraphUtil.optimize_model_proto(proto, catch_errors=False)


def _scalar_constants_as_vectors(graph) -> None:
    """Give rank-0 initializers shape [1] (same broadcast).

    tf2onnx's transpose optimizer fails on an Add of a scalar constant right after a Conv (the
    ``x + 3`` of a hard sigmoid), and then leaves every layout Transpose and unfused bias in the graph.
    """
    readers: dict[str, set[str]] = {}
    for node in graph.node:
        for value in node.input:
            readers.setdefault(value, set()).add(node.op_type)
    for init in graph.initializer:
        if not init.dims and readers.get(init.name) and readers[init.name] <= _ELEMENTWISE:
            init.dims.append(1)


def _match_site(array, candidates, expected, op_label: str):
    for name in candidates:
        if expected[name][0].shape == array.shape and np.array_equal(expected[name][0], array):
            return name
    raise FoldError(f"ONNX {op_label} weight of shape {list(array.shape)} matches no folded site")


def locate_sites(proto, folded: dict[str, FoldedSite], head_width: int,
                 constants: frozenset = frozenset()) -> dict[str, tuple]:
    """Map site -> (weight node, weight input index, bias node or None, bias input index).

    ``constants``: sites no delta can write; one whose bias holds a constant add the converter
    fused into it is matched by weight but not returned.
    """
    from onnx import numpy_helper

    initializers = {init.name: init for init in proto.graph.initializer}
    consumers: dict[str, list] = {}
    for node in proto.graph.node:
        for value in node.input:
            consumers.setdefault(value, []).append(node)
    expected = expected_weights(folded, head_width, "onnx")
    remaining = {"Conv": [n for n, s in folded.items() if s.op != DENSE_OP], "MatMul": [n for n, s in folded.items() if s.op == DENSE_OP]}
    located = {}
    for node in proto.graph.node:
        if node.op_type not in remaining or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        weight = numpy_helper.to_array(initializers[node.input[1]])
        name = _match_site(weight, remaining[node.op_type], expected, node.op_type)
        remaining[node.op_type].remove(name)
        if name in constants and not _holds_bias(node, initializers, expected[name][1]):
            continue
        if node.op_type == "Conv":
            located[name] = (node, 1, node if len(node.input) > 2 else None, 2)
            continue
        users = consumers.get(node.output[0], [])
        add = users[0] if len(users) == 1 and users[0].op_type == "Add" else None
        bias_index = None
        if add is not None:
            bias_index = next((i for i, v in enumerate(add.input) if v in initializers), None)
        located[name] = (node, 1, add if bias_index is not None else None, bias_index)
    missing = [n for names in remaining.values() for n in names]
    if missing:
        raise FoldError(f"ONNX graph has no Conv/MatMul for sites {missing[:5]}")
    return located


def _holds_bias(conv, initializers: dict, bias: np.ndarray) -> bool:
    """Whether ``conv`` (Conv or MatMul) has no bias input or one equal to ``bias``."""
    from onnx import numpy_helper

    if conv.op_type != "Conv" or len(conv.input) < 3:
        return True
    value = initializers.get(conv.input[2])
    return value is not None and np.array_equal(numpy_helper.to_array(value).reshape(-1), bias)


def _add_bias_after(proto, matmul, bias_name: str) -> None:
    from onnx import helper

    output = matmul.output[0]
    matmul.output[0] = f"{output}__edgepatch_pre_bias"
    add = helper.make_node("Add", [matmul.output[0], bias_name], [output], name=f"{bias_name}__add")
    position = list(proto.graph.node).index(matmul) + 1
    proto.graph.node.insert(position, add)


def _order_by_first_use(graph) -> None:
    """Sort initializers by the first node input that reads them (unread ones last).

    tf2onnx merges equal constants (the 0 and 6 of every ReLU6's Clip) and which copy it keeps
    depends on set order, hence on PYTHONHASHSEED; the graph's reads do not.
    """
    first_use: dict[str, tuple[int, int]] = {}
    for index, node in enumerate(graph.node):
        for slot, value in enumerate(node.input):
            first_use.setdefault(value, (index, slot))
    unread = (len(graph.node), 0)
    ordered = sorted(graph.initializer, key=lambda init: first_use.get(init.name, unread))
    copies = [type(init).FromString(init.SerializeToString()) for init in ordered]
    del graph.initializer[:]
    graph.initializer.extend(copies)


def _canonical_names(graph, keep: set[str]) -> None:
    """Name nodes, values, other initializers and symbolic dimensions by position (not ``keep``, inputs, outputs).

    tf2onnx numbers the names it makes with a process-wide counter, so the same model converted
    twice in one process would give different bytes (and a delta pins its base's sha256).
    """
    from onnx import AttributeProto

    if any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        return  # subgraphs may refer to outer names; MobileNet-style bases have none
    keep = keep | {v.name for v in graph.input} | {v.name for v in graph.output}
    _order_by_first_use(graph)
    renamed = {}
    for index, init in enumerate(graph.initializer):
        if init.name not in keep:
            renamed[init.name] = init.name = f"const_{index}"
    for index, node in enumerate(graph.node):
        node.name = f"{node.op_type}_{index}"
        for k, value in enumerate(node.output):
            if value and value not in keep:
                renamed[value] = node.output[k] = f"{node.op_type}_{index}_out{k}"
    for node in graph.node:
        for k, value in enumerate(node.input):
            node.input[k] = renamed.get(value, value)
    for info in graph.value_info:
        info.name = renamed.get(info.name, info.name)
    symbols: dict[str, str] = {}  # tf2onnx's "unk__N" dimension names carry the same counter
    for info in [*graph.input, *graph.output, *graph.value_info]:
        for dim in info.type.tensor_type.shape.dim:
            if dim.HasField("dim_param"):
                dim.dim_param = symbols.setdefault(dim.dim_param, f"dim_{len(symbols)}")


def export_onnx_base(folded_model, folded: dict[str, FoldedSite], head_width: int,
                     constants: frozenset = frozenset()) -> bytes:
    """Convert, locate sites, give their weights stable initializer names; return the model bytes.

    ``constants``: the sites no delta can write (``locate_sites``); one whose bias the converter
    changed gets no site name.
    """
    import onnx
    from onnx import numpy_helper

    proto = _convert(folded_model)
    expected = expected_weights(folded, head_width, "onnx")
    located = locate_sites(proto, folded, head_width, constants)
    graph = proto.graph
    for name, (node, weight_index, bias_node, bias_index) in located.items():
        kernel, bias = expected[name]
        kernel_name, bias_name = tensor_name(name, KERNEL), tensor_name(name, BIAS)
        graph.initializer.append(numpy_helper.from_array(kernel, kernel_name))
        graph.initializer.append(numpy_helper.from_array(bias.astype(np.float32), bias_name))
        node.input[weight_index] = kernel_name
        if bias_node is None and node.op_type == "Conv":
            node.input.append(bias_name)
        elif bias_node is None:
            _add_bias_after(proto, node, bias_name)
        else:
            old = bias_node.input[bias_index]
            old_value = numpy_helper.to_array(next(i for i in graph.initializer if i.name == old))
            if not np.array_equal(old_value.reshape(-1), bias):
                raise FoldError(f"ONNX bias of site `{name}` differs from the folded bias")
            bias_node.input[bias_index] = bias_name
    used = {value for node in graph.node for value in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    _canonical_names(graph, {tensor_name(name, role) for name in located for role in (KERNEL, BIAS)})
    onnx.checker.check_model(proto)
    log.info("ONNX base: %s", dict(Counter(node.op_type for node in graph.node)))
    return proto.SerializeToString()
