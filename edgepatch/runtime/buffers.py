"""Byte buffers: taking the caller's file bytes, making ``bytes`` to fill, lending reusable ones.

LiteRT and ORT take a model only as ``bytes``. A patched model is written into
a ``bytes`` object created here and filled before anyone else sees it
(``writable_bytes``), so no second copy is made; ``LendingPool`` reuses such
buffers once the runner that read one is gone, so their pages stay mapped and
a swap rewrites only the site tensors.
"""

from __future__ import annotations

import ctypes
import sys
import threading
import weakref

import numpy as np

from edgepatch.errors import UsageError


def as_buffer(data, caller: str) -> bytes | bytearray | memoryview:
    """``data`` as a flat byte buffer, not copied (bytes, bytearray, or a contiguous memoryview/mmap).

    Raises UsageError naming ``caller`` for a str or anything without the buffer protocol.
    """
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


def writable_bytes(size: int) -> tuple[bytes | bytearray, np.ndarray]:
    """A new ``bytes`` object of ``size`` bytes and a writable uint8 view of it, to fill before use.

    CPython only (``PyBytes_FromStringAndSize(NULL, size)``, the C-API way to
    build a ``bytes``); elsewhere a ``bytearray``, which callers copy to
    ``bytes`` per swap (correct, one copy slower). The caller must finish
    writing before it hands the object to anyone.
    """
    if sys.implementation.name != "cpython":
        data = bytearray(size)
        return data, np.frombuffer(data, np.uint8)
    new = ctypes.pythonapi.PyBytes_FromStringAndSize
    new.restype, new.argtypes = ctypes.py_object, (ctypes.c_void_p, ctypes.c_ssize_t)
    address = ctypes.pythonapi.PyBytes_AsString
    address.restype, address.argtypes = ctypes.c_void_p, (ctypes.py_object,)
    data = new(None, size)
    return data, np.ctypeslib.as_array((ctypes.c_ubyte * size).from_address(address(data)))


class LendingPool:
    """Keeps up to ``keep`` buffers and lends each to one runner at a time.

    A runtime reads a runner's weights for as long as the runner lives, so a
    buffer is reused only once that runner has been garbage-collected.
    ``take`` marks a buffer taken; ``lend`` hands it to a runner, ``give_back``
    returns it at once (when building the runner failed).
    """

    def __init__(self, make, keep: int = 2):
        self._make, self._keep = make, keep
        self._owners: dict[int, list] = {}  # id(buffer) -> [buffer, owner weakref or the pool while taken]
        self._lock = threading.Lock()

    def take(self):
        with self._lock:
            for entry in self._owners.values():
                if entry[1] is None or (isinstance(entry[1], weakref.ref) and entry[1]() is None):
                    entry[1] = self
                    return entry[0]
            buffer = self._make()
            if len(self._owners) < self._keep:
                self._owners[id(buffer)] = [buffer, self]
            return buffer

    def take_filled(self, fill):
        """``take`` a buffer and ``fill(buffer)``; the buffer goes back to the pool if filling fails."""
        buffer = self.take()
        try:
            fill(buffer)
        except BaseException:
            self.give_back(buffer)
            raise
        return buffer

    def lend(self, buffer, runner) -> None:
        entry = self._owners.get(id(buffer))
        if entry is not None:
            entry[1] = weakref.ref(runner)

    def give_back(self, buffer) -> None:
        entry = self._owners.get(id(buffer))
        if entry is not None:
            entry[1] = None
