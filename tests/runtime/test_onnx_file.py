"""edgepatch.runtime.onnx_file: the dependency-free ONNX reader.

A tiny Keras CNN is converted by tf2onnx once per module; the reader must find
every kernel byte-exact and agree with the ``onnx`` package on every
initializer and node. Hand-built protobufs cover the wire-format corners.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgepatch.errors import BaseModelError
from edgepatch.runtime.onnx_file import OnnxModel, parse_onnx

onnx = pytest.importorskip("onnx")
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
tf2onnx = pytest.importorskip("tf2onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

LAYERS = ("conv0", "dw1", "pw1", "logits")


def build_cnn() -> keras.Model:
    layers = keras.layers
    inputs = keras.Input((16, 16, 3), name="input")
    x = layers.Conv2D(8, 3, padding="same", name="conv0")(inputs)
    y = layers.DepthwiseConv2D(3, padding="same", name="dw1")(x)
    y = layers.Conv2D(8, 1, name="pw1")(y)
    x = layers.Add(name="add")([x, y])
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(5, name="logits")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(1234)
    for layer in model.layers:
        weights = layer.get_weights()
        layer.set_weights([rng.standard_normal(w.shape).astype(np.float32) for w in weights])
    return model


def to_onnx_layout(layer: str, kernel: np.ndarray) -> np.ndarray:
    if layer == "dw1":  # [H, W, C, M] -> [C*M, 1, H, W]
        h, w, c, m = kernel.shape
        return kernel.reshape(h, w, c * m).transpose(2, 0, 1)[:, None]
    if layer == "logits":  # Dense [I, O] is MatMul/Gemm B [I, O]
        return kernel
    return kernel.transpose(3, 2, 0, 1)  # [H, W, I, O] -> OIHW


def initializer_data(data: bytes, model: OnnxModel, name: str) -> np.ndarray:
    init = model.initializers[name]
    count = init.data_size // init.dtype.itemsize
    return np.frombuffer(data, init.dtype, count, init.data_offset).reshape(init.dims)


@pytest.fixture(scope="module")
def cnn():
    return build_cnn()


@pytest.fixture(scope="module")
def converted(cnn) -> bytes:
    spec = [tf.TensorSpec([1, 16, 16, 3], tf.float32, name="input")]
    proto, _ = tf2onnx.convert.from_keras(cnn, input_signature=spec, opset=17)
    return proto.SerializeToString()


def test_kernels_and_biases_equal_keras_weights_exactly(cnn, converted):
    model = parse_onnx(converted, "cnn.onnx")
    sites = [node for node in model.nodes if node.op_type in ("Conv", "MatMul", "Gemm")]
    assert [node.op_type for node in sites] == ["Conv", "Conv", "Conv", "Gemm"]
    assert [node.int_attrs.get("group") for node in sites[:3]] == [1, 8, 1]
    for node, layer in zip(sites, LAYERS):
        kernel, bias = cnn.get_layer(layer).get_weights()
        np.testing.assert_array_equal(initializer_data(converted, model, node.inputs[1]),
                                      to_onnx_layout(layer, kernel))
        np.testing.assert_array_equal(initializer_data(converted, model, node.inputs[2]), bias)
    assert model.graph_inputs == ("input",)
    assert model.graph_outputs == ("logits",)


def test_agrees_with_the_onnx_package(converted):
    model = parse_onnx(converted, "cnn.onnx")
    reference = onnx.load_from_string(converted).graph
    assert set(model.initializers) == {t.name for t in reference.initializer}
    for tensor in reference.initializer:
        ours = model.initializers[tensor.name]
        expected = numpy_helper.to_array(tensor)
        assert ours.dims == tuple(tensor.dims)
        assert ours.dtype == expected.dtype
        np.testing.assert_array_equal(initializer_data(converted, model, tensor.name), expected)
    assert [(n.op_type, n.name, n.inputs, n.outputs) for n in model.nodes] == [
        (n.op_type, n.name, tuple(n.input), tuple(n.output)) for n in reference.node]
    assert [n.int_attrs for n in model.nodes] == [
        {a.name: a.i for a in n.attribute if a.type == onnx.AttributeProto.INT}
        for n in reference.node]


def test_accepts_bytearray_and_memoryview(converted):
    expected = parse_onnx(converted, "cnn.onnx")
    assert parse_onnx(bytearray(converted), "cnn.onnx") == expected
    assert parse_onnx(memoryview(converted), "cnn.onnx") == expected


# ---------------------------------------------------------------- hand-built protobufs


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited (wire type 2) field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def model_of(*graph_fields: bytes) -> bytes:
    return field(7, b"".join(graph_fields))


def tensor_proto(name: bytes, dims_packed: bytes, data_type: int, raw: bytes) -> bytes:
    return (field(1, dims_packed) + varint(2 << 3) + varint(data_type)
            + field(8, name) + field(9, raw))


def expect_error(data: bytes, message: str) -> None:
    with pytest.raises(BaseModelError) as error:
        parse_onnx(data, "bad.onnx")
    assert str(error.value) == message


def test_packed_and_unpacked_dims_and_typed_data():
    raw = np.arange(6, dtype=np.float32).tobytes()
    packed = tensor_proto(b"w", varint(2) + varint(3), 1, raw)
    unpacked = helper.make_tensor("v", TensorProto.INT64, [2], [5, -1])  # int64_data, not raw
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="c", group=4, strides=[1, 1])
    data = model_of(field(1, node.SerializeToString()), field(5, packed),
                    field(5, unpacked.SerializeToString()))
    model = parse_onnx(data, "hand.onnx")
    w = model.initializers["w"]
    assert (w.dims, w.dtype, w.data_size) == ((2, 3), np.float32, 24)
    assert data[w.data_offset:w.data_offset + 24] == raw
    v = model.initializers["v"]
    assert (v.dims, v.dtype, v.data_offset, v.data_size) == ((2,), np.int64, None, 0)
    assert model.nodes[0].int_attrs == {"group": 4}


def test_merges_repeated_graph_fields():
    first = helper.make_node("Relu", ["x"], ["y"])
    second = helper.make_node("Relu", ["y"], ["z"])
    model = parse_onnx(model_of(field(1, first.SerializeToString()))
                       + model_of(field(1, second.SerializeToString())), "two.onnx")
    assert [node.outputs for node in model.nodes] == [("y",), ("z",)]


def test_no_graph():
    expect_error(b"", "bad.onnx: model has no graph (ModelProto field 7)")
    expect_error(varint(1 << 3) + varint(8), "bad.onnx: model has no graph (ModelProto field 7)")


def test_truncated_file(converted):
    graph = onnx.load_from_string(converted).graph.SerializeToString()
    data = model_of(graph)
    header = len(data) - len(graph)
    cut = header + len(graph) // 2
    expect_error(data[:cut],
                 f"bad.onnx: model: field 7 at offset {header} (+{len(graph)} bytes) runs past "
                 f"the end of its message at offset {cut}")


def test_garbage():
    expect_error(b"\xff" * 20, "bad.onnx: model: varint at offset 0 is longer than 10 bytes")
    expect_error(b"\x0b\x00", "bad.onnx: model: field 1 has unsupported wire type 3")
    expect_error(b"\x08\x01\x00", "bad.onnx: model: field number 0 at offset 2 is invalid")
    expect_error(b"\x38\x01", "bad.onnx: model: field 7 has wire type 0, expected 2")
    expect_error(b"\x3a\x03\x0a", "bad.onnx: model: field 7 at offset 2 (+3 bytes) runs past "
                                  "the end of its message at offset 3")
    expect_error(b"\x3a\x02\x0a\x80",
                 "bad.onnx: graph: varint runs past the end of its message at offset 4")


def test_external_data_is_rejected():
    tensor = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "weights.bin"
    expect_error(model_of(field(5, tensor.SerializeToString())),
                 "bad.onnx: graph initializer 0 ('w') stores its data in an external file, "
                 "which is not supported")


def test_raw_data_size_disagrees_with_dims():
    tensor = tensor_proto(b"w", varint(2) + varint(3), 1, bytes(20))
    expect_error(model_of(field(5, tensor)),
                 "bad.onnx: graph initializer 0 ('w'): raw_data holds 20 bytes, "
                 "but dims [2, 3] of float32 need 24")


def test_negative_dims_and_bad_names():
    tensor = tensor_proto(b"w", varint(2) + varint((1 << 64) - 3), 1, b"")
    expect_error(model_of(field(5, tensor)),
                 "bad.onnx: graph initializer 0 ('w') has a negative dimension in dims [2, -3]")
    node = field(4, b"\xff\xfe")
    expect_error(model_of(field(1, node)),
                 "bad.onnx: graph node 0: string at offset 6 is not valid UTF-8")


def test_duplicate_initializer_names():
    tensor = tensor_proto(b"w", varint(1), 1, bytes(4))
    expect_error(model_of(field(5, tensor), field(5, tensor)),
                 "bad.onnx: graph has two initializers named 'w'")


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        value, pos, shift = value | (byte & 0x7F) << shift, pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


def graph_field(model: bytes) -> tuple[int, int, int]:
    """(key position, payload start, payload length) of ModelProto field 7, found by the test's own walk."""
    pos = 0
    while True:
        key_pos = pos
        key, pos = read_varint(model, pos)
        if key & 7 == 0:
            _, pos = read_varint(model, pos)
            continue
        length, pos = read_varint(model, pos)
        if key == (7 << 3 | 2):
            return key_pos, pos, length
        pos += length


def test_corruption_of_the_model_structure_is_noticed_with_its_exact_error(converted):
    key_pos, start, length = graph_field(converted)
    assert start - key_pos > 2, "the graph's length varint has several bytes"
    end_of_graph = start + length
    for cut in np.linspace(start + 1, end_of_graph - 1, 25).astype(int):
        expect_error(converted[:cut], f"bad.onnx: model: field 7 at offset {start} (+{length} bytes) runs past "
                                      f"the end of its message at offset {cut}")
    expect_error(converted[:key_pos + 2],
                 f"bad.onnx: model: varint runs past the end of its message at offset {key_pos + 2}")
    for key, message in ((7 << 3 | 3, "field 7 has unsupported wire type 3"),
                         (0 << 3 | 2, f"field number 0 at offset {key_pos} is invalid")):
        corrupt = bytearray(converted)
        corrupt[key_pos] = key
        expect_error(bytes(corrupt), f"bad.onnx: model: {message}")
    expect_error(converted[:key_pos] + converted[end_of_graph:], "bad.onnx: model has no graph (ModelProto field 7)")


def test_random_corruption_raises_only_base_model_error(converted):
    """Flipped bytes and cuts anywhere give a parse or a BaseModelError naming the file, never another error.

    Random damage has no predictable message (the exact errors are pinned above); here every
    rejection must be exactly a BaseModelError whose message starts with the file's name, and
    the damage must be noticed in most rounds.
    """
    rng = np.random.default_rng(0)
    noticed = 0
    for _ in range(400):
        corrupt = bytearray(converted)
        for position in rng.integers(0, len(converted), size=rng.integers(1, 4)):
            corrupt[position] = rng.integers(0, 256)
        if rng.random() < 0.3:
            corrupt = corrupt[: rng.integers(0, len(corrupt))]
        try:
            parse_onnx(corrupt, "bad.onnx")
        except BaseModelError as error:
            assert type(error) is BaseModelError and str(error).startswith("bad.onnx: "), error
            noticed += 1
    assert noticed >= 100, noticed
