"""Rewrite .tflite files for edgepatch: stable tensor names, private constants, buffer layout.

Converter-side only (uses ``flatbuffers`` and the LiteRT schema object API);
the runtime reads the result with ``edgepatch.runtime.tflite_file``.

Why these rewrites exist:

- The converter names tensors with fused strings (``a/BiasAdd;a/conv;...``), so
  the base gives each patch-site tensor an exact name (spec: *Site naming*).
- The converter merges equal constants twice over: equal tensors (same type,
  shape and bytes) become *one tensor* read by several operators, and equal
  bytes behind different tensors become *one buffer*. Patching such a constant
  in place would change every user. ``split_shared_inputs`` gives operator
  inputs their own tensor and buffer; ``rewrite_tflite(unshare=...)`` gives
  tensors their own buffer.
- Buffers come in two layouts (spec: *Bases*, Reading a .tflite base). Every function here
  accepts both and writes the inline layout, except ``to_external_buffer_layout``.

Inline buffer data is written 16-byte aligned, as the schema asks
(``data: [ubyte] (force_align: 16)``) and the TF converter does.
"""

from __future__ import annotations

import copy
import struct
from collections.abc import Iterable, Mapping

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from edgepatch.errors import BaseModelError, UsageError
from edgepatch.runtime.tflite_file import FILE_IDENTIFIER, parse_tflite

ALIGNMENT = 16
# Metadata the TF converter adds to files in the external layout; dropped when inlining.
_BUFFER_LOCATION = b"buffer_location"
_OUTSIDE_FLATBUFFERS = b"outside flatbuffers"
_BIASED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


class _AlignedBufferT(schema.BufferT):
    """A BufferT whose data vector starts on a 16-byte boundary of the file."""

    def Pack(self, builder: flatbuffers.Builder) -> int:  # noqa: N802 (flatbuffers API name)
        data_vector = None
        if self.data is not None:
            payload = self.data.tobytes() if isinstance(self.data, np.ndarray) else bytes(self.data)
            # Align the end of the payload; the builder writes back to front and
            # Finish pads the whole file to the largest alignment used (16).
            builder.Prep(ALIGNMENT, len(payload))
            data_vector = builder.CreateByteVector(payload)
        schema.BufferStart(builder)
        if data_vector is not None:
            schema.BufferAddData(builder, data_vector)
        schema.BufferAddOffset(builder, self.offset)
        schema.BufferAddSize(builder, self.size)
        return schema.BufferEnd(builder)


def rewrite_tflite(
    data: bytes,
    renames: Mapping[int, str],
    unshare: Iterable[int],
    *,
    add_biases: Mapping[int, tuple[str, np.ndarray]] | None = None,
    source: str = "<tflite bytes>",
) -> bytes:
    """Rename tensors, give tensors private buffers, add dropped biases; write the inline layout.

    Args:
        data: a .tflite file, in either buffer layout.
        renames: tensor index (subgraph 0) -> new exact tensor name. Names must
            stay unique among the tensors of subgraph 0.
        unshare: tensor indices (subgraph 0) whose buffer must belong to that
            tensor only. A buffer also used by another tensor (in any subgraph)
            or by metadata is copied into a new buffer for this tensor.
            This does not split a tensor read by several operators; use
            ``split_shared_inputs`` for that.
        add_biases: operator index -> (tensor name, float32 values [O]) for
            CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED operators without a
            bias input (the converter drops an all-zero FC bias, leaving
            input 2 as -1). Each gets a new bias tensor with its own buffer.
        source: name of the input in error messages.

    Returns:
        The rewritten file, inline layout. Description, version, signature defs
        and metadata are kept (except TF's ``buffer_location`` marker).

    Raises:
        BaseModelError: ``data`` is not a valid .tflite file.
        UsageError: an index is out of range, a name is empty or not unique,
            or an unshared tensor has no constant data.
    """
    parsed = parse_tflite(data, source)
    add_biases = _checked_biases(add_biases or {}, parsed, source)
    renames = _checked_renames(renames, parsed, source, [name for name, _ in add_biases.values()])
    unshare = _checked_constants(unshare, parsed, source, "unshare")
    model = _load_inline(data, source)
    tensors = model.subgraphs[0].tensors
    for index in unshare:
        _give_own_buffer(model, tensors[index])
    for index, name in renames.items():
        tensors[index].name = name
    for op, (name, values) in add_biases.items():
        _add_bias(model, op, name, values)
    return _pack(model)


def split_shared_inputs(
    data: bytes,
    slots: Iterable[tuple[int, int]],
    *,
    source: str = "<tflite bytes>",
) -> tuple[bytes, dict[tuple[int, int], int]]:
    """Give operator inputs a private tensor and buffer; write the inline layout.

    For each ``(operator index, input slot)`` of subgraph 0: if its constant
    tensor is read by any other operator input or is a subgraph input/output,
    the slot gets a new copy of the tensor (named ``{name}_split_{op}_{slot}``)
    with a new copy of the buffer, and other readers keep the original. If all
    readers are listed, the first keeps the original. A tensor that keeps its
    slot also gets a private buffer.

    Args:
        data: a .tflite file, in either buffer layout.
        slots: ``(operator index, input slot)`` pairs, each reading a constant.
        source: name of the input in error messages.

    Returns:
        ``(new file, {slot: tensor index now private to that slot})``.

    Raises:
        BaseModelError: ``data`` is not a valid .tflite file.
        UsageError: a slot is out of range or does not read a constant tensor.
    """
    parsed = parse_tflite(data, source)
    slots = _checked_slots(slots, parsed, source)
    model = _load_inline(data, source)
    graph = model.subgraphs[0]
    private: dict[tuple[int, int], int] = {}
    for tensor_index in sorted({parsed.ops[op].inputs[slot] for op, slot in slots}):
        readers = parsed.readers(tensor_index)
        wanted = [reader for reader in readers if reader in slots]
        graph_io = parsed.inputs + parsed.outputs
        read_elsewhere = len(readers) > len(wanted) or tensor_index in graph_io
        keeper = None if read_elsewhere else wanted[0]
        for op, slot in wanted:
            if (op, slot) == keeper:
                private[(op, slot)] = tensor_index
                _give_own_buffer(model, graph.tensors[tensor_index])
            else:
                private[(op, slot)] = _copy_tensor_for(model, tensor_index, op, slot)
    return _pack(model), private


def to_external_buffer_layout(data: bytes, *, source: str = "<tflite bytes>") -> bytes:
    """Re-emit a .tflite file with tensor data after the flatbuffer, as TF does for big files.

    Every non-empty buffer a tensor uses gets ``offset``/``size`` (absolute,
    16-byte aligned) instead of inline ``data``; metadata buffers stay inline.
    The flatbuffer is packed with placeholder values (1) so both u64 fields
    exist in the table, then the data is appended and the fields patched, the
    way TF's exporter does it. A ``buffer_location`` metadata entry marks the
    file, as TF's does; 16 zero bytes end the file (XNNPACK may read past the
    last buffer).

    Raises:
        BaseModelError: ``data`` is not a valid .tflite file.
    """
    parse_tflite(data, source)
    model = _load_inline(data, source)
    payloads: dict[int, bytes] = {}
    for graph in model.subgraphs or []:
        for tensor in graph.tensors or []:
            buffer = model.buffers[tensor.buffer]
            if tensor.buffer not in payloads and buffer.data is not None and len(buffer.data):
                payloads[tensor.buffer] = bytes(buffer.data)
                model.buffers[tensor.buffer] = schema.BufferT(data=None, offset=1, size=1)
    _add_metadata(model, _BUFFER_LOCATION, _OUTSIDE_FLATBUFFERS)
    out = bytearray(_pack(model))
    located = {}
    for index, payload in sorted(payloads.items()):
        out += bytes(-len(out) % ALIGNMENT)
        located[index] = (len(out), len(payload))
        out += payload
    out += bytes(-len(out) % ALIGNMENT + ALIGNMENT)
    packed = schema.Model.GetRootAs(out, 0)
    for index, (offset, size) in located.items():
        table = packed.Buffers(index)._tab
        struct.pack_into("<Q", out, table.Pos + table.Offset(6), offset)
        struct.pack_into("<Q", out, table.Pos + table.Offset(8), size)
    return bytes(out)


def _load_inline(data: bytes, source: str) -> schema.ModelT:
    """Unpack the whole model; move external buffer data inline."""
    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
    except (IndexError, ValueError, struct.error) as error:
        raise BaseModelError(f"{source}: cannot unpack the model: {error}") from None
    for buffer in model.buffers or []:
        if buffer.offset > 1:
            buffer.data = np.frombuffer(data, np.uint8, count=buffer.size, offset=buffer.offset)
        buffer.offset = buffer.size = 0
    for graph in model.subgraphs or []:
        for op in graph.operators or []:
            if op.largeCustomOptionsOffset > 1:
                start = op.largeCustomOptionsOffset
                op.customOptions = np.frombuffer(
                    data, np.uint8, count=op.largeCustomOptionsSize, offset=start
                )
            op.largeCustomOptionsOffset = op.largeCustomOptionsSize = 0
    for entry in list(model.metadata or []):
        if entry.name == _BUFFER_LOCATION:
            model.metadata.remove(entry)
            model.buffers[entry.buffer].data = None
    return model


def _pack(model: schema.ModelT) -> bytes:
    model.buffers = [
        _AlignedBufferT(data=buffer.data, offset=buffer.offset, size=buffer.size)
        for buffer in model.buffers or []
    ]
    builder = flatbuffers.Builder(1024 + sum(_data_size(b) for b in model.buffers))
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def _data_size(buffer: schema.BufferT) -> int:
    return 0 if buffer.data is None else len(buffer.data)


def _buffer_users(model: schema.ModelT, buffer_index: int) -> int:
    tensors = sum(
        tensor.buffer == buffer_index
        for graph in model.subgraphs or []
        for tensor in graph.tensors or []
    )
    return tensors + sum(entry.buffer == buffer_index for entry in model.metadata or [])


def _give_own_buffer(model: schema.ModelT, tensor: schema.TensorT) -> None:
    if _buffer_users(model, tensor.buffer) > 1:
        model.buffers.append(schema.BufferT(data=bytes(model.buffers[tensor.buffer].data)))
        tensor.buffer = len(model.buffers) - 1


def _copy_tensor_for(model: schema.ModelT, tensor_index: int, op: int, slot: int) -> int:
    graph = model.subgraphs[0]
    tensor = copy.deepcopy(graph.tensors[tensor_index])
    tensor.name = f"{_text(tensor.name)}_split_{op}_{slot}"
    model.buffers.append(schema.BufferT(data=bytes(model.buffers[tensor.buffer].data)))
    tensor.buffer = len(model.buffers) - 1
    graph.tensors.append(tensor)
    graph.operators[op].inputs = [int(i) for i in graph.operators[op].inputs]
    graph.operators[op].inputs[slot] = len(graph.tensors) - 1
    return len(graph.tensors) - 1


def _add_metadata(model: schema.ModelT, name: bytes, value: bytes) -> None:
    model.buffers.append(schema.BufferT(data=value))
    entry = schema.MetadataT()
    entry.name, entry.buffer = name, len(model.buffers) - 1
    model.metadata = (model.metadata or []) + [entry]


def _text(name: bytes | str | None) -> str:
    return name.decode("utf-8") if isinstance(name, bytes) else (name or "")


def _checked_renames(renames, parsed, source: str, new_names: list[str]) -> dict[int, str]:
    if not isinstance(renames, Mapping):
        raise UsageError(
            f"renames must map tensor index to name; received {type(renames).__name__}"
        )
    count = len(parsed.tensors)
    for index, name in renames.items():
        _check_tensor_index(index, count, source, "renames")
        if not isinstance(name, str) or not name:
            raise UsageError(f"renames[{index}] must be a non-empty str; received {name!r}")
    names = [renames.get(tensor.index, tensor.name) for tensor in parsed.tensors]
    for index, name in renames.items():
        others = [i for i, other in enumerate(names) if other == name and i != index]
        if others:
            raise UsageError(
                f"{source}: renaming tensor {index} to {name!r} would clash with tensor {others[0]}"
            )
    for name in new_names:
        if new_names.count(name) > 1 or name in names:
            raise UsageError(f"{source}: added bias name {name!r} is not unique")
    return dict(renames)


def _checked_biases(add_biases, parsed, source: str) -> dict[int, tuple[str, np.ndarray]]:
    checked = {}
    for op, (name, values) in add_biases.items():
        if not (isinstance(op, int) and 0 <= op < len(parsed.ops)):
            raise UsageError(
                f"{source}: add_biases: operator index must be an int in "
                f"[0, {len(parsed.ops)}); received {op!r}"
            )
        entry = parsed.ops[op]
        where = f"{source}: add_biases: operator {op} ({entry.opcode})"
        if entry.opcode not in _BIASED_OPS:
            raise UsageError(f"{where} is not one of {', '.join(_BIASED_OPS)}")
        if len(entry.inputs) > 2 and entry.inputs[2] != -1:
            raise UsageError(f"{where} already has bias tensor {entry.inputs[2]}")
        kernel = parsed.tensors[entry.inputs[1]].shape
        channels = kernel[-1] if entry.opcode == "DEPTHWISE_CONV_2D" else kernel[0]
        values = np.asarray(values)
        if values.dtype != np.float32 or values.shape != (channels,):
            raise UsageError(
                f"{where}: bias must be float32 of shape [{channels}]; "
                f"received {values.dtype} of shape {list(values.shape)}"
            )
        if not isinstance(name, str) or not name:
            raise UsageError(f"{where}: bias name must be a non-empty str; received {name!r}")
        checked[op] = (name, values)
    return checked


def _add_bias(model: schema.ModelT, op: int, name: str, values: np.ndarray) -> None:
    graph = model.subgraphs[0]
    model.buffers.append(schema.BufferT(data=values.astype("<f4").tobytes()))
    tensor = schema.TensorT()
    tensor.shape, tensor.type, tensor.name = [len(values)], schema.TensorType.FLOAT32, name
    tensor.buffer = len(model.buffers) - 1
    graph.tensors.append(tensor)
    inputs = [int(i) for i in graph.operators[op].inputs]
    graph.operators[op].inputs = inputs[:2] + [len(graph.tensors) - 1] + inputs[3:]


def _checked_constants(indices: Iterable[int], parsed, source: str, what: str) -> list[int]:
    checked = []
    for index in indices:
        _check_tensor_index(index, len(parsed.tensors), source, what)
        tensor = parsed.tensors[index]
        if tensor.data_offset is None:
            raise UsageError(
                f"{source}: {what}: tensor {index} ({tensor.name!r}) has no constant data"
            )
        if index not in checked:
            checked.append(index)
    return checked


def _check_tensor_index(index, count: int, source: str, what: str) -> None:
    is_int = isinstance(index, (int, np.integer)) and not isinstance(index, bool)
    if not (is_int and 0 <= index < count):
        raise UsageError(
            f"{source}: {what}: tensor index must be an int in [0, {count}); received {index!r}"
        )


def _checked_slots(slots: Iterable[tuple[int, int]], parsed, source: str) -> list[tuple[int, int]]:
    checked = []
    for pair in slots:
        op, slot = pair
        if not (isinstance(op, int) and 0 <= op < len(parsed.ops)):
            raise UsageError(
                f"{source}: operator index must be an int in [0, {len(parsed.ops)}); "
                f"received {op!r}"
            )
        inputs = parsed.ops[op].inputs
        if not (isinstance(slot, int) and 0 <= slot < len(inputs)) or inputs[slot] == -1:
            raise UsageError(
                f"{source}: operator {op} ({parsed.ops[op].opcode}) has no input slot {slot!r}"
            )
        _checked_constants([inputs[slot]], parsed, source, f"operator {op} input {slot}")
        if (op, slot) not in checked:
            checked.append((op, slot))
    return checked
