"""Resolution cascade on real photos (paper appendix C): fit on validation images, judge on the test split.

One S/B + last task per resolution is transfer-trained on the same frozen
ImageNet MobileNetV2 1.0 (so the tasks share one base, as multi-resolution
deltas do). Thresholds are fitted on validation images: with
``--validation-data``, photos of the same classes that the training set does
not hold; otherwise 20% of ``DATA/train``, held out of training.
``DATA/test`` judges the cascade against every single resolution. Costs are
median single-image latencies on LiteRT, one thread, in the same process.

    python benchmarks/cascade_flowers.py --weights ../shared/weights/mobilenet_v2_1.0_224_no_top.h5 \\
        --data ../shared/data/flowers5 --validation-data ../shared/data/flowers5_large
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import numpy as np


def _fit_dirs(data: str, work: str, validation: str | None, fraction: float, per_class: int, seed: int) -> str:
    """``work/fit/{train,test}`` as symlinks: training images and the validation images thresholds are fitted on.

    Without ``validation``: a per-class (1 - fraction, fraction) split of ``data/train``. With it:
    all of ``data/train``, and up to ``per_class`` photos per class of ``validation/train`` that
    ``data/train`` does not hold (by file name).
    """
    rng = np.random.default_rng(seed)
    root = os.path.join(work, "fit")
    for name in sorted(os.listdir(os.path.join(data, "train"))):
        source = os.path.join(data, "train", name)
        files = sorted(os.listdir(source))
        if validation is None:
            held = set(rng.choice(len(files), max(1, round(fraction * len(files))), replace=False).tolist())
            chosen = {"train": [(source, f) for i, f in enumerate(files) if i not in held],
                      "test": [(source, f) for i, f in enumerate(files) if i in held]}
        else:
            extra_dir = os.path.join(validation, "train", name)
            extra = sorted(set(os.listdir(extra_dir)) - set(files))
            picked = sorted(rng.choice(len(extra), min(per_class, len(extra)), replace=False).tolist())
            chosen = {"train": [(source, f) for f in files], "test": [(extra_dir, extra[i]) for i in picked]}
        for split, pairs in chosen.items():
            os.makedirs(os.path.join(root, split, name), exist_ok=True)
            for folder, file in pairs:
                os.symlink(os.path.abspath(os.path.join(folder, file)), os.path.join(root, split, name, file))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--resolutions", default="96,128,160")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--validation-data", default=None,
                        help="more photos of the same classes (e.g. ../shared/data/flowers5_large): validation images "
                             "are drawn from its train/ photos that --data's train/ lacks")
    parser.add_argument("--validation-per-class", type=int, default=150)
    parser.add_argument("--validation-fraction", type=float, default=0.2, help="without --validation-data")
    parser.add_argument("--tolerance", type=float, default=0.005)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "cascade_flowers.json"))
    args = parser.parse_args()

    from edgepatch.apps.cascade import fit_cascade, measure_stages, simulate
    from edgepatch.train.data import scan_image_folders
    from edgepatch.runtime import load_base
    from edgepatch.apps.jobs import convert_command, train_command

    work = tempfile.mkdtemp(prefix="cascade-flowers-")
    fit_dir = _fit_dirs(args.data, work, args.validation_data, args.validation_fraction, args.validation_per_class,
                        args.seed)
    resolutions = [int(r) for r in args.resolutions.split(",")]
    trained = {}
    for resolution in resolutions:
        trained[resolution] = train_command(
            backbone="mobilenet_v2", alpha=1.0, resolution=resolution, weights=args.weights, data_dir=fit_dir,
            task_name=f"flowers_{resolution}", patch_spec="scale_bias,logits", epochs=args.epochs, lr=args.lr,
            batch_size=32, bn_stats=None, bn_momentum=0.9, holdout=0.2, seed=args.seed,
            out_dir=os.path.join(work, f"run_{resolution}"))
    # Same weights and seed: every run's base.keras holds the same shared weights (convert checks it).
    converted = convert_command(trained[resolutions[0]]["base_checkpoint"],
                                [trained[r]["patch"] for r in resolutions], os.path.join(work, "ship"), ("tflite",),
                                "float32", None)
    base = load_base(converted["base_files"]["tflite"])
    deltas = [task["delta"] for task in converted["tasks"]]
    validation = measure_stages(base, deltas, scan_image_folders(fit_dir))
    fitted = fit_cascade(validation.probabilities, validation.labels, validation.costs_ms, args.tolerance)
    test = measure_stages(base, deltas, scan_image_folders(args.data))
    order = list(fitted.resolutions)
    costs = [validation.costs_ms[r] for r in order]  # the costs the thresholds were fitted with
    accuracy, mean_cost = simulate([test.probabilities[r] for r in order], test.labels, costs, fitted.thresholds)
    singles = {r: {"accuracy": float(np.mean(test.probabilities[r].argmax(1) == test.labels)),
                   "cost_ms": validation.costs_ms[r]} for r in resolutions}
    best_test = max(resolutions, key=lambda r: (singles[r]["accuracy"], -singles[r]["cost_ms"]))
    chosen = fitted.best_single_resolution
    report = {
        "settings": vars(args),
        "images": {"validation": int(validation.labels.size), "test": int(test.labels.size)},
        "fit_on_validation": fitted.to_json(),
        "test": {
            "cascade_accuracy": accuracy, "cascade_mean_cost_ms": mean_cost, "single": singles,
            "vs_validation_choice": {"resolution": chosen,
                                     "accuracy_delta_points": 100 * (accuracy - singles[chosen]["accuracy"]),
                                     "cost_reduction": 1 - mean_cost / singles[chosen]["cost_ms"]},
            "vs_best_on_test": {"resolution": best_test,
                                "accuracy_delta_points": 100 * (accuracy - singles[best_test]["accuracy"]),
                                "cost_reduction": 1 - mean_cost / singles[best_test]["cost_ms"]},
        },
        "train_test_accuracy": {r: trained[r]["test_accuracy"] for r in resolutions},
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=2)
    print(json.dumps(report["test"], indent=2))


if __name__ == "__main__":
    main()
