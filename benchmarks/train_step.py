"""Training-step cost of a patch (S/B + last layer) vs full fine-tuning, side by side.

Each variant runs in its own subprocess (so peak RSS is its own), alternating
variants for ``--rounds`` rounds; the JSON reports median step times, peak
RSS and their ratios.

    python benchmarks/train_step.py --weights ../shared/weights/mobilenet_v2_1.0_224_no_top.h5

With ``--head-data DIR`` it times head-only training instead (``--patch logits``), with the
backbone's features cached and with the full pass each epoch, into ``results/head_cache.json``:

    python benchmarks/train_step.py --weights ../shared/weights/mobilenet_v2_1.0_224_no_top.h5 \
        --head-data ../shared/data/eurosat_large --resolution 96
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# Variant -> (kinds trained, BN-statistics mode during the timed steps; "reestimate" trains on batch statistics).
NOISE_S = 1.0  # spread of repeated whole-process training times here, in seconds
VARIANTS = {"patch_sb_logits": (("scale_bias", "logits"), "frozen"), "full_finetune": (("full",), "reestimate")}


def worker(variant: str, weights: str, resolution: int, batch: int, steps: int) -> dict:
    """Time ``steps`` training steps of one variant (runs in the subprocess)."""
    import resource

    import keras
    import numpy as np

    from edgepatch.kinds import statistics_during_training
    from edgepatch.train.models import build_classifier
    from edgepatch.train.transfer import freeze_outside

    model = build_classifier(alpha=1.0, resolution=resolution, weights=weights, num_classes=5)
    trained, bn_stats = VARIANTS[variant]
    freeze_outside(model, trained)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (batch, resolution, resolution, 3)).astype("float32")
    y = rng.integers(0, 5, batch)
    times = []
    with statistics_during_training(model, trained, bn_stats, momentum=0.9):
        for _ in range(steps + 3):
            start = time.perf_counter()
            model.train_on_batch(x, y)
            times.append(time.perf_counter() - start)
    return {"step_ms": statistics.median(times[3:]) * 1e3,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def head_worker(variant: str, weights: str, data: str, resolution: int, epochs: int) -> dict:
    """Train ``--patch logits`` for ``epochs`` epochs with or without cached features (runs in the subprocess)."""
    from edgepatch.format.task import TaskInfo
    from edgepatch.train.data import scan_image_folders
    from edgepatch.train.models import BACKBONES, build_classifier
    from edgepatch.train.transfer import TrainConfig, train

    split = scan_image_folders(data)
    model = build_classifier(alpha=1.0, resolution=resolution, weights=weights, num_classes=len(split.classes))
    task = TaskInfo("head", split.classes, resolution, BACKBONES["mobilenet_v2"].preprocessing)
    config = TrainConfig(trained=("logits",), epochs=epochs, cache_features=variant == "cached_features")
    start = time.perf_counter()
    result = train(model, split, task, config, verbose=0)
    return {"train_s": time.perf_counter() - start, "test_accuracy": result.test_accuracy,
            "images": len(split.train)}


def head_cache(args) -> dict:
    """Per-epoch cost of head-only training, cached vs full pass: the slope between two epoch counts.

    ``train_s(E)`` = fixed cost (decode, the feature pass, the accuracy passes) + E x epoch cost,
    so ``(train_s(E2) - train_s(E1)) / (E2 - E1)`` is the epoch cost alone.
    """
    runs: dict[str, dict[int, dict]] = {"cached_features": {}, "full_pass": {}}
    for folder, _, files in os.walk(args.head_data):  # warm the page cache: the first run must not pay the disk
        for name in files:
            with open(os.path.join(folder, name), "rb") as handle:
                handle.read()
    for epochs in (1, args.head_epochs):
        for variant in runs:  # interleaved
            done = subprocess.run([sys.executable, __file__, "--head-worker", variant, "--weights", args.weights,
                                   "--head-data", args.head_data, "--resolution", str(args.resolution),
                                   "--head-epochs", str(epochs)], capture_output=True, text=True, check=True,
                                  env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
            runs[variant][epochs] = json.loads(done.stdout.strip().splitlines()[-1])
    span = args.head_epochs - 1
    epoch_s = {v: (r[args.head_epochs]["train_s"] - r[1]["train_s"]) / span for v, r in runs.items()}
    return {"settings": {"data": args.head_data, "resolution": args.resolution, "weights": args.weights,
                         "epochs": [1, args.head_epochs], "images": runs["full_pass"][1]["images"]},
            "runs": runs, "epoch_s": epoch_s,
            # A cached epoch is below the noise of whole-process times: bound it by NOISE_S from above.
            "epoch_speedup_at_least": epoch_s["full_pass"] / max(epoch_s["cached_features"], NOISE_S),
            "total_speedup_at_max_epochs": runs["full_pass"][args.head_epochs]["train_s"]
            / runs["cached_features"][args.head_epochs]["train_s"],
            "test_accuracy": {v: r[args.head_epochs]["test_accuracy"] for v, r in runs.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="none")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "train_step.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--head-data", help="also time head-only training (--patch logits) with and without "
                        "cached features on this image folder; writes results/head_cache.json")
    parser.add_argument("--head-epochs", type=int, default=5)
    parser.add_argument("--head-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.weights, args.resolution, args.batch, args.steps)))
        return
    if args.head_worker:
        print(json.dumps(head_worker(args.head_worker, args.weights, args.head_data, args.resolution,
                                     args.head_epochs)))
        return
    if args.head_data:
        result = head_cache(args)
        path = os.path.join(os.path.dirname(args.out), "head_cache.json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            json.dump(result, handle, indent=2)
        print(json.dumps({k: result[k] for k in ("epoch_s", "epoch_speedup_at_least", "test_accuracy")}, indent=2))
        return
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name in VARIANTS:  # interleaved, so machine noise hits both alike
            done = subprocess.run([sys.executable, __file__, "--worker", name, "--weights", args.weights,
                                   "--resolution", str(args.resolution), "--batch", str(args.batch),
                                   "--steps", str(args.steps)], capture_output=True, text=True, check=True,
                                  env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    summary = {name: {"step_ms": statistics.median(r["step_ms"] for r in rs),
                      "peak_rss_mib": max(r["peak_rss_mib"] for r in rs)} for name, rs in runs.items()}
    result = {
        "settings": vars(args) | {"worker": None},
        "variants": summary,
        "runs": runs,
        "step_ratio_patch_vs_full": summary["patch_sb_logits"]["step_ms"] / summary["full_finetune"]["step_ms"],
        "rss_ratio_patch_vs_full": summary["patch_sb_logits"]["peak_rss_mib"] / summary["full_finetune"]["peak_rss_mib"],
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=2)
    print(json.dumps({k: result[k] for k in ("variants", "step_ratio_patch_vs_full", "rss_ratio_patch_vs_full")},
                     indent=2))


if __name__ == "__main__":
    main()
