"""benchmarks/zoo.py (issue 15, item 9): the custom model at 32 px, 2 rounds, end to end into a JSON.

The full zoo takes about 15 minutes; this checks the script's wiring, its
JSON and the figures' sanity (parity within the issue's tolerance, ratios
and their ``meets`` flags consistent) on the one architecture that builds in
seconds and still exercises a separable conv, a grouped conv and an affine site.
"""

from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from benchmarks import zoo  # noqa: E402

ROW_FIELDS = {"architecture", "resolution", "preprocessing", "seed", "bn_statistics_from", "convert_s",
              "direct_convert_s", "canonical_notes", "convert_notes", "keras_parameters", "base_bytes",
              "delta_bytes", "delta_pct_of_tflite_base", "direct_tflite_bytes", "median_ms", "min_ms", "P3",
              "P3_of_min", "P3_meets", "P4", "P4_of_min", "P4_meets", "runner_vs_converter", "swap_ms",
              "swap_min_ms", "onnx_load_ms", "onnx_mode", "onnx_optimized_layout", "parity", "op_counts", "notes"}


SMALL = ["--architectures", "custom", "--resolution", "32", "--rounds", "2", "--runs-per-round", "2",
         "--swap-rounds", "2", "--images", "none"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("zoo")


@pytest.fixture(scope="module")
def result(work):
    out = work / "zoo.json"
    assert zoo.main([*SMALL, "--work", str(work / "work"), "--out", str(out)]) == 0
    with open(out) as handle:
        return json.load(handle)


def test_processes_measure_apart_and_report_the_median_ratio(result, work):
    out = work / "zoo3.json"
    assert zoo.main([*SMALL, "--processes", "3", "--work", str(work / "work"), "--out", str(out)]) == 0
    with open(out) as handle:
        combined = json.load(handle)
    row = combined["architectures"]["custom"]
    assert combined["processes"] == 3 and set(row) == ROW_FIELDS | {"P3_per_process", "P4_per_process"}
    for name in ("P3", "P4"):
        assert len(row[f"{name}_per_process"]) == 3
        assert row[name] == round(float(np.median(row[f"{name}_per_process"])), 4)
        assert row[f"{name}_meets"] == (row[name] <= zoo.TARGETS[name])


def test_combined_rows_take_each_ratio_s_median_and_the_first_process_s_figures():
    ops = {"ours": {"CONV_2D": 2}, "direct": {"CONV_2D": 2}}
    rows = [{"P3": p3, "P3_of_min": p3, "P4": p4, "P4_of_min": p4 - 0.01, "op_counts": ops, "swap_ms": index}
            for index, (p3, p4) in enumerate([(1.01, 1.05), (1.04, 1.00), (1.02, 1.01)])]
    row = zoo.combine_processes(rows)
    assert (row["P3"], row["P4"], row["P4_of_min"], row["swap_ms"]) == (1.02, 1.01, 1.0, 0)
    assert row["P4_per_process"] == [1.05, 1.00, 1.01] and row["P3_meets"] and row["P4_meets"]
    assert row["notes"] == []
    assert zoo.combine_processes(rows[:1])["P4_meets"] is False


def test_json_has_one_sane_row(result):
    assert (result["resolution"], result["threads"], result["batch"]) == (32, 1, 1)
    assert result["targets"] == {"P3": 1.03, "P4": 1.02}
    assert list(result["architectures"]) == ["custom"]
    row = result["architectures"]["custom"]
    assert set(row) == ROW_FIELDS
    assert row["convert_s"] > 0 and row["bn_statistics_from"] == "noise"
    assert row["base_bytes"]["tflite"] > 0 and row["base_bytes"]["onnx"] > 0
    assert 0 < row["delta_bytes"] < row["base_bytes"]["tflite"]
    assert row["delta_pct_of_tflite_base"] == round(100 * row["delta_bytes"] / row["base_bytes"]["tflite"], 2)
    for name in ("P3", "P4", "runner_vs_converter"):
        assert math.isfinite(row[name]) and 0.2 < row[name] < 5, (name, row[name])
    assert row["P3_meets"] == (row["P3"] <= 1.03) and row["P4_meets"] == (row["P4"] <= 1.02)
    assert row["P3"] == round(row["median_ms"]["task"] / row["median_ms"]["base"], 4)
    assert set(row["swap_ms"]) == {"tflite", "onnx"} and min(row["swap_ms"].values()) > 0
    assert row["onnx_mode"] == "rebuild"
    assert result["all_meet"] == {"P3": row["P3_meets"], "P4": row["P4_meets"], "parity": True, "builds": True}
    probe = result["input_scaling_probe_ms"]
    assert set(probe) == {"none", "depthwise_1x1", "mul_add"} and min(probe.values()) > 0


def test_parity_and_rewrites(result):
    row = result["architectures"]["custom"]
    parity = row["parity"]
    assert parity["ok"] and set(parity["max_abs"]) == {"tflite", "onnx"}
    assert max(parity["max_abs"].values()) <= parity["limit"] <= 1e-4 * 100
    notes = " ".join(row["canonical_notes"])
    assert "SeparableConv2D `separable`" in notes and "`add_bn`" in notes  # both rewrites happened
    # the separable conv's depthwise half and the affine site are depthwise convs in the base
    assert row["op_counts"]["ours"]["DEPTHWISE_CONV_2D"] == 2


def test_notes_name_the_ops_that_differ():
    assert zoo._notes(1.0, 1.0, {"CONV_2D": 3}, {"CONV_2D": 3}) == []
    (note,) = zoo._notes(1.0, 1.1, {"CONV_2D": 3, "MUL": 2}, {"CONV_2D": 3})
    assert note == "P4 1.1: ops ours/direct 5/3; differing (ours, direct): MUL 2/0"
    _, why = zoo._notes(1.0, 1.2, {"DEPTHWISE_CONV_2D": 12, "MUL": 18}, {"DEPTHWISE_CONV_2D": 11, "MUL": 19})
    assert "Rescaling/Normalization" in why and "input_scaling_probe_ms" in why
    (note,) = zoo._notes(1.04, 1.0, {}, {})
    assert note.startswith("P3 1.04:")


def test_photos_come_one_class_after_another_preprocessed_as_the_model_wants(shared_dir):
    folder = os.path.join(shared_dir, "data", "eurosat", "train")
    raw = zoo._photos(folder, 16, "raw", 3)
    tf = zoo._photos(folder, 16, "tf", 3)
    assert raw.shape == (3, 16, 16, 3) and 0 <= raw.min() and raw.max() <= 255 and raw.max() > 1
    np.testing.assert_allclose(tf, raw / 127.5 - 1, atol=1e-5)
    assert len({image.tobytes() for image in raw}) == 3  # three classes' first photos
    assert zoo._photos(None, 16, "raw") is None


def test_statistics_come_from_noise_except_photos_for_raw_input_models():
    assert zoo._statistics_source("photos", "tf") == "noise" and zoo._statistics_source("photos", "caffe") == "noise"
    assert zoo._statistics_source("photos", "raw") == "photos+noise"
    assert zoo._statistics_source(None, "raw") == "noise"


def test_unknown_architecture_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        zoo.main(["--architectures", "vgg16", "--work", str(tmp_path), "--out", str(tmp_path / "x.json")])
    assert raised.value.code == 2 and "invalid choice: 'vgg16'" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
