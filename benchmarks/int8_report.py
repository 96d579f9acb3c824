"""int8 vs float on real photos: accuracy, agreement, delta sizes and latency, in one JSON.

Trains an S/B + last patch of ImageNet MobileNetV2 1.0 on flowers5, converts
with ``--quantize int8`` in both delta modes (compact and exact), then
measures on the test photos (accuracy; top-1 agreement of the patched int8
base with the task's separately converted int8 model) and with ``edgepatch
bench`` (float and int8 side by side, base and patched task).

    python benchmarks/int8_report.py --weights ../shared/weights/mobilenet_v2_1.0_224_no_top.h5 \
        --data ../shared/data/flowers5
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import numpy as np


def _own_int8_model(trained: dict, calibration: str, width: int) -> bytes:
    """The task's separately converted int8 model: same folded graph, same calibration images."""
    from converters.convert import load_checkpoint, task_model
    from converters.fold import fold_batchnorm
    from converters.folded_model import build_folded_model, foldable_pads
    from converters.quantize import export_int8, load_calibration
    from edgepatch.train.patchfile import read_patch

    patch = read_patch(trained["patch"])
    base = load_checkpoint(trained["base_checkpoint"])
    model = task_model(base, patch, trained["patch"])
    images = load_calibration(calibration, patch.task.name, patch.task.resolution, patch.task.preprocessing)
    pads = foldable_pads(base, (int(base.inputs[0].shape[1]), patch.task.resolution))  # as convert decides
    return export_int8(build_folded_model(model, fold_batchnorm(model), width, pads), images)


def _int8_mode(folder: str, converted: dict, images, labels, float_top1, own_top1) -> dict:
    """Sizes and agreement of one int8 delta mode's ship folder."""
    from converters.quantize import top1
    from edgepatch.runtime import load_base, read_task_delta

    patched_top1 = top1(load_base(f"{folder}/base_int8.tflite").apply(
        read_task_delta(f"{folder}/flowers.int8.delta")), images)
    base_bytes = os.path.getsize(f"{folder}/base_int8.tflite")
    delta_bytes = os.path.getsize(f"{folder}/flowers.int8.delta")
    return {"delta_bytes": delta_bytes, "int8_base_bytes": base_bytes,
            "delta_percent_of_int8_base": 100.0 * delta_bytes / base_bytes,
            "accuracy": float(np.mean(patched_top1 == labels)),
            "top1_agreement_vs_own_int8": float(np.mean(patched_top1 == own_top1)),
            "top1_agreement_vs_float": float(np.mean(patched_top1 == float_top1)),
            "convert_check": converted["int8"]["deltas"]["flowers"]}


def _latency(ship: str, resolutions: tuple[int, ...]) -> dict:
    """``edgepatch bench`` of the float and the int8 base, each alone and patched."""
    from edgepatch.apps.bench import BenchConfig, run_bench

    latency = {}
    for label, base, delta in (("float", "base.tflite", "flowers.delta"), ("int8", "base_int8.tflite", "flowers.int8.delta")):
        config = BenchConfig(base_files={"tflite": f"{ship}/{base}"}, deltas=(f"{ship}/{delta}",), runtimes=("tflite",),
                             resolutions=resolutions, threads=(1,), runs=50, warmup=5)
        latency[label] = {row["resolution"]: {"latency_ms": row["latency_ms"], "patched_vs_base": row["patched_vs_base"]}
                          for row in run_bench(config)["results"]}
    return latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--bench-resolutions", default="96,128,160")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "int8.json"))
    args = parser.parse_args()

    from converters.quantize import top1
    from edgepatch.train.data import scan_image_folders
    from edgepatch.runtime import load_base, read_task_delta
    from edgepatch.runtime.images import load_images
    from edgepatch.runtime.tflite import TFLiteRunner
    from edgepatch.apps.jobs import convert_command, train_command

    work = tempfile.mkdtemp(prefix="int8-report-")
    trained = train_command(backbone="mobilenet_v2", alpha=1.0, resolution=args.resolution, weights=args.weights,
                            data_dir=args.data, task_name="flowers", patch_spec="scale_bias,logits",
                            epochs=args.epochs, lr=args.lr, batch_size=32, bn_stats=None, bn_momentum=0.9,
                            holdout=0.2, seed=0, out_dir=os.path.join(work, "run"))
    calibration = os.path.join(work, "calibration")
    os.makedirs(calibration)
    for name in ("base", "flowers"):
        os.symlink(os.path.abspath(os.path.join(args.data, "train")), os.path.join(calibration, name))
    ships, converted = {}, {}
    for mode in ("compact", "exact"):
        ships[mode] = os.path.join(work, f"ship-{mode}")
        converted[mode] = convert_command(trained["base_checkpoint"], [trained["patch"]], ships[mode], ("tflite",),
                                          "float32", None, "int8", calibration, mode)
    ship = ships["compact"]
    split = scan_image_folders(args.data)
    float_delta = read_task_delta(f"{ship}/flowers.delta")
    images = load_images([p for p, _ in split.test], float_delta.task)
    labels = np.array([label for _, label in split.test])
    float_top1 = top1(load_base(f"{ship}/base.tflite").apply(float_delta), images)
    own_top1 = top1(TFLiteRunner(_own_int8_model(trained, calibration, converted["compact"]["head_width"]),
                                  float_delta.task, 0.0, 1), images)
    modes = {mode: _int8_mode(folder, converted[mode], images, labels, float_top1, own_top1)
             for mode, folder in ships.items()}
    latency = _latency(ship, tuple(int(r) for r in args.bench_resolutions.split(",")))
    report = {
        "settings": vars(args),
        "test_images": int(len(labels)),
        "accuracy": {"float": float(np.mean(float_top1 == labels)), "own_int8": float(np.mean(own_top1 == labels))},
        "own_int8_top1_agreement_vs_float": float(np.mean(own_top1 == float_top1)),
        "int8_delta_modes": modes,
        "float_bytes": {"base": os.path.getsize(f"{ship}/base.tflite"), "delta": os.path.getsize(f"{ship}/flowers.delta")},
        "latency": latency,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=2)
    print(json.dumps({k: v for k, v in report.items() if k != "settings"}, indent=2))


if __name__ == "__main__":
    main()
