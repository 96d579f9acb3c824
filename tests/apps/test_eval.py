"""``edgepatch eval``: accuracy, per-class accuracy and confusion through float, int8 and ONNX runtimes,
checked against a hand count of ``run``-style predictions; the heat map, the folder layouts, the errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REPO
from helpers.models import write_calibration
from PIL import Image

from edgepatch.cli.main import main

CLASSES = ("gamma_0", "gamma_1", "gamma_2")
PER_CLASS = 6  # images per class folder: 4 the float runtime gets right, 2 it gets wrong


@pytest.fixture(scope="module")
def eval_ship(small_ship, tmp_path_factory):
    """small_ship's base and patch converted to float and int8 TFLite and ONNX: [(base, delta)], root."""
    from converters.convert import convert

    root = small_ship[0].parent
    out = tmp_path_factory.mktemp("eval_ship")
    write_calibration(str(out), ("base", "gamma"))
    convert(str(root / "base.keras"), [str(root / "gamma.patch")], str(out / "ship"), quantize="int8",
            calibration_dir=str(out / "calibration"))
    ship = out / "ship"
    pairs = [(str(ship / "base.tflite"), str(ship / "gamma.delta")),
             (str(ship / "base_int8.tflite"), str(ship / "gamma.int8.delta")),
             (str(ship / "base.onnx"), str(ship / "gamma.delta"))]
    return pairs, root


def _predict(pair, paths):
    """What `edgepatch run` computes: top-1 class index per image."""
    from edgepatch.runtime import load_base, read_task_delta
    from edgepatch.runtime.images import load_images

    delta = read_task_delta(pair[1])
    return np.argmax(load_base(pair[0]).apply(delta).predict(load_images(paths, delta.task)), axis=1)


@pytest.fixture(scope="module")
def photos(eval_ship, tmp_path_factory):
    """DIR/test/<class>/*.png, 40x40 (resized to 32): per class, 4 images the float runtime puts in that class
    and 2 it puts in the next class."""
    pairs, _ = eval_ship
    rng = np.random.default_rng(3)
    pool = tmp_path_factory.mktemp("pool")
    paths = []
    for i in range(400):
        pixels = rng.integers(0, 256, (1, 1, 3)) + rng.integers(-40, 40, (40, 40, 3))
        paths.append(str(pool / f"{i}.png"))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(paths[-1])
    predicted = _predict(pairs[0], paths)
    data = tmp_path_factory.mktemp("photos")
    for c, name in enumerate(CLASSES):
        (data / "test" / name).mkdir(parents=True)
    for c in range(len(CLASSES)):
        mine = [p for p, k in zip(paths, predicted) if k == c][:PER_CLASS]
        assert len(mine) == PER_CLASS, np.bincount(predicted)
        for i, path in enumerate(mine):
            label = c if i < 4 else (c + 1) % len(CLASSES)
            shutil.copy(path, data / "test" / CLASSES[label] / f"{c}_{i}.png")
    return data


def _items(data):
    root = data / "test"
    return [(str(root / name / f), c) for c, name in enumerate(CLASSES) for f in sorted(os.listdir(root / name))]


def _eval(*args):
    return CliRunner().invoke(main, ["eval", *args])


def _pair_args(pairs):
    return [word for base, delta in pairs for word in ("--base", base, "--delta", delta)]


def test_accuracy_per_class_and_confusion_match_a_hand_count(eval_ship, photos):
    from edgepatch.apps.evaluate import evaluate

    pairs, _ = eval_ship
    report = evaluate(pairs, str(photos), batch=5, progress=False)  # 18 images: 4 batches, the last short
    items = _items(photos)
    labels = np.array([c for _, c in items])
    assert report["images"] == len(items) == 3 * PER_CLASS and report["classes"] == list(CLASSES)
    labels_seen = list(report["accuracy"])
    assert labels_seen == ["base.tflite+gamma.delta", "base_int8.tflite+gamma.int8.delta", "base.onnx+gamma.delta"]
    for label, pair in zip(labels_seen, pairs):
        predicted = _predict(pair, [p for p, _ in items])
        confusion = np.zeros((3, 3), int)
        for true, guess in zip(labels, predicted):
            confusion[true, guess] += 1
        assert report["accuracy"][label] == np.mean(predicted == labels)
        assert report["confusion"][label] == confusion.tolist()
        assert np.sum(report["confusion"][label]) == len(items)
        assert report["per_class"][label] == {name: confusion[c, c] / confusion[c].sum()
                                              for c, name in enumerate(CLASSES)}
    float_label = labels_seen[0]
    assert report["accuracy"][float_label] == 12 / 18  # by construction of the folder
    assert report["confusion"][float_label] == [[4, 0, 2], [2, 4, 0], [0, 2, 4]]


def test_json_progress_and_heat_map(eval_ship, photos, tmp_path):
    from edgepatch.apps.evaluate import HIGH, LOW, MARGIN, heatmap_size

    pairs, _ = eval_ship
    png = tmp_path / "cm.png"
    result = _eval(*_pair_args(pairs), "--data", str(photos), "--json", "--confusion", str(png))
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"images", "classes", "accuracy", "per_class", "confusion", "runtimes"} <= set(report)
    assert "agreement_vs_keras" not in report and report["confusion_png"] == str(png)
    assert report["runtimes"]["base.onnx+gamma.delta"]["base"] == pairs[2][0]
    progress = result.stderr.splitlines()  # not a terminal: one final line per runtime
    labels = ["base.tflite+gamma.delta", "base_int8.tflite+gamma.int8.delta", "base.onnx+gamma.delta"]
    assert [line.split(",")[0] for line in progress] == [f"{label}: 18/18 images" for label in labels]
    assert all(line.endswith(" images/s") for line in progress)
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == heatmap_size(list(CLASSES), 3)
        colours = {colour for _, colour in image.convert("RGB").getcolors(1 << 16)}
    assert len(colours) > 20  # cell shades, anti-aliased text, grid: not blank
    for share in (0, 2 / 6, 4 / 6):  # the cells of the float runtime's rows [[4, 0, 2], [2, 4, 0], [0, 2, 4]]
        assert tuple(int(c) for c in np.round(LOW + share * (HIGH - LOW))) in colours
    one_panel = heatmap_size(list(CLASSES), 1)
    assert image.size[0] - MARGIN == 3 * (one_panel[0] - MARGIN) and image.size[1] == one_panel[1]
    assert os.listdir(tmp_path) == ["cm.png"]  # written through a temp file, nothing left beside it
    quiet = _eval(*_pair_args(pairs[:1]), "--data", str(photos), "--quiet")
    assert (quiet.exit_code, quiet.stderr) == (0, "")
    assert quiet.stdout.startswith(f"18 images, 3 classes in {photos / 'test'}\n"
                                   "base.tflite+gamma.delta: accuracy 0.667\n  per class: gamma_0 0.667, ")


def test_flat_class_folders_give_the_same_report(eval_ship, photos):
    from edgepatch.apps.evaluate import evaluate

    pairs, _ = eval_ship
    nested = evaluate(pairs[:1], str(photos), progress=False)
    flat = evaluate(pairs[:1], str(photos / "test"), progress=False)
    for report in (flat, nested):
        del report["runtimes"]  # measured throughput: differs run to run
    assert flat == nested and flat["data"] == str(photos / "test") and flat["images"] == 18


def test_class_folders_in_another_order_map_by_name(eval_ship, photos, tmp_path):
    """Folder names sort differently from the delta's class order: labels still follow the names."""
    from edgepatch.apps.evaluate import scan_labelled_folder

    shutil.copytree(photos / "test", tmp_path / "data")
    data = scan_labelled_folder(str(tmp_path / "data"), ("gamma_2", "gamma_0", "gamma_1"))
    assert {(os.path.basename(os.path.dirname(path)), label) for path, label in data.items} == {
        ("gamma_2", 0), ("gamma_0", 1), ("gamma_1", 2)}


def test_class_mismatch_is_one_error_line_and_no_png(eval_ship, photos, tmp_path):
    pairs, _ = eval_ship
    shutil.copytree(photos / "test", tmp_path / "data")
    os.rename(tmp_path / "data" / "gamma_2", tmp_path / "data" / "zeta")
    png = tmp_path / "cm.png"
    result = _eval(*_pair_args(pairs[:1]), "--data", str(tmp_path / "data"), "--confusion", str(png))
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (f"error: class folders in '{tmp_path / 'data'}' must be the delta's classes "
                             "['gamma_0', 'gamma_1', 'gamma_2']: missing ['gamma_2'], extra ['zeta']\n")
    assert not png.exists()


def test_an_undecodable_image_is_one_error_line_and_no_png(eval_ship, photos, tmp_path):
    pairs, _ = eval_ship
    shutil.copytree(photos / "test", tmp_path / "data")
    broken = tmp_path / "data" / "gamma_1" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    png = tmp_path / "cm.png"
    result = _eval(*_pair_args(pairs), "--data", str(tmp_path / "data"), "--confusion", str(png))
    assert (result.exit_code, result.stdout, len(result.stderr.splitlines())) == (2, "", 1), result.stderr
    assert result.stderr.startswith(f"error: image '{broken}' cannot be decoded: ")
    assert not png.exists()


def test_deltas_of_different_tasks_are_refused(eval_ship, photos, monkeypatch):
    import dataclasses

    import edgepatch.runtime
    from edgepatch.apps.evaluate import evaluate
    from edgepatch.errors import UsageError

    pairs, _ = eval_ship
    read, calls = edgepatch.runtime.read_task_delta, []

    def second_with_other_classes(path):
        delta = read(path)
        calls.append(path)
        if len(calls) == 1:
            return delta
        return dataclasses.replace(delta, task=dataclasses.replace(delta.task, classes=("a", "b", "c")))

    monkeypatch.setattr(edgepatch.runtime, "read_task_delta", second_with_other_classes)
    with pytest.raises(UsageError) as error:
        evaluate([pairs[0], pairs[1]], str(photos), progress=False)
    assert str(error.value) == (f"'{pairs[1][1]}' has classes ['a', 'b', 'c'] at 32 px, but '{pairs[0][1]}' has "
                                f"{list(CLASSES)} at 32 px: every --delta must be for the same classes and resolution")


def test_unequal_pairs_and_half_a_keras_model_are_refused(eval_ship, photos):
    pairs, root = eval_ship
    result = _eval("--base", pairs[0][0], "--base", pairs[1][0], "--delta", pairs[0][1], "--data", str(photos))
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == "error: --base and --delta pair up in order: got 2 --base and 1 --delta\n"
    result = _eval(*_pair_args(pairs[:1]), "--data", str(photos), "--model", str(root / "base.keras"))
    assert result.stderr == ("error: --model and --patch go together: the Keras task model is the base with the "
                             "patch applied\n")


def test_keras_task_model_agrees_with_the_float_runtime(eval_ship, photos, small_ship):
    pairs, root = eval_ship
    result = _eval(*_pair_args(pairs), "--data", str(photos), "--json", "--quiet",
                   "--model", str(root / "base.keras"), "--patch", str(root / "gamma.patch"))
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    agreement = report["agreement_vs_keras"]
    assert list(agreement) == list(report["runtimes"]) and "keras" in report["accuracy"]
    assert agreement["base.tflite+gamma.delta"] == agreement["base.onnx+gamma.delta"] == 1.0
    assert report["accuracy"]["keras"] == report["accuracy"]["base.tflite+gamma.delta"] == 12 / 18
    from edgepatch.runtime.images import load_images  # the int8 figure is a real comparison, not a constant

    items = _items(photos)
    task = small_ship[1]
    keras_top1 = np.argmax(np.asarray(task(load_images([p for p, _ in items], _task(pairs[1][1])))), axis=1)
    assert agreement["base_int8.tflite+gamma.int8.delta"] == np.mean(_predict(pairs[1], [p for p, _ in items])
                                                                      == keras_top1)


def _task(delta_path):
    from edgepatch.runtime import read_task_delta

    return read_task_delta(delta_path).task


def test_labels_stay_unique():
    from edgepatch.apps.evaluate import runtime_labels

    assert runtime_labels([("a/base.tflite", "a/t.delta"), ("b/base.tflite", "b/t.delta")]) == [
        "a/base.tflite+a/t.delta", "b/base.tflite+b/t.delta"]
    assert runtime_labels([("base.onnx", "t.delta")] * 2) == ["base.onnx+t.delta#1", "base.onnx+t.delta#2"]


def test_progress_redraws_one_line_on_a_terminal():
    import io

    from edgepatch.apps.evaluate import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    bar = Progress(True, stream)
    bar.start("base.tflite+t.delta", 10)
    bar.update(5)
    bar.end()
    bar.close()
    text = stream.getvalue()
    assert text.startswith("\rbase.tflite+t.delta: 0/10 images, ") and text.endswith(" images/s\n")
    assert text.count("\n") == 1 and text.count("\r") == 3 and "5/10 images" in text


def test_eval_without_a_keras_model_imports_no_tensorflow(eval_ship, photos):
    pairs, _ = eval_ship
    code = ("import sys, atexit\nfrom edgepatch.cli.main import main\n"
            "atexit.register(lambda: sys.stderr.write('TF_IMPORTED\\n') if 'tensorflow' in sys.modules else None)\n"
            "main()\n")
    for args in (["eval", "--help"], ["eval", *_pair_args(pairs), "--data", str(photos), "--quiet"]):
        result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO,
                                timeout=120)
        assert result.returncode == 0 and "TF_IMPORTED" not in result.stderr, (args, result.stderr)
