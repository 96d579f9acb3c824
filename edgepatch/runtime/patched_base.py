"""What the float bases share: the fingerprint check, and patching tasks into reusable copies of the base.

``BytesPatcher`` writes a task into a ``bytes`` copy of the base it created
itself (``buffers.writable_bytes``) and reuses such copies once their runner
is gone (``buffers.LendingPool``): everything but the site tensors already
holds the base's bytes, so a swap writes only the site tensors, through views
and broadcast shapes computed once per buffer. A buffer is handed to an
interpreter for that interpreter's whole life (it reads weights from it).
"""

from __future__ import annotations

import numpy as np

from edgepatch.errors import WrongBaseError
from edgepatch.format.delta import Delta
from edgepatch.runtime.base_file import BaseFile
from edgepatch.runtime.buffers import LendingPool, writable_bytes
from edgepatch.runtime.refold import (
    SiteSlots,
    kernel_peaks,
    patch_buffer,
    require_float_delta,
    scale_shape,
    site_updates,
    view_of,
    write_site,
)


def check_fingerprint(delta: Delta, fmt: str, base_sha256: str, source: str) -> None:
    require_float_delta(delta, source)
    expected = delta.base_sha256.get(fmt)
    if expected is None:
        raise WrongBaseError(
            f"delta for task '{delta.task.name}' has no {fmt} base fingerprint "
            f"(it was made for: {', '.join(sorted(delta.base_sha256))}); cannot apply to {source}"
        )
    if expected != base_sha256:
        raise WrongBaseError(
            f"delta for task '{delta.task.name}' was made for {fmt} base sha256 {expected[:16]}…, "
            f"but {source} has sha256 {base_sha256[:16]}…"
        )


class _PatchBuffer:
    """One reusable copy of the base bytes, with the views a swap writes through."""

    def __init__(self, base: bytes, sites: dict[str, SiteSlots]):
        self.data, view = writable_bytes(len(base))
        view[:] = np.frombuffer(base, np.uint8)
        self.views = {name: (view_of(view, s.kernel), view_of(view, s.bias)) for name, s in sites.items()}

    def model_bytes(self) -> bytes:
        return self.data if isinstance(self.data, bytes) else bytes(self.data)


class BytesPatcher:
    """Writes tasks into reusable ``bytes`` copies of a base file (see the module docstring).

    Args:
        base: the base file's bytes (kept, never written).
        sites: the base's site slots.
        fmt: "tflite" or "onnx" (kernel layout).
        source: the base's name for error messages.
        keep: how many buffers to keep for reuse; each costs the base's size in memory.
    """

    def __init__(self, base: bytes, sites: dict[str, SiteSlots], fmt: str, source: str, keep: int = 2):
        self.sites, self.fmt, self.source = sites, fmt, source
        self._base_views = {name: (view_of(base, s.kernel), view_of(base, s.bias)) for name, s in sites.items()}
        self._shapes = {name: scale_shape(s, fmt) for name, s in sites.items()}
        self.peaks = kernel_peaks(base, sites, fmt)
        self.pool = LendingPool(lambda: _PatchBuffer(base, sites), keep)

    def patch(self, delta: Delta) -> tuple[bytes, _PatchBuffer]:
        """The base bytes with ``delta`` applied, and the buffer to ``pool.lend`` to the runner using them."""
        updates = site_updates(self.sites, self.peaks, delta, self.fmt, self.source)

        def fill(buffer: _PatchBuffer) -> None:
            for name, (kernel_out, bias_out) in buffer.views.items():
                kernel_base, bias_base = self._base_views[name]
                write_site(updates.get(name), kernel_out, bias_out, kernel_base, bias_base, self._shapes[name])

        buffer = self.pool.take_filled(fill)
        return buffer.model_bytes(), buffer


class PatchedBase(BaseFile):
    """What the float bases share: ``patched_bytes`` and building a runner on a lent buffer.

    Subclasses set ``format``, ``bytes``, ``source``, ``sha256``, ``sites`` and ``_patcher``.
    """

    def patched_bytes(self, delta: Delta) -> bytearray:
        """The base bytes with ``delta`` applied (checks the fingerprint, names and shapes)."""
        check_fingerprint(delta, self.format, self.sha256, self.source)
        buffer = bytearray(self.bytes)
        patch_buffer(buffer, self.bytes, self.sites, self._patcher.peaks, delta, self.format, self.source)
        return buffer

    def _patched_runner(self, delta: Delta, make_runner, patcher=None):
        """``make_runner(model_bytes)`` on a pooled buffer holding the task; the runner keeps the buffer.

        ``patcher``: anything with ``patch(delta)`` and ``pool`` (default: the base's ``BytesPatcher``).
        """
        patcher = patcher or self._patcher
        model, buffer = patcher.patch(delta)
        try:
            runner = make_runner(model)
        except BaseException:
            patcher.pool.give_back(buffer)
            raise
        patcher.pool.lend(buffer, runner)
        return runner
