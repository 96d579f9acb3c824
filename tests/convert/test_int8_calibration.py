"""int8 calibration: its images (a folder, or the training images a patch records) and the bias correction."""

from __future__ import annotations

import os

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.models import make_patch, small_cnn, write_calibration


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    from edgepatch.apps.demo_data import write_datasets

    return write_datasets(str(tmp_path_factory.mktemp("data")), train_per_class=6, test_per_class=3, size=32)


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("base") / "base.keras")
    small_cnn(num_classes=4).save(path)
    return path


@pytest.fixture(scope="module")
def transfer_patch(tmp_path_factory, datasets, base_checkpoint):
    from edgepatch.apps.jobs import train_command

    out = str(tmp_path_factory.mktemp("transfer"))
    trained = train_command(backbone="mobilenet_v2", alpha=1.0, resolution=32, weights=base_checkpoint,
                            data_dir=datasets["colors"], task_name="colors", patch_spec="scale_bias,logits",
                            epochs=1, lr=None, batch_size=8, bn_stats=None, bn_momentum=0.9, holdout=0.25, seed=3,
                            out_dir=out, quiet=True)
    return trained["patch"]


@pytest.fixture(scope="module")
def multitask_run(tmp_path_factory, datasets, base_checkpoint):
    from edgepatch.apps.jobs import multitask_command

    tasks = [("colors", datasets["colors"], 32), ("quadrants", datasets["quadrants"], 32)]
    return multitask_command(backbone="mobilenet_v2", alpha=1.0, weights=base_checkpoint, tasks=tasks,
                             private_spec="scale_bias,logits", epochs=1, lr=1e-3, batch_size=8, seed=0,
                             out_dir=str(tmp_path_factory.mktemp("mt")), quiet=True)


def _split_paths(data_dir, holdout=0.2, seed=0):
    from edgepatch.train.data import scan_image_folders

    split = scan_image_folders(data_dir, holdout, seed)
    return {path for path, _ in split.train}, {path for path, _ in split.test}


def test_train_records_its_training_images(transfer_patch, datasets):
    from converters.calibration import TRAIN_DATA
    from edgepatch.train.patchfile import read_patch

    record = read_patch(transfer_patch).training[TRAIN_DATA]
    assert record == {"dir": os.path.abspath(datasets["colors"]), "holdout": 0.25, "seed": 3}


def test_default_calibration_draws_from_the_training_split_only(transfer_patch, datasets):
    from converters.calibration import CALIBRATION_LIMIT, int8_calibration
    from edgepatch.train.patchfile import read_patch

    calibration = int8_calibration(None, [read_patch(transfer_patch)])
    train, test = _split_paths(datasets["colors"], 0.25, 3)  # the split the patch was trained on
    paths = calibration.paths("colors")
    assert paths and set(paths) <= train and len(paths) == min(len(train), CALIBRATION_LIMIT)
    assert not set(paths) & test
    assert set(calibration.paths("base")) <= train and calibration.source == "training images"


def test_an_explicit_calibration_folder_wins(transfer_patch, tmp_path):
    from converters.calibration import int8_calibration
    from edgepatch.train.patchfile import read_patch

    folder = write_calibration(str(tmp_path), ("base", "colors"), count=5)
    calibration = int8_calibration(folder, [read_patch(transfer_patch)])
    for name in ("base", "colors"):
        paths = calibration.paths(name)
        assert len(paths) == 5 and all(p.startswith(os.path.join(folder, name) + os.sep) for p in paths)
    assert calibration.source == folder


def test_multitask_int8_without_a_calibration_folder(multitask_run, datasets, tmp_path):
    """Each task calibrates on its own training images, the base on an equal share of both tasks'."""
    from converters.convert import convert
    from converters.calibration import CALIBRATION_LIMIT, int8_calibration
    from edgepatch.runtime import load_base, read_task_delta
    from edgepatch.train.patchfile import read_patch

    patch_paths = [t["patch"] for t in multitask_run["tasks"]]
    calibration = int8_calibration(None, [read_patch(p) for p in patch_paths])
    colors, quadrants = (_split_paths(datasets[name])[0] for name in ("colors", "quadrants"))
    assert set(calibration.paths("colors")) == colors and set(calibration.paths("quadrants")) == quadrants
    base = calibration.paths("base")
    assert len(base) <= CALIBRATION_LIMIT and set(base) & colors and set(base) & quadrants
    result = convert(multitask_run["base_checkpoint"], patch_paths, str(tmp_path / "ship"), formats=("tflite",),
                     quantize="int8", int8_delta="exact")
    assert result.int8["calibration"] == {"source": "training images", "base_images": len(base)}
    assert result.parity_inputs == {name: f"{min(len(train), 8)} training images"
                                    for name, train in (("colors", colors), ("quadrants", quadrants))}
    int8_base = load_base(str(tmp_path / "ship" / "base_int8.tflite"))
    for name, train in (("colors", colors), ("quadrants", quadrants)):
        assert result.int8["deltas"][name]["max_abs_vs_task_int8"] == 0.0
        assert result.int8["deltas"][name]["checked_images"] == len(train)
        runner = int8_base.apply(read_task_delta(str(tmp_path / "ship" / f"{name}.int8.delta")))
        assert runner.predict(np.zeros((1, 32, 32, 3), np.float32)).shape == (1, 3 if name == "colors" else 4)


@pytest.fixture(scope="module")
def plain_patch(tmp_path_factory):
    """A patch that records no training images (made outside edgepatch train), beside its base."""
    root = tmp_path_factory.mktemp("plain")
    base = small_cnn(num_classes=3)
    base.save(str(root / "base.keras"))
    make_patch(base, str(root / "kappa.patch"), "kappa", 3, seed=6)
    return root


def _recording(root, tmp_path, directory):
    """A copy of ``kappa.patch`` that records ``directory`` as its training images."""
    import dataclasses

    from converters.calibration import TRAIN_DATA, train_data_record
    from edgepatch.train.patchfile import read_patch, write_patch

    patch = read_patch(str(root / "kappa.patch"))
    path = str(tmp_path / "kappa.patch")
    write_patch(path, dataclasses.replace(patch, training={TRAIN_DATA: train_data_record(directory, 0.2, 0)}))
    return path


@pytest.mark.parametrize("case, message", [
    ("no record", "int8 calibration: the patch of task 'kappa' records no training images (made before edgepatch "
                  "recorded them, or outside edgepatch train); pass --calibration DIR with DIR/base/ and DIR/kappa/"),
    ("moved data", "int8 calibration: task 'kappa' was trained on '{tmp}/gone', which cannot be read now (data "
                   "directory '{tmp}/gone' does not exist); pass --calibration DIR"),
    ("empty folder", "int8 calibration: '{tmp}/calibration/base' holds no images; give each task (and 'base') a "
                     "folder"),
    ("base alone", "int8 calibration: a base converted without patches needs --calibration DIR (DIR/base/ holds "
                   "its images)"),
])
def test_a_bad_calibration_source_is_one_error_line(plain_patch, tmp_path, case, message):
    from edgepatch.cli.main import main

    patch = str(plain_patch / "kappa.patch")
    extra = []
    if case == "moved data":
        patch = _recording(plain_patch, tmp_path, str(tmp_path / "gone"))
    elif case == "empty folder":
        os.makedirs(tmp_path / "calibration" / "base")
        extra = ["--calibration", str(tmp_path / "calibration")]
    patches = [] if case == "base alone" else ["--patches", patch]
    result = CliRunner().invoke(main, ["convert", "--model", str(plain_patch / "base.keras"), *patches, "--out",
                                       str(tmp_path / "ship"), "--quantize", "int8", *extra])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [f"error: {message.format(tmp=tmp_path)}"]
    assert not (tmp_path / "ship").exists()


@pytest.mark.parametrize("source", ["recorded", "no record", "moved data"])
def test_float_parity_runs_on_recorded_training_images_else_random_pixels(transfer_patch, datasets, plain_patch,
                                                                         tmp_path, source):
    """convert's parity check decodes the task's own training images when its patch records them."""
    from converters.calibration import PARITY_IMAGES, parity_images
    from converters.convert import convert
    from edgepatch.train.patchfile import read_patch

    if source == "recorded":
        train = _split_paths(datasets["colors"], 0.25, 3)[0]
        images, label = parity_images(read_patch(transfer_patch))
        count = min(len(train), PARITY_IMAGES)
        assert images.shape == (count, 32, 32, 3) and label == f"{count} training images"
        assert np.ptp(images) > 0.5  # decoded photos, preprocessed as the task records
        return
    patch = str(plain_patch / "kappa.patch")
    if source == "moved data":
        patch = _recording(plain_patch, tmp_path, str(tmp_path / "gone"))
    assert parity_images(read_patch(patch)) is None
    result = convert(str(plain_patch / "base.keras"), [patch], str(tmp_path / "ship"), formats=("tflite",))
    assert result.parity_inputs == {"kappa": "2 random-pixel images"} and result.parity["kappa"]["tflite"] < 1e-4


# Bias correction


@pytest.fixture(scope="module")
def corrected(plain_patch):
    """The kappa task model's calibrated float model, and its int8 model before and after bias correction."""
    import contextlib
    import io

    import tensorflow as tf
    from tensorflow.lite.python.convert import mlir_quantize

    from converters.convert import _fold_base, task_model
    from converters.fold import fold_model
    from converters.folded_model import build_folded_model
    from converters.quantize import _keep_zero_biases, correct_biases
    from edgepatch.train.patchfile import read_patch

    path = str(plain_patch / "kappa.patch")
    patch = read_patch(path)
    shared = _fold_base(str(plain_patch / "base.keras"), [patch], None)
    model = task_model(shared.checkpoint, patch, path)
    folded = build_folded_model(model, fold_model(model), shared.head_width, shared.pads)
    _keep_zero_biases(folded)
    rng = np.random.default_rng(5)
    images = patch.task.preprocessing.apply(rng.uniform(0, 255, (40, 32, 32, 3)).astype(np.float32))
    converter = tf.lite.TFLiteConverter.from_keras_model(folded)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image[None]] for image in images)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter._experimental_calibrate_only = True
    with contextlib.redirect_stdout(io.StringIO()):
        calibrated = converter.convert()
        plain = mlir_quantize(calibrated)
    return calibrated, plain, correct_biases(calibrated, plain, images), images, patch.task


def _predict(data, images, task):
    from edgepatch.runtime.tflite import TFLiteRunner

    return TFLiteRunner(data, task, 0.0, 1).predict(images)


def test_bias_correction_changes_only_biases(corrected):
    from converters.quantize import REFOLD_OPS
    from edgepatch.runtime.tflite_file import parse_tflite

    _, plain, fixed, _, _ = corrected
    a, b = parse_tflite(plain, "plain"), parse_tflite(fixed, "fixed")
    assert [(op.opcode, op.inputs, op.outputs) for op in a.ops] == [(op.opcode, op.inputs, op.outputs) for op in b.ops]
    biases = {op.inputs[2] for op in a.ops if op.opcode in REFOLD_OPS and len(op.inputs) > 2}
    changed = set()
    for x, y in zip(a.tensors, b.tensors):
        assert (x.shape, x.dtype) == (y.shape, y.dtype)
        for span in ("quant_scales", "quant_zero_points"):
            assert plain[slice(getattr(x, span)[0], getattr(x, span)[0] + 4 * getattr(x, span)[1])] == \
                fixed[slice(getattr(y, span)[0], getattr(y, span)[0] + 4 * getattr(y, span)[1])]
        if x.data_offset is not None and \
                plain[x.data_offset:x.data_offset + x.data_size] != fixed[y.data_offset:y.data_offset + y.data_size]:
            changed.add(x.index)
    assert changed and changed <= biases


def test_bias_correction_centres_each_logit_on_float(corrected):
    """On its images, the int8 head's mean logit per class is float's to within one output step."""
    from edgepatch.runtime.tflite_file import parse_tflite

    calibrated, plain, fixed, images, task = corrected
    model = parse_tflite(fixed, "fixed")
    head = [op for op in model.ops if op.opcode == "FULLY_CONNECTED"][-1]
    offset, count = model.tensors[head.outputs[0]].quant_scales
    step = float(np.frombuffer(fixed, np.float32, count, offset)[0])
    expected = _predict(calibrated, images, task).mean(0)
    after = np.abs(_predict(fixed, images, task).mean(0) - expected)
    before = np.abs(_predict(plain, images, task).mean(0) - expected)
    assert np.all(after <= step), (after, step)
    assert after.sum() <= before.sum()


def test_bias_correction_is_deterministic_and_leaves_mismatched_models_alone(corrected):
    from converters.quantize import correct_biases

    import contextlib
    import io

    import tensorflow as tf

    calibrated, plain, fixed, images, _ = corrected
    assert correct_biases(calibrated, plain, images) == fixed
    converter = tf.lite.TFLiteConverter.from_keras_model(small_cnn(num_classes=7))  # its head does not line up
    with contextlib.redirect_stdout(io.StringIO()):
        unrelated = converter.convert()
    assert correct_biases(unrelated, plain, images) == plain


def test_recentred_compact_codes_centre_the_rebuilt_model(plain_patch):
    """Compact codes round weight scales; recentring re-encodes bias codes so the model the device
    rebuilds has float's mean logits again (to one output step), where the plain codes need not."""
    from converters.convert import _fold_base, task_model
    from converters.fold import fold_model
    from converters.folded_model import build_folded_model
    from converters.quantize import export_int8, make_int8_delta, quantize_int8, recentre_compact, unshare_constants
    from edgepatch.runtime.tflite_file import parse_tflite
    from edgepatch.runtime.tflite_int8 import TFLiteInt8Base
    from edgepatch.train.patchfile import read_patch

    path = str(plain_patch / "kappa.patch")
    patch = read_patch(path)
    shared = _fold_base(str(plain_patch / "base.keras"), [patch], None)
    model = task_model(shared.checkpoint, patch, path)
    pixels = np.random.default_rng(8).uniform(0, 255, (40, 32, 32, 3)).astype(np.float32)
    images = patch.task.preprocessing.apply(pixels)
    base_bytes = unshare_constants(export_int8(
        build_folded_model(shared.checkpoint, shared.folded, shared.head_width, shared.pads), images))
    task_float, task_bytes = quantize_int8(build_folded_model(model, fold_model(model), shared.head_width,
                                                              shared.pads), images)
    base = TFLiteInt8Base(base_bytes, "base_int8.tflite")
    plain = make_int8_delta(base_bytes, task_bytes, patch.task, compact=True)
    recentred = recentre_compact(plain, base, task_float, images)
    assert [r.weight for r in recentred.refolds] == [r.weight for r in plain.refolds]
    assert all(np.array_equal(a.scale_codes, b.scale_codes) for a, b in zip(plain.refolds, recentred.refolds))
    assert any(not np.array_equal(a.bias_codes, b.bias_codes) for a, b in zip(plain.refolds, recentred.refolds))
    rebuilt = base.patched_bytes(recentred)
    head = [op for op in parse_tflite(rebuilt, "rebuilt").ops if op.opcode == "FULLY_CONNECTED"][-1]
    offset, count = parse_tflite(rebuilt, "rebuilt").tensors[head.outputs[0]].quant_scales
    step = float(np.frombuffer(bytes(rebuilt), np.float32, count, offset)[0])
    expected = _predict(task_float, images, patch.task).mean(0)
    after = np.abs(base.apply(recentred).predict(images).mean(0) - expected)
    assert np.all(after <= step), (after, step)
