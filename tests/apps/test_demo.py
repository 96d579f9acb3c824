"""``edgepatch demo --quick`` end to end: the README's main command, at test scale."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO


def test_demo_runs_the_whole_pipeline(tmp_path):
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "edgepatch.cli.main", "demo", "--quick", "--out", str(out), "--json"],
                          cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert set(report["base_bytes"]) == {"tflite", "onnx", "tflite_int8"}
    tasks = {t["name"]: t for t in report["tasks"]}
    assert set(tasks) == {"shapes", "colors", "quadrants"}
    for name in ("colors", "quadrants"):
        task = tasks[name]
        assert (out / "ship" / f"{name}.delta").stat().st_size == task["delta_bytes"]
        assert (out / "ship" / f"{name}.int8.delta").stat().st_size == task["int8_delta_bytes"]
        assert task["int8_delta_mode"] in ("compact", "exact") and task["int8_percent_of_base"] > 0
        assert max(task["parity_max_abs"].values()) <= 1e-4
        accuracy = task["accuracy"]
        assert accuracy["tflite"] == accuracy["onnx"]  # the same folded model on both runtimes
        assert abs(accuracy["int8"] - accuracy["tflite"]) <= 0.2  # quick mode: 45 test images per task
