"""int8 task deltas: the ``"int8_delta"`` file kind of the container in ``edgepatch.delta``.

An int8 base and a task's int8 model come from the same converter on the
same BN-free graph, so they have the same tensors in the same order. With
per-channel symmetric weight quantization, a per-channel scale ``r`` of the
task changes only the weight scales (``scale · |r|``; int8 values keep their
magnitude and flip sign where ``r < 0``). The delta therefore holds, keyed by
tensor index in the base (structure, not names):

- new quantization parameters of tensors whose scale or zero point differ
  (weights, biases and the task's calibrated activation ranges);
- the raw bytes of tensors whose data differ (int32 biases, sign-flipped or
  re-learned int8 kernels, the head).

Container tensors (all names exact):

- ``"scale"``: float32, the concatenated new scale vectors, in ``quant`` order;
- ``"zero_point"``: int32, the concatenated new zero points, in ``quant`` order;
- ``"data/{index}"``: uint8, the new raw bytes of tensor ``index``;
- ``"at/{index}"`` (int32) and ``"put/{index}"`` (uint8), of equal length: a
  sparse edit of tensor ``index``, byte ``at[k]`` of its data becomes
  ``put[k]`` (positions ascending, unique); used when few bytes change, e.g.
  a kernel whose int8 values changed only where rounding or a sign did.

``meta`` is an object with exactly: ``"task"`` (as in a float delta),
``"base_sha256"`` (``{"tflite_int8": hex}``: the exact int8 base bytes) and
``"quant"``: an array of ``[tensor_index, scale_count, zero_point_count]``,
indices ascending and unique; a count is the base tensor's vector length, or
0 when that vector is unchanged. The sums of the counts equal the lengths of
``"scale"`` and ``"zero_point"``. A reader checks the container first (all
steps in ``edgepatch.delta``), then these rules (``HeaderError``), then, when
applying, that every index exists in the base and every count and byte size
equals the base tensor's (``ShapeMismatchError``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from edgepatch.delta import (
    TaskInfo,
    decode_tensor_file,
    read_tensor_file,
    task_from_json,
    task_to_json,
    write_tensor_file,
)
from edgepatch.errors import HeaderError

FILE_KIND = "int8_delta"
BASE_FORMAT = "tflite_int8"
_DATA_NAME = re.compile(r"^(data|at|put)/(0|[1-9][0-9]{0,8})$")


@dataclass(frozen=True)
class Int8Delta:
    task: TaskInfo
    base_sha256: str
    quant: tuple[tuple[int, int, int], ...]  # (tensor index, scale count, zero-point count)
    scales: np.ndarray  # float32, packed
    zero_points: np.ndarray  # int32, packed
    data: dict[int, np.ndarray]  # tensor index -> uint8 raw bytes
    edits: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # index -> (at, put)

    @property
    def kinds(self) -> tuple[str, ...]:
        return ("int8",)


def write_int8_delta(path: str, delta: Int8Delta) -> int:
    """Write ``delta`` atomically; return the bytes written."""
    tensors = {"scale": np.asarray(delta.scales, np.float32), "zero_point": np.asarray(delta.zero_points, np.int32)}
    tensors.update({f"data/{index}": np.asarray(raw, np.uint8) for index, raw in sorted(delta.data.items())})
    for index, (at, put) in sorted(delta.edits.items()):
        tensors[f"at/{index}"], tensors[f"put/{index}"] = np.asarray(at, np.int32), np.asarray(put, np.uint8)
    meta = {"task": task_to_json(delta.task, path), "base_sha256": {BASE_FORMAT: delta.base_sha256},
            "quant": [list(entry) for entry in delta.quant]}
    return write_tensor_file(path, FILE_KIND, tensors, meta)


def read_int8_delta(path: str) -> Int8Delta:
    return from_tensor_file(read_tensor_file(path, FILE_KIND), str(path))


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def from_tensor_file(stored, source: str) -> Int8Delta:
    """Validate an already container-checked int8 delta and build the typed object."""
    meta = stored.meta
    if sorted(meta) != ["base_sha256", "quant", "task"]:
        raise HeaderError(f"{source}: int8 delta meta must have exactly base_sha256, quant, task; got {sorted(meta)}")
    task = task_from_json(meta["task"], source)
    base = meta["base_sha256"]
    if not isinstance(base, dict) or list(base) != [BASE_FORMAT] or not isinstance(base[BASE_FORMAT], str) \
            or not re.fullmatch(r"[0-9a-f]{64}", base[BASE_FORMAT]):
        raise HeaderError(f"{source}: base_sha256 must be {{'{BASE_FORMAT}': <64 lowercase hex>}}")
    quant = meta["quant"]
    if not isinstance(quant, list) or not all(isinstance(e, list) and len(e) == 3 and all(map(_int, e)) for e in quant):
        raise HeaderError(f"{source}: quant must be an array of [tensor_index, scale_count, zero_point_count]")
    indices = [e[0] for e in quant]
    if indices != sorted(set(indices)):
        raise HeaderError(f"{source}: quant tensor indices must be ascending and unique")
    names = set(stored.tensors)
    if not {"scale", "zero_point"} <= names or any(not _DATA_NAME.match(n) for n in names - {"scale", "zero_point"}):
        raise HeaderError(f"{source}: int8 delta tensors must be scale, zero_point and data/<index>; got {sorted(names)[:5]}")
    scales, zero_points = stored.tensors["scale"], stored.tensors["zero_point"]
    if scales.dtype != np.float32 or zero_points.dtype != np.int32 or scales.ndim != 1 or zero_points.ndim != 1:
        raise HeaderError(f"{source}: scale must be float32 [N] and zero_point int32 [M]")
    if sum(e[1] for e in quant) != scales.shape[0] or sum(e[2] for e in quant) != zero_points.shape[0]:
        raise HeaderError(
            f"{source}: quant counts sum to {sum(e[1] for e in quant)} scales and {sum(e[2] for e in quant)} "
            f"zero points, but the file holds {scales.shape[0]} and {zero_points.shape[0]}"
        )
    data, edits = {}, {}
    for name in sorted(names - {"scale", "zero_point"}):
        role, index = name.split("/")
        raw = stored.tensors[name]
        expected = np.int32 if role == "at" else np.uint8
        if raw.dtype != expected or raw.ndim != 1:
            raise HeaderError(f"{source}: tensor '{name}' must be {np.dtype(expected).name} [n]")
        if role == "data":
            data[int(index)] = raw
        elif role == "at":
            put = stored.tensors.get(f"put/{index}")
            if put is None or put.shape != raw.shape or (raw.size and (raw[0] < 0 or np.any(np.diff(raw) <= 0))):
                raise HeaderError(f"{source}: '{name}' needs a 'put/{index}' of equal length and ascending positions")
            edits[int(index)] = (raw, put)
        elif f"at/{index}" not in names:
            raise HeaderError(f"{source}: '{name}' has no 'at/{index}'")
    if set(data) & set(edits):
        raise HeaderError(f"{source}: tensors {sorted(set(data) & set(edits))[:3]} have both data and edits")
    return Int8Delta(task, base[BASE_FORMAT], tuple(tuple(e) for e in quant), scales, zero_points, data, edits)


def decode_int8_delta(data: bytes, source: str = "<bytes>") -> Int8Delta:
    return from_tensor_file(decode_tensor_file(data, FILE_KIND, source), source)
