"""Shared fixtures. Real-data tests find ../shared beside the checkout (CI passes it)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from helpers.models import make_patch, small_cnn

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("EDGEPATCH_SHARED", os.path.join(os.path.dirname(REPO), "shared"))


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_dir() -> str:
    if not os.path.isdir(os.path.join(SHARED, "weights")):
        pytest.skip(f"real weights and data not found at {SHARED} (set EDGEPATCH_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def small_ship(tmp_path_factory):
    """A small CNN base converted with one task: (ship dir, Keras task model)."""
    from converters.convert import convert

    root = tmp_path_factory.mktemp("small_ship")
    base = small_cnn(num_classes=3)
    base.save(str(root / "base.keras"))
    task = make_patch(base, str(root / "gamma.patch"), "gamma", 3, seed=4)
    convert(str(root / "base.keras"), [str(root / "gamma.patch")], str(root / "ship"))
    return root / "ship", task
