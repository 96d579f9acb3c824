"""ONNX at ResNet50/InceptionV3 size (issue 15, item 7): rebuild swap vs a plain session create.

Per architecture, a Keras application (``weights=None``, no top, average
pooling, a 5-class ``Dense`` named ``logits``) at a small input, with
realistic BN statistics (random γ/β; moving mean/variance from one batch
in training mode), and one S/B + logits patch made without training (γ and
β perturbed, a fresh head). ``converters.convert.convert`` writes its ONNX
base and delta under ``--work`` (reused when present: ResNet50 converts in
minutes). The weight count, hence the swap cost, does not depend on the input.

Then, in one process, 1 thread, interleaved rounds (``runtime_variants``):

- ``session_create``: a plain ``InferenceSession`` of the base's bytes
  (ORT_ENABLE_ALL), what a swap is compared with;
- ``rebuild_swap``: ``OnnxBase.apply(read_task_delta(path))`` in the default
  ``rebuild`` mode, from the delta file on disk to a ready session;
- ``rebuild_swap_as_stored``: the same with ``optimize_once=False``, which
  re-optimizes per swap (what a base whose layout the runtime cannot map
  falls back to).

Also: the base's load time (two ORT optimizations and the layout map), its
site weights per role, and the parity of the swapped session with the
patched base as stored (``optimize_once=False``).

Usage (from the repository root)::

    .venv/bin/python benchmarks/onnx_scale.py --work /tmp/onnx_scale

Output: ``--out`` (JSON), one entry per architecture with medians and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from runtime_variants import interleaved, medians_ms, minimums_ms, read_file  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK, CLASSES = "task", 5
ARCHITECTURES = {"resnet50": ("ResNet50", 64), "inception_v3": ("InceptionV3", 96),
                 "mobilenet_v2": ("MobileNetV2", 96)}  # name -> (keras.applications class, input size)


def _set_bn_statistics(model, seed: int, batch: np.ndarray | None = None) -> None:
    """Random γ/β, then moving statistics from one batch in training mode (momentum 0 for that batch).

    ``batch``: preprocessed model inputs; uniform noise in [-1, 1] when None.
    """
    import keras

    rng = np.random.default_rng(seed)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        channels = layer.beta.shape[0]
        if layer.gamma is not None:
            layer.gamma.assign(rng.uniform(0.5, 1.5, channels))
        layer.beta.assign(rng.normal(0, 0.2, channels))
    size = int(model.inputs[0].shape[1])
    noise = rng.uniform(-1, 1, (8, size, size, 3)).astype(np.float32)
    batch = noise if batch is None else batch
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(batch, training=True)
    for layer, momentum in zip(norms, momenta):
        layer.momentum = momentum


def _base_model(architecture: str, seed: int):
    import keras

    class_name, size = ARCHITECTURES[architecture]
    keras.utils.set_random_seed(seed)
    backbone = getattr(keras.applications, class_name)(weights=None, include_top=False, pooling="avg",
                                                        input_shape=(size, size, 3))
    logits = keras.layers.Dense(CLASSES, name="logits")(backbone.output)
    model = keras.Model(backbone.inputs, logits, name=architecture)
    _set_bn_statistics(model, seed)
    return model


def _write_patch(base, path: str, seed: int, preprocessing=None) -> None:
    """An S/B + logits patch without training: γ × U(0.8, 1.2), β + N(0, 0.05), a fresh head with a bias.

    ``preprocessing``: what the task records (a ``Preprocessing``); ``tf`` (x/127.5 - 1) when None.
    """
    import keras

    from edgepatch.format.delta import Preprocessing, TaskInfo
    from edgepatch.train.models import with_new_head
    from edgepatch.train.patchfile import extract_patch, write_patch

    copy = keras.models.clone_model(base)
    copy.set_weights(base.get_weights())
    model = with_new_head(copy, CLASSES, seed)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            if layer.gamma is not None:
                layer.gamma.assign(np.asarray(layer.gamma) * rng.uniform(0.8, 1.2, layer.gamma.shape))
            layer.beta.assign(np.asarray(layer.beta) + rng.normal(0, 0.05, layer.beta.shape))
    model.layers[-1].bias.assign(rng.normal(0, 0.5, CLASSES))
    resolution = int(base.inputs[0].shape[1])
    task = TaskInfo(TASK, tuple(f"class_{i}" for i in range(CLASSES)), resolution,
                    preprocessing or Preprocessing(1 / 127.5, -1.0))
    kinds = ("scale_bias", "logits")
    write_patch(path, extract_patch(model, task, kinds, kinds, {"made_by": "benchmarks/onnx_scale.py"}))


def build(work: str, architecture: str, seed: int = 0) -> str:
    """Write (or reuse) ``work/<architecture>/ship/{base.onnx, task.delta}``; returns the ship folder."""
    folder = os.path.join(work, architecture)
    ship = os.path.join(folder, "ship")
    if all(os.path.exists(os.path.join(ship, name)) for name in ("base.onnx", f"{TASK}.delta")):
        return ship
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from converters.convert import convert

    os.makedirs(folder, exist_ok=True)
    base_path, patch_path = os.path.join(folder, "base.keras"), os.path.join(folder, f"{TASK}.patch")
    if not os.path.exists(patch_path):
        model = _base_model(architecture, seed)
        model.save(base_path)
        _write_patch(model, patch_path, seed + 1)
    start = time.perf_counter()
    convert(base_path, [patch_path], ship, formats=("onnx",))
    print(f"[{architecture}] converted in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return ship


def _site_weights(base) -> dict:
    return {"kernel": sum(s.kernel.count for s in base.sites.values()),
            "bias": sum(s.bias.count for s in base.sites.values()), "sites": len(base.sites)}


def measure(ship: str, rounds: int) -> dict:
    """Session create vs rebuild swap of one base, side by side, plus load time and parity."""
    import onnxruntime as ort

    from edgepatch.runtime import OnnxBase, read_task_delta
    from edgepatch.runtime.ort_session import session_options

    base_path, delta_path = os.path.join(ship, "base.onnx"), os.path.join(ship, f"{TASK}.delta")
    data = read_file(base_path)
    start = time.perf_counter()
    base = OnnxBase.from_file(base_path, 1)
    load_ms = (time.perf_counter() - start) * 1e3
    as_stored = OnnxBase(data, base_path, 1, optimize_once=False)  # what a refused layout falls back to
    variants = {
        "session_create": lambda: ort.InferenceSession(data, session_options(1), providers=["CPUExecutionProvider"]),
        "rebuild_swap": lambda: base.apply(read_task_delta(delta_path)),
        "rebuild_swap_as_stored": lambda: as_stored.apply(read_task_delta(delta_path)),
    }
    for variant in variants.values():  # warm-up: first allocations, page faults
        variant()
    times = interleaved(variants, rounds)
    ms, mins = medians_ms(times), minimums_ms(times)
    delta = read_task_delta(delta_path)
    size = delta.task.resolution
    images = np.random.default_rng(0).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    swapped, reference = base.apply(delta).predict(images), as_stored.apply(delta).predict(images)
    base_task = base.apply(None).predict(images)[:, :CLASSES]
    return {"base_bytes": len(data), "site_weights": _site_weights(base), "optimized_layout": base.layout is not None,
            "load_ms": round(load_ms, 1), "rounds": rounds, "median_ms": ms, "min_ms": mins,
            "session_create_ms": ms["session_create"], "rebuild_swap_ms": ms["rebuild_swap"],
            "ratio": round(ms["rebuild_swap"] / ms["session_create"], 4),
            "ratio_of_min": round(mins["rebuild_swap"] / mins["session_create"], 4),
            "parity_vs_as_stored_max_abs": float(np.max(np.abs(swapped - reference))),
            "task_vs_base_task_max_abs": float(np.max(np.abs(swapped - base_task))),  # the delta moves the logits
            "logit_max_abs": float(np.max(np.abs(reference)))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default=os.path.join(REPO, "benchmarks", "results", "tmp", "onnx_scale"),
                        help="folder for the models, conversions and deltas (reused)")
    parser.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES))
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--build-only", action="store_true", help="convert the models and stop")
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "onnx_scale.json"))
    args = parser.parse_args(argv)
    if args.rounds < 5:
        parser.error("--rounds must be at least 5 (medians of 5 or more)")
    ships = {name: build(args.work, name) for name in args.architectures}
    if args.build_only:
        return 0
    result = {"threads": 1, "ratio_target": 1.2,
              "swap": "read_task_delta + OnnxBase.apply (rebuild mode) -> ready session",
              "architectures": {}}
    for name, ship in ships.items():
        print(f"[{name}] measuring", file=sys.stderr)
        result["architectures"][name] = measure(ship, args.rounds)
        row = result["architectures"][name]
        print(json.dumps({name: {k: row[k] for k in ("session_create_ms", "rebuild_swap_ms", "ratio")}}))
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=2, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
