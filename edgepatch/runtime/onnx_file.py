"""Read the few fields edgepatch needs from a .onnx file, with the standard library only.

An .onnx file is a protobuf ``ModelProto`` (``onnx/onnx.proto``). The runtime
must not depend on the ``onnx`` package, so this module walks the protobuf wire
format itself, and the Java loader can mirror it. It never copies initializer
data: it reports where the ``raw_data`` bytes lie in the file.

Protobuf wire format in one paragraph: a message is a sequence of fields. Each
field starts with a varint key ``field_number << 3 | wire_type``. Wire type 0
is a varint (7 bits per byte, low bits first, high bit set on all but the last
byte, at most 10 bytes), 1 is 8 fixed bytes, 5 is 4 fixed bytes, and 2 is a
varint length followed by that many bytes (strings, bytes, nested messages,
packed repeated scalars). Wire types 3 and 4 (groups) are not used by ONNX.
A field may repeat; for a nested message, repeats merge.

Fields read (number, name, type):

- ModelProto: 7 graph GraphProto
- GraphProto: 1 node [NodeProto], 5 initializer [TensorProto],
  11 input [ValueInfoProto], 12 output [ValueInfoProto]
- ValueInfoProto: 1 name string
- NodeProto: 1 input [string], 2 output [string], 3 name string,
  4 op_type string, 5 attribute [AttributeProto]
- AttributeProto: 1 name string, 3 i int64, 20 type (2 = INT)
- TensorProto: 1 dims [int64] (packed or not), 2 data_type int32, 8 name string,
  9 raw_data bytes, 13 external_data, 14 data_location (1 = EXTERNAL)

Initializers stored in external files are rejected. Every length read from the
file is checked against the end of its enclosing message before use; any
inconsistency raises ``BaseModelError`` naming the file and what is wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgepatch.errors import BaseModelError
from edgepatch.runtime.buffers import as_buffer

# TensorProto.DataType -> numpy dtype; types numpy cannot hold (string, bfloat16, float8, int4,
# ...) map to None.
_DTYPES = {
    code: np.dtype(name)
    for code, name in {
        1: "<f4", 2: "u1", 3: "i1", 4: "<u2", 5: "<i2", 6: "<i4", 7: "<i8", 9: "?",
        10: "<f2", 11: "<f8", 12: "<u4", 13: "<u8", 14: "<c8", 15: "<c16",
    }.items()
}

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
_ATTRIBUTE_INT = 2
_DATA_LOCATION_EXTERNAL = 1


@dataclass(frozen=True)
class OnnxInitializer:
    """One graph initializer.

    ``data_offset`` is the absolute position of its ``raw_data`` bytes in the
    file, ``None`` when the tensor keeps its values in typed fields
    (``float_data``, ...) instead; ``data_size`` is then 0.
    """

    name: str
    dims: tuple[int, ...]
    dtype: np.dtype | None
    data_offset: int | None
    data_size: int


@dataclass(frozen=True)
class OnnxNode:
    """One graph node; ``int_attrs`` holds its INT attributes (``group``, ...)."""

    op_type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    int_attrs: dict[str, int]


@dataclass(frozen=True)
class OnnxModel:
    """The main graph of an .onnx file: initializers by name, nodes, graph inputs/outputs."""

    initializers: dict[str, OnnxInitializer]
    nodes: tuple[OnnxNode, ...]
    graph_inputs: tuple[str, ...]
    graph_outputs: tuple[str, ...]


class _Malformed(Exception):
    """Internal: the file is inconsistent; parse_onnx adds the file name."""


class _Protobuf:
    """Bounds-checked walk over protobuf messages; ``what`` only names things in errors."""

    def __init__(self, buf) -> None:
        self.buf = buf

    def varint(self, pos: int, end: int, what: str) -> tuple[int, int]:
        """Return (value, position after it) of the varint at ``pos``."""
        buf = self.buf
        value = shift = 0
        while shift < 70:
            if pos >= end:
                raise _Malformed(f"{what}: varint runs past the end of its message at offset {end}")
            byte = buf[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value, pos
            shift += 7
        raise _Malformed(f"{what}: varint at offset {pos - 10} is longer than 10 bytes")

    def fields(self, start: int, end: int, what: str):
        """Yield (field number, wire type, a, b) for each field of the message in [start, end).

        For a varint, ``a`` is the value; for every other wire type, [a, b) is
        the field's payload.
        """
        buf = self.buf
        pos = start
        while pos < end:
            # Keys and most lengths are one byte: decode those inline, for speed.
            key_pos, key = pos, buf[pos]
            if key < 0x80:
                pos += 1
            else:
                key, pos = self.varint(pos, end, what)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise _Malformed(f"{what}: field number 0 at offset {key_pos} is invalid")
            if wire == _VARINT:
                value, pos = self.varint(pos, end, what)
                yield number, wire, value, pos
                continue
            if wire == _LEN:
                if pos < end and buf[pos] < 0x80:
                    length = buf[pos]
                    pos += 1
                else:
                    length, pos = self.varint(pos, end, what)
            elif wire == _FIXED64:
                length = 8
            elif wire == _FIXED32:
                length = 4
            else:
                raise _Malformed(f"{what}: field {number} has unsupported wire type {wire}")
            if pos + length > end:
                raise _Malformed(
                    f"{what}: field {number} at offset {pos} (+{length} bytes) runs past "
                    f"the end of its message at offset {end}"
                )
            yield number, wire, pos, pos + length
            pos += length

    def string(self, start: int, end: int, what: str) -> str:
        try:
            return str(self.buf[start:end], "utf-8")
        except UnicodeDecodeError:
            raise _Malformed(f"{what}: string at offset {start} is not valid UTF-8") from None

    def int64s(self, start: int, end: int, what: str) -> list[int]:
        """Decode a packed run of varint int64 values."""
        values = []
        pos = start
        while pos < end:
            value, pos = self.varint(pos, end, what)
            values.append(_signed64(value))
        return values


def _signed64(value: int) -> int:
    """Read a varint as int64 (two's complement); bits above 64 are dropped, as protobuf does."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def _expect(wire: int, expected: int, number: int, what: str) -> None:
    if wire != expected:
        raise _Malformed(f"{what}: field {number} has wire type {wire}, expected {expected}")


def parse_onnx(data: bytes | bytearray | memoryview, source: str) -> OnnxModel:
    """Read the main graph of an .onnx file.

    Args:
        data: the whole file (bytes, bytearray, memoryview or mmap); not copied,
            and the returned offsets index into it.
        source: the file's name, used in error messages.

    Returns:
        An ``OnnxModel``; initializer data is located, not copied.

    Raises:
        UsageError: ``data`` does not support the buffer protocol.
        BaseModelError: the file is not a valid ModelProto, has no graph, has
            inconsistent sizes, or stores an initializer in an external file.
    """
    pb = _Protobuf(as_buffer(data, "parse_onnx"))
    try:
        return _read_model(pb, len(pb.buf))
    except _Malformed as error:
        raise BaseModelError(f"{source}: {error}") from None


def _read_model(pb: _Protobuf, size: int) -> OnnxModel:
    graphs = []
    for number, wire, start, end in pb.fields(0, size, "model"):
        if number == 7:
            _expect(wire, _LEN, number, "model")
            graphs.append((start, end))
    if not graphs:
        raise _Malformed("model has no graph (ModelProto field 7)")
    initializers: dict[str, OnnxInitializer] = {}
    nodes: list[OnnxNode] = []
    inputs: list[str] = []
    outputs: list[str] = []
    # Repeated occurrences of a message field merge: their repeated fields concatenate.
    for start, end in graphs:
        _read_graph(pb, start, end, initializers, nodes, inputs, outputs)
    return OnnxModel(initializers, tuple(nodes), tuple(inputs), tuple(outputs))


def _read_graph(pb, start, end, initializers, nodes, inputs, outputs) -> None:
    for number, wire, a, b in pb.fields(start, end, "graph"):
        if number == 1:
            _expect(wire, _LEN, number, "graph")
            nodes.append(_read_node(pb, a, b, f"graph node {len(nodes)}"))
        elif number == 5:
            _expect(wire, _LEN, number, "graph")
            tensor = _read_initializer(pb, a, b, f"graph initializer {len(initializers)}")
            if tensor.name in initializers:
                raise _Malformed(f"graph has two initializers named {tensor.name!r}")
            initializers[tensor.name] = tensor
        elif number in (11, 12):
            _expect(wire, _LEN, number, "graph")
            names, kind = (inputs, "input") if number == 11 else (outputs, "output")
            names.append(_read_value_info_name(pb, a, b, f"graph {kind} {len(names)}"))


def _read_value_info_name(pb: _Protobuf, start: int, end: int, what: str) -> str:
    name = ""
    for number, wire, a, b in pb.fields(start, end, what):
        if number == 1:
            _expect(wire, _LEN, number, what)
            name = pb.string(a, b, what)
    return name


def _read_node(pb: _Protobuf, start: int, end: int, what: str) -> OnnxNode:
    inputs, outputs, int_attrs = [], [], {}
    name = op_type = ""
    for number, wire, a, b in pb.fields(start, end, what):
        if number in (1, 2, 3, 4):
            _expect(wire, _LEN, number, what)
            text = pb.string(a, b, what)
            if number == 1:
                inputs.append(text)
            elif number == 2:
                outputs.append(text)
            elif number == 3:
                name = text
            else:
                op_type = text
        elif number == 5:
            _expect(wire, _LEN, number, what)
            attr_name, value = _read_int_attribute(pb, a, b, f"{what} attribute")
            if value is not None:
                int_attrs[attr_name] = value
    return OnnxNode(op_type, name, tuple(inputs), tuple(outputs), int_attrs)


def _read_int_attribute(pb: _Protobuf, start: int, end: int, what: str) -> tuple[str, int | None]:
    """Return (name, value) of an INT attribute, (name, None) for any other type."""
    name, value, kind = "", None, None
    for number, wire, a, b in pb.fields(start, end, what):
        if number == 1:
            _expect(wire, _LEN, number, what)
            name = pb.string(a, b, what)
        elif number == 3:
            _expect(wire, _VARINT, number, what)
            value = _signed64(a)
        elif number == 20:
            _expect(wire, _VARINT, number, what)
            kind = a
    # Old writers leave `type` unset; an attribute with `i` set is then an INT.
    if kind not in (None, _ATTRIBUTE_INT):
        return name, None
    return name, value


def _read_initializer(pb: _Protobuf, start: int, end: int, what: str) -> OnnxInitializer:
    dims: list[int] = []
    data_type, name, raw, external = 0, "", None, False
    for number, wire, a, b in pb.fields(start, end, what):
        if number == 1:
            if wire == _LEN:
                dims.extend(pb.int64s(a, b, f"{what} dims"))
            else:
                _expect(wire, _VARINT, number, what)
                dims.append(_signed64(a))
        elif number == 2:
            _expect(wire, _VARINT, number, what)
            data_type = a
        elif number == 8:
            _expect(wire, _LEN, number, what)
            name = pb.string(a, b, what)
        elif number == 9:
            _expect(wire, _LEN, number, what)
            raw = (a, b - a)
        elif number == 13 or (number == 14 and wire == _VARINT and a == _DATA_LOCATION_EXTERNAL):
            external = True
    label = f"{what} ({name!r})"
    if external:
        raise _Malformed(f"{label} stores its data in an external file, which is not supported")
    if min(dims, default=0) < 0:
        raise _Malformed(f"{label} has a negative dimension in dims {dims}")
    dtype = _DTYPES.get(data_type)
    if raw is not None and dtype is not None:
        expected = math.prod(dims) * dtype.itemsize
        if raw[1] != expected:
            raise _Malformed(
                f"{label}: raw_data holds {raw[1]} bytes, but dims {dims} of {dtype.name} "
                f"need {expected}"
            )
    data_offset, data_size = raw if raw is not None else (None, 0)
    return OnnxInitializer(name, tuple(dims), dtype, data_offset, data_size)
