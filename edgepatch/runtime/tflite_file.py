"""Read the few fields edgepatch needs from a .tflite file, with ``struct`` only.

A .tflite file is a FlatBuffer holding a TFLite ``Model``. The layout and the
fields read are specified in ``edgepatch/format/spec.rst``, section *Bases*
(Reading a .tflite base); the Java loader reads the same. This module reads it
without the ``flatbuffers`` package, subgraph 0 only, and never copies tensor
data: it reports where the bytes lie, in either buffer layout (inline or
external). Every position read from the file is checked against the file size
before use; any inconsistency raises ``BaseModelError`` naming the file and
what is wrong.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from edgepatch.errors import BaseModelError
from edgepatch.runtime.buffers import as_buffer
from edgepatch.runtime.tflite_schema import DTYPES, OP_NAMES

FILE_IDENTIFIER = b"TFL3"

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
    buf = as_buffer(data, "parse_tflite")
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
    return OP_NAMES[code] if 0 <= code < len(OP_NAMES) else f"BUILTIN_{code}"


def _read_tensors(fb: _FlatBuffer, graph, buffers: list[int]) -> list[TFLiteTensor]:
    located: dict[int, tuple[int | None, int]] = {}
    tensors = []
    for index, pos in enumerate(fb.tables(graph, 0, "subgraph 0", "tensors")):
        what = f"tensor {index}"
        table = fb.table(pos, what)
        shape = fb.int32s(table, 0, what, "shape")
        dtype = DTYPES.get(fb.scalar(table, 1, _I8, 0, what, "type"))
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
