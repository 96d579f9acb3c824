"""ORT's optimized layout of an ONNX base: where each site tensor lands, and writing tasks into it.

Both ONNX swap modes build sessions over the base *as ORT optimized it*, so
a swap never pays for graph optimization again:

1. ORT optimizes the base once, on this machine (``ORT_ENABLE_ALL``): convs
   become ``com.microsoft.nchwc`` convs with fused Clip, their filters
   reordered (and padded) to this CPU's block size.
2. ORT optimizes a *probe* copy of the base whose site tensors hold their
   own element numbers as float32 bit patterns: element ``n`` of all site
   kernels (biases) is the positive (negative) normal float with bits
   ``MIN_CODE_BITS + n``, so any model a protobuf can hold is numbered
   (moving a float keeps its bits; no padding value 0 is a code). Read back
   from the probe's optimized model, they say where every site element
   landed: which initializer, which position, or padding.
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
load time and never stored. Mapping is linear in the site weights, with
temporaries the size of one site tensor. Memory kept: the optimized model,
and per site tensor its optimized values and an int32 position map.
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

MIN_CODE_BITS = 0x00800000  # the smallest positive normal float32: codes are never 0 nor denormal
MAX_CODES = 0x7F7FFFFF - MIN_CODE_BITS + 1  # codes per role, up to the largest finite float32
_SIGN_BIT = np.uint32(0x80000000)


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
    first = {"kernel": 0, "bias": 0}
    for slots in sites.values():
        for role, slot, sign in (("kernel", slots.kernel, 0), ("bias", slots.bias, _SIGN_BIT)):
            require(first[role] + slot.count <= MAX_CODES,
                    f"{source}: the optimized-layout mapping supports at most {MAX_CODES} site weights of each role")
            codes = np.arange(first[role], first[role] + slot.count, dtype=np.uint32)
            codes += np.uint32(MIN_CODE_BITS)
            np.frombuffer(probe, np.uint32, slot.count, slot.offset)[:] = codes | sign
            first[role] += slot.count
    return bytes(probe)


def _array(data: bytes, model: OnnxModel, name: str) -> np.ndarray:
    init = model.initializers[name]
    return np.frombuffer(data, np.float32, init.data_size // 4, init.data_offset)


def _code_ranges(sites: dict[str, SiteSlots]) -> dict[str, list[tuple[int, int, str]]]:
    """Per role, (first element number, count, site) of each site tensor, as ``_probe_bytes`` numbers them."""
    ranges: dict[str, list[tuple[int, int, str]]] = {"kernel": [], "bias": []}
    first = {"kernel": 0, "bias": 0}
    for name, slots in sites.items():
        for role, slot in (("kernel", slots.kernel), ("bias", slots.bias)):
            ranges[role].append((first[role], slot.count, name))
            first[role] += slot.count
    return ranges


def _blocks(channel: np.ndarray, channels: int) -> tuple[int, int] | None:
    """(G, B) when element i's output channel is that of a [G, X, B] array's (g, x, b): g·B + b; else None."""
    size = channel.size
    for block in sorted({1, 4, 8, 16, 32, 64, channels}):
        groups = -(-channels // block)
        if size % (groups * block):
            continue
        found = channel.reshape(groups, -1, block)
        expected = np.arange(groups * block, dtype=channel.dtype).reshape(groups, 1, block)
        # A cheap look at the first column rules most block sizes out before the whole comparison.
        if all(np.all((part == expected) | (part < 0)) for part in (found[:, :1], found)):
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
        if values.size == codes.size and np.array_equal(values.view(np.uint32), codes.view(np.uint32)):
            continue  # not a site tensor
        placement = _placement(init, values, codes, ranges, sites, base, source)
        seen.add((placement.site, placement.role))
        placements.append(placement)
    missing = [f"{s}/{r}" for s in sites for r in ("kernel", "bias") if (s, r) not in seen]
    require(not missing, f"{source}: ORT's optimized model has no initializer for {missing[:3]}")
    return placements


def _site_index(name, codes, ranges, sites, source) -> tuple[str, str, np.ndarray]:
    """(site, role, index): optimized element i holds the site tensor's element index[i], or padding (-1)."""
    bits = codes.view(np.uint32)
    coded = codes != 0  # padding is 0 (or -0)
    first = bits[np.argmax(coded)] if coded.any() else np.uint32(0)
    role = "kernel" if first < _SIGN_BIT else "bias"
    number = int(first & ~_SIGN_BIT) - MIN_CODE_BITS  # < 0: a denormal, not a code
    which = int(np.searchsorted([start for start, _, _ in ranges[role]], number, side="right")) - 1
    start, count, site = ranges[role][max(which, 0)]
    low = (int(first) & int(_SIGN_BIT)) + MIN_CODE_BITS + start  # the bits of the site's first element
    nonzero = bits[coded]
    # One site's codes are one run of bits: in range means the same site, role and no denormal.
    require(nonzero.size > 0 and number >= 0 and int(nonzero.min()) >= low and int(nonzero.max()) < low + count,
            f"{source}: ORT initializer '{name}' mixes site weights; cannot map it")
    index = np.full(codes.size, -1, np.int32)
    index[coded] = (nonzero - np.uint32(low)).view(np.int32)
    return site, role, index


def _placement(init, values, codes, ranges, sites, base, source) -> Placement:
    name = init.name
    site, role, index = _site_index(name, codes, ranges, sites, source)
    slots = sites[site]
    slot = slots.kernel if role == "kernel" else slots.bias
    expected = np.frombuffer(base, np.float32, slot.count, slot.offset)
    moved = np.where(index >= 0, expected[np.maximum(index, 0)], np.float32(0))
    covered = np.zeros(slot.count, bool)
    covered[index[index >= 0]] = True
    require(np.array_equal(moved, values) and np.count_nonzero(index >= 0) == slot.count and np.all(covered),
            f"{source}: ORT changed the values of `{tensor_name(site, role)}` when optimizing; cannot write tasks into it")
    channel = _out_channel(index, slots, role)
    channels = slot.shape[0] if role == "bias" else slots.bias.shape[0]
    identity = bool(index.size == slot.count and np.array_equal(index, np.arange(index.size, dtype=np.int32)))
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
