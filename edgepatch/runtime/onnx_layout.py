"""ORT's optimized layout of an ONNX base: where each site tensor lands, and writing tasks into it.

Both ONNX swap modes build sessions over the base *as ORT optimized it*, so
a swap never pays for graph optimization again:

1. ORT optimizes the base once, on this machine (``ORT_ENABLE_ALL``): convs
   become ``com.microsoft.nchwc`` convs with fused Clip, their filters
   reordered (and padded) to this CPU's block size.
2. ORT optimizes a *probe* copy of the base whose site tensors hold their
   own element numbers (kernels ``+1..``, biases ``-1..``, exact in
   float32). Read back from the probe's optimized model, they say where
   every site element landed: which initializer, which position, or padding.
   The two optimized graphs must be identical in structure, every other
   initializer identical in bytes, and the real optimized values must be
   exactly the base's values moved (no arithmetic), else the mapping is
   refused (``BaseModelError``).
3. ``write_placement`` writes a task's weights straight into that layout:
   base × per-channel scale, via a broadcast when the layout is blocked by
   output channel, else a gather.

``rebuild`` mode writes a task into a copy of the optimized model's bytes
(``LayoutPatcher``) and builds a session with optimizations off: same
kernels, same speed, and a session build that skips optimizing the model
again (``benchmarks/bench_runtime.py`` measures it). ``adapter`` mode
(``onnx_adapter``) binds the written weights as inputs of one session.

The layout is specific to the machine and ORT version, so it is derived at
load time and never stored. Memory: the optimized model, and an int32
position map per site tensor.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np

from edgepatch.format.delta import Delta
from edgepatch.format.names import DENSE_OP, tensor_name
from edgepatch.runtime.onnx_file import OnnxModel, parse_onnx
from edgepatch.runtime.base_file import require
from edgepatch.runtime.buffers import LendingPool, writable_bytes
from edgepatch.runtime.refold import SiteSlots, SiteUpdate, Slot, site_updates, view_of

MAX_PROBE_CODE = 2**24  # every integer up to here is exact in float32


@dataclass(frozen=True)
class Placement:
    """Where one site tensor lies in ORT's optimized model.

    Optimized element ``i`` holds site element ``sources[i]`` (flat, base
    ONNX layout), or is padding (-1) and stays 0; ``sources`` is None when
    the layout is the base's own order (``identity``).
    When the layout is G blocks of B channels, the block innermost ([G, X,
    B]; plain out-major is B = 1), a per-channel scale broadcasts:
    ``scale_rows`` [G, 1, B·r] holds the output channel of each column of
    the [G, X/r, B·r] view (r blocks per row, for rows long enough for
    numpy's loop). Otherwise ``channel[i]`` is the output channel of
    optimized element ``i`` (-1 for padding), for a gather.
    """

    site: str
    role: str
    name: str
    dims: tuple[int, ...]
    offset: int  # of the initializer's raw data in the optimized model's bytes
    base: np.ndarray  # the optimized base values (an aligned copy: numpy is slower on unaligned data)
    sources: np.ndarray | None
    channel: np.ndarray | None
    scale_rows: np.ndarray | None
    identity: bool  # stored in the base's order, without padding


def ort_optimized(data: bytes, num_threads: int) -> bytes:
    """``data`` as ORT optimizes it at ``ORT_ENABLE_ALL`` on this machine (an .onnx model)."""
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
                    f"{source}: the optimized-layout mapping supports at most {MAX_PROBE_CODE} site weights of each role")
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
    if slots.op == DENSE_OP:  # MatMul [I, O]
        channel = index % shape[1]
    else:  # Conv [O, I, H, W]
        channel = index // int(np.prod(shape[1:]))
    return np.where(index >= 0, channel, -1)


def locate(real: bytes, probe: bytes, base: bytes, sites: dict[str, SiteSlots], source: str) -> list[Placement]:
    """Find every site tensor in ORT's optimized model, from the probe's copy of it."""
    real_model, probe_model = parse_onnx(real, f"{source} (ORT-optimized)"), parse_onnx(probe, f"{source} (probe)")
    shape = [(n.op_type, n.inputs, n.outputs) for n in real_model.nodes]
    require(shape == [(n.op_type, n.inputs, n.outputs) for n in probe_model.nodes],
            f"{source}: ORT optimized the probe differently; cannot map the site weights into its optimized model")
    ranges = _code_ranges(sites)
    placements, seen = [], set()
    for name, init in real_model.initializers.items():
        other = probe_model.initializers.get(name)
        if init.dtype != np.float32 or init.data_offset is None or other is None:
            continue
        values, codes = _array(real, real_model, name), _array(probe, probe_model, name)
        if values.size == codes.size and values.tobytes() == codes.tobytes():
            continue  # not a site tensor
        placement = _placement(init, values, codes, ranges, sites, base, source)
        seen.add((placement.site, placement.role))
        placements.append(placement)
    missing = [f"{s}/{r}" for s in sites for r in ("kernel", "bias") if (s, r) not in seen]
    require(not missing, f"{source}: ORT's optimized model has no initializer for {missing[:3]}")
    return placements


def _placement(init, values, codes, ranges, sites, base, source) -> Placement:
    name = init.name
    nonzero = codes[codes != 0]
    role = "kernel" if nonzero.size and nonzero[0] > 0 else "bias"
    magnitude = np.abs(nonzero).astype(np.int64)
    starts = [start for start, _ in ranges[role]]
    which = np.searchsorted(starts, magnitude, side="right") - 1
    require(nonzero.size > 0 and np.all(which == which[0]) and np.all(np.sign(nonzero) == np.sign(nonzero[0]))
            and np.array_equal(np.abs(nonzero), magnitude),
            f"{source}: ORT initializer '{name}' mixes site weights; cannot map it")
    site = ranges[role][which[0]][1]
    slots = sites[site]
    slot = slots.kernel if role == "kernel" else slots.bias
    index = np.full(codes.size, -1, np.int32)
    index[codes != 0] = magnitude - starts[which[0]]
    expected = np.frombuffer(base, np.float32, slot.count, slot.offset)
    moved = np.where(index >= 0, expected[np.maximum(index, 0)], np.float32(0))
    covered = np.bincount(index[index >= 0], minlength=slot.count)
    require(np.array_equal(moved, values) and covered.size == slot.count and np.all(covered == 1),
            f"{source}: ORT changed the values of `{tensor_name(site, role)}` when optimizing; cannot write tasks into it")
    channel = _out_channel(index, slots, role)
    channels = slot.shape[0] if role == "bias" else slots.bias.shape[0]
    identity = bool(index.size == slot.count and np.array_equal(index, np.arange(index.size)))
    blocks = _blocks(channel, channels) if role == "kernel" else None
    rows = None
    if blocks is not None:
        groups, block = blocks
        per_group = codes.size // (groups * block)
        repeat = max(r for r in range(1, per_group + 1) if per_group % r == 0 and (r == 1 or r * block <= 256))
        # Padding channels (past the last) read the last channel's scale: their base values are 0.
        rows = np.minimum(np.arange(groups * block).reshape(groups, 1, block), channels - 1)
        rows = np.tile(rows, (1, 1, repeat)).astype(np.intp)
    # The channel map is needed only to gather a scale when it does not broadcast.
    return Placement(site, role, name, tuple(init.dims), init.data_offset, values.copy(), None if identity else index,
                     channel.astype(np.int32) if rows is None else None, rows, identity)


def _scatter(placement: Placement, values: np.ndarray, flat: np.ndarray) -> None:
    if placement.identity:
        flat[...] = values.reshape(-1)
    else:
        np.take(np.append(values.reshape(-1), np.float32(0)), placement.sources, out=flat)  # -1: padding, 0


def write_placement(placement: Placement, update: SiteUpdate | None, out: np.ndarray) -> None:
    """Write one site tensor of a task (or the base's, when ``update`` leaves it) into ``out``."""
    flat = out.reshape(-1)
    wanted = None if update is None else (update.bias if placement.role == "bias" else update.kernel)
    if wanted is not None:
        _scatter(placement, wanted, flat)
    elif placement.role == "kernel" and update is not None and update.scale is not None:
        rows = placement.scale_rows
        if rows is not None:
            shape = (rows.shape[0], -1, rows.shape[2])
            np.multiply(placement.base.reshape(shape), update.scale[rows], out=flat.reshape(shape))
        else:
            np.multiply(placement.base, np.append(update.scale, np.float32(1))[placement.channel], out=flat)
    else:
        flat[...] = placement.base


@dataclass(frozen=True)
class OptimizedLayout:
    """The base as ORT optimized it on this machine (``model``), and where its site tensors lie in it."""

    model: bytes
    placements: list[Placement]


def optimized_layout(base: bytes, sites: dict[str, SiteSlots], num_threads: int, source: str) -> OptimizedLayout:
    """Optimize ``base`` and a probe copy of it, and map every site tensor (raises BaseModelError)."""
    real = ort_optimized(base, num_threads)
    probe = ort_optimized(_probe_bytes(base, sites, source), num_threads)
    return OptimizedLayout(real, locate(real, probe, base, sites, source))


def write_task(placements: list[Placement], updates: dict[str, SiteUpdate], outputs) -> None:
    """Write a task (``site_updates``) into one output array per placement."""
    for placement, out in zip(placements, outputs):
        write_placement(placement, updates.get(placement.site), out)


class _LayoutBuffer:
    """One reusable ``bytes`` copy of the optimized model, with a view per placement."""

    def __init__(self, layout: OptimizedLayout):
        self.data, view = writable_bytes(len(layout.model))
        view[:] = np.frombuffer(layout.model, np.uint8)
        self.views = [view_of(view, Slot(p.offset, p.dims)) for p in layout.placements]


class LayoutPatcher:
    """Writes tasks into reusable copies of the optimized model (``rebuild`` mode's ``BytesPatcher``)."""

    def __init__(self, layout: OptimizedLayout, sites: dict[str, SiteSlots], peaks: dict[str, np.ndarray],
                 source: str, keep: int = 2):
        self.layout, self.sites, self.peaks, self.source = layout, sites, peaks, source
        self.pool = LendingPool(lambda: _LayoutBuffer(layout), keep)

    def patch(self, delta: Delta) -> tuple[bytes, _LayoutBuffer]:
        """The optimized model with ``delta`` applied, and the buffer to ``pool.lend`` to its runner."""
        updates = site_updates(self.sites, self.peaks, delta, "onnx", self.source)
        buffer = self.pool.take_filled(lambda into: write_task(self.layout.placements, updates, into.views))
        return buffer.data, buffer
