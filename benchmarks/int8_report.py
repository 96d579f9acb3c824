"""int8 vs float on real photos: accuracy, agreement, delta sizes and latency, in one JSON.

Trains an S/B + last patch of ImageNet MobileNetV2 1.0 on flowers5, converts
with ``--quantize int8``, then measures on the test photos and with
``edgepatch bench`` (float and int8 side by side, base and patched task).

    python benchmarks/int8_report.py --weights ../shared/weights/mobilenet_v2_1.0_224_no_top.h5 \
        --data ../shared/data/flowers5
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import numpy as np


def _top1(runner, images: np.ndarray) -> np.ndarray:
    return np.concatenate([np.argmax(runner.predict(images[i:i + 32]), 1) for i in range(0, len(images), 32)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--resolution", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--bench-resolutions", default="96,128,160")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "int8.json"))
    args = parser.parse_args()

    from edgepatch.bench import BenchConfig, run_bench
    from edgepatch.data import scan_image_folders
    from edgepatch.runtime import load_base, read_task_delta
    from edgepatch.runtime.images import load_images
    from edgepatch.workflows import convert_command, train_command

    work = tempfile.mkdtemp(prefix="int8-report-")
    trained = train_command(backbone="mobilenet_v2", alpha=1.0, resolution=args.resolution, weights=args.weights,
                            data_dir=args.data, task_name="flowers", patch_spec="scale_bias,logits",
                            epochs=args.epochs, lr=None, batch_size=32, bn_stats=None, bn_momentum=0.9,
                            holdout=0.2, seed=0, out_dir=os.path.join(work, "run"))
    calibration = os.path.join(work, "calibration")
    os.makedirs(calibration)
    for name in ("base", "flowers"):
        os.symlink(os.path.abspath(os.path.join(args.data, "train")), os.path.join(calibration, name))
    ship = os.path.join(work, "ship")
    converted = convert_command(trained["base_checkpoint"], [trained["patch"]], ship, ("tflite",), "float32", None,
                                "int8", calibration)
    split = scan_image_folders(args.data)
    float_delta, int8_delta = read_task_delta(f"{ship}/flowers.delta"), read_task_delta(f"{ship}/flowers.int8.delta")
    images = load_images([p for p, _ in split.test], float_delta.task)
    labels = np.array([label for _, label in split.test])
    float_top1 = _top1(load_base(f"{ship}/base.tflite").apply(float_delta), images)
    int8_top1 = _top1(load_base(f"{ship}/base_int8.tflite").apply(int8_delta), images)
    resolutions = tuple(int(r) for r in args.bench_resolutions.split(","))
    latency = {}
    for label, base, delta in (("float", "base.tflite", "flowers.delta"), ("int8", "base_int8.tflite", "flowers.int8.delta")):
        config = BenchConfig(base_files={"tflite": f"{ship}/{base}"}, deltas=(f"{ship}/{delta}",), runtimes=("tflite",),
                             resolutions=resolutions, threads=(1,), runs=50, warmup=5)
        latency[label] = {row["resolution"]: {"latency_ms": row["latency_ms"], "patched_vs_base": row["patched_vs_base"]}
                          for row in run_bench(config)["results"]}
    sizes = {"float_base": os.path.getsize(f"{ship}/base.tflite"), "int8_base": os.path.getsize(f"{ship}/base_int8.tflite"),
             "float_delta": os.path.getsize(f"{ship}/flowers.delta"),
             "int8_delta": os.path.getsize(f"{ship}/flowers.int8.delta")}
    report = {
        "settings": vars(args),
        "accuracy": {"float": float(np.mean(float_top1 == labels)), "int8": float(np.mean(int8_top1 == labels)),
                     "test_images": int(len(labels))},
        "top1_agreement_int8_vs_float": float(np.mean(float_top1 == int8_top1)),
        "patched_int8_vs_own_int8_max_abs": converted["int8"]["deltas"]["flowers"]["max_abs_vs_task_int8"],
        "bytes": sizes,
        "int8_delta_percent_of_int8_base": 100.0 * sizes["int8_delta"] / sizes["int8_base"],
        "float_delta_percent_of_float_base": 100.0 * sizes["float_delta"] / sizes["float_base"],
        "latency": latency,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=2)
    print(json.dumps({k: v for k, v in report.items() if k != "settings"}, indent=2))


if __name__ == "__main__":
    main()
