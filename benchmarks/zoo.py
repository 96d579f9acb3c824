"""Model zoo (issue 15, item 9): every architecture of the test table through convert and both runtimes.

Per architecture, a Keras model as a user brings it: ``weights=None`` at
``--resolution`` px, a 5-class ``logits`` head, random γ/β and BN moving
statistics from one batch (``onnx_scale._set_bn_statistics``, Dropout off) of
random pixels preprocessed as the model wants, the inputs ``convert`` checks
parity on, plus photos (``--images``) for raw-input models; rewritten by
``edgepatch.train.graph.canonical_model``. One S/B +
logits patch is made without training (``onnx_scale._write_patch``) and
``converters.convert.convert`` writes the tflite and onnx bases and the delta
(timed: ``convert_s``). The same Keras task model is converted directly with
``tf.lite.TFLiteConverter.from_keras_model`` (the P4 reference). Everything
is cached under ``--work/<architecture>-<resolution>-<statistics>`` with ``build.json``.

Then, 1 thread, batch 1, in one process, variants interleaved in rounds
(``runtime_variants.interleaved``), medians. With ``--processes N`` every
architecture is measured in N fresh processes and P3/P4 are the medians of
the N per-process ratios (listed in ``P3_per_process``/``P4_per_process``):
between processes the same ratio moved by up to 10% here, more than within one.

- P3 = task runner / base runner on LiteRT (``load_base`` + ``apply(delta)``
  vs ``apply(None)``, ``TaskRunner.time_one``);
- P4 = our task model (the base's bytes with the delta written in, under a bare
  interpreter) / the converter's own model under the same bare interpreter;
  ``runner_vs_converter`` times our runner instead;
- ``swap_ms``: ``apply(delta)`` of an in-memory delta while the previous
  runner stays alive, on LiteRT and ONNX (default ``rebuild`` mode);
- parity: max |logit difference| of each runtime vs the Keras task model on
  ``convert``'s kind of parity inputs (another draw; target 1e-4 × max(1, max|logit|)).

A target missed gets a ``notes`` line from the two .tflite files' op counts
(``input_scaling_probe_ms`` times the one op pattern they differ in); an
architecture that does not build gets its ``error`` line instead of figures.

Usage (from the repository root)::

    .venv/bin/python benchmarks/zoo.py [--architectures custom resnet50] [--resolution 96] [--processes 3]

Output: ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from collections import Counter

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from onnx_scale import CLASSES, TASK, _set_bn_statistics, _write_patch  # noqa: E402
from runtime_variants import Interp, interleaved, medians_ms, minimums_ms, read_file  # noqa: E402

from edgepatch.train.preprocessing import PREPROCESSING_MODES  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# name -> (edgepatch --base family or None, alpha, preprocess_input mode)
ARCHITECTURES = {
    "mobilenet_v2": ("mobilenet_v2", 0.35, "tf"),
    "mobilenet_v3_small": ("mobilenet_v3_small", 1.0, "raw"),
    "mobilenet_v3_large": ("mobilenet_v3_large", 1.0, "raw"),
    "efficientnet_b0": ("efficientnet_b0", 1.0, "raw"),
    "resnet50": ("resnet50", 1.0, "caffe"),
    "resnet50v2": (None, 1.0, "tf"),  # BN before the conv: affine sites
    "inception_v3": ("inception_v3", 1.0, "tf"),
    "custom": (None, 1.0, "tf"),  # SeparableConv2D, grouped Conv2D, a BN after an Add
}
TARGETS = {"P3": 1.03, "P4": 1.02}
PARITY_TOLERANCE = 1e-4  # × max(1, max |logit|), the done-when
DEFAULT_IMAGES = os.path.join(os.path.dirname(REPO), "shared", "data", "eurosat", "train")


def _custom_model(resolution: int):
    import keras
    from keras import layers

    inputs = keras.Input((resolution, resolution, 3))
    x = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.ReLU()(layers.BatchNormalization(name="stem_bn")(x))
    y = layers.SeparableConv2D(32, 3, padding="same", use_bias=False, name="separable")(x)
    y = layers.ReLU()(layers.BatchNormalization(name="separable_bn")(y))
    z = layers.Conv2D(32, 3, padding="same", groups=2, use_bias=False, name="grouped")(y)
    z = layers.BatchNormalization(name="grouped_bn")(z)
    x = layers.ReLU()(layers.BatchNormalization(name="add_bn")(layers.Add()([y, z])))
    return keras.Model(inputs, layers.GlobalAveragePooling2D()(x), name="custom")


def _keras_model(name: str, resolution: int, seed: int):
    """The architecture with pooled features and a fresh 5-class ``logits`` head."""
    import keras

    from edgepatch.train.models import HEAD_NAME, build_classifier

    family, alpha, _ = ARCHITECTURES[name]
    if family is not None:
        return build_classifier(family, alpha=alpha, resolution=resolution, weights="none",
                                num_classes=CLASSES, seed=seed)
    keras.utils.set_random_seed(seed)
    features = _custom_model(resolution) if name == "custom" else keras.applications.ResNet50V2(
        weights=None, include_top=False, pooling="avg", input_shape=(resolution, resolution, 3))
    logits = keras.layers.Dense(CLASSES, name=HEAD_NAME)(features.output)
    return keras.Model(features.inputs, logits, name=name)


def _photos(images_dir: str | None, resolution: int, mode: str, count: int = 8) -> np.ndarray | None:
    """``count`` photos (one class folder after another), preprocessed as ``mode``; None without a folder."""
    from edgepatch.format.task import TaskInfo
    from edgepatch.runtime.images import load_images

    if not images_dir:
        return None
    folders = sorted(glob.glob(os.path.join(images_dir, "*", "")))
    per_folder = [sorted(glob.glob(os.path.join(folder, "*.jpg"))) for folder in folders]
    paths = [files[i] for i in range(count) for files in per_folder if i < len(files)][:count]
    task = TaskInfo(TASK, ("a", "b"), resolution, PREPROCESSING_MODES[mode])
    return load_images(paths, task) if paths else None


def _direct_tflite(model, path: str) -> float:
    from task_build import _direct_tflite as convert_directly

    start = time.perf_counter()
    convert_directly(model, path)
    return time.perf_counter() - start


def _statistics_source(images_dir: str | None, mode: str) -> str:
    """Noise (random pixels preprocessed as the model wants: what convert checks parity on);
    photos too for raw-input models.

    A random-weight model is well conditioned only near the inputs its statistics came from:
    statistics from photos alone leave it amplifying round-off on noise past convert's check
    (measured: EfficientNetB0), and photos added to a ``tf`` model's noise did so for InceptionV3.
    """
    return "photos+noise" if images_dir and mode == "raw" else "noise"


def _statistics_batch(images_dir: str | None, resolution: int, mode: str, seed: int,
                      count: int = 8) -> np.ndarray | None:
    """The batch ``_statistics_source`` names (``count`` noise images, and up to ``count`` photos).

    None for ``tf`` models: ``_set_bn_statistics``' own draw, uniform in [-1, 1], which is that kind
    of noise, so they get onnx_scale's statistics.
    """
    from converters.convert import parity_inputs

    if mode == "tf":
        return None
    noise = parity_inputs(resolution, seed, count, PREPROCESSING_MODES[mode])
    photos = _photos(images_dir, resolution, mode, count) if _statistics_source(images_dir, mode) != "noise" else None
    return noise if photos is None else np.concatenate([photos, noise])


def _set_statistics_without_dropout(model, seed: int, batch: np.ndarray | None) -> None:
    """``_set_bn_statistics`` with every Dropout off: statistics of the graph inference runs.

    EfficientNet's stochastic depth drops whole residual branches in training mode; statistics
    measured so depend on the dropout draw, and some draws leave the random-weight model so
    ill-conditioned that no float32 conversion (the converter's own included) matches Keras.
    """
    import keras

    dropouts = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    rates = [layer.rate for layer in dropouts]
    for layer in dropouts:
        layer.rate = 0.0
    try:
        _set_bn_statistics(model, seed, batch)
    finally:
        for layer, rate in zip(dropouts, rates):
            layer.rate = rate


def build(work: str, name: str, resolution: int, images_dir: str | None, seed: int = 0) -> str:
    """Write (or reuse) ``work/<name>-<resolution>-<statistics>/``: ship/, direct.tflite, parity arrays, build.json."""
    folder = os.path.join(work, f"{name}-{resolution}-{_statistics_source(images_dir, ARCHITECTURES[name][2])}")
    if os.path.exists(os.path.join(folder, "build.json")):
        return folder
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from converters.convert import convert, parity_inputs, task_model
    from edgepatch.train.graph import canonical_model
    from edgepatch.train.models import load_checkpoint
    from edgepatch.train.patchfile import read_patch

    mode = ARCHITECTURES[name][2]
    keras.backend.clear_session()
    os.makedirs(folder, exist_ok=True)
    model = _keras_model(name, resolution, seed)
    _set_statistics_without_dropout(model, seed, _statistics_batch(images_dir, resolution, mode, seed + 3))
    canonical = canonical_model(model)
    base_path, patch_path = os.path.join(folder, "base.keras"), os.path.join(folder, f"{TASK}.patch")
    canonical.model.save(base_path)
    _write_patch(canonical.model, patch_path, seed + 1, PREPROCESSING_MODES[mode])
    start = time.perf_counter()
    result = convert(base_path, [patch_path], os.path.join(folder, "ship"), formats=("tflite", "onnx"))
    convert_s = time.perf_counter() - start
    task = task_model(load_checkpoint(base_path), read_patch(patch_path), patch_path)
    inputs = parity_inputs(resolution, seed + 2, 2, PREPROCESSING_MODES[mode])
    np.save(os.path.join(folder, "parity_inputs.npy"), inputs, allow_pickle=False)
    np.save(os.path.join(folder, "parity_keras.npy"), np.asarray(task(inputs, training=False)), allow_pickle=False)
    direct_s = _direct_tflite(task, os.path.join(folder, "direct.tflite"))
    info = {"architecture": name, "resolution": resolution, "preprocessing": mode, "seed": seed,
            "bn_statistics_from": _statistics_source(images_dir, mode), "convert_s": round(convert_s, 2),
            "direct_convert_s": round(direct_s, 2), "canonical_notes": list(canonical.notes),
            "convert_notes": list(result.notes), "keras_parameters": int(model.count_params())}
    with open(os.path.join(folder, "build.json"), "w") as handle:
        json.dump(info, handle, indent=2)
    print(f"[{name}] built: convert {convert_s:.1f} s, direct {direct_s:.1f} s", file=sys.stderr)
    return folder


def _build_or_error(work: str, name: str, resolution: int, images_dir: str | None):
    """``build``'s folder, or ``{"architecture", "error"}`` when edgepatch refuses the model (reported, not fatal)."""
    from edgepatch.errors import EdgepatchError

    try:
        return build(work, name, resolution, images_dir)
    except EdgepatchError as error:
        print(f"[{name}] error: {error}", file=sys.stderr)
        return {"architecture": name, "resolution": resolution, "error": f"{type(error).__name__}: {error}"}


def input_scaling_probe(work: str, resolution: int, rounds: int) -> dict:
    """Median ms of a stride-2 conv on the input alone, and after a 3-channel scale/offset written
    as the base writes a Rescaling (a 1x1 DEPTHWISE_CONV_2D) and as the converter does (MUL, ADD)."""
    import keras

    os.makedirs(work, exist_ok=True)
    runners = {}
    for variant in ("none", "depthwise_1x1", "mul_add"):
        inputs = keras.Input((None, None, 3))
        x = {"none": lambda t: t, "depthwise_1x1": keras.layers.DepthwiseConv2D(1),
             "mul_add": keras.layers.Rescaling(1 / 127.5, -1.0)}[variant](inputs)
        path = os.path.join(work, f"probe_{variant}.tflite")
        _direct_tflite(keras.Model(inputs, keras.layers.Conv2D(16, 3, strides=2, padding="same")(x)), path)
        runners[variant] = Interp(read_file(path), 1)
    image = np.random.default_rng(0).uniform(-1, 1, (1, resolution, resolution, 3)).astype(np.float32)
    variants = {name: (lambda r=runner: r.run(image)) for name, runner in runners.items()}
    for run in variants.values():
        run()
    return medians_ms(interleaved(variants, rounds, 20, keep_last=False))


def _op_counts(path: str) -> dict[str, int]:
    from edgepatch.runtime.tflite_file import parse_tflite

    return dict(sorted(Counter(op.opcode for op in parse_tflite(read_file(path), path).ops).items()))


def _latency(tflite, delta, direct_path: str, image: np.ndarray, rounds: int, per_round: int) -> dict:
    """P3 and P4 variants, interleaved: medians and minimums in ms."""
    base_runner, task_runner = tflite.apply(None), tflite.apply(delta)
    bare, direct = Interp(bytes(tflite.patched_bytes(delta)), 1), Interp(read_file(direct_path), 1)
    variants = {"base": lambda: base_runner.time_one(image), "task": lambda: task_runner.time_one(image),
                "task_bare": lambda: bare.run(image), "direct": lambda: direct.run(image)}
    for run in variants.values():  # warm-up: allocations, XNNPACK's first runs
        for _ in range(3):
            run()
    times = interleaved(variants, rounds, per_round, keep_last=False)
    return {"median_ms": medians_ms(times), "min_ms": minimums_ms(times)}


def _swaps(folder: str, delta, rounds: int) -> dict:
    """``apply(delta)`` to a ready runner on each runtime, each on its own base (the previous runner alive)."""
    from edgepatch.runtime import OnnxBase, load_base

    tflite = load_base(os.path.join(folder, "ship", "base.tflite"), 1)
    start = time.perf_counter()
    onnx = OnnxBase.from_file(os.path.join(folder, "ship", "base.onnx"), 1)
    load_ms = (time.perf_counter() - start) * 1e3
    variants = {"tflite": lambda: tflite.apply(delta), "onnx": lambda: onnx.apply(delta)}
    for run in variants.values():
        run()
    times = interleaved(variants, rounds)
    return {"swap_ms": medians_ms(times), "swap_min_ms": minimums_ms(times), "onnx_load_ms": round(load_ms, 1),
            "onnx_mode": onnx.swap_mode, "onnx_optimized_layout": onnx.layout is not None,
            "onnx_runner": onnx.apply(delta)}


def _parity(folder: str, runners: dict) -> dict:
    inputs = np.load(os.path.join(folder, "parity_inputs.npy"), allow_pickle=False)
    expected = np.load(os.path.join(folder, "parity_keras.npy"), allow_pickle=False)
    limit = PARITY_TOLERANCE * max(1.0, float(np.max(np.abs(expected))))
    errors = {name: float(np.max(np.abs(runner.predict(inputs) - expected))) for name, runner in runners.items()}
    return {"max_abs": errors, "limit": limit, "ok": all(e <= limit for e in errors.values())}


def _notes(p3: float, p4: float, ours: dict, direct: dict) -> list[str]:
    """Why a target is missed, from what was measured (op counts of both .tflite files)."""
    notes = []
    if p3 > TARGETS["P3"]:
        notes.append(f"P3 {p3}: the task and base runners run the same graph (only weights differ); "
                     "see min_ms for the least-disturbed runs")
    if p4 > TARGETS["P4"]:
        differing = {op: (ours.get(op, 0), direct.get(op, 0)) for op in sorted(set(ours) | set(direct))
                     if ours.get(op, 0) != direct.get(op, 0)}
        notes.append(f"P4 {p4}: ops ours/direct {sum(ours.values())}/{sum(direct.values())}; differing (ours, direct): "
                     + (", ".join(f"{op} {a}/{b}" for op, (a, b) in differing.items()) or "none"))
        if ours.get("DEPTHWISE_CONV_2D", 0) > direct.get("DEPTHWISE_CONV_2D", 0):
            notes.append("the extra DEPTHWISE_CONV_2D are the input's Rescaling/Normalization, which the converter "
                         "writes as MUL/ADD: see input_scaling_probe_ms")
    return notes


def measure(folder: str, rounds: int, per_round: int, swap_rounds: int) -> dict:
    """One architecture's row (module docstring)."""
    from converters.convert import parity_inputs
    from edgepatch.runtime import load_base, read_task_delta

    with open(os.path.join(folder, "build.json")) as handle:
        info = json.load(handle)
    ship = os.path.join(folder, "ship")
    delta = read_task_delta(os.path.join(ship, f"{TASK}.delta"))
    tflite = load_base(os.path.join(ship, "base.tflite"), 1)
    image = parity_inputs(info["resolution"], 7, 1, PREPROCESSING_MODES[info["preprocessing"]])
    latency = _latency(tflite, delta, os.path.join(folder, "direct.tflite"), image, rounds, per_round)
    ms = latency["median_ms"]
    p3, p4 = round(ms["task"] / ms["base"], 4), round(ms["task_bare"] / ms["direct"], 4)
    swaps = _swaps(folder, delta, swap_rounds)
    parity = _parity(folder, {"tflite": tflite.apply(delta), "onnx": swaps.pop("onnx_runner")})
    sizes = {fmt: os.path.getsize(os.path.join(ship, f"base.{fmt}")) for fmt in ("tflite", "onnx")}
    delta_bytes = os.path.getsize(os.path.join(ship, f"{TASK}.delta"))
    ops = {"ours": _op_counts(os.path.join(ship, "base.tflite")),
           "direct": _op_counts(os.path.join(folder, "direct.tflite"))}
    mins = latency["min_ms"]
    return {**info, "base_bytes": sizes, "delta_bytes": delta_bytes,
            "delta_pct_of_tflite_base": round(100 * delta_bytes / sizes["tflite"], 2),
            "direct_tflite_bytes": os.path.getsize(os.path.join(folder, "direct.tflite")), **latency,
            "P3": p3, "P3_of_min": round(mins["task"] / mins["base"], 4), "P3_meets": p3 <= TARGETS["P3"],
            "P4": p4, "P4_of_min": round(mins["task_bare"] / mins["direct"], 4), "P4_meets": p4 <= TARGETS["P4"],
            "runner_vs_converter": round(ms["task"] / ms["direct"], 4), **swaps, "parity": parity,
            "op_counts": ops, "notes": _notes(p3, p4, ops["ours"], ops["direct"])}


def combine_processes(rows: list[dict]) -> dict:
    """One row from the same architecture measured in several processes: P3/P4 (and their ratios of the
    fastest runs) are the medians of the per-process ratios; every other figure is the first process's."""
    row = dict(rows[0])
    for name in ("P3", "P4"):
        row[f"{name}_per_process"] = [r[name] for r in rows]
        for key in (name, f"{name}_of_min"):
            row[key] = round(float(np.median([r[key] for r in rows])), 4)
        row[f"{name}_meets"] = row[name] <= TARGETS[name]
    row["notes"] = _notes(row["P3"], row["P4"], row["op_counts"]["ours"], row["op_counts"]["direct"])
    return row


def _measure_in_processes(folder: str, args) -> dict:
    """``measure`` in ``args.processes`` fresh interpreters (``--measure-only``), combined."""
    import subprocess
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for index in range(args.processes):
            out = os.path.join(scratch, f"{index}.json")
            subprocess.run([sys.executable, os.path.abspath(__file__), "--measure-only", folder, "--rounds",
                            str(args.rounds), "--runs-per-round", str(args.runs_per_round), "--swap-rounds",
                            str(args.swap_rounds), "--out", out], check=True)
            with open(out) as handle:
                rows.append(json.load(handle))
    return combine_processes(rows)


def main(argv=None) -> int:
    from edgepatch.apps.bench import runtime_versions

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES))
    parser.add_argument("--resolution", type=int, default=96, help="input size in pixels (square)")
    parser.add_argument("--images", default=DEFAULT_IMAGES if os.path.isdir(DEFAULT_IMAGES) else "none",
                        help="class folders of photos for the BN statistics (with as many noise images), "
                             "or 'none': noise only")
    parser.add_argument("--rounds", type=int, default=30, help="interleaved latency rounds")
    parser.add_argument("--runs-per-round", type=int, default=5)
    parser.add_argument("--swap-rounds", type=int, default=7)
    parser.add_argument("--work", default=os.path.join(REPO, "benchmarks", "results", "tmp", "zoo"),
                        help="folder for the models, conversions and deltas (reused)")
    parser.add_argument("--processes", type=int, default=1,
                        help="measure each architecture in this many fresh processes; P3/P4: their median")
    parser.add_argument("--measure-only", metavar="FOLDER", help=argparse.SUPPRESS)  # one process's row
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "zoo.json"))
    args = parser.parse_args(argv)
    if min(args.rounds, args.runs_per_round, args.swap_rounds, args.processes) < 1:
        parser.error("--rounds, --runs-per-round, --swap-rounds and --processes must be at least 1")
    if args.measure_only:
        with open(args.out, "w") as handle:
            json.dump(measure(args.measure_only, args.rounds, args.runs_per_round, args.swap_rounds), handle)
        return 0
    images = None if args.images == "none" else args.images
    if images is not None and not os.path.isdir(images):
        parser.error(f"--images: no folder '{images}'")
    folders = {name: _build_or_error(args.work, name, args.resolution, images) for name in args.architectures}
    result = {"resolution": args.resolution, "threads": 1, "batch": 1, "rounds": args.rounds,
              "processes": args.processes,
              "runs_per_round": args.runs_per_round, "swap_rounds": args.swap_rounds, "targets": TARGETS,
              "parity_tolerance": PARITY_TOLERANCE, "versions": runtime_versions(), "architectures": {},
              "input_scaling_probe_ms": input_scaling_probe(args.work, args.resolution, args.rounds)}
    for name, folder in folders.items():
        if isinstance(folder, dict):  # the build failed: its error line is the row
            result["architectures"][name] = folder
            continue
        print(f"[{name}] measuring", file=sys.stderr)
        row = result["architectures"][name] = (
            measure(folder, args.rounds, args.runs_per_round, args.swap_rounds) if args.processes == 1
            else _measure_in_processes(folder, args))
        print(json.dumps({name: {k: row[k] for k in ("convert_s", "P3", "P4", "swap_ms")}}), file=sys.stderr)
    rows = result["architectures"].values()
    result["all_meet"] = {"P3": all(r.get("P3_meets", False) for r in rows),
                          "P4": all(r.get("P4_meets", False) for r in rows),
                          "parity": all(r.get("parity", {}).get("ok", False) for r in rows),
                          "builds": all("error" not in r for r in rows)}
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=2, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
