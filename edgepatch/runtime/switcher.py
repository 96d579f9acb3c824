"""Keep several tasks ready on one base under a memory budget: switching to a resident task is a lookup.

A swap (``base.apply``) builds a runner: on LiteRT a patched copy of the base
plus the interpreter with XNNPACK's packed weights, on ORT a session or (adapter
mode) one weight set in ORT's optimized layout. An app that alternates between a
few tasks can keep their runners instead of rebuilding one per switch::

    from edgepatch.runtime import TaskSwitcher, load_base

    switcher = TaskSwitcher(load_base("ship/base.tflite"), budget_mib=64)
    switcher.switch("ship/flowers.delta").predict(images)  # miss: read, apply
    switcher.switch("ship/cars.delta").predict(images)     # miss
    switcher.switch("ship/flowers.delta").predict(images)  # hit: a lookup
    switcher.preload(["ship/birds.delta"])                 # build ahead, e.g. at start-up

A delta file is known by its path, inode, size and modification time, so a
file replaced on disk (``fetch`` writes by atomic rename) is read again. When
adding a task would exceed the budget, the least recently used tasks are
dropped first; the runner just built is always kept, so the budget may be
exceeded by one task. A dropped runner's memory is freed once the caller
holds no reference to it either.

Memory per task (``resident_bytes``) is the larger of an estimate and what
building the runner added to the process's RSS (Linux). The estimate is the
patched model and the runtime's packed copy of its weights (2 x base bytes)
for LiteRT and ORT rebuild, and the weight set for ORT adapter mode; the RSS
adds activation memory, which grows with the resolution. ``edgepatch bench``
reports both per configuration.
"""

from __future__ import annotations

import collections
import functools
import os
import time

from edgepatch.errors import MissingFileError, UsageError
from edgepatch.runtime.files import read_task_delta

MIB = 1 << 20


def _trusted(keys) -> dict:
    from edgepatch.format.signature import trusted_keys  # cryptography, only for a caller that checks signatures

    return trusted_keys(keys)


def estimated_bytes(base, runner) -> int:
    """Memory that keeping ``runner`` alive holds at least (see the module docstring)."""
    weights = getattr(runner, "weight_bytes", None)
    return int(weights) if weights is not None else 2 * len(base.bytes)


def current_rss_bytes() -> int | None:
    """This process's resident memory now (Linux), else None."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class TaskSwitcher:
    """Runners for recently used deltas of one base, least recently used dropped first.

    Args:
        base: a base from ``load_base`` (any runtime).
        budget_mib: memory for resident tasks (per task, see the module docstring).
        resolution: input size to allocate each runner for (default: each task's own).
        read: reads a delta file (default ``read_task_delta``: float or int8).
        trusted_keys: accept a delta file only with a valid detached signature (``path + ".sig"``)
            by one of these Ed25519 keys (PEM paths or keys; see ``read_task_delta``). None (the
            default) checks integrity only. Not with ``read``.
    Raises:
        UsageError: a bad budget, or both ``read`` and ``trusted_keys``.
        MissingFileError, KeyFileError: a trusted key file is missing or not an Ed25519 public key.
    """

    def __init__(self, base, budget_mib: float = 64, resolution: int | None = None, read=None, trusted_keys=None):
        if not budget_mib > 0:
            raise UsageError(f"budget_mib must be > 0. Received {budget_mib!r}")
        if read is not None and trusted_keys is not None:
            raise UsageError("give TaskSwitcher a read function or trusted_keys, not both")
        if trusted_keys is not None:
            trusted = _trusted(trusted_keys)  # loaded once, checked on every miss
            read = functools.partial(read_task_delta, trusted_keys=trusted)
        self.base, self.resolution, self._read = base, resolution, read or read_task_delta
        self.budget_bytes = int(budget_mib * MIB)
        self._resident: collections.OrderedDict = collections.OrderedDict()  # key -> (runner, bytes)
        self.hits = self.misses = 0

    @staticmethod
    def _key(path) -> tuple:
        try:
            stat = os.stat(path)
        except OSError as error:
            raise MissingFileError(f"{os.fsdecode(path)}: no such file") from error
        return os.path.realpath(path), stat.st_ino, stat.st_size, stat.st_mtime_ns

    @property
    def resident_bytes(self) -> int:
        return sum(size for _, size in self._resident.values())

    def tasks(self) -> list[str]:
        """Resident tasks, least recently used first."""
        return [runner.task.name for runner, _ in self._resident.values()]

    def preload(self, paths) -> list[str]:
        """Build the tasks of ``paths`` now (e.g. at start-up), so that switching to them is a lookup.

        Loaded in order: past the budget, the earliest are dropped again. Returns the resident tasks.
        """
        for path in paths:
            self.switch(path)
        return self.tasks()

    def switch(self, path):
        """A ready runner for the delta at ``path``: the resident one, or a new one (then evicting)."""
        key = self._key(path)
        entry = self._resident.get(key)
        if entry is not None:
            self._resident.move_to_end(key)
            self.hits += 1
            return entry[0]
        self.misses += 1
        before, start = current_rss_bytes(), time.perf_counter()
        runner = self.base.apply(self._read(path), self.resolution)
        runner.swap_seconds = time.perf_counter() - start  # from the file on disk
        after = current_rss_bytes()
        grown = after - before if before is not None and after is not None else 0
        for stale in [k for k in self._resident if k[0] == key[0]]:  # an older version of the same file
            del self._resident[stale]
        self._resident[key] = (runner, max(estimated_bytes(self.base, runner), grown))
        while len(self._resident) > 1 and self.resident_bytes > self.budget_bytes:
            self._resident.popitem(last=False)
        return runner
