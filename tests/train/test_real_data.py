"""Real photos and real ImageNet weights: ../shared/data/flowers5 with MobileNetV2 1.0."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="module")
def flowers_run(shared_dir, tmp_path_factory):
    from edgepatch.apps.jobs import convert_command, train_command

    root = tmp_path_factory.mktemp("flowers")
    trained = train_command(
        backbone="mobilenet_v2", alpha=1.0, resolution=128,
        weights=os.path.join(shared_dir, "weights", "mobilenet_v2_1.0_224_no_top.h5"),
        data_dir=os.path.join(shared_dir, "data", "flowers5"), task_name="flowers", patch_spec="scale_bias,logits",
        epochs=5, lr=3e-3, batch_size=32, bn_stats=None, bn_momentum=0.9, holdout=0.2, seed=0,
        out_dir=str(root / "run"),
    )
    converted = convert_command(trained["base_checkpoint"], [trained["patch"]], str(root / "ship"),
                                ("tflite", "onnx"), "float32", None)
    return trained, converted, root


def test_patch_learns_far_above_chance(flowers_run):
    trained, _, _ = flowers_run
    assert trained["trained_parameters"] == 34_112 + 1280 * 5 + 5
    assert trained["test_accuracy"] >= 0.5  # chance is 0.2


def test_parity_on_both_runtimes(flowers_run):
    _, converted, _ = flowers_run
    parity = converted["tasks"][0]["parity_max_abs"]
    assert set(parity) == {"tflite", "onnx"}
    assert max(parity.values()) <= 1e-4


def test_delta_is_a_small_fraction_of_the_base(flowers_run):
    from edgepatch.apps.inspect import describe_file
    from edgepatch.apps.jobs import convert_command

    trained, converted, root = flowers_run
    assert describe_file(converted["tasks"][0]["delta"])["percent_of_base"] <= 2.0
    half = convert_command(trained["base_checkpoint"], [trained["patch"]], str(root / "ship16"),
                           ("tflite",), "float16", None)
    assert describe_file(half["tasks"][0]["delta"])["percent_of_base"] <= 1.0


def test_int8_task_on_real_photos(flowers_run, shared_dir):
    """int8 base + int8 delta. Exact: the task's own int8 model. Compact: under 1% of the base, close to it."""
    import numpy as np

    from edgepatch.train.data import scan_image_folders
    from edgepatch.runtime import load_base, read_delta, read_task_delta
    from edgepatch.runtime.images import load_images
    from edgepatch.apps.jobs import convert_command

    trained, converted, root = flowers_run
    calibration = root / "calibration"
    calibration.mkdir(exist_ok=True)
    for name in ("base", "flowers"):
        link = calibration / name
        if not link.exists():
            link.symlink_to(os.path.join(shared_dir, "data", "flowers5", "train"))
    results = {mode: convert_command(trained["base_checkpoint"], [trained["patch"]], str(root / f"ship8-{mode}"),
                                     ("tflite",), "float32", None, "int8", str(calibration), mode)
               for mode in ("exact", "compact")}
    assert results["exact"]["int8"]["deltas"]["flowers"]["max_abs_vs_task_int8"] == 0.0
    split = scan_image_folders(os.path.join(shared_dir, "data", "flowers5"))
    delta = read_delta(converted["tasks"][0]["delta"])
    images = load_images([p for p, _ in split.test], delta.task)
    labels = np.array([label for _, label in split.test])

    def top1(runner):
        return np.concatenate([np.argmax(runner.predict(images[i:i + 30]), 1) for i in range(0, 150, 30)])

    float_top1 = top1(load_base(converted["base_files"]["tflite"]).apply(delta))
    int8_top1 = {mode: top1(load_base(str(root / f"ship8-{mode}" / "base_int8.tflite")).apply(
        read_task_delta(str(root / f"ship8-{mode}" / "flowers.int8.delta")))) for mode in results}
    float_accuracy = np.mean(float_top1 == labels)
    compact = results["compact"]["int8"]
    compact_percent = 100 * compact["deltas"]["flowers"]["bytes"] / compact["base_bytes"]
    print(f"float {float_accuracy:.3f} " + " ".join(
        f"{mode} {np.mean(t == labels):.3f} ({results[mode]['int8']['deltas']['flowers']['bytes']} B)"
        for mode, t in int8_top1.items()) + f"; compact {compact_percent:.2f}% of the int8 base, agrees with exact "
        f"on {np.mean(int8_top1['compact'] == int8_top1['exact']):.3f}")
    # The exact delta is the task's own int8 model (agreement 100%, asserted above); 150 test images: one image
    # is 0.67 points. What int8 itself costs depends on the trained float model, which differs across CPUs:
    # +2 points on one machine (0.840 vs 0.820), -2.7 on another (0.853 vs 0.880, the same commit). Within a
    # point of float is the goal of the int8 calibration work; this bounds the loss at 6 images.
    assert float_accuracy - np.mean(int8_top1["exact"] == labels) <= 0.04 + 1e-9
    # Compact: benchmarks/int8_report.py measured 0.99% of the base, 99.3% agreement, +0.7 points on the old
    # tf.data pixels; on the Pillow pipeline (one decoder for training and device) it agrees on 0.960 and
    # scores 0.833. A test leaves room for one more flipped image and for training noise in the size; what compact
    # codes cost is measured against the exact int8 model, whose own loss to float is bounded above.
    assert np.mean(int8_top1["compact"] == int8_top1["exact"]) >= 0.95
    assert np.mean(int8_top1["exact"] == labels) - np.mean(int8_top1["compact"] == labels) <= 0.02 + 1e-9
    assert compact_percent <= 1.1
