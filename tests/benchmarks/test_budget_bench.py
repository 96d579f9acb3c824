"""benchmarks/budget.py (issue 20): the summary's checks and the plot, from a table of made-up runs.

The runs themselves are ``edgepatch train --budget`` (tests/train/test_budget.py); this pins the
arithmetic the report states: means over seeds, the gap to the full patch, margins over the
baselines, whether every seed wins, and the delta ratio.
"""

from __future__ import annotations

import os
import sys

import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from benchmarks import budget  # noqa: E402

SELECTORS = ["score", "learned", "last", "random"]


def _runs() -> dict:
    accuracy = {("score", 0): 0.84, ("score", 1): 0.80, ("learned", 0): 0.83, ("learned", 1): 0.78,
                ("last", 0): 0.81, ("last", 1): 0.81, ("random", 0): 0.80, ("random", 1): 0.79}
    runs = {}
    for seed in (0, 1):
        runs[budget._run_key("d", seed, budget.FULL, None)] = {"test_accuracy": 0.85, "delta_bytes": 2000}
        runs[budget._run_key("d", seed, budget.LAST_LAYER, None)] = {"test_accuracy": 0.75, "delta_bytes": 500}
        for selector in SELECTORS:
            runs[budget._run_key("d", seed, selector, 25.0)] = {"test_accuracy": accuracy[selector, seed],
                                                                 "delta_bytes": 900 + seed * 100}
    return runs


def test_the_summary_states_the_issue_checks():
    summary = budget.summarize(_runs(), ["d"], SELECTORS, [25.0], [0, 1])
    check = summary["d"]["checks"]["25"]
    assert (check["best_selector"], check["best_mean"]) == ("score", pytest.approx(0.82))  # learned: 0.805
    assert check["gap_to_full_sb_last"] == pytest.approx(0.03)
    assert check["margin_over"] == pytest.approx({"last": 0.01, "random": 0.025})
    assert check["every_seed_wins_over"] == {"last": False, "random": True}  # seed 1: 0.80 < 0.81
    assert check["delta_vs_full"] == pytest.approx(950 / 2000)
    assert summary["d"]["table"][budget.LAST_LAYER]["mean"] == pytest.approx(0.75)


def test_the_plot_is_a_real_png(tmp_path):
    summary = budget.summarize(_runs(), ["d"], SELECTORS, [25.0], [0, 1])
    path = tmp_path / "budget.png"
    budget.plot(summary, SELECTORS, [25.0], str(path))
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 300
        assert len(image.convert("RGB").getcolors(1 << 16)) > 20
