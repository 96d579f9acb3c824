"""Golomb-Rice codes for runs of small signed integers (the int8 delta's refold codes).

Specified in ``edgepatch/format/spec.rst``, section *Golomb-Rice codes*.
Remainders first and quotients after lets numpy decode a run without a
per-value loop; the Java loader reads the same bits one at a time.
"""

from __future__ import annotations

import numpy as np

MAX_K = 15
MAX_UNSIGNED = 0xFFFF  # the mapped value of any int16


class RiceError(ValueError):
    """The bits do not decode to the declared runs (the caller names the file)."""


def _unsigned(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, np.int64)
    return np.where(v >= 0, 2 * v, -2 * v - 1)


def best_k(values: np.ndarray) -> int:
    """The parameter that codes ``values`` in the fewest bits."""
    u = _unsigned(values)
    return int(np.argmin([np.sum(u >> k) + u.size * (k + 1) for k in range(MAX_K + 1)]))


def encode(runs: list[tuple[np.ndarray, int]]) -> bytes:
    """Code each (int16 values, k) run, in order, into one padded byte string."""
    pieces = []
    for values, k in runs:
        u = _unsigned(values)
        if not 0 <= k <= MAX_K or np.any(u > MAX_UNSIGNED):
            raise ValueError(f"rice: k must be in 0..{MAX_K} and values int16; got k={k}")
        if k:
            pieces.append(((u[:, None] >> np.arange(k - 1, -1, -1)) & 1).astype(np.uint8).ravel())
        quotients = u >> k
        unary = np.ones(int(quotients.sum()) + u.size, np.uint8)
        unary[np.cumsum(quotients + 1) - 1] = 0
        pieces.append(unary)
    bits = np.concatenate(pieces) if pieces else np.zeros(0, np.uint8)
    return np.packbits(bits).tobytes()


def decode(data: bytes, runs: list[tuple[int, int]]) -> np.ndarray:
    """Decode (count, k) runs from ``data``; return all values, concatenated, as int16.

    Raises:
        RiceError: the bits end early, a value is outside int16, or bits other than the zero
            padding of the last byte are left over.
    """
    if sum(count for count, _ in runs) > 8 * len(data):  # every value takes at least one bit
        raise RiceError(f"{sum(count for count, _ in runs)} values cannot fit in {len(data)} bytes")
    bits = np.unpackbits(np.frombuffer(data, np.uint8))
    zeros = None
    position, out = 0, []
    for count, k in runs:
        if not 0 <= k <= MAX_K:
            raise RiceError(f"parameter k={k} is outside 0..{MAX_K}")
        end = position + count * k
        if end > bits.size:
            raise RiceError("the bits end inside a run's remainders")
        remainders = np.zeros(count, np.int64)
        if k:
            weights = 1 << np.arange(k - 1, -1, -1)
            remainders = bits[position:end].reshape(count, k).astype(np.int64) @ weights
        position = end
        if count:
            if zeros is None:
                zeros = np.flatnonzero(bits == 0)
            first = np.searchsorted(zeros, position)
            ends = zeros[first:first + count]
            if ends.size < count:
                raise RiceError("the bits end inside a run's quotients")
            quotients = np.diff(np.concatenate(([position - 1], ends))) - 1
            position = int(ends[-1]) + 1
            u = (quotients.astype(np.int64) << k) | remainders
            if np.any(u > MAX_UNSIGNED):
                raise RiceError("a value is outside int16")
            out.append(np.where(u & 1, -(u >> 1) - 1, u >> 1).astype(np.int16))
    if (position + 7) // 8 != len(data) or np.any(bits[position:]):
        raise RiceError(f"{len(data) * 8 - position} bits are left over after the last value")
    return np.concatenate(out) if out else np.zeros(0, np.int16)
