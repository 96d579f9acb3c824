"""ONNX swap mode ``adapter``: one optimized session; a task is new values for its weight inputs.

Why not ORT's own route. Making the base's site initializers overridable
(ORT adapters, ``RunOptions.add_active_adapter``) takes them off ORT's
constant-weight path: the NCHWc transformer reorders only constant filters,
so every conv falls back to NCHW and runs 2-3x slower; a constant conv
followed by an overridable per-channel Mul/Add (or BatchNormalization)
keeps NCHWc but wraps each conv in reorders and loses Conv+Clip fusion:
1.4-1.8x on MobileNetV2 1.0 (measured, ``benchmarks/bench_runtime.py``).

What this mode does instead:

1. ORT optimizes the base once, on this machine (``ORT_ENABLE_ALL``): convs
   become ``com.microsoft.nchwc`` convs with fused Clip, their filters
   reordered (and padded) to this CPU's block size.
2. ORT optimizes a *probe* copy of the base whose site tensors hold their
   own element numbers (kernels ``+1..``, biases ``-1..``, exact in
   float32). Read back from the probe's optimized model, they say where
   every site element landed: which initializer, which position, or padding.
   The two optimized graphs must be identical in structure, every other
   initializer identical in bytes, and the real optimized values must be
   exactly the base's values moved (no arithmetic), else this mode refuses.
3. The optimized model gets those initializers as graph inputs (appended
   as a second ``graph`` field, which protobuf merges) and one session is
   built from it with optimizations off: the same NCHWc kernels, now with
   weights read from inputs.
4. ``apply`` writes the task's weights straight into the optimized layout
   (base × per-channel scale, via a broadcast when the layout is blocked by
   output channel, else a gather) in buffers bound once to an ``IOBinding``:
   a swap builds no session.

The optimized layout is specific to the machine and ORT version, so it is
derived at load time and never stored. Memory: the optimized base values,
an int32 position map of the same size, and one weight set per live runner.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from edgepatch.delta import Delta
from edgepatch.runtime.onnx_file import OnnxModel, parse_onnx
from edgepatch.runtime.patching import (
    LendingPool,
    SiteSlots,
    SiteUpdate,
    require,
    site_updates,
)
from edgepatch.runtime.runner import TaskRunner

MAX_PROBE_CODE = 2**24  # every integer up to here is exact in float32


@dataclass(frozen=True)
class Placement:
    """Where one site tensor lies in ORT's optimized model.

    Optimized element ``positions[k]`` holds site element ``sources[k]``
    (flat, base ONNX layout); every other element is padding and stays 0.
    ``channel[i]`` is the output channel of optimized element ``i`` (-1 for
    padding). ``blocks`` = (G, B) when the layout is G blocks of B channels,
    the block innermost ([G, X, B]; plain out-major is B = 1), so that a
    per-channel scale broadcasts; None when a gather is needed.
    """

    site: str
    role: str
    name: str
    dims: tuple[int, ...]
    base: np.ndarray
    positions: np.ndarray
    sources: np.ndarray
    channel: np.ndarray | None
    blocks: tuple[int, int] | None
    identity: bool  # stored in the base's order, without padding
    repeat: int = 1  # blocks per multiply row (a divisor of the blocks per group)


def _optimized(data: bytes, num_threads: int) -> bytes:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory(prefix="edgepatch-ort-") as folder:
        options.optimized_model_filepath = os.path.join(folder, "optimized.onnx")
        ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        with open(options.optimized_model_filepath, "rb") as handle:
            return handle.read()


def _probe_bytes(base: bytes, sites: dict[str, SiteSlots], source: str) -> bytes:
    probe = bytearray(base)
    next_kernel = next_bias = 1
    for slots in sites.values():
        for slot, sign in ((slots.kernel, 1), (slots.bias, -1)):
            first = next_kernel if sign > 0 else next_bias
            require(first + slot.count <= MAX_PROBE_CODE,
                    f"{source}: adapter mode supports at most {MAX_PROBE_CODE} site weights of each role")
            codes = np.arange(first, first + slot.count, dtype=np.float32) * sign
            np.frombuffer(probe, np.float32, slot.count, slot.offset)[:] = codes
            if sign > 0:
                next_kernel += slot.count
            else:
                next_bias += slot.count
    return bytes(probe)


def _array(data: bytes, model: OnnxModel, name: str) -> np.ndarray:
    init = model.initializers[name]
    return np.frombuffer(data, np.float32, init.data_size // 4, init.data_offset)


def _code_ranges(sites: dict[str, SiteSlots]) -> dict[str, list[tuple[int, str]]]:
    ranges: dict[str, list[tuple[int, str]]] = {"kernel": [], "bias": []}
    first = {"kernel": 1, "bias": 1}
    for name, slots in sites.items():
        for role, slot in (("kernel", slots.kernel), ("bias", slots.bias)):
            ranges[role].append((first[role], name))
            first[role] += slot.count
    return ranges


def _blocks(channel: np.ndarray, channels: int) -> tuple[int, int] | None:
    """(G, B) when element i's output channel is that of a [G, X, B] array's (g, x, b): g·B + b; else None."""
    size = channel.size
    valid = channel >= 0
    for block in sorted({1, 4, 8, 16, 32, 64, channels}):
        groups = -(-channels // block)
        if size % (groups * block):
            continue
        expected = (np.arange(groups)[:, None, None] * block + np.arange(block)[None, None, :])
        expected = np.broadcast_to(expected, (groups, size // (groups * block), block)).reshape(-1)
        if np.array_equal(channel[valid], expected[valid]):
            return groups, block
    return None


def _out_channel(index: np.ndarray, slots: SiteSlots, role: str) -> np.ndarray:
    if role == "bias":
        return index
    shape = slots.kernel.shape
    if slots.op == "dense":  # MatMul [I, O]
        channel = index % shape[1]
    else:  # Conv [O, I, H, W]
        channel = index // int(np.prod(shape[1:]))
    return np.where(index >= 0, channel, -1)


def locate(real: bytes, probe: bytes, base: bytes, sites: dict[str, SiteSlots], source: str) -> list[Placement]:
    """Find every site tensor in ORT's optimized model, from the probe's copy of it."""
    real_model, probe_model = parse_onnx(real, f"{source} (ORT-optimized)"), parse_onnx(probe, f"{source} (probe)")
    shape = [(n.op_type, n.inputs, n.outputs) for n in real_model.nodes]
    require(shape == [(n.op_type, n.inputs, n.outputs) for n in probe_model.nodes],
            f"{source}: ORT optimized the probe differently; adapter mode cannot map its weights")
    ranges = _code_ranges(sites)
    placements, seen = [], set()
    for name, init in real_model.initializers.items():
        other = probe_model.initializers.get(name)
        if init.dtype != np.float32 or init.data_offset is None or other is None:
            continue
        values, codes = _array(real, real_model, name), _array(probe, probe_model, name)
        if values.size == codes.size and values.tobytes() == codes.tobytes():
            continue  # not a site tensor
        placement = _placement(name, init.dims, values, codes, ranges, sites, base, source)
        seen.add((placement.site, placement.role))
        placements.append(placement)
    missing = [f"{s}/{r}" for s in sites for r in ("kernel", "bias") if (s, r) not in seen]
    require(not missing, f"{source}: ORT's optimized model has no initializer for {missing[:3]}")
    return placements


def _placement(name, dims, values, codes, ranges, sites, base, source) -> Placement:
    nonzero = codes[codes != 0]
    role = "kernel" if nonzero.size and nonzero[0] > 0 else "bias"
    magnitude = np.abs(nonzero).astype(np.int64)
    starts = [start for start, _ in ranges[role]]
    which = np.searchsorted(starts, magnitude, side="right") - 1
    require(nonzero.size > 0 and np.all(which == which[0]) and np.all(np.sign(nonzero) == np.sign(nonzero[0]))
            and np.array_equal(np.abs(nonzero), magnitude),
            f"{source}: ORT initializer '{name}' mixes site weights; adapter mode cannot map it")
    site = ranges[role][which[0]][1]
    slots = sites[site]
    slot = slots.kernel if role == "kernel" else slots.bias
    index = np.full(codes.size, -1, np.int32)
    index[codes != 0] = magnitude - starts[which[0]]
    expected = np.frombuffer(base, np.float32, slot.count, slot.offset)
    moved = np.where(index >= 0, expected[np.maximum(index, 0)], np.float32(0))
    covered = np.bincount(index[index >= 0], minlength=slot.count)
    require(np.array_equal(moved, values) and covered.size == slot.count and np.all(covered == 1),
            f"{source}: ORT changed the values of `{site}/{role}` when optimizing; adapter mode cannot serve it")
    channel = _out_channel(index, slots, role)
    channels = slot.shape[0] if role == "bias" else slots.bias.shape[0]
    positions = np.flatnonzero(index >= 0).astype(np.int32)
    identity = bool(index.size == slot.count and np.array_equal(index, np.arange(index.size)))
    blocks = _blocks(channel, channels)
    repeat = 1
    if blocks is not None:
        per_group = codes.size // (blocks[0] * blocks[1])
        repeat = max(r for r in range(1, per_group + 1) if per_group % r == 0 and (r == 1 or r * blocks[1] <= 256))
    # The channel map is needed only to gather a scale when it does not broadcast.
    return Placement(site, role, name, tuple(dims), values.copy(), positions, index[positions],
                     channel.astype(np.int32) if blocks is None else None, blocks, identity, repeat)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _float_input(name: str, dims: tuple[int, ...]) -> bytes:
    """ValueInfoProto{name, type: TypeProto{tensor_type: {elem_type: FLOAT, shape}}}."""
    shape = b"".join(_field(1, _varint(1 << 3) + _varint(d)) for d in dims)  # Dimension.dim_value = 1
    tensor_type = _varint(1 << 3) + _varint(1) + _field(2, shape)  # elem_type 1 = FLOAT
    return _field(1, name.encode()) + _field(2, _field(1, tensor_type))


def with_inputs(model: bytes, placements: list[Placement]) -> bytes:
    """The model with the placements' initializers also listed as graph inputs (overridable)."""
    extra = b"".join(_field(11, _float_input(p.name, p.dims)) for p in placements)
    return model + _field(7, extra)  # a repeated message field merges: graph.input grows


def _scatter(placement: Placement, values: np.ndarray, flat: np.ndarray) -> None:
    if placement.identity:
        flat[...] = values.reshape(-1)
    else:
        flat[placement.positions] = values.reshape(-1)[placement.sources]


def _write(placement: Placement, update: SiteUpdate | None, out: np.ndarray) -> None:
    """Write one site tensor of a task (or the base's, when ``update`` leaves it) into ``out``."""
    flat = out.reshape(-1)
    wanted = None if update is None else (update.bias if placement.role == "bias" else update.kernel)
    if wanted is not None:
        _scatter(placement, wanted, flat)
    elif placement.role == "kernel" and update is not None and update.scale is not None:
        if placement.blocks is not None:
            groups, block = placement.blocks
            scale = update.scale
            if scale.size != groups * block:
                scale = np.concatenate([scale, np.ones(groups * block - scale.size, np.float32)])
            # numpy's broadcast loop is slow on short rows: repeat each block's scales to rows of >= 128.
            repeat = placement.repeat
            row = np.tile(scale.reshape(groups, 1, block), (1, 1, repeat))
            shape = (groups, -1, block * repeat)
            np.multiply(placement.base.reshape(shape), row, out=flat.reshape(shape))
        else:
            np.multiply(placement.base, np.append(update.scale, np.float32(1))[placement.channel], out=flat)
    else:
        flat[...] = placement.base


class _WeightSet:
    """One task's weights in the optimized layout, bound once to an IOBinding."""

    def __init__(self, session, placements: list[Placement], input_name: str, output_name: str):
        import onnxruntime as ort

        self.arrays = {p.name: np.zeros(p.dims, np.float32) for p in placements}
        self.binding = session.io_binding()
        self.values = {n: ort.OrtValue.ortvalue_from_numpy(a) for n, a in self.arrays.items()}  # no copy on CPU
        for name, value in self.values.items():
            self.binding.bind_ortvalue_input(name, value)
        self.binding.bind_output(output_name)
        self.input_name = input_name


class AdapterRunner(TaskRunner):
    def __init__(self, session, weights: _WeightSet, task, swap_seconds: float):
        super().__init__(task, swap_seconds)
        self._session, self._weights = session, weights
        self.weight_bytes = sum(array.nbytes for array in weights.arrays.values())  # what keeping it costs

    def _run(self, images: np.ndarray) -> np.ndarray:
        binding = self._weights.binding
        binding.bind_cpu_input(self._weights.input_name, images)
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]


class AdapterSession:
    """The base's ORT-optimized session with overridable site weights; ``apply`` binds a task."""

    def __init__(self, base: bytes, sites: dict[str, SiteSlots], peaks: dict[str, np.ndarray], num_threads: int,
                 source: str, keep: int = 2):
        import onnxruntime as ort

        from edgepatch.runtime.onnx import session_options

        self.sites, self.source = sites, source
        self.peaks = peaks  # the base's kernel_peaks: which scales would overflow
        real = _optimized(base, num_threads)
        self.placements = locate(real, _optimized(_probe_bytes(base, sites, source), num_threads), base, sites, source)
        options = session_options(num_threads)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # optimized already
        options.log_severity_level = 3  # one "will not be treated as constant" warning per input otherwise
        self.session = ort.InferenceSession(with_inputs(real, self.placements), options,
                                            providers=["CPUExecutionProvider"])
        names = (self.session.get_inputs()[0].name, self.session.get_outputs()[0].name)
        self.pool = LendingPool(lambda: _WeightSet(self.session, self.placements, *names), keep)

    def apply(self, delta: Delta | None) -> AdapterRunner:
        start = time.perf_counter()
        updates = site_updates(self.sites, self.peaks, delta, "onnx", self.source) if delta is not None else {}
        weights = self.pool.take()
        try:
            for placement in self.placements:
                _write(placement, updates.get(placement.site), weights.arrays[placement.name])
            runner = AdapterRunner(self.session, weights, delta.task if delta else None, 0.0)
        except BaseException:
            self.pool.give_back(weights)
            raise
        self.pool.lend(weights, runner)
        runner.swap_seconds = time.perf_counter() - start
        return runner
