"""Real photos and real ImageNet weights: ../shared/data/flowers5 with MobileNetV2 1.0."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="module")
def flowers_run(shared_dir, tmp_path_factory):
    from edgepatch.workflows import convert_command, train_command

    root = tmp_path_factory.mktemp("flowers")
    trained = train_command(
        backbone="mobilenet_v2", alpha=1.0, resolution=96,
        weights=os.path.join(shared_dir, "weights", "mobilenet_v2_1.0_224_no_top.h5"),
        data_dir=os.path.join(shared_dir, "data", "flowers5"), task_name="flowers", patch_spec="scale_bias,logits",
        epochs=2, lr=None, batch_size=32, bn_stats=None, bn_momentum=0.9, holdout=0.2, seed=0,
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
    from edgepatch.describe import describe_file
    from edgepatch.workflows import convert_command

    trained, converted, root = flowers_run
    assert describe_file(converted["tasks"][0]["delta"])["percent_of_base"] <= 2.0
    half = convert_command(trained["base_checkpoint"], [trained["patch"]], str(root / "ship16"),
                           ("tflite",), "float16", None)
    assert describe_file(half["tasks"][0]["delta"])["percent_of_base"] <= 1.0


def test_int8_task_on_real_photos(flowers_run, shared_dir):
    """int8 base + int8 delta: exactly the task's own int8 model; accuracy close to float."""
    import numpy as np

    from edgepatch.data import scan_image_folders
    from edgepatch.runtime import load_base, read_delta, read_task_delta
    from edgepatch.runtime.images import load_images
    from edgepatch.workflows import convert_command

    trained, converted, root = flowers_run
    calibration = root / "calibration"
    calibration.mkdir(exist_ok=True)
    for name in ("base", "flowers"):
        link = calibration / name
        if not link.exists():
            link.symlink_to(os.path.join(shared_dir, "data", "flowers5", "train"))
    result = convert_command(trained["base_checkpoint"], [trained["patch"]], str(root / "ship8"), ("tflite",),
                             "float32", None, "int8", str(calibration))
    assert result["int8"]["deltas"]["flowers"]["max_abs_vs_task_int8"] == 0.0
    split = scan_image_folders(os.path.join(shared_dir, "data", "flowers5"))
    delta = read_delta(converted["tasks"][0]["delta"])
    images = load_images([p for p, _ in split.test], delta.task)
    labels = np.array([label for _, label in split.test])
    float_runner = load_base(converted["base_files"]["tflite"]).apply(delta)
    int8_runner = load_base(str(root / "ship8" / "base_int8.tflite")).apply(
        read_task_delta(str(root / "ship8" / "flowers.int8.delta")))
    float_top1 = np.concatenate([np.argmax(float_runner.predict(images[i:i + 30]), 1) for i in range(0, 150, 30)])
    int8_top1 = np.concatenate([np.argmax(int8_runner.predict(images[i:i + 30]), 1) for i in range(0, 150, 30)])
    float_accuracy, int8_accuracy = np.mean(float_top1 == labels), np.mean(int8_top1 == labels)
    print(f"float {float_accuracy:.3f} int8 {int8_accuracy:.3f} agreement {np.mean(float_top1 == int8_top1):.3f} "
          f"int8 delta {result['int8']['deltas']['flowers']['bytes']} base {result['int8']['base_bytes']}")
    assert int8_accuracy >= float_accuracy - 0.03  # 150 test images: one image is 0.67 points
