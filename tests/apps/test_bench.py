"""``edgepatch bench`` end to end on the small shipment: fields, CSV, PNG, and one-line usage errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgepatch.cli.bench import CSV_FIELDS, bench

ROW_FIELDS = {
    "runtime", "resolution", "threads", "onnx_swap", "task", "model_bytes", "delta_bytes", "init_ms",
    "first_inference_ms", "latency_ms", "base_latency_ms", "patched_vs_base", "swap_ms", "read_ms", "apply_ms",
    "switch_hit_ms", "resident_task_mib", "resident_task_accounted_mib", "import_rss_mib", "peak_rss_mib",
}


@pytest.fixture(scope="module")
def bench_run(small_ship, tmp_path_factory):
    ship, _ = small_ship
    out = tmp_path_factory.mktemp("bench")
    args = ["--base", str(ship), "--delta", str(ship / "gamma.delta"), "--resolutions", "32,48",
            "--threads", "1", "--runs", "3", "--warmup", "1", "--json",
            "--csv", str(out / "bench.csv"), "--plot", str(out / "bench.png")]
    result = CliRunner().invoke(bench, args)
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout), out, result


def test_every_field_is_present_per_configuration(bench_run):
    report, _, _ = bench_run
    rows = report["results"]
    assert {(r["runtime"], r["resolution"], r["threads"]) for r in rows} == {
        (rt, res, 1) for rt in ("tflite", "onnx") for res in (32, 48)}
    for row in rows:
        assert set(row) == ROW_FIELDS
        assert row["task"] == "gamma" and row["delta_bytes"] > 0 and row["model_bytes"] > 0
        assert set(row["latency_ms"]) == {"median", "p90", "min"}
        assert 0 < row["latency_ms"]["min"] <= row["latency_ms"]["median"] <= row["latency_ms"]["p90"]
        assert row["init_ms"] > 0 and row["first_inference_ms"] > 0 and row["patched_vs_base"] > 0
        assert row["swap_ms"]["median"] > 0 and row["read_ms"] > 0 and row["apply_ms"] > 0
        assert 0 < row["switch_hit_ms"]["min"] <= row["switch_hit_ms"]["median"] < row["swap_ms"]["median"]
        assert row["resident_task_mib"] >= 0 and row["resident_task_accounted_mib"] > 0
        assert row["peak_rss_mib"] >= row["import_rss_mib"] > 0
    assert {r["onnx_swap"] for r in rows if r["runtime"] == "onnx"} == {"rebuild"}
    assert report["swaps"] == 3 and report["runs"] == 3


def test_csv_has_one_row_per_configuration(bench_run):
    report, out, _ = bench_run
    with open(out / "bench.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(report["results"])
    assert tuple(rows[0]) == CSV_FIELDS
    assert float(rows[0]["latency_ms.median"]) == report["results"][0]["latency_ms"]["median"]


def test_plot_is_a_real_png(bench_run):
    from PIL import Image

    _, out, _ = bench_run
    with Image.open(out / "bench.png") as image:
        assert image.format == "PNG"
        assert image.size == (700, 450)
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 10  # not blank
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # lines, text and bands, not one fill


def test_progress_goes_to_stderr_and_results_to_stdout(bench_run):
    _, _, result = bench_run
    assert "bench" in result.stderr
    assert result.stdout.lstrip().startswith("{")


def test_adapter_swap_mode(small_ship):
    ship, _ = small_ship
    result = CliRunner().invoke(bench, ["--base", str(ship / "base.onnx"), "--delta", str(ship / "gamma.delta"),
                                        "--resolutions", "32", "--threads", "1", "--runs", "2", "--warmup", "0",
                                        "--onnx-swap", "adapter", "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    (row,) = json.loads(result.stdout)["results"]
    assert (row["runtime"], row["onnx_swap"]) == ("onnx", "adapter")


@pytest.mark.parametrize("args, message", [
    (["--resolutions", "0,abc"], "error: --resolutions must be comma-separated integers in 32..1024. Received '0,abc'"),
    (["--threads", "1,99"], "error: --threads must be comma-separated integers in 1..64. Received '1,99'"),
    (["--runtimes", "tflite,tpu"], "error: --runtimes must be a non-empty subset of ['tflite', 'onnx']. "
                                   "Received 'tflite,tpu'"),
])
def test_bad_options_exit_2_with_one_line(small_ship, args, message):
    ship, _ = small_ship
    result = CliRunner().invoke(bench, ["--base", str(ship), *args])
    assert result.exit_code == 2
    assert result.stderr.strip() == message


def test_missing_base_and_delta_exit_2_with_one_line(small_ship, tmp_path):
    ship, _ = small_ship
    result = CliRunner().invoke(bench, ["--base", str(tmp_path / "nope")])
    assert (result.exit_code, result.stderr.strip()) == (2, f"error: --base '{tmp_path / 'nope'}' does not exist")
    result = CliRunner().invoke(bench, ["--base", str(ship / "base.tflite"), "--runtimes", "onnx"])
    assert (result.exit_code, result.stderr.strip()) == (
        2, f"error: --runtimes names onnx, but there is no onnx base at '{ship / 'base.tflite'}'")
    result = CliRunner().invoke(bench, ["--base", str(ship), "--delta", str(tmp_path / "x.delta")])
    assert (result.exit_code, result.stderr.strip()) == (2, f"error: --delta '{tmp_path / 'x.delta'}' does not exist")
