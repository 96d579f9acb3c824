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
