"""Measure a base (and its deltas) per runtime, resolution and thread count.

Runtime-only: numpy, LiteRT and ONNX Runtime (never TensorFlow).

Method. Each (runtime, resolution, threads) configuration runs in a fresh
Python process (``python -m edgepatch.apps.bench SPEC``), so its peak RSS
(``getrusage().ru_maxrss``) belongs to that configuration alone and no
allocator, page-cache or thread-pool state carries over. In that process:

1. ``import_rss_mib``: peak RSS once numpy and the runtime are imported;
2. ``init_ms``: read and index the base file, read the first delta, apply
   it and allocate for the resolution: from nothing to a ready runner;
3. ``first_inference_ms``: the runner's first run (one image);
4. ``warmup`` runs, then ``peak_rss_mib``: the peak so far (one task live);
   then every delta is loaded into a ``TaskSwitcher``: ``resident_task_mib``
   is the RSS each resident task adds (measured) next to what the switcher
   counts against its budget (``resident_task_accounted_mib``), and
   ``switch_hit_ms`` {median, min} the time to switch to a resident task
   (``swaps`` switches cycling through the deltas); the switcher is then
   dropped;
5. ``runs`` timed runs of the task, interleaved with runs of the untouched
   base (alternating which goes first), so ``patched_vs_base`` compares
   medians taken under the same load: ``latency_ms`` {median, p90, min} and
   ``base_latency_ms``;
6. ``swaps`` swaps cycling through the deltas, each timed from the delta's
   bytes on disk to a runner ready at that resolution (``read_task_delta``,
   one read and verification, + ``apply``): ``swap_ms`` {median, min} and its parts ``read_ms``/``apply_ms``.

Without a delta, the base itself is the task and steps 5-6 drop their
base comparison and swap fields (null). Inputs are uniform noise in the
preprocessed range [-1, 1]; batch 1.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

RUNTIMES = ("tflite", "onnx")
ONNX_SWAP_MODES = ("rebuild", "adapter")
EXTENSIONS = {"tflite": ".tflite", "onnx": ".onnx"}


@dataclass(frozen=True)
class BenchConfig:
    """What to measure. Paths are files; ``run_bench`` checks nothing (the CLI validates)."""

    base_files: dict[str, str]  # runtime -> base file
    deltas: tuple[str, ...] = ()
    resolutions: tuple[int, ...] = (96, 128, 160, 192, 224)
    runtimes: tuple[str, ...] = RUNTIMES
    threads: tuple[int, ...] = (1, 2)
    runs: int = 100
    warmup: int = 10
    onnx_swap: str = "rebuild"
    swaps: int = 10


@dataclass(frozen=True)
class WorkerSpec:
    runtime: str
    base: str
    deltas: tuple[str, ...]
    resolution: int
    threads: int
    runs: int
    warmup: int
    swaps: int
    onnx_swap: str = "rebuild"
    seed: int = field(default=0)


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def _ms(seconds) -> float:
    return round(float(seconds) * 1e3, 4)


def _summary(times: list[float]) -> dict:
    values = np.asarray(times)
    return {"median": _ms(np.median(values)), "p90": _ms(np.percentile(values, 90)), "min": _ms(values.min())}


def _open_base(spec: WorkerSpec):
    from edgepatch.runtime import OnnxBase, load_base

    if spec.runtime == "tflite":
        return load_base(spec.base, spec.threads)  # float or int8, told apart by content
    return OnnxBase.from_file(spec.base, spec.threads, swap_mode=spec.onnx_swap)


def _timed_runs(runners: list, image: np.ndarray, runs: int) -> list[list[float]]:
    """Time ``runs`` runs of each runner, interleaved, alternating which runner goes first."""
    times: list[list[float]] = [[] for _ in runners]
    for index in range(runs):
        order = range(len(runners)) if index % 2 == 0 else reversed(range(len(runners)))
        for which in order:
            times[which].append(runners[which].time_one(image))
    return times


def _swaps(base, spec: WorkerSpec) -> dict:
    from edgepatch.runtime import read_task_delta

    read, apply, total = [], [], []
    runner = None
    for index in range(spec.swaps):
        path = spec.deltas[index % len(spec.deltas)]
        start = time.perf_counter()
        delta = read_task_delta(path)
        loaded = time.perf_counter()
        runner = base.apply(delta, spec.resolution)  # the old runner lives until this returns, as in an app
        done = time.perf_counter()
        read.append(loaded - start)
        apply.append(done - loaded)
        total.append(done - start)
    del runner
    return {"swap_ms": {"median": _ms(np.median(total)), "min": _ms(min(total))},
            "read_ms": _ms(np.median(read)), "apply_ms": _ms(np.median(apply))}


def _resident_tasks(base, spec: WorkerSpec) -> dict:
    """Load every delta into a TaskSwitcher: RSS per resident task, then timed switches between them."""
    from edgepatch.runtime import TaskSwitcher
    from edgepatch.runtime.switcher import MIB, current_rss_bytes

    switcher = TaskSwitcher(base, budget_mib=1 << 20, resolution=spec.resolution)
    before = current_rss_bytes()
    for path in spec.deltas:
        switcher.switch(path)
    after = current_rss_bytes()
    hits = []
    for index in range(spec.swaps):
        start = time.perf_counter()
        switcher.switch(spec.deltas[index % len(spec.deltas)])
        hits.append(time.perf_counter() - start)
    tasks = len(spec.deltas)
    return {"switch_hit_ms": {"median": _ms(np.median(hits)), "min": _ms(min(hits))},
            "resident_task_mib": None if before is None else round((after - before) / tasks / MIB, 3),
            "resident_task_accounted_mib": round(switcher.resident_bytes / tasks / MIB, 3)}


def measure(spec: WorkerSpec) -> dict:
    """Measure one configuration in this process (see the module docstring)."""
    from edgepatch.runtime import read_task_delta

    import_rss = _peak_rss_mib()
    image = np.random.default_rng(spec.seed).uniform(-1, 1, (1, spec.resolution, spec.resolution, 3)).astype(np.float32)
    start = time.perf_counter()
    base = _open_base(spec)
    delta = read_task_delta(spec.deltas[0]) if spec.deltas else None
    runner = base.apply(delta, spec.resolution)
    init = time.perf_counter() - start
    first = runner.time_one(image)
    for _ in range(spec.warmup):
        runner.time_one(image)
    row = {
        "runtime": spec.runtime, "resolution": spec.resolution, "threads": spec.threads,
        "onnx_swap": spec.onnx_swap if spec.runtime == "onnx" else None,
        "task": delta.task.name if delta else None,
        "model_bytes": os.path.getsize(spec.base),
        "delta_bytes": os.path.getsize(spec.deltas[0]) if spec.deltas else None,
        "init_ms": _ms(init), "first_inference_ms": _ms(first),
        "import_rss_mib": round(import_rss, 1), "peak_rss_mib": round(_peak_rss_mib(), 1),
    }
    if delta is None:
        (times,) = _timed_runs([runner], image, spec.runs)
        row.update(latency_ms=_summary(times), base_latency_ms=None, patched_vs_base=None,
                   swap_ms=None, read_ms=None, apply_ms=None, switch_hit_ms=None, resident_task_mib=None,
                   resident_task_accounted_mib=None)
        return row
    row.update(_resident_tasks(base, spec))
    base_runner = base.apply(None, spec.resolution)
    for _ in range(spec.warmup):
        base_runner.time_one(image)
    times, base_times = _timed_runs([runner, base_runner], image, spec.runs)
    row.update(latency_ms=_summary(times), base_latency_ms=_summary(base_times),
               patched_vs_base=round(float(np.median(times) / np.median(base_times)), 4))
    del base_runner, runner
    row.update(_swaps(base, spec))
    return row


def worker_specs(config: BenchConfig) -> list[WorkerSpec]:
    """One spec per (resolution, threads, runtime); runtimes innermost so they alternate in time."""
    return [
        WorkerSpec(runtime, config.base_files[runtime], tuple(config.deltas), resolution, threads,
                   config.runs, config.warmup, config.swaps, config.onnx_swap)
        for resolution in config.resolutions
        for threads in config.threads
        for runtime in config.runtimes
    ]


def run_worker(spec: WorkerSpec) -> dict:
    """Measure ``spec`` in a fresh Python process and return its row."""
    from edgepatch.errors import EdgepatchError

    process = subprocess.run(
        [sys.executable, "-m", "edgepatch.apps.bench", json.dumps(asdict(spec))],
        capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    lines = [line for line in process.stdout.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        detail = (process.stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgepatchError(f"bench worker for {spec.runtime} at {spec.resolution}px, {spec.threads} "
                             f"thread(s) failed: {detail}")
    return json.loads(lines[-1])


def runtime_versions() -> dict:
    from importlib import metadata

    versions = {}
    for package in ("ai-edge-litert", "onnxruntime", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def run_bench(config: BenchConfig, progress=None) -> dict:
    """Measure every configuration; ``progress(done, total, spec)`` is called after each."""
    start = time.perf_counter()
    specs = worker_specs(config)
    rows = []
    for index, spec in enumerate(specs):
        rows.append(run_worker(spec))
        if progress is not None:
            progress(index + 1, len(specs), spec)
    return {
        "base_files": dict(config.base_files), "deltas": list(config.deltas),
        "resolutions": list(config.resolutions), "runtimes": list(config.runtimes),
        "threads": list(config.threads), "runs": config.runs, "warmup": config.warmup,
        "swaps": config.swaps if config.deltas else 0, "onnx_swap": config.onnx_swap,
        "cpu_count": os.cpu_count(), "versions": runtime_versions(),
        "method": "each configuration in a fresh process; task and base runs interleaved; "
                  "swap = read_task_delta + apply from the file on disk (see edgepatch/apps/bench.py)",
        "results": rows, "total_seconds": round(time.perf_counter() - start, 2),
    }


if __name__ == "__main__":
    fields = json.loads(sys.argv[1])
    print(json.dumps(measure(WorkerSpec(**{**fields, "deltas": tuple(fields["deltas"])}))))
