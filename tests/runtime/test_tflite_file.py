"""edgepatch.runtime.tflite_file (reader) and converters.tflite_rewrite (writer).

A tiny Keras CNN is converted by the real TF converter once per module; the
reader must find every kernel byte-exact, in both buffer layouts, and the
rewritten files must run in LiteRT with unchanged outputs.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from converters.tflite_rewrite import (
    rewrite_tflite,
    split_shared_inputs,
    to_external_buffer_layout,
)
from edgepatch.errors import BaseModelError, UsageError
from edgepatch.runtime.tflite_file import TFLiteModel, parse_tflite
from edgepatch.runtime.tflite_schema import OP_NAMES

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
Interpreter = pytest.importorskip("ai_edge_litert.interpreter").Interpreter

SITE_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
# Site ops in graph order, with the Keras layer each comes from.
SITES = [("CONV_2D", "conv0"), ("DEPTHWISE_CONV_2D", "dw1"), ("CONV_2D", "pw1"),
         ("FULLY_CONNECTED", "logits")]


def build_cnn(head_units: int = 5) -> keras.Model:
    layers = keras.layers
    inputs = keras.Input((16, 16, 3), name="input")
    x = layers.Conv2D(8, 3, padding="same", name="conv0")(inputs)
    y = layers.DepthwiseConv2D(3, padding="same", name="dw1")(x)
    y = layers.Conv2D(8, 1, name="pw1")(y)
    x = layers.Add(name="add")([x, y])
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(head_units, name="logits")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(1234)
    for layer in model.layers:
        weights = layer.get_weights()
        layer.set_weights([rng.standard_normal(w.shape).astype(np.float32) for w in weights])
    return model


def build_dedup_cnn() -> keras.Model:
    """Two conv biases equal (zeros), and the Dense kernel equal in bytes to pw1's kernel.

    The converter merges the biases into one tensor read by two operators, and
    stores pw1's kernel [8,1,1,8] and the FC weights [8,8] in one buffer.
    """
    model = build_cnn(head_units=8)
    for name in ("conv0", "pw1"):
        kernel, bias = model.get_layer(name).get_weights()
        model.get_layer(name).set_weights([kernel, np.zeros_like(bias)])
    pw1_kernel = model.get_layer("pw1").get_weights()[0]  # [1, 1, I, O]
    bias = model.get_layer("logits").get_weights()[1]
    model.get_layer("logits").set_weights([pw1_kernel[0, 0], bias])  # Dense kernel [I, O]
    return model


def convert(model: keras.Model, external: bool = False) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if external:
        converter._experimental_use_buffer_offset = True
    return converter.convert()


def to_runtime_layout(opcode: str, kernel: np.ndarray) -> np.ndarray:
    if opcode == "CONV_2D":  # [H, W, I, O] -> OHWI
        return kernel.transpose(3, 0, 1, 2)
    if opcode == "DEPTHWISE_CONV_2D":  # [H, W, C, M] -> [1, H, W, C*M]
        h, w, c, m = kernel.shape
        return kernel.reshape(1, h, w, c * m)
    return kernel.T  # Dense [I, O] -> [O, I]


def tensor_data(data: bytes, model: TFLiteModel, index: int) -> np.ndarray:
    tensor = model.tensors[index]
    count = tensor.data_size // tensor.dtype.itemsize
    return np.frombuffer(data, tensor.dtype, count, tensor.data_offset).reshape(tensor.shape)


def run_litert(data: bytes, x: np.ndarray) -> np.ndarray:
    interpreter = Interpreter(model_content=bytes(data))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def site_ops(model: TFLiteModel):
    return [op for op in model.ops if op.opcode in SITE_OPS]


def buffer_field_position(data: bytes, buffer: int, slot: int) -> int:
    """Absolute position of a Buffer field (slot 4 data, 6 offset, 8 size), via the schema API."""
    table = schema.Model.GetRootAs(data, 0).Buffers(buffer)._tab
    assert table.Offset(slot), "field absent"
    return table.Pos + table.Offset(slot)


@pytest.fixture(scope="module")
def cnn():
    return build_cnn()


@pytest.fixture(scope="module")
def inline(cnn) -> bytes:
    return convert(cnn)


@pytest.fixture(scope="module")
def tf_external(cnn) -> bytes:
    return convert(cnn, external=True)


@pytest.fixture(scope="module")
def dedup_inline() -> bytes:
    return convert(build_dedup_cnn())


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(7).standard_normal((1, 16, 16, 3)).astype(np.float32)


# ---------------------------------------------------------------- reading


def test_structure_of_converted_cnn(inline):
    model = parse_tflite(inline, "cnn.tflite")
    assert [op.opcode for op in model.ops] == [
        "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "ADD", "MEAN", "FULLY_CONNECTED"]
    (first,) = model.inputs
    assert model.tensors[first].shape == (1, 16, 16, 3)
    assert model.tensors[first].shape_signature == (-1, 16, 16, 3)
    assert model.tensors[first].dtype == np.float32
    assert model.tensors[first].data_offset is None
    assert model.tensors[first].data_size == 0
    assert model.ops[-1].outputs == model.outputs
    for tensor in model.tensors:
        assert model.buffer_users[tensor.buffer] == (tensor.index,)


def test_kernels_and_biases_equal_keras_weights_exactly(cnn, inline):
    model = parse_tflite(inline, "cnn.tflite")
    ops = site_ops(model)
    assert [op.opcode for op in ops] == [opcode for opcode, _ in SITES]
    for op, (opcode, layer) in zip(ops, SITES):
        kernel, bias = cnn.get_layer(layer).get_weights()
        np.testing.assert_array_equal(tensor_data(inline, model, op.inputs[1]),
                                      to_runtime_layout(opcode, kernel))
        np.testing.assert_array_equal(tensor_data(inline, model, op.inputs[2]), bias)
        assert model.readers(op.inputs[1]) == ((op.index, 1),)


def test_accepts_bytearray_and_memoryview(inline):
    expected = parse_tflite(inline, "cnn.tflite")
    assert parse_tflite(bytearray(inline), "cnn.tflite") == expected
    assert parse_tflite(memoryview(inline), "cnn.tflite") == expected


def test_rejects_non_buffer():
    with pytest.raises(UsageError) as error:
        parse_tflite("model.tflite", "cnn.tflite")
    assert str(error.value) == "parse_tflite() needs the file's bytes; received a str"


def test_opcode_names_follow_the_schema():
    schema_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    assert OP_NAMES == tuple(schema_names[code] for code in range(len(schema_names)))


def assert_same_tensor_data(a: bytes, b: bytes):
    model_a, model_b = parse_tflite(a, "a.tflite"), parse_tflite(b, "b.tflite")
    assert [(t.name, t.shape, t.dtype) for t in model_a.tensors] == [
        (t.name, t.shape, t.dtype) for t in model_b.tensors]
    assert model_a.ops == model_b.ops
    for ta, tb in zip(model_a.tensors, model_b.tensors):
        assert (ta.data_offset is None) == (tb.data_offset is None)
        if ta.data_offset is not None:
            np.testing.assert_array_equal(tensor_data(a, model_a, ta.index),
                                          tensor_data(b, model_b, tb.index))
    return model_a, model_b


def test_tf_external_layout_reads_the_same_data(inline, tf_external):
    _, external = assert_same_tensor_data(inline, tf_external)
    kernel = site_ops(external)[0].inputs[1]
    packed = schema.Model.GetRootAs(tf_external, 0)
    assert packed.Buffers(external.tensors[kernel].buffer).Offset() > 1


def test_own_external_layout_reads_the_same_data_and_runs(inline, image):
    external_bytes = to_external_buffer_layout(inline)
    _, external = assert_same_tensor_data(inline, external_bytes)
    packed = schema.Model.GetRootAs(external_bytes, 0)
    for tensor in external.tensors:
        if tensor.data_offset is not None:
            assert tensor.data_offset % 16 == 0
            assert packed.Buffers(tensor.buffer).Offset() == tensor.data_offset
            assert packed.Buffers(tensor.buffer).DataIsNone()
    np.testing.assert_array_equal(run_litert(external_bytes, image), run_litert(inline, image))


# ---------------------------------------------------------------- rewriting


def test_rewrite_renames_and_keeps_outputs(inline, tf_external, image):
    model = parse_tflite(inline, "cnn.tflite")
    renames = {}
    for op, (_, layer) in zip(site_ops(model), SITES):
        renames[op.inputs[1]] = f"{layer}/kernel"
        renames[op.inputs[2]] = f"{layer}/bias"
    expected = run_litert(inline, image)
    for source in (inline, tf_external):
        rewritten = rewrite_tflite(source, renames, unshare=renames)
        result = parse_tflite(rewritten, "rewritten.tflite")
        assert {index: result.tensors[index].name for index in renames} == renames
        packed = schema.Model.GetRootAs(rewritten, 0)
        for tensor in result.tensors:
            if tensor.data_offset is not None:
                assert tensor.data_offset % 16 == 0
                assert packed.Buffers(tensor.buffer).Offset() == 0  # inline layout
        np.testing.assert_array_equal(run_litert(rewritten, image), expected)


def test_rewrite_keeps_description_signatures_and_metadata(inline):
    before = schema.Model.GetRootAs(inline, 0)
    after = schema.Model.GetRootAs(rewrite_tflite(inline, {}, []), 0)
    assert after.Version() == before.Version() == 3
    assert after.Description() == before.Description()
    assert after.SignatureDefsLength() == before.SignatureDefsLength() == 1
    assert after.SignatureDefs(0).SignatureKey() == before.SignatureDefs(0).SignatureKey()
    for i in range(before.MetadataLength()):
        assert after.Metadata(i).Name() == before.Metadata(i).Name()
        b_before = before.Buffers(before.Metadata(i).Buffer()).DataAsNumpy()
        b_after = after.Buffers(after.Metadata(i).Buffer()).DataAsNumpy()
        np.testing.assert_array_equal(b_after, b_before)


def test_dedup_model_shares_tensor_and_buffer(dedup_inline):
    model = parse_tflite(dedup_inline, "dedup.tflite")
    conv0, _, pw1, fc = site_ops(model)
    # Equal zero biases: one tensor read by two operators.
    assert conv0.inputs[2] == pw1.inputs[2]
    assert model.readers(conv0.inputs[2]) == ((conv0.index, 2), (pw1.index, 2))
    # Equal bytes, different shapes: two tensors on one buffer.
    assert model.tensors[pw1.inputs[1]].shape == (8, 1, 1, 8)
    assert model.tensors[fc.inputs[1]].shape == (8, 8)
    shared = model.tensors[pw1.inputs[1]].buffer
    assert model.buffer_users[shared] == tuple(sorted((pw1.inputs[1], fc.inputs[1])))
    assert model.tensors_sharing_data(pw1.inputs[1]) == (fc.inputs[1],)


def test_rewrite_unshares_buffers(dedup_inline, image):
    model = parse_tflite(dedup_inline, "dedup.tflite")
    _, _, pw1, fc = site_ops(model)
    kernel = pw1.inputs[1]
    rewritten = rewrite_tflite(dedup_inline, {kernel: "pw1/kernel"}, unshare=[kernel])
    result = parse_tflite(rewritten, "rewritten.tflite")
    assert result.buffer_users[result.tensors[kernel].buffer] == (kernel,)
    assert result.buffer_users[result.tensors[fc.inputs[1]].buffer] == (fc.inputs[1],)
    assert result.tensors_sharing_data(kernel) == ()
    np.testing.assert_array_equal(tensor_data(rewritten, result, kernel),
                                  tensor_data(dedup_inline, model, kernel))
    np.testing.assert_array_equal(run_litert(rewritten, image), run_litert(dedup_inline, image))


def test_split_shared_inputs_gives_each_slot_its_own_tensor(dedup_inline, image):
    model = parse_tflite(dedup_inline, "dedup.tflite")
    slots = [(op.index, slot) for op in site_ops(model) for slot in (1, 2)]
    split, private = split_shared_inputs(dedup_inline, slots)
    result = parse_tflite(split, "split.tflite")
    assert sorted(private) == sorted(slots)
    assert len(set(private.values())) == len(slots)
    for (op, slot), tensor in private.items():
        assert result.ops[op].inputs[slot] == tensor
        assert result.readers(tensor) == ((op, slot),)
        assert result.tensors_sharing_data(tensor) == ()
        np.testing.assert_array_equal(tensor_data(split, result, tensor),
                                      tensor_data(dedup_inline, model, model.ops[op].inputs[slot]))
    copied = private[(site_ops(model)[2].index, 2)]
    assert result.tensors[copied].name == (
        f"{model.tensors[model.ops[site_ops(model)[2].index].inputs[2]].name}"
        f"_split_{site_ops(model)[2].index}_2")
    np.testing.assert_array_equal(run_litert(split, image), run_litert(dedup_inline, image))


def test_rewrite_adds_a_bias_the_converter_dropped(cnn, image):
    kernel, bias = cnn.get_layer("logits").get_weights()
    cnn.get_layer("logits").set_weights([kernel, np.zeros_like(bias)])
    try:
        dropped = convert(cnn)
    finally:
        cnn.get_layer("logits").set_weights([kernel, bias])
    model = parse_tflite(dropped, "dropped.tflite")
    fc = site_ops(model)[-1]
    assert fc.opcode == "FULLY_CONNECTED" and fc.inputs[2] == -1
    added = np.arange(5, dtype=np.float32)
    rewritten = rewrite_tflite(dropped, {}, [], add_biases={fc.index: ("logits/bias", added)})
    result = parse_tflite(rewritten, "rewritten.tflite")
    bias_tensor = result.ops[fc.index].inputs[2]
    assert result.tensors[bias_tensor].name == "logits/bias"
    assert result.buffer_users[result.tensors[bias_tensor].buffer] == (bias_tensor,)
    np.testing.assert_array_equal(tensor_data(rewritten, result, bias_tensor), added)
    np.testing.assert_allclose(run_litert(rewritten, image), run_litert(dropped, image) + added,
                               rtol=0, atol=1e-5)
    with pytest.raises(UsageError) as error:
        rewrite_tflite(dropped, {}, [], add_biases={fc.index: ("b", np.zeros(4, np.float32))})
    assert str(error.value) == (
        f"<tflite bytes>: add_biases: operator {fc.index} (FULLY_CONNECTED): bias must be "
        "float32 of shape [5]; received float32 of shape [4]")
    with pytest.raises(UsageError) as error:
        rewrite_tflite(dropped, {}, [], add_biases={0: ("b", np.zeros(8, np.float32))})
    assert str(error.value) == (
        f"<tflite bytes>: add_biases: operator 0 (CONV_2D) already has bias tensor "
        f"{model.ops[0].inputs[2]}")


def test_rewrite_rejects_bad_arguments(inline):
    model = parse_tflite(inline, "cnn.tflite")
    count = len(model.tensors)
    first_input = model.inputs[0]
    kernel = site_ops(model)[0].inputs[1]
    other = site_ops(model)[1].inputs[1]
    cases = [
        (lambda: rewrite_tflite(inline, {count: "x"}, []),
         f"<tflite bytes>: renames: tensor index must be an int in [0, {count}); received {count}"),
        (lambda: rewrite_tflite(inline, {kernel: ""}, []),
         f"renames[{kernel}] must be a non-empty str; received ''"),
        (lambda: rewrite_tflite(inline, {kernel: "a", other: "a"}, []),
         f"<tflite bytes>: renaming tensor {kernel} to 'a' would clash with tensor {other}"),
        (lambda: rewrite_tflite(inline, {}, [first_input], source="cnn.tflite"),
         f"cnn.tflite: unshare: tensor {first_input} "
         f"({model.tensors[first_input].name!r}) has no constant data"),
        (lambda: split_shared_inputs(inline, [(0, 7)], source="cnn.tflite"),
         "cnn.tflite: operator 0 (CONV_2D) has no input slot 7"),
    ]
    for call, message in cases:
        with pytest.raises(UsageError) as error:
            call()
        assert str(error.value) == message


# ---------------------------------------------------------------- malformed files


def expect_error(data, message: str) -> None:
    with pytest.raises(BaseModelError) as error:
        parse_tflite(data, "bad.tflite")
    assert str(error.value) == message


def test_too_short_file():
    expect_error(b"\x10\x00\x00\x00TF",
                 "bad.tflite: file is 6 bytes, too short for a TFLite header (8 bytes)")


def test_wrong_identifier(inline):
    expect_error(inline[:4] + b"TFL2" + inline[8:],
                 "bad.tflite: not a TFLite model: file identifier is b'TFL2', expected b'TFL3'")


def test_garbage():
    expect_error(bytes(range(64)),
                 "bad.tflite: not a TFLite model: file identifier is "
                 "b'\\x04\\x05\\x06\\x07', expected b'TFL3'")
    expect_error(b"\xff\xff\xff\x7fTFL3" + bytes(8),
                 "bad.tflite: model table at offset 2147483647 (+4 bytes) "
                 "is outside the file (16 bytes)")


def test_truncated_file(inline, tf_external):
    root = struct.unpack_from("<I", inline)[0]
    expect_error(inline[: root + 2],
                 f"bad.tflite: model table at offset {root} (+4 bytes) "
                 f"is outside the file ({root + 2} bytes)")
    # The external layout keeps data after the flatbuffer: cut into the last buffer.
    model = parse_tflite(tf_external, "ext.tflite")
    last = max((t for t in model.tensors if t.data_offset is not None), key=lambda t: t.data_offset)
    cut = last.data_offset + 1
    expect_error(tf_external[:cut],
                 f"bad.tflite: buffer {last.buffer} external data at offset {last.data_offset} "
                 f"(+{last.data_size} bytes) is outside the file ({cut} bytes)")


def test_external_offset_past_end(inline):
    external = bytearray(to_external_buffer_layout(inline))
    model = parse_tflite(external, "ext.tflite")
    tensor = model.tensors[site_ops(model)[0].inputs[1]]
    offset_field = buffer_field_position(external, tensor.buffer, 6)
    struct.pack_into("<Q", external, offset_field, len(external))
    expect_error(external,
                 f"bad.tflite: buffer {tensor.buffer} external data at offset {len(external)} "
                 f"(+{tensor.data_size} bytes) is outside the file ({len(external)} bytes)")


def test_inline_vector_length_past_end(inline):
    model = parse_tflite(inline, "cnn.tflite")
    tensor = model.tensors[site_ops(model)[0].inputs[1]]
    corrupt = bytearray(inline)
    struct.pack_into("<I", corrupt, tensor.data_offset - 4, 0xFFFFFFFF)
    expect_error(corrupt,
                 f"bad.tflite: buffer {tensor.buffer} data (4294967295 elements) at offset "
                 f"{tensor.data_offset} (+4294967295 bytes) is outside the file "
                 f"({len(inline)} bytes)")


def tensor_field_position(data: bytes, tensor: int, slot: int) -> int:
    table = schema.Model.GetRootAs(data, 0).Subgraphs(0).Tensors(tensor)._tab
    return table.Pos + table.Offset(slot)


def test_buffer_index_out_of_range(inline):
    model = parse_tflite(inline, "cnn.tflite")
    tensor = model.tensors[site_ops(model)[0].inputs[1]]
    buffers = schema.Model.GetRootAs(inline, 0).BuffersLength()
    corrupt = bytearray(inline)
    struct.pack_into("<I", corrupt, tensor_field_position(inline, tensor.index, 8), 1000)
    expect_error(corrupt,
                 f"bad.tflite: tensor {tensor.index} ({tensor.name!r}): buffer index 1000 "
                 f"is out of range (model has {buffers} buffers)")


def test_data_size_disagrees_with_shape(inline):
    model = parse_tflite(inline, "cnn.tflite")
    tensor = model.tensors[site_ops(model)[0].inputs[1]]  # [8, 3, 3, 3] float32
    corrupt = bytearray(inline)
    shape_ref = tensor_field_position(inline, tensor.index, 4)
    shape_start = shape_ref + struct.unpack_from("<I", inline, shape_ref)[0] + 4
    struct.pack_into("<i", corrupt, shape_start, 9)
    expect_error(corrupt,
                 f"bad.tflite: tensor {tensor.index} ({tensor.name!r}): buffer {tensor.buffer} "
                 f"holds 864 bytes, but shape [9, 3, 3, 3] of float32 needs 972")


def test_operator_input_out_of_range(inline):
    model = parse_tflite(inline, "cnn.tflite")
    table = schema.Model.GetRootAs(inline, 0).Subgraphs(0).Operators(0)._tab
    inputs_ref = table.Pos + table.Offset(6)
    first_input = inputs_ref + struct.unpack_from("<I", inline, inputs_ref)[0] + 4
    corrupt = bytearray(inline)
    struct.pack_into("<i", corrupt, first_input, 99)
    expect_error(corrupt,
                 f"bad.tflite: operator 0 (CONV_2D) input tensor index 99 is out of range "
                 f"(subgraph 0 has {len(model.tensors)} tensors)")


def pack_model(model) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def tiny_model(buffer):
    tensor = schema.TensorT()
    tensor.shape, tensor.type, tensor.buffer, tensor.name = [1], 0, 1, "t"
    graph = schema.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs, graph.operators = [tensor], [0], [0], []
    model = schema.ModelT()
    model.version, model.subgraphs, model.buffers = 3, [graph], [schema.BufferT(), buffer]
    return model


def test_hand_built_models():
    good = parse_tflite(pack_model(tiny_model(schema.BufferT(data=[0, 0, 128, 63]))), "t.tflite")
    assert good.tensors[0].name == "t" and good.tensors[0].data_size == 4
    expect_error(pack_model(tiny_model(schema.BufferT(data=[0, 0, 128, 63], offset=2, size=4))),
                 "bad.tflite: buffer 1 has both inline data (4 bytes) and an external offset (2)")
    no_graphs = tiny_model(schema.BufferT())
    no_graphs.subgraphs = []
    expect_error(pack_model(no_graphs), "bad.tflite: model has no subgraphs")


def test_corruption_of_the_flatbuffer_structure_is_noticed_with_its_exact_error(inline):
    root = struct.unpack_from("<I", inline, 0)[0]
    size = len(inline)
    for cut in range(8):
        expect_error(inline[:cut], f"bad.tflite: file is {cut} bytes, too short for a TFLite header (8 bytes)")
    for cut in range(8, root + 4):
        expect_error(inline[:cut], f"bad.tflite: model table at offset {root} (+4 bytes) is outside the file "
                                   f"({cut} bytes)")
    for position in range(4, 8):
        corrupt = bytearray(inline)
        corrupt[position] ^= 0x20
        expect_error(bytes(corrupt), f"bad.tflite: not a TFLite model: file identifier is "
                                     f"{bytes(corrupt[4:8])!r}, expected b'TFL3'")
    expect_error(struct.pack("<I", size) + inline[4:],
                 f"bad.tflite: model table at offset {size} (+4 bytes) is outside the file ({size} bytes)")
    corrupt = bytearray(inline)
    struct.pack_into("<i", corrupt, root, root - size)  # the model's vtable moves to the end of the file
    expect_error(bytes(corrupt), f"bad.tflite: model vtable at offset {size} (+4 bytes) is outside the file "
                                 f"({size} bytes)")
    vtable = root - struct.unpack_from("<i", inline, root)[0]
    corrupt = bytearray(inline)
    struct.pack_into("<H", corrupt, vtable, 3)
    expect_error(bytes(corrupt), f"bad.tflite: model vtable at offset {vtable} has invalid size 3")


def test_random_corruption_raises_only_base_model_error(inline):
    """Flipped bytes and cuts anywhere give a parse or a BaseModelError naming the file, never another error.

    Random damage has no predictable message (the exact errors are pinned above); here every
    rejection must be exactly a BaseModelError whose message starts with the file's name, and
    the damage must be noticed in many rounds.
    """
    rng = np.random.default_rng(0)
    noticed = 0
    for _ in range(400):
        corrupt = bytearray(inline)
        for position in rng.integers(8, len(inline), size=rng.integers(1, 4)):
            corrupt[position] = rng.integers(0, 256)
        if rng.random() < 0.3:
            corrupt = corrupt[: rng.integers(8, len(corrupt))]
        try:
            parse_tflite(corrupt, "bad.tflite")
        except BaseModelError as error:
            assert type(error) is BaseModelError and str(error).startswith("bad.tflite: "), error
            noticed += 1
    assert noticed >= 100, noticed
