"""Read the few fields edgepatch needs from a .tflite file, with ``struct`` only.

A .tflite file is a FlatBuffer holding a TFLite ``Model`` (``schema.fbs`` in
TensorFlow/LiteRT). This module reads it without the ``flatbuffers`` package,
so that the on-device Java loader can mirror it line by line. It reads subgraph
0 only and never copies tensor data: it reports where the bytes lie.

FlatBuffer layout (all integers little-endian):

- bytes 0..4: u32 position of the root table (the ``Model``);
  bytes 4..8: the file identifier ``TFL3``.
- A table at position ``T`` starts with an i32 ``s``; its vtable is at ``T - s``.
  The vtable holds u16 values: its own byte size, the table's byte size, then
  one per field id: the field's offset from ``T``, 0 when the field is absent
  (the schema default applies).
- A reference field (table, vector, string) at position ``P`` holds a u32 ``r``;
  the referenced object starts at ``P + r``.
- A vector or string is a u32 element count followed by the elements. A vector
  of tables holds u32 references, each relative to its own position.

Fields read (field id, name, type):

- Model: 1 operator_codes [OperatorCode], 2 subgraphs [SubGraph], 4 buffers [Buffer]
- SubGraph: 0 tensors [Tensor], 1 inputs [i32], 2 outputs [i32], 3 operators [Operator]
- Tensor: 0 shape [i32], 1 type i8, 2 buffer u32, 3 name string, 7 shape_signature [i32]
- Buffer: 0 data [u8], 1 offset u64, 2 size u64
- Operator: 0 opcode_index u32, 1 inputs [i32], 2 outputs [i32]
- OperatorCode: 0 deprecated_builtin_code i8, 3 builtin_code i32; the code is
  the larger of the two (old files set only the first, new ones both).

A buffer's bytes lie in one of two layouts. Inline (the default): ``data`` is a
``[u8]`` vector inside the flatbuffer. External (``_experimental_use_buffer_offset``
and files over 2 GB): ``offset > 1`` and ``size`` give an absolute byte range
after the flatbuffer, as LiteRT reads it. Every position read from the file is
checked against the file size before use; any inconsistency raises
``BaseModelError`` naming the file and what is wrong.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from edgepatch.errors import BaseModelError, UsageError

FILE_IDENTIFIER = b"TFL3"

# BuiltinOperator names in code order (0..209), as in schema.fbs.
_OP_NAMES = tuple("""
    ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE
    EMBEDDING_LOOKUP FLOOR FULLY_CONNECTED HASHTABLE_LOOKUP L2_NORMALIZATION L2_POOL_2D
    LOCAL_RESPONSE_NORMALIZATION LOGISTIC LSH_PROJECTION LSTM MAX_POOL_2D MUL RELU RELU_N1_TO_1
    RELU6 RESHAPE RESIZE_BILINEAR RNN SOFTMAX SPACE_TO_DEPTH SVDF TANH CONCAT_EMBEDDINGS
    SKIP_GRAM CALL CUSTOM EMBEDDING_LOOKUP_SPARSE PAD UNIDIRECTIONAL_SEQUENCE_RNN GATHER
    BATCH_TO_SPACE_ND SPACE_TO_BATCH_ND TRANSPOSE MEAN SUB DIV SQUEEZE
    UNIDIRECTIONAL_SEQUENCE_LSTM STRIDED_SLICE BIDIRECTIONAL_SEQUENCE_RNN EXP TOPK_V2 SPLIT
    LOG_SOFTMAX DELEGATE BIDIRECTIONAL_SEQUENCE_LSTM CAST PRELU MAXIMUM ARG_MAX MINIMUM LESS NEG
    PADV2 GREATER GREATER_EQUAL LESS_EQUAL SELECT SLICE SIN TRANSPOSE_CONV SPARSE_TO_DENSE TILE
    EXPAND_DIMS EQUAL NOT_EQUAL LOG SUM SQRT RSQRT SHAPE POW ARG_MIN FAKE_QUANT REDUCE_PROD
    REDUCE_MAX PACK LOGICAL_OR ONE_HOT LOGICAL_AND LOGICAL_NOT UNPACK REDUCE_MIN FLOOR_DIV
    REDUCE_ANY SQUARE ZEROS_LIKE FILL FLOOR_MOD RANGE RESIZE_NEAREST_NEIGHBOR LEAKY_RELU
    SQUARED_DIFFERENCE MIRROR_PAD ABS SPLIT_V UNIQUE CEIL REVERSE_V2 ADD_N GATHER_ND COS WHERE
    RANK ELU REVERSE_SEQUENCE MATRIX_DIAG QUANTIZE MATRIX_SET_DIAG ROUND HARD_SWISH IF WHILE
    NON_MAX_SUPPRESSION_V4 NON_MAX_SUPPRESSION_V5 SCATTER_ND SELECT_V2 DENSIFY SEGMENT_SUM
    BATCH_MATMUL PLACEHOLDER_FOR_GREATER_OP_CODES CUMSUM CALL_ONCE BROADCAST_TO RFFT2D CONV_3D
    IMAG REAL COMPLEX_ABS HASHTABLE HASHTABLE_FIND HASHTABLE_IMPORT HASHTABLE_SIZE REDUCE_ALL
    CONV_3D_TRANSPOSE VAR_HANDLE READ_VARIABLE ASSIGN_VARIABLE BROADCAST_ARGS
    RANDOM_STANDARD_NORMAL BUCKETIZE RANDOM_UNIFORM MULTINOMIAL GELU DYNAMIC_UPDATE_SLICE
    RELU_0_TO_1 UNSORTED_SEGMENT_PROD UNSORTED_SEGMENT_MAX UNSORTED_SEGMENT_SUM ATAN2
    UNSORTED_SEGMENT_MIN SIGN BITCAST BITWISE_XOR RIGHT_SHIFT STABLEHLO_LOGISTIC STABLEHLO_ADD
    STABLEHLO_DIVIDE STABLEHLO_MULTIPLY STABLEHLO_MAXIMUM STABLEHLO_RESHAPE STABLEHLO_CLAMP
    STABLEHLO_CONCATENATE STABLEHLO_BROADCAST_IN_DIM STABLEHLO_CONVOLUTION STABLEHLO_SLICE
    STABLEHLO_CUSTOM_CALL STABLEHLO_REDUCE STABLEHLO_ABS STABLEHLO_AND STABLEHLO_COSINE
    STABLEHLO_EXPONENTIAL STABLEHLO_FLOOR STABLEHLO_LOG STABLEHLO_MINIMUM STABLEHLO_NEGATE
    STABLEHLO_OR STABLEHLO_POWER STABLEHLO_REMAINDER STABLEHLO_RSQRT STABLEHLO_SELECT
    STABLEHLO_SUBTRACT STABLEHLO_TANH STABLEHLO_SCATTER STABLEHLO_COMPARE STABLEHLO_CONVERT
    STABLEHLO_DYNAMIC_SLICE STABLEHLO_DYNAMIC_UPDATE_SLICE STABLEHLO_PAD STABLEHLO_IOTA
    STABLEHLO_DOT_GENERAL STABLEHLO_REDUCE_WINDOW STABLEHLO_SORT STABLEHLO_WHILE
    STABLEHLO_GATHER STABLEHLO_TRANSPOSE DILATE STABLEHLO_RNG_BIT_GENERATOR REDUCE_WINDOW
    STABLEHLO_COMPOSITE STABLEHLO_SHIFT_LEFT STABLEHLO_CBRT STABLEHLO_CASE
""".split())

# TensorType code -> numpy dtype; types numpy cannot hold (string, int4, bfloat16, ...) map to None.
_DTYPES = {
    code: np.dtype(name)
    for code, name in {
        0: "<f4", 1: "<f2", 2: "<i4", 3: "u1", 4: "<i8", 6: "?", 7: "<i2", 8: "<c8",
        9: "i1", 10: "<f8", 11: "<c16", 12: "<u8", 15: "<u4", 16: "<u2",
    }.items()
}

_I8 = struct.Struct("<b")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_U16 = struct.Struct("<H")


@dataclass(frozen=True)
class TFLiteTensor:
    """One tensor of subgraph 0.

    ``data_offset`` is the absolute position of the tensor's bytes in the file
    (either layout), ``None`` when its buffer is empty (activations, inputs).
    ``shape_signature`` has -1 for dynamic dimensions; it equals ``shape`` when
    the file has none.
    """

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype | None
    buffer: int
    data_offset: int | None
    data_size: int
    shape_signature: tuple[int, ...] = ()
    quant_scales: tuple[int, int] = (0, 0)  # (absolute offset, count) of float32 scales; (0, 0) if none
    quant_zero_points: tuple[int, int] = (0, 0)  # (absolute offset, count) of int64 zero points


@dataclass(frozen=True)
class TFLiteOp:
    """One operator of subgraph 0; input index -1 marks an omitted optional input."""

    index: int
    opcode: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class TFLiteModel:
    """Subgraph 0 of a .tflite file: tensors, operators and who uses which buffer."""

    tensors: tuple[TFLiteTensor, ...]
    ops: tuple[TFLiteOp, ...]
    buffer_users: dict[int, tuple[int, ...]]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]

    def readers(self, tensor_index: int) -> tuple[tuple[int, int], ...]:
        """Return ``(operator index, input slot)`` for every operator input reading the tensor.

        The converter merges identical constants into one tensor, so a bias
        tensor may feed several operators; patching it changes all of them.
        """
        return tuple(
            (op.index, slot)
            for op in self.ops
            for slot, index in enumerate(op.inputs)
            if index == tensor_index
        )

    def tensors_sharing_data(self, tensor_index: int) -> tuple[int, ...]:
        """Return the other tensors whose data bytes overlap this tensor's.

        That covers tensors on the same buffer and, in the external layout,
        distinct buffers whose ranges alias (TF stores equal bytes once there).
        """
        this = self.tensors[tensor_index]
        if this.data_offset is None:
            return ()
        start, end = this.data_offset, this.data_offset + this.data_size
        return tuple(
            other.index
            for other in self.tensors
            if other.index != tensor_index
            and other.data_offset is not None
            and other.data_offset < end
            and start < other.data_offset + other.data_size
        )


class _Malformed(Exception):
    """Internal: the file is inconsistent; parse_tflite adds the file name."""


class _FlatBuffer:
    """Bounds-checked reads of FlatBuffer tables, scalars, vectors and strings.

    A table is the pair ``(position, slots)``; ``slots[i]`` is field i's offset
    in the table, 0 when absent. ``what``/``field`` only name things in errors.
    """

    def __init__(self, buf: bytes | bytearray | memoryview) -> None:
        self.buf = buf
        self.size = len(buf)
        self._vtables: dict[int, tuple[int, ...]] = {}

    def outside(self, what: str, pos: int, length: int) -> _Malformed:
        return _Malformed(
            f"{what} at offset {pos} (+{length} bytes) is outside the file ({self.size} bytes)"
        )

    def table(self, pos: int, what: str) -> tuple[int, tuple[int, ...]]:
        if pos < 0 or pos + 4 > self.size:
            raise self.outside(f"{what} table", pos, 4)
        vtable = pos - _I32.unpack_from(self.buf, pos)[0]
        slots = self._vtables.get(vtable)
        if slots is None:
            slots = self._read_vtable(vtable, what)
        return pos, slots

    def _read_vtable(self, vtable: int, what: str) -> tuple[int, ...]:
        if vtable < 0 or vtable + 4 > self.size:
            raise self.outside(f"{what} vtable", vtable, 4)
        vtable_size = _U16.unpack_from(self.buf, vtable)[0]
        if vtable_size < 4 or vtable_size % 2:
            raise _Malformed(f"{what} vtable at offset {vtable} has invalid size {vtable_size}")
        if vtable + vtable_size > self.size:
            raise self.outside(f"{what} vtable", vtable, vtable_size)
        slots = struct.unpack_from(f"<{(vtable_size - 4) // 2}H", self.buf, vtable + 4)
        self._vtables[vtable] = slots
        return slots

    def scalar(self, table, field_id, fmt: struct.Struct, default: int, what: str, field: str):
        pos, slots = table
        offset = slots[field_id] if field_id < len(slots) else 0
        if not offset:
            return default
        if pos + offset + fmt.size > self.size:
            raise self.outside(f"{what} {field}", pos + offset, fmt.size)
        return fmt.unpack_from(self.buf, pos + offset)[0]

    def vector(self, table, field_id, item_size: int, what: str, field: str) -> tuple[int, int]:
        """Return (position of the first element, element count); (0, 0) when absent."""
        pos, slots = table
        offset = slots[field_id] if field_id < len(slots) else 0
        if not offset:
            return 0, 0
        ref = pos + offset
        if ref + 4 > self.size:
            raise self.outside(f"{what} {field} reference", ref, 4)
        target = ref + _U32.unpack_from(self.buf, ref)[0]
        if target + 4 > self.size:
            raise self.outside(f"{what} {field}", target, 4)
        count = _U32.unpack_from(self.buf, target)[0]
        if target + 4 + count * item_size > self.size:
            raise self.outside(f"{what} {field} ({count} elements)", target + 4, count * item_size)
        return target + 4, count

    def int32s(self, table, field_id, what: str, field: str) -> tuple[int, ...]:
        start, count = self.vector(table, field_id, 4, what, field)
        return struct.unpack_from(f"<{count}i", self.buf, start) if count else ()

    def string(self, table, field_id, what: str, field: str) -> str:
        start, count = self.vector(table, field_id, 1, what, field)
        try:
            return str(self.buf[start : start + count], "utf-8")
        except UnicodeDecodeError:
            raise _Malformed(f"{what} {field} at offset {start} is not valid UTF-8") from None

    def subtable(self, table, field_id, what: str, field: str) -> int | None:
        """Return the position of the table a table field references, None when absent."""
        pos, slots = table
        offset = slots[field_id] if field_id < len(slots) else 0
        if not offset:
            return None
        ref = pos + offset
        if ref + 4 > self.size:
            raise self.outside(f"{what} {field} reference", ref, 4)
        return ref + _U32.unpack_from(self.buf, ref)[0]

    def tables(self, table, field_id, what: str, field: str) -> list[int]:
        """Return the positions of the tables a vector-of-tables field references."""
        start, count = self.vector(table, field_id, 4, what, field)
        refs = struct.unpack_from(f"<{count}I", self.buf, start) if count else ()
        return [start + 4 * i + ref for i, ref in enumerate(refs)]


def parse_tflite(data: bytes | bytearray | memoryview, source: str) -> TFLiteModel:
    """Read subgraph 0 of a .tflite file.

    Args:
        data: the whole file (bytes, bytearray, memoryview or mmap); not copied,
            and the returned offsets index into it.
        source: the file's name, used in error messages.

    Returns:
        A ``TFLiteModel``; tensor data is located, not copied.

    Raises:
        UsageError: ``data`` does not support the buffer protocol.
        BaseModelError: the file is not a TFLite flatbuffer, or any position,
            index or size in it is inconsistent.
    """
    buf = _as_buffer(data, "parse_tflite")
    if len(buf) < 8:
        raise BaseModelError(
            f"{source}: file is {len(buf)} bytes, too short for a TFLite header (8 bytes)"
        )
    identifier = bytes(buf[4:8])
    if identifier != FILE_IDENTIFIER:
        raise BaseModelError(
            f"{source}: not a TFLite model: file identifier is {identifier!r}, "
            f"expected {FILE_IDENTIFIER!r}"
        )
    try:
        return _read_model(_FlatBuffer(buf))
    except _Malformed as error:
        raise BaseModelError(f"{source}: {error}") from None


def _as_buffer(data, caller: str) -> bytes | bytearray | memoryview:
    if isinstance(data, (bytes, bytearray)):
        return data
    if isinstance(data, str):
        raise UsageError(f"{caller}() needs the file's bytes; received a str")
    try:
        view = memoryview(data)
    except TypeError:
        raise UsageError(
            f"{caller}() needs bytes, bytearray or memoryview; received {type(data).__name__}"
        ) from None
    if not view.c_contiguous:
        raise UsageError(f"{caller}() needs a contiguous buffer; received a strided memoryview")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def _read_model(fb: _FlatBuffer) -> TFLiteModel:
    model = fb.table(_U32.unpack_from(fb.buf, 0)[0], "model")
    opcodes = [
        _read_opcode(fb, fb.table(pos, f"operator code {i}"), f"operator code {i}")
        for i, pos in enumerate(fb.tables(model, 1, "model", "operator_codes"))
    ]
    subgraphs = fb.tables(model, 2, "model", "subgraphs")
    if not subgraphs:
        raise _Malformed("model has no subgraphs")
    buffers = fb.tables(model, 4, "model", "buffers")
    graph = fb.table(subgraphs[0], "subgraph 0")
    tensors = _read_tensors(fb, graph, buffers)
    ops = _read_ops(fb, graph, opcodes, len(tensors))
    inputs = fb.int32s(graph, 1, "subgraph 0", "inputs")
    outputs = fb.int32s(graph, 2, "subgraph 0", "outputs")
    _checked_indices(inputs, len(tensors), "subgraph 0 input")
    _checked_indices(outputs, len(tensors), "subgraph 0 output")
    users: dict[int, list[int]] = {}
    for tensor in tensors:
        users.setdefault(tensor.buffer, []).append(tensor.index)
    buffer_users = {buffer: tuple(indices) for buffer, indices in users.items()}
    return TFLiteModel(tuple(tensors), tuple(ops), buffer_users, inputs, outputs)


def _read_opcode(fb: _FlatBuffer, table, what: str) -> str:
    code = max(
        fb.scalar(table, 0, _I8, 0, what, "deprecated_builtin_code"),
        fb.scalar(table, 3, _I32, 0, what, "builtin_code"),
    )
    return _OP_NAMES[code] if 0 <= code < len(_OP_NAMES) else f"BUILTIN_{code}"


def _read_tensors(fb: _FlatBuffer, graph, buffers: list[int]) -> list[TFLiteTensor]:
    located: dict[int, tuple[int | None, int]] = {}
    tensors = []
    for index, pos in enumerate(fb.tables(graph, 0, "subgraph 0", "tensors")):
        what = f"tensor {index}"
        table = fb.table(pos, what)
        shape = fb.int32s(table, 0, what, "shape")
        dtype = _DTYPES.get(fb.scalar(table, 1, _I8, 0, what, "type"))
        buffer = fb.scalar(table, 2, _U32, 0, what, "buffer")
        name = fb.string(table, 3, what, "name")
        signature = fb.int32s(table, 7, what, "shape_signature") or shape
        scales, zero_points = _read_quantization(fb, table, what)
        if buffer >= len(buffers):
            raise _Malformed(
                f"{what} ({name!r}): buffer index {buffer} is out of range "
                f"(model has {len(buffers)} buffers)"
            )
        if buffer not in located:
            located[buffer] = _locate_buffer(fb, buffers[buffer], buffer)
        data_offset, data_size = located[buffer]
        if data_offset is not None and dtype is not None:
            _check_data_size(what, name, buffer, shape, dtype, data_size)
        tensors.append(
            TFLiteTensor(index, name, shape, dtype, buffer, data_offset, data_size, signature, scales, zero_points)
        )
    return tensors


def _read_quantization(fb: _FlatBuffer, table, what: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Locate a tensor's QuantizationParameters scale [float] (field 2) and zero_point [long] (field 3)."""
    pos = fb.subtable(table, 4, what, "quantization")
    if pos is None:
        return (0, 0), (0, 0)
    quantization = fb.table(pos, f"{what} quantization")
    scales = fb.vector(quantization, 2, 4, f"{what} quantization", "scale")
    zero_points = fb.vector(quantization, 3, 8, f"{what} quantization", "zero_point")
    return scales, zero_points


def _locate_buffer(fb: _FlatBuffer, pos: int, index: int) -> tuple[int | None, int]:
    """Return (absolute data offset or None if empty, data size) of one Buffer."""
    what = f"buffer {index}"
    table = fb.table(pos, what)
    start, count = fb.vector(table, 0, 1, what, "data")
    offset = fb.scalar(table, 1, _U64, 0, what, "offset")
    # LiteRT reads offset 0 and 1 as "not external"; 1 is the converter's placeholder.
    if offset <= 1:
        return (start, count) if count else (None, 0)
    if count:
        raise _Malformed(
            f"{what} has both inline data ({count} bytes) and an external offset ({offset})"
        )
    size = fb.scalar(table, 2, _U64, 0, what, "size")
    if offset + size > fb.size:
        raise fb.outside(f"{what} external data", offset, size)
    return (offset, size) if size else (None, 0)


def _check_data_size(what, name, buffer, shape, dtype: np.dtype, data_size: int) -> None:
    expected = math.prod(shape) * dtype.itemsize
    if data_size != expected or min(shape, default=0) < 0:
        raise _Malformed(
            f"{what} ({name!r}): buffer {buffer} holds {data_size} bytes, "
            f"but shape {list(shape)} of {dtype.name} needs {expected}"
        )


def _read_ops(fb: _FlatBuffer, graph, opcodes: list[str], tensor_count: int) -> list[TFLiteOp]:
    ops = []
    for index, pos in enumerate(fb.tables(graph, 3, "subgraph 0", "operators")):
        what = f"operator {index}"
        table = fb.table(pos, what)
        code = fb.scalar(table, 0, _U32, 0, what, "opcode_index")
        if code >= len(opcodes):
            raise _Malformed(
                f"{what}: opcode index {code} is out of range "
                f"(model has {len(opcodes)} operator codes)"
            )
        where = f"{what} ({opcodes[code]})"
        inputs = fb.int32s(table, 1, what, "inputs")
        outputs = fb.int32s(table, 2, what, "outputs")
        # -1 marks an omitted optional input, never an output.
        if inputs and (min(inputs) < -1 or max(inputs) >= tensor_count):
            _checked_indices(tuple(i for i in inputs if i != -1), tensor_count, f"{where} input")
        _checked_indices(outputs, tensor_count, f"{where} output")
        ops.append(TFLiteOp(index, opcodes[code], inputs, outputs))
    return ops


def _checked_indices(indices: tuple[int, ...], tensor_count: int, what: str) -> tuple[int, ...]:
    for index in indices:
        if not 0 <= index < tensor_count:
            raise _Malformed(
                f"{what} tensor index {index} is out of range "
                f"(subgraph 0 has {tensor_count} tensors)"
            )
    return indices
