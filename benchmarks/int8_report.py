"""int8 vs float on real photos: accuracy, agreement, delta sizes, convert time and latency, in one JSON.

For each dataset given, trains an S/B + last patch of ImageNet MobileNetV2 1.0 with ``train``'s
defaults, converts it with ``--quantize int8`` and no ``--calibration`` (the default: the task's
own training images, with bias correction) in both delta modes (compact and exact), then measures
on the test photos: float and int8 accuracy, the drop in points per mode, top-1 agreement of the
patched int8 base with float and with the task's separately converted int8 model, and, as the
ablation, that int8 model without bias correction. ``edgepatch bench`` gives float and int8
latency side by side.

    python benchmarks/int8_report.py --weights ../shared/weights/mobilenet_v2_1.0_224_no_top.h5 \\
        --data ../shared/data/eurosat --data ../shared/data/flowers5
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np


def _own_int8_model(trained: dict, width: int, bias_correction: bool) -> bytes:
    """The task's separately converted int8 model: same folded graph, same calibration images as convert."""
    from converters.convert import load_checkpoint, task_model
    from converters.fold import fold_batchnorm
    from converters.folded_model import build_folded_model, foldable_pads
    from converters.calibration import int8_calibration
    from converters.quantize import export_int8
    from edgepatch.train.patchfile import read_patch

    patch = read_patch(trained["patch"])
    base = load_checkpoint(trained["base_checkpoint"])
    model = task_model(base, patch, trained["patch"])
    images = int8_calibration(None, [patch]).images(patch.task.name, patch.task.resolution, patch.task.preprocessing)
    pads = foldable_pads(base, (int(base.inputs[0].shape[1]), patch.task.resolution))  # as convert decides
    return export_int8(build_folded_model(model, fold_batchnorm(model), width, pads), images, bias_correction)


def _int8_mode(folder: str, task: str, converted: dict, seconds: float, images, labels, float_top1,
               own_top1) -> dict:
    """Sizes, accuracy and agreement of one int8 delta mode's ship folder."""
    from converters.quantize import top1
    from edgepatch.runtime import load_base, read_task_delta

    patched_top1 = top1(load_base(f"{folder}/base_int8.tflite").apply(
        read_task_delta(f"{folder}/{task}.int8.delta")), images)
    base_bytes = os.path.getsize(f"{folder}/base_int8.tflite")
    delta_bytes = os.path.getsize(f"{folder}/{task}.int8.delta")
    accuracy = float(np.mean(patched_top1 == labels))
    return {"delta_bytes": delta_bytes, "int8_base_bytes": base_bytes,
            "delta_percent_of_int8_base": 100.0 * delta_bytes / base_bytes,
            "accuracy": accuracy, "drop_points_vs_float": 100.0 * (float(np.mean(float_top1 == labels)) - accuracy),
            "top1_agreement_vs_own_int8": float(np.mean(patched_top1 == own_top1)),
            "top1_agreement_vs_float": float(np.mean(patched_top1 == float_top1)),
            "convert_seconds": seconds, "calibration": converted["int8"]["calibration"],
            "convert_check": converted["int8"]["deltas"][task]}


def _latency(ship: str, task: str, resolutions: tuple[int, ...]) -> dict:
    """``edgepatch bench`` of the float and the int8 base, each alone and patched."""
    from edgepatch.apps.bench import BenchConfig, run_bench

    latency = {}
    for label, base, delta in (("float", "base.tflite", f"{task}.delta"),
                               ("int8", "base_int8.tflite", f"{task}.int8.delta")):
        config = BenchConfig(base_files={"tflite": f"{ship}/{base}"}, deltas=(f"{ship}/{delta}",), runtimes=("tflite",),
                             resolutions=resolutions, threads=(1,), runs=50, warmup=5)
        latency[label] = {row["resolution"]: {"latency_ms": row["latency_ms"], "patched_vs_base": row["patched_vs_base"]}
                          for row in run_bench(config)["results"]}
    return latency


def measure(data: str, args, work: str) -> dict:
    """Train one task on ``data``, convert it both ways, measure float and int8 on its test photos."""
    from converters.quantize import top1
    from edgepatch.apps.jobs import convert_command, train_command
    from edgepatch.runtime import load_base, read_task_delta
    from edgepatch.runtime.images import load_images
    from edgepatch.runtime.tflite import TFLiteRunner
    from edgepatch.train.data import scan_image_folders

    task = os.path.basename(os.path.normpath(data))
    trained = train_command(backbone="mobilenet_v2", alpha=1.0, resolution=args.resolution, weights=args.weights,
                            data_dir=data, task_name=task, patch_spec="scale_bias,logits", epochs=args.epochs,
                            lr=args.lr, batch_size=32, bn_stats=None, bn_momentum=0.9, holdout=0.2, seed=args.seed,
                            out_dir=os.path.join(work, task, "run"), quiet=True)
    ships, converted, seconds = {}, {}, {}
    for mode in ("compact", "exact"):
        ships[mode] = os.path.join(work, task, f"ship-{mode}")
        start = time.perf_counter()
        converted[mode] = convert_command(trained["base_checkpoint"], [trained["patch"]], ships[mode], ("tflite",),
                                          "float32", None, "int8", None, mode)
        seconds[mode] = time.perf_counter() - start
    ship = ships["compact"]
    split = scan_image_folders(data)
    float_delta = read_task_delta(f"{ship}/{task}.delta")
    images = load_images([p for p, _ in split.test], float_delta.task)
    labels = np.array([label for _, label in split.test])
    float_top1 = top1(load_base(f"{ship}/base.tflite").apply(float_delta), images)
    width = converted["compact"]["head_width"]
    own_top1, plain_top1 = (top1(TFLiteRunner(_own_int8_model(trained, width, corrected), float_delta.task, 0.0, 1),
                                 images) for corrected in (True, False))
    float_accuracy = float(np.mean(float_top1 == labels))
    return {
        "task": task,
        "test_images": int(len(labels)),
        "train_config": trained["config"],
        "accuracy": {"float": float_accuracy, "own_int8": float(np.mean(own_top1 == labels)),
                     "own_int8_without_bias_correction": float(np.mean(plain_top1 == labels))},
        "own_int8_top1_agreement_vs_float": float(np.mean(own_top1 == float_top1)),
        "own_int8_without_bias_correction_top1_agreement_vs_float": float(np.mean(plain_top1 == float_top1)),
        "int8_delta_modes": {mode: _int8_mode(folder, task, converted[mode], seconds[mode], images, labels, float_top1,
                                              own_top1) for mode, folder in ships.items()},
        "float_bytes": {"base": os.path.getsize(f"{ship}/base.tflite"),
                        "delta": os.path.getsize(f"{ship}/{task}.delta")},
        "latency": _latency(ship, task, tuple(int(r) for r in args.bench_resolutions.split(","))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--data", required=True, action="append", help="a dataset folder; once per dataset")
    parser.add_argument("--resolution", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=None, help="default: train's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bench-resolutions", default="96,128,160")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "int8.json"))
    args = parser.parse_args()

    from converters.calibration import CALIBRATION_LIMIT

    work = tempfile.mkdtemp(prefix="int8-report-")
    datasets = {}
    for data in args.data:
        row = measure(data, args, work)
        datasets[row.pop("task")] = row
    report = {"settings": {**vars(args), "calibration_limit": CALIBRATION_LIMIT}, "datasets": datasets}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=2)
    print(json.dumps({task: {"accuracy": row["accuracy"],
                             **{mode: {k: m[k] for k in ("accuracy", "drop_points_vs_float", "delta_bytes",
                                                         "convert_seconds")}
                                for mode, m in row["int8_delta_modes"].items()}}
                      for task, row in datasets.items()}, indent=2))


if __name__ == "__main__":
    main()
