"""int8 task deltas: the ``"int8_delta"`` file kind (spec: *int8 delta* in ``edgepatch/format/spec.rst``).

Keyed by tensor index in the int8 base: new quantization vectors, new or
sparsely edited tensor bytes, and compact refold codes (``Refold``) from which
a loader recomputes a conv's weight scales, bias scales and int32 biases
(``refolded``). ``from_tensor_file`` applies the kind's rules to a file the
container already verified.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from edgepatch.errors import HeaderError, NonFiniteError
from edgepatch.format import rice
from edgepatch.format.container import decode_tensor_file, read_tensor_file, write_tensor_file
from edgepatch.format.task import TaskInfo, task_from_json, task_to_json

FILE_KIND = "int8_delta"
BASE_FORMAT = "tflite_int8"
_DATA_NAME = re.compile(r"(data|at|put)/(0|[1-9][0-9]{0,8})")
REFOLD_TENSORS = ("refold/codes", "refold/rice_k", "refold/bias_step")
ONE_BITS = 0x3F800000  # float32 1.0
SCALE_CODE_SHIFT = 16  # one scale code step: 2**16 in the float32 bit pattern, 7 mantissa bits kept
SCALE_CODE_LIMIT = (ONE_BITS >> SCALE_CODE_SHIFT) - 1  # |s| <= this keeps r positive and finite
BIAS_STEPS_PER_QUANTUM = 4
MIN_QUANT_SCALE = 1e-15  # the product of two scales (a bias scale: input x weight) stays a normal float32
MAX_QUANT_SCALE = 1e6  # one int8 step of a million: past any activation a float32 model means
MAX_ACTIVATION_SCALE_RATIO = 64  # a task's activation scale within 1/64..64x the base's (interpreters abort past ~2^19)
MIN_ZERO_POINT, MAX_ZERO_POINT = -128, 127  # int8 activations; weights and biases take 0 (checked on apply)


@dataclass(frozen=True)
class Refold:
    """One compact refold entry and its codes (spec: *int8 delta*, compact refold)."""

    weight: int
    bias: int
    input: int
    scale_codes: np.ndarray  # int16 [channels]
    bias_codes: np.ndarray  # int16 [channels]
    bias_step: float

    @property
    def channels(self) -> int:
        return int(self.scale_codes.size)


@dataclass(frozen=True)
class Int8Delta:
    task: TaskInfo
    base_sha256: str
    quant: tuple[tuple[int, int, int], ...]  # (tensor index, scale count, zero-point count)
    scales: np.ndarray  # float32, packed
    zero_points: np.ndarray  # int32, packed
    data: dict[int, np.ndarray]  # tensor index -> uint8 raw bytes
    edits: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # index -> (at, put)
    refolds: tuple[Refold, ...] = ()

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
    if delta.refolds:
        meta["refold"] = [[r.weight, r.bias, r.input, r.channels] for r in delta.refolds]
        runs = [(codes, rice.best_k(codes)) for r in delta.refolds for codes in (r.scale_codes, r.bias_codes)]
        tensors["refold/codes"] = np.frombuffer(rice.encode(runs), np.uint8)
        tensors["refold/rice_k"] = np.array([k for _, k in runs], np.uint8).reshape(-1, 2)
        tensors["refold/bias_step"] = np.array([r.bias_step for r in delta.refolds], np.float32)
    return write_tensor_file(path, FILE_KIND, tensors, meta)


def read_int8_delta(path: str) -> Int8Delta:
    return from_tensor_file(read_tensor_file(path, FILE_KIND), str(path))


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def from_tensor_file(stored, source: str) -> Int8Delta:
    """Validate an already container-checked int8 delta and build the typed object."""
    meta = stored.meta
    if sorted(set(meta) - {"refold"}) != ["base_sha256", "quant", "task"]:
        raise HeaderError(f"{source}: int8 delta meta must have base_sha256, quant, task and optionally refold; "
                          f"got {sorted(meta)}")
    task = task_from_json(meta["task"], source, stored.version)
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
    names = set(stored.tensors) - set(REFOLD_TENSORS)
    if not {"scale", "zero_point"} <= names or any(not _DATA_NAME.fullmatch(n) for n in names - {"scale", "zero_point"}):
        raise HeaderError(f"{source}: int8 delta tensors must be scale, zero_point and data/<index>; got {sorted(names)[:5]}")
    scales, zero_points = stored.tensors["scale"], stored.tensors["zero_point"]
    if scales.dtype != np.float32 or zero_points.dtype != np.int32 or scales.ndim != 1 or zero_points.ndim != 1:
        raise HeaderError(f"{source}: scale must be float32 [N] and zero_point int32 [M]")
    if sum(e[1] for e in quant) != scales.shape[0] or sum(e[2] for e in quant) != zero_points.shape[0]:
        raise HeaderError(
            f"{source}: quant counts sum to {sum(e[1] for e in quant)} scales and {sum(e[2] for e in quant)} "
            f"zero points, but the file holds {scales.shape[0]} and {zero_points.shape[0]}"
        )
    _check_quant_values(quant, scales, zero_points, source)
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
            if put is None or put.shape != raw.shape or \
                    (raw.size and (raw[0] < 0 or np.any(np.diff(raw.astype(np.int64)) <= 0))):
                raise HeaderError(f"{source}: '{name}' needs a 'put/{index}' of equal length and ascending positions")
            edits[int(index)] = (raw, put)
        elif f"at/{index}" not in names:
            raise HeaderError(f"{source}: '{name}' has no 'at/{index}'")
    if set(data) & set(edits):
        raise HeaderError(f"{source}: tensors {sorted(set(data) & set(edits))[:3]} have both data and edits")
    refolds = _refolds(stored, source)
    rescaled = {e[0] for e in quant if e[1]}
    for entry in refolds:
        if entry.weight in rescaled or entry.bias in rescaled or entry.bias in data or entry.bias in edits:
            raise HeaderError(f"{source}: refold of tensors {entry.weight}/{entry.bias} also in quant scales or "
                              "bias data")
    return Int8Delta(task, base[BASE_FORMAT], tuple(tuple(e) for e in quant), scales, zero_points, data, edits,
                     refolds)


def _owner(quant, position: int, column: int) -> int:
    """The tensor index whose vector holds element ``position`` of the packed scales (1) or zero points (2)."""
    for entry in quant:
        if position < entry[column]:
            return entry[0]
        position -= entry[column]
    raise AssertionError("position past the quant sums")


def _check_quant_values(quant, scales: np.ndarray, zero_points: np.ndarray, source: str) -> None:
    """Scales finite in MIN_QUANT_SCALE..MAX_QUANT_SCALE (NonFiniteError), zero points int8 (HeaderError)."""
    wide = scales.astype(np.float64)  # compared as doubles, as the Java loader does
    bad = ~((wide >= MIN_QUANT_SCALE) & (wide <= MAX_QUANT_SCALE))  # NaN fails both
    if bad.any():
        first = int(np.argmax(bad))
        raise NonFiniteError(f"{source}: scale[{first}] (tensor {_owner(quant, first, 1)}) must be finite and in "
                             f"1e-15..1e6")
    bad = (zero_points < MIN_ZERO_POINT) | (zero_points > MAX_ZERO_POINT)
    if bad.any():
        first = int(np.argmax(bad))
        raise HeaderError(f"{source}: zero_point[{first}] (tensor {_owner(quant, first, 2)}) is "
                          f"{int(zero_points[first])}, outside the int8 range -128..127")


def _refolds(stored, source: str) -> tuple[Refold, ...]:
    entries = stored.meta.get("refold")
    present = [n for n in REFOLD_TENSORS if n in stored.tensors]
    if entries is None:
        if present:
            raise HeaderError(f"{source}: tensors {present} need a 'refold' entry in meta")
        return ()
    if not isinstance(entries, list) or not entries or \
            not all(isinstance(e, list) and len(e) == 4 and all(map(_int, e)) and e[3] > 0 for e in entries):
        raise HeaderError(f"{source}: refold must be a non-empty array of [weight_index, bias_index, input_index, "
                          "channels] with channels > 0")
    weights = [e[0] for e in entries]
    if weights != sorted(set(weights)) or len({e[1] for e in entries}) != len(entries):
        raise HeaderError(f"{source}: refold weight indices must be ascending and unique, bias indices unique")
    if present != list(REFOLD_TENSORS):
        raise HeaderError(f"{source}: refold needs tensors {list(REFOLD_TENSORS)}; got {present}")
    packed, ks, steps = (stored.tensors[name] for name in REFOLD_TENSORS)
    if packed.dtype != np.uint8 or packed.ndim != 1 or ks.dtype != np.uint8 or ks.shape != (len(entries), 2) \
            or steps.dtype != np.float32 or steps.shape != (len(entries),):
        raise HeaderError(f"{source}: refold/codes must be uint8 [n], refold/rice_k uint8 [{len(entries)}, 2] and "
                          f"refold/bias_step float32 [{len(entries)}]")
    if not np.all(np.isfinite(steps)) or not np.all(steps > 0):
        raise NonFiniteError(f"{source}: refold/bias_step must be finite and > 0")
    runs = [(e[3], int(k)) for e, pair in zip(entries, ks) for k in pair]
    try:
        codes = rice.decode(packed.tobytes(), runs)
    except rice.RiceError as exc:
        raise HeaderError(f"{source}: refold/codes: {exc}") from None
    if any(np.any(np.abs(codes[a:a + n].astype(np.int32)) > SCALE_CODE_LIMIT) for a, n in _scale_spans(entries)):
        raise HeaderError(f"{source}: refold scale codes must be within +-{SCALE_CODE_LIMIT}")
    out = []
    for (weight, bias, source_input, channels), (at, _), step in zip(entries, _scale_spans(entries), steps):
        out.append(Refold(weight, bias, source_input, codes[at:at + channels], codes[at + channels:at + 2 * channels],
                          float(step)))
    return tuple(out)


def _scale_spans(entries) -> list[tuple[int, int]]:
    """(start, length) of each entry's scale codes in the decoded stream (its bias codes follow)."""
    spans, at = [], 0
    for entry in entries:
        spans.append((at, entry[3]))
        at += 2 * entry[3]
    return spans


def scale_factors(scale_codes: np.ndarray) -> np.ndarray:
    """The float32 factors ``r`` that scale codes stand for."""
    bits = ONE_BITS + (scale_codes.astype(np.int32) << SCALE_CODE_SHIFT)
    return bits.astype(np.int32).view(np.float32)


def scale_codes_for(factors: np.ndarray) -> np.ndarray:
    """The nearest scale codes to positive ``factors`` (clipped to the valid range)."""
    bits = np.asarray(factors, np.float32).view(np.int32).astype(np.int64) - ONE_BITS
    codes = np.floor(bits / (1 << SCALE_CODE_SHIFT) + 0.5)
    return np.clip(codes, -SCALE_CODE_LIMIT, SCALE_CODE_LIMIT).astype(np.int16)


def refolded(entry: Refold, base_weight_scale: np.ndarray, base_bias: np.ndarray, base_bias_scale: np.ndarray,
             input_scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weight scales, bias scales, int32 biases) of a refold entry; the arithmetic the Java loader mirrors.

    Raises:
        NonFiniteError: a recomputed scale is not finite and in MIN_QUANT_SCALE..MAX_QUANT_SCALE.
    """
    weight_scale = np.asarray(base_weight_scale, np.float32) * scale_factors(entry.scale_codes)
    bias_scale = np.float32(input_scale) * weight_scale
    both = np.concatenate([weight_scale, bias_scale]).astype(np.float64)  # NaN and Inf fail too
    if not np.all((both >= MIN_QUANT_SCALE) & (both <= MAX_QUANT_SCALE)):
        raise NonFiniteError(f"refold of tensor {entry.weight}: a recomputed weight or bias scale is not finite "
                             "and in 1e-15..1e6")
    value = (np.asarray(base_bias, np.float64) * np.asarray(base_bias_scale, np.float64)
             + entry.bias_codes.astype(np.float64) * np.float64(np.float32(entry.bias_step)))
    bias = np.clip(np.rint(value / bias_scale.astype(np.float64)), -2.0 ** 31, 2.0 ** 31 - 1).astype(np.int32)
    return weight_scale, bias_scale, bias


def decode_int8_delta(data: bytes, source: str = "<bytes>") -> Int8Delta:
    return from_tensor_file(decode_tensor_file(data, FILE_KIND, source), source)
