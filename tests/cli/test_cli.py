"""The CLI: results on stdout, one-line errors with exit status 2, no TensorFlow where not needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO
from PIL import Image


def edgepatch(*args: str, check_tf: bool = False) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess; with check_tf, fail if TensorFlow got imported."""
    code = (
        "import sys, atexit\n"
        "from edgepatch.cli.main import main\n"
        + ("atexit.register(lambda: sys.stderr.write('TF_IMPORTED\\n') if 'tensorflow' in sys.modules else None)\n"
           if check_tf else "")
        + "main()\n"
    )
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)


def test_help_and_inspect_do_not_import_tensorflow(small_ship):
    ship, _ = small_ship
    for args in (["--help"], ["inspect", str(ship / "gamma.delta")], ["inspect", str(ship / "base.onnx")]):
        result = edgepatch(*args, check_tf=True)
        assert result.returncode == 0, result.stderr
        assert "TF_IMPORTED" not in result.stderr, args


def test_runtime_import_leaves_tensorflow_out():
    code = "import sys, edgepatch.runtime, edgepatch.apps.inspect; assert 'tensorflow' not in sys.modules; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.stdout.strip() == "ok", result.stderr


def test_inspect_delta_json(small_ship):
    ship, _ = small_ship
    result = edgepatch("inspect", str(ship / "gamma.delta"), "--json")
    info = json.loads(result.stdout)
    assert info["kind"] == "delta" and info["task"] == "gamma"
    assert info["kinds"] == ["scale_bias", "logits"]
    assert info["bytes"] == os.path.getsize(ship / "gamma.delta")
    assert info["percent_of_base"] == pytest.approx(100 * info["bytes"] / os.path.getsize(ship / "base.tflite"))
    assert set(info["base_sha256"]) == {"tflite", "onnx"}
    assert sum(info["parameters_by_site"].values()) == info["parameters"] and info["base_sites_not_patched"] == 1


def test_run_top_k_matches_keras(small_ship, tmp_path):
    ship, task_model = small_ship
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    image = tmp_path / "x.png"
    Image.fromarray(pixels).save(image)
    for base in ("base.tflite", "base.onnx"):
        result = edgepatch("run", "--base", str(ship / base), "--delta", str(ship / "gamma.delta"),
                           "--top-k", "2", "--json", str(image))
        assert result.returncode == 0, result.stderr
        top = json.loads(result.stdout)["results"][0]["top_k"]
        logits = np.asarray(task_model(pixels[None].astype(np.float32) / 127.5 - 1.0, training=False))[0]
        assert top[0]["label"] == f"gamma_{int(np.argmax(logits))}"
        assert len(top) == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["inspect", "nope.delta"], "error: 'nope.delta' does not exist"),
        (["inspect", "README.md"], "error: inspect reads .tflite, .onnx, .delta, .patch or .keras files. Received 'README.md'"),
        (["run", "--base", "x.bin", "--delta", "README.md", "img.png"], None),
    ],
)
def test_expected_errors_are_one_line_exit_2(args, message):
    result = edgepatch(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    if message is not None:
        assert lines[0] == message


def test_training_input_errors_are_one_line(tmp_path):
    empty = tmp_path / "data" / "train"
    (empty / "a").mkdir(parents=True)
    (empty / "b").mkdir(parents=True)
    (tmp_path / "data" / "test" / "a").mkdir(parents=True)
    (tmp_path / "data" / "test" / "b").mkdir(parents=True)
    cases = [
        (["train", "--mode", "multitask", "--task", f"a={tmp_path / 'nope'}", "--task", f"b={tmp_path}",
          "--out", str(tmp_path / "o")], f"error: data directory '{tmp_path / 'nope'}' does not exist"),
        (["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "o")],
         f"error: class folder '{empty / 'a'}' holds no images (.jpg, .jpeg, .png, .bmp, .gif)"),
        (["train", "--data", str(tmp_path / "data"), "--patch", "scale_bias,bogus", "--out", str(tmp_path / "o")],
         "error: unknown patch kind 'bogus'. Allowed: scale_bias, depthwise, logits"),
        (["train", "--mode", "multires", "--data", str(tmp_path / "data"), "--resolutions", "96,x",
          "--out", str(tmp_path / "o")], None),
    ]
    for args, message in cases:
        result = edgepatch(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr
        if message is not None:
            assert lines == [message]
