"""Side-by-side runtime ratios for issue 4: P2 (swap), P3 (patched vs base), P4 (ours vs converter).

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_runtime.py \\
        --weights ../shared/weights/mobilenet_v2_1.0_224_no_top.h5 [--demo DEMO_DIR] \\
        [--calibration ../shared/data/flowers5/train]

``--weights`` builds a MobileNetV2 1.0 task at 224 (``task_build.py``: an
S/B + logits patch, converted with ``converters.convert.convert``, and the
same trained Keras model converted directly with TFLiteConverter / tf2onnx,
BN left to the converters). ``--demo`` adds an ``edgepatch demo`` output
(its first task). ``--calibration`` adds int8 bases of the MobileNetV2 task
(exact and compact deltas) and times their swaps. Artefacts are cached
under ``--work-dir``.

Floors say what no implementation of a swap can beat here:
``tflite_floor_copy_create`` copies finished task bytes into a buffer and
creates the interpreter (a float swap must change every kernel before
XNNPACK packs them), ``tflite_floor_read_copy_create`` also reads the delta
file first; ``onnx_adapter_floor_copy`` copies a finished adapter weight set
(``onnx_adapter_floor_read_copy``: after reading the delta file).

Every figure is a ratio of medians of variants measured in the same process
and the same interleaved rounds (``runtime_variants.interleaved``), on one
thread, batch 1. Output: ``--out`` (JSON), with a ``done_when`` summary.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from collections import Counter

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from runtime_variants import (  # noqa: E402
    AffineAdapter,
    CopyThenCreate,
    Interp,
    Session,
    copy_weight_set,
    fresh_buffer_patcher,
    interleaved,
    medians_ms,
    minimums_ms,
    naive_tflite_swap,
    read_file,
    temporary_folder,
)

from edgepatch.apps.bench import runtime_versions  # noqa: E402
from edgepatch.runtime import OnnxBase, TaskSwitcher, TFLiteBase, load_base, read_delta, read_task_delta  # noqa: E402
from edgepatch.runtime.onnx import OnnxRunner  # noqa: E402
from edgepatch.runtime.onnx_file import parse_onnx  # noqa: E402
from edgepatch.runtime.tflite_file import parse_tflite  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ratio(a: float, b: float) -> float:
    return round(a / b, 4)


def _op_counts(ship: str, direct_tflite: str, direct_onnx: str) -> dict:
    count = {
        "ours_tflite": Counter(op.opcode for op in parse_tflite(read_file(f"{ship}/base.tflite"), "ours").ops),
        "direct_tflite": Counter(op.opcode for op in parse_tflite(read_file(direct_tflite), "direct").ops),
        "ours_onnx": Counter(n.op_type for n in parse_onnx(read_file(f"{ship}/base.onnx"), "ours").nodes),
        "direct_onnx": Counter(n.op_type for n in parse_onnx(read_file(direct_onnx), "direct").nodes),
    }
    return {name: dict(sorted(c.items())) for name, c in count.items()}


class Model:
    """Every runner of one task, built once; ``latency`` and ``swaps`` measure them side by side."""

    def __init__(self, ship: str, delta_path: str, direct_tflite: str, direct_onnx: str, threads: int, folder: str):
        self.ship, self.delta_path, self.threads = ship, delta_path, threads
        self.tflite = TFLiteBase.from_file(f"{ship}/base.tflite", threads)
        start = time.perf_counter()
        self.onnx = OnnxBase.from_file(f"{ship}/base.onnx", threads)
        self.rebuild_init_ms = round((time.perf_counter() - start) * 1e3, 1)
        start = time.perf_counter()
        self.onnx_as_stored = OnnxBase.from_file(f"{ship}/base.onnx", threads, optimize_once=False)
        self.as_stored_init_ms = round((time.perf_counter() - start) * 1e3, 1)
        start = time.perf_counter()
        self.adapter = OnnxBase.from_file(f"{ship}/base.onnx", threads, swap_mode="adapter")
        self.adapter_init_ms = round((time.perf_counter() - start) * 1e3, 1)
        # Each swap variant gets its own base: a base keeps 2 buffers for reuse (the live runner's and
        # the next one's); variants sharing one would exhaust them and measure the no-reuse path.
        self.swappers = {
            "tflite_swap": TFLiteBase.from_file(f"{ship}/base.tflite", threads),
            "tflite_apply_only": TFLiteBase.from_file(f"{ship}/base.tflite", threads),
            "onnx_rebuild_swap": OnnxBase.from_file(f"{ship}/base.onnx", threads),
            "onnx_rebuild_swap_as_stored": OnnxBase.from_file(f"{ship}/base.onnx", threads, optimize_once=False),
            "onnx_adapter_swap": OnnxBase.from_file(f"{ship}/base.onnx", threads, swap_mode="adapter"),
            "onnx_adapter_apply_only": OnnxBase.from_file(f"{ship}/base.onnx", threads, swap_mode="adapter"),
        }
        self.delta = read_delta(delta_path)
        # Two resident tasks per switcher (the delta and a copy under another path): switching between
        # them is what an app that keeps its tasks loaded pays, the analog of activating a loaded ORT adapter.
        second = os.path.join(folder, "task_b.delta")
        with open(second, "wb") as handle:
            handle.write(read_file(delta_path))
        self.resident_paths = itertools.cycle([delta_path, second])
        self.switchers = {
            "tflite_switch_resident": TaskSwitcher(TFLiteBase.from_file(f"{ship}/base.tflite", threads), 1024),
            "onnx_rebuild_switch_resident": TaskSwitcher(OnnxBase.from_file(f"{ship}/base.onnx", threads), 1024),
            "onnx_adapter_switch_resident": TaskSwitcher(
                OnnxBase.from_file(f"{ship}/base.onnx", threads, swap_mode="adapter"), 1024),
        }
        self.affine = AffineAdapter(f"{ship}/base.onnx", threads, folder)
        width = self.onnx.sites["logits"].bias.shape[0] if "logits" in self.onnx.sites else len(self.delta.task.classes)
        self.affine_file = self.affine.export(self.delta, width)
        self.affine.activate(self.affine_file)
        self.full_tflite, self.full_onnx = bytes(self.tflite.patched_bytes(self.delta)), bytes(self.onnx.patched_bytes(self.delta))
        # The same task as ORT's optimized model: what a rebuild swap builds its session from.
        patched, buffer = self.onnx._layout_patcher.patch(self.delta)
        self.full_onnx_optimized = bytes(bytearray(patched))
        self.onnx._layout_patcher.pool.give_back(buffer)
        self.full_files = (os.path.join(folder, "task_full.tflite"), os.path.join(folder, "task_full.onnx"))
        for path, data in zip(self.full_files, (self.full_tflite, self.full_onnx)):
            with open(path, "wb") as handle:
                handle.write(data)
        # P4 compares models: our task bytes and the converter's under the same bare wrapper. The
        # runners (``*_task``) add predict()'s input and logits checks, reported as runner overhead.
        self.runners = {
            "tflite_base": self.tflite.apply(None), "tflite_task": self.tflite.apply(self.delta),
            "tflite_task_bare": Interp(self.full_tflite, threads), "tflite_direct": Interp(read_file(direct_tflite), threads),
            "onnx_base": self.onnx.apply(None), "onnx_task": self.onnx.apply(self.delta),
            "onnx_task_bare": Session(self.full_onnx, threads),
            "onnx_task_as_stored": self.onnx_as_stored.apply(self.delta),
            "onnx_adapter_task": self.adapter.apply(self.delta), "onnx_direct": Session(read_file(direct_onnx), threads),
            "onnx_affine_adapter_task": self.affine,
        }

    def _run(self, name: str, image: np.ndarray):
        runner = self.runners[name]
        return runner.run(image) if hasattr(runner, "run") else runner.predict(image)

    def parity(self, resolution: int) -> dict:
        image = np.random.default_rng(1).uniform(-1, 1, (1, resolution, resolution, 3)).astype(np.float32)
        classes = len(self.delta.task.classes)
        reference = self._run("tflite_task", image)[:, :classes]
        return {name: float(np.max(np.abs(self._run(name, image)[:, :classes] - reference)))
                for name in self.runners if not name.endswith("_base")}

    def latency(self, resolution: int, rounds: int) -> dict:
        image = np.random.default_rng(resolution).uniform(-1, 1, (1, resolution, resolution, 3)).astype(np.float32)
        variants = {name: (lambda n=name: self._run(n, image)) for name in self.runners}
        for run in variants.values():
            for _ in range(3):
                run()
        times = interleaved(variants, rounds, per_round=3, keep_last=False)
        ms, mins = medians_ms(times), minimums_ms(times)
        return {"median_ms": ms, "min_ms": mins, "ratios": _latency_ratios(ms), "ratios_of_min": _latency_ratios(mins)}

    def swaps(self, resolution: int, rounds: int) -> dict:
        path, res, threads, delta, swapper = self.delta_path, resolution, self.threads, self.delta, self.swappers
        fresh = fresh_buffer_patcher(self.tflite)
        # One CopyThenCreate per variant: each keeps its last interpreter alive on one of its buffers.
        floor, read_floor = CopyThenCreate(self.full_tflite, threads), CopyThenCreate(self.full_tflite, threads)
        adapter_floor = copy_weight_set(self.runners["onnx_adapter_task"]._weights.arrays)
        variants = {
            "tflite_floor_copy_create": lambda: floor(res),
            "tflite_floor_read_copy_create": lambda: (read_delta(path), read_floor(res))[1],
            "onnx_adapter_floor_copy": adapter_floor,
            "onnx_adapter_floor_read_copy": lambda: (read_delta(path), adapter_floor()),
            "read_delta": lambda: read_delta(path),
            "tflite_create_in_memory": lambda: Interp(self.full_tflite, threads).prepare(res),
            "tflite_swap": lambda: swapper["tflite_swap"].apply(read_delta(path), res),
            "tflite_apply_only": lambda: swapper["tflite_apply_only"].apply(delta, res),
            "tflite_swap_fresh_buffers": lambda: Interp(fresh.patch(read_delta(path))[0], threads).prepare(res),
            "tflite_swap_naive": lambda: naive_tflite_swap(self.tflite, read_delta(path), res, threads),
            "tflite_load_full_file": lambda: Interp(read_file(self.full_files[0]), threads).prepare(res),
            "onnx_create_in_memory": lambda: Session(self.full_onnx, threads),
            "onnx_create_optimized_in_memory": lambda: OnnxRunner(self.full_onnx_optimized, None, 0.0, threads, True),
            "onnx_rebuild_swap": lambda: swapper["onnx_rebuild_swap"].apply(read_delta(path)),
            "onnx_rebuild_swap_as_stored": lambda: swapper["onnx_rebuild_swap_as_stored"].apply(read_delta(path)),
            "onnx_rebuild_naive": lambda: Session(bytes(self.onnx.patched_bytes(read_delta(path))), threads),
            "onnx_load_full_file": lambda: Session(read_file(self.full_files[1]), threads),
            "onnx_adapter_swap": lambda: swapper["onnx_adapter_swap"].apply(read_delta(path)),
            "onnx_adapter_apply_only": lambda: swapper["onnx_adapter_apply_only"].apply(delta),
            "onnx_affine_adapter_activate": lambda: self.affine.activate(self.affine_file),
            **{name: (lambda switcher=switcher: switcher.switch(next(self.resident_paths)))
               for name, switcher in self.switchers.items()},
        }
        times = interleaved(variants, rounds)
        ms, mins = medians_ms(times), minimums_ms(times)
        return {"median_ms": ms, "min_ms": mins, "ratios": _swap_ratios(ms), "ratios_of_min": _swap_ratios(mins)}


def int8_swaps(folders: dict[str, str], resolution: int, rounds: int, threads: int) -> dict:
    """int8 bases, per delta mode: the swap (delta file -> ready runner) vs a plain create of the task's int8 model.

    A task's scales fold into the kernels' quantization scales, so a swap writes scales and a
    few small buffers and never the int8 kernels; ``apply_only`` leaves out reading the file.
    """
    variants = {}
    for mode, folder in folders.items():
        path = os.path.join(folder, "task.int8.delta")
        base, delta = load_base(os.path.join(folder, "base_int8.tflite"), threads), read_task_delta(path)
        full = bytes(base.patched_bytes(delta))
        variants.update({
            f"{mode}_read_delta": lambda path=path: read_task_delta(path),
            f"{mode}_create_in_memory": lambda full=full: Interp(full, threads).prepare(resolution),
            f"{mode}_swap": lambda base=base, path=path: base.apply(read_task_delta(path), resolution),
            f"{mode}_apply_only": lambda base=base, delta=delta: base.apply(delta, resolution),
        })
    ms = medians_ms(interleaved(variants, rounds))
    ratios = {f"{mode}_{kind}_vs_create_in_memory": _ratio(ms[f"{mode}_{kind}"], ms[f"{mode}_create_in_memory"])
              for mode in folders for kind in ("swap", "apply_only", "read_delta")}
    return {"resolution": resolution, "delta_bytes": {m: os.path.getsize(os.path.join(f, "task.int8.delta"))
                                                      for m, f in folders.items()},
            "base_int8_bytes": os.path.getsize(os.path.join(next(iter(folders.values())), "base_int8.tflite")),
            "median_ms": ms, "ratios": ratios}


def _latency_ratios(ms: dict) -> dict:
    return {
        "p3_tflite_patched_vs_base": _ratio(ms["tflite_task"], ms["tflite_base"]),
        "p3_onnx_patched_vs_base": _ratio(ms["onnx_task"], ms["onnx_base"]),
        "p4_tflite_ours_vs_converter": _ratio(ms["tflite_task_bare"], ms["tflite_direct"]),
        "p4_onnx_ours_vs_converter": _ratio(ms["onnx_task_bare"], ms["onnx_direct"]),
        "tflite_runner_vs_converter": _ratio(ms["tflite_task"], ms["tflite_direct"]),
        "onnx_runner_vs_converter": _ratio(ms["onnx_task"], ms["onnx_direct"]),
        "tflite_runner_overhead": _ratio(ms["tflite_task"], ms["tflite_task_bare"]),
        "onnx_adapter_vs_rebuild": _ratio(ms["onnx_adapter_task"], ms["onnx_task"]),
        "onnx_rebuild_optimized_once_vs_as_stored": _ratio(ms["onnx_task"], ms["onnx_task_as_stored"]),
        "onnx_affine_adapter_vs_rebuild": _ratio(ms["onnx_affine_adapter_task"], ms["onnx_task"]),
    }


def _swap_ratios(ms: dict) -> dict:
    return {
        "p2_tflite_swap_vs_create_in_memory": _ratio(ms["tflite_swap"], ms["tflite_create_in_memory"]),
        "p2_tflite_apply_only_vs_create_in_memory": _ratio(ms["tflite_apply_only"], ms["tflite_create_in_memory"]),
        "tflite_floor_copy_create_vs_create_in_memory": _ratio(ms["tflite_floor_copy_create"],
                                                               ms["tflite_create_in_memory"]),
        "tflite_floor_read_copy_create_vs_create_in_memory": _ratio(ms["tflite_floor_read_copy_create"],
                                                                    ms["tflite_create_in_memory"]),
        "tflite_naive_vs_create_in_memory": _ratio(ms["tflite_swap_naive"], ms["tflite_create_in_memory"]),
        "tflite_fresh_buffers_vs_create_in_memory": _ratio(ms["tflite_swap_fresh_buffers"], ms["tflite_create_in_memory"]),
        "p2_onnx_rebuild_swap_vs_create_in_memory": _ratio(ms["onnx_rebuild_swap"], ms["onnx_create_in_memory"]),
        "onnx_rebuild_as_stored_vs_create_in_memory": _ratio(ms["onnx_rebuild_swap_as_stored"],
                                                             ms["onnx_create_in_memory"]),
        "onnx_create_optimized_vs_create_in_memory": _ratio(ms["onnx_create_optimized_in_memory"],
                                                            ms["onnx_create_in_memory"]),
        "tflite_swap_vs_full_file": _ratio(ms["tflite_swap"], ms["tflite_load_full_file"]),
        "onnx_rebuild_swap_vs_full_file": _ratio(ms["onnx_rebuild_swap"], ms["onnx_load_full_file"]),
        "onnx_adapter_swap_vs_full_file": _ratio(ms["onnx_adapter_swap"], ms["onnx_load_full_file"]),
    }


def measure(name: str, model: Model, resolutions, swap_resolutions, rounds: int, direct: tuple[str, str]) -> dict:
    print(f"[{name}] latency and swaps at {list(resolutions)}", file=sys.stderr)
    return {
        "ship": model.ship, "delta": model.delta_path, "task": model.delta.task.name,
        "bytes": {"base_tflite": os.path.getsize(f"{model.ship}/base.tflite"), "base_onnx": os.path.getsize(f"{model.ship}/base.onnx"),
                  "delta": os.path.getsize(model.delta_path), "direct_tflite": os.path.getsize(direct[0]),
                  "direct_onnx": os.path.getsize(direct[1])},
        "op_counts": _op_counts(model.ship, *direct),
        "init_ms": {"onnx_rebuild": model.rebuild_init_ms, "onnx_rebuild_as_stored": model.as_stored_init_ms,
                    "onnx_adapter": model.adapter_init_ms},
        "parity_max_abs_vs_tflite_task": model.parity(max(resolutions)),
        "latency": {str(r): model.latency(r, rounds) for r in resolutions},
        "swap": {str(r): model.swaps(r, rounds) for r in swap_resolutions},
    }


def done_when(result: dict) -> dict:
    top = str(max(int(r) for r in result["latency"]))
    latency, swap = result["latency"][top]["ratios"], result["swap"][top]
    adapter = {r: v["ratios"]["onnx_adapter_vs_rebuild"] for r, v in result["latency"].items()}
    figures = {
        "P3_tflite_patched_vs_base": (latency["p3_tflite_patched_vs_base"], 1.03),
        "P3_onnx_patched_vs_base": (latency["p3_onnx_patched_vs_base"], 1.03),
        "P4_tflite_ours_vs_converter": (latency["p4_tflite_ours_vs_converter"], 1.02),
        "P2_tflite_swap_vs_create": (swap["ratios"]["p2_tflite_swap_vs_create_in_memory"], 1.3),
        # Not swaps: a copy of finished task bytes + create (without, then with reading the delta
        # file), the least any float swap can cost.
        "P2_tflite_floor_copy_create_vs_create": (swap["ratios"]["tflite_floor_copy_create_vs_create_in_memory"], 1.3),
        "P2_tflite_floor_read_copy_create_vs_create": (
            swap["ratios"]["tflite_floor_read_copy_create_vs_create_in_memory"], 1.3),
        "P2_onnx_rebuild_swap_vs_create": (swap["ratios"]["p2_onnx_rebuild_swap_vs_create_in_memory"], 1.2),
        "P2_onnx_adapter_swap_ms": (swap["median_ms"]["onnx_adapter_swap"], 1.0),
        "P2_onnx_adapter_floor_copy_ms": (swap["median_ms"]["onnx_adapter_floor_copy"], 1.0),
        "P2_onnx_adapter_floor_read_copy_ms": (swap["median_ms"]["onnx_adapter_floor_read_copy"], 1.0),
        "P2_onnx_adapter_switch_resident_ms": (swap["median_ms"]["onnx_adapter_switch_resident"], 1.0),
        "P2_onnx_adapter_vs_rebuild_latency_worst": (max(adapter.values()), 1.3),
    }
    return {"at_resolution": int(top), **{k: {"value": v, "goal": g, "met": v <= g} for k, (v, g) in figures.items()},
            "onnx_adapter_vs_rebuild_latency": adapter}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="MobileNetV2 1.0 no-top .h5 weights")
    parser.add_argument("--demo", default=None, help="an `edgepatch demo` output dir (base.keras, patches/, ship/)")
    parser.add_argument("--calibration", default=None,
                        help="photos to calibrate int8 bases of the MobileNetV2 task (adds int8 swaps), "
                             "e.g. ../shared/data/flowers5/train")
    parser.add_argument("--resolutions", default="96,128,160,192,224")
    parser.add_argument("--swap-resolutions", default="96,224")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--work-dir", default=os.path.join(REPO, "benchmarks", "results", "tmp", "bench_runtime"))
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "bench_runtime.json"))
    args = parser.parse_args(argv)
    resolutions = [int(r) for r in args.resolutions.split(",")]
    swap_resolutions = [int(r) for r in args.swap_resolutions.split(",")]
    from task_build import build_int8, build_task, direct_for_ship

    built = build_task(os.path.join(args.work_dir, "mobilenet_v2_1.0_224"), args.weights)
    jobs = {"mobilenet_v2_1.0_224": (built.ship_dir, os.path.join(built.ship_dir, "task.delta"),
                                     (built.direct_tflite, built.direct_onnx))}
    if args.demo:
        task = sorted(os.listdir(os.path.join(args.demo, "patches")))[0].rsplit(".", 1)[0]
        direct = direct_for_ship(args.demo, task, os.path.join(args.work_dir, "demo_direct"))
        jobs["demo"] = (os.path.join(args.demo, "ship"), os.path.join(args.demo, "ship", f"{task}.delta"), direct)
    start = time.perf_counter()
    models = {}
    for name, (ship, delta, direct) in jobs.items():
        model = Model(ship, delta, *direct, threads=1, folder=temporary_folder())
        models[name] = measure(name, model, resolutions, swap_resolutions, args.rounds, direct)
        models[name]["done_when"] = done_when(models[name])
    if args.calibration:
        folders = {mode: build_int8(built, args.calibration, mode) for mode in ("exact", "compact")}
        print(f"[int8] swaps at {max(swap_resolutions)}", file=sys.stderr)
        models["mobilenet_v2_1.0_224"]["int8_swap"] = int8_swaps(folders, max(swap_resolutions), args.rounds, 1)
    result = {"machine": {"platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count()},
              "versions": runtime_versions(), "threads": 1, "rounds": args.rounds,
              "method": " ".join(__doc__.split("\n\n")[3:]).replace("\n", " "), "models": models,
              "seconds": round(time.perf_counter() - start, 1)}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=2, sort_keys=True)
    print(json.dumps({name: m["done_when"] for name, m in models.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
