"""Does the dynamic input shape cost latency? Our base, a fixed-shape conversion of it, and the converter's own.

P4 compares our (dynamic-shape) base with TFLiteConverter's conversion of the
trained Keras model at a fixed 224. This isolates the shape: the same folded
model is exported once more with a fixed ``--resolution`` input, and the
three base-task interpreters are timed interleaved (``runtime_variants``).

Usage (from the repository root; builds or reuses ``bench_runtime``'s task)::

    .venv/bin/python benchmarks/base_shape.py --weights ../shared/weights/mobilenet_v2_1.0_224_no_top.h5

Output: ``--out`` (JSON) with medians, minima and the ratios to the converter's model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from runtime_variants import Interp, interleaved, medians_ms, minimums_ms, read_file  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fixed_shape_base(task_dir: str, resolution: int) -> bytes:
    """Our TFLite base for ``task_dir/base.keras`` with a fixed square input (no task patch)."""
    from converters.export_tflite import export_tflite_base
    from converters.fold import fold_batchnorm
    from converters.folded_model import build_folded_model, foldable_pads
    from edgepatch.train.models import clone_with_input, load_checkpoint
    from edgepatch.kinds.keras_sites import find_sites

    base = load_checkpoint(os.path.join(task_dir, "base.keras"))
    folded = fold_batchnorm(base)
    width = folded[find_sites(base)[-1].name].out_channels
    model = build_folded_model(base, folded, width, foldable_pads(base, (resolution,)))
    fixed = clone_with_input(model, resolution, clone_function=lambda layer: layer)  # shares the folded layers
    return export_tflite_base(fixed, folded, width)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="MobileNetV2 1.0 no-top .h5 weights")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--work-dir", default=os.path.join(REPO, "benchmarks", "results", "tmp", "bench_runtime"))
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "base_shape.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from task_build import build_task

    built = build_task(os.path.join(args.work_dir, "mobilenet_v2_1.0_224"), args.weights)
    models = {"ours_dynamic": read_file(os.path.join(built.ship_dir, "base.tflite")),
              "ours_fixed": fixed_shape_base(os.path.dirname(built.ship_dir), args.resolution),
              "converter": read_file(built.direct_tflite)}
    size = args.resolution
    image = np.random.default_rng(0).uniform(-1, 1, (1, size, size, 3)).astype(np.float32)
    runners = {name: Interp(data, 1) for name, data in models.items()}
    for runner in runners.values():
        runner.prepare(size)
        for _ in range(5):
            runner.run(image)
    times = interleaved({name: (lambda r=r: r.run(image)) for name, r in runners.items()}, args.rounds,
                        per_round=3, keep_last=False)
    ms, mins = medians_ms(times), minimums_ms(times)
    result = {"resolution": size, "rounds": args.rounds, "threads": 1, "model_bytes": {k: len(v) for k, v in models.items()},
              "median_ms": ms, "min_ms": mins,
              "ratios_to_converter": {k: round(ms[k] / ms["converter"], 4) for k in ms},
              "ratios_of_min_to_converter": {k: round(mins[k] / mins["converter"], 4) for k in mins}}
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=2, sort_keys=True)
    print(json.dumps(result["ratios_to_converter"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
