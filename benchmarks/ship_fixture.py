"""A small real shipment (base.tflite, base.onnx, gamma.delta; with ``int8``: base_int8.tflite, gamma.int8.delta).

Built the way ``tests/conftest.py::small_ship`` builds it (a small CNN, one
S/B + logits task, ``converters.convert``; int8 calibrated on random images as
in ``tests/helpers/models.py::write_calibration``), so the benchmarks run
offline. TensorFlow is imported only when a shipment has to be built.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def use_repo_paths() -> None:
    """Make ``edgepatch``, ``converters`` and the test helpers importable from a script."""
    for path in (REPO, os.path.join(REPO, "tests")):
        if path not in sys.path:
            sys.path.insert(0, path)


def ensure_ship(ship_dir: str | None, work_dir: str, int8: bool = False) -> str:
    """``ship_dir`` if given (a ``convert`` output), else a new small shipment under ``work_dir``."""
    if ship_dir:
        return ship_dir
    use_repo_paths()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from helpers.models import make_patch, small_cnn, write_calibration

    from converters.convert import convert

    with contextlib.redirect_stdout(io.StringIO()):  # keep stdout for the JSON result
        base = small_cnn(num_classes=3)
        base.save(os.path.join(work_dir, "base.keras"))
        make_patch(base, os.path.join(work_dir, "gamma.patch"), "gamma", 3, seed=4)
        quantize = {}
        if int8:
            quantize = {"quantize": "int8", "calibration_dir": write_calibration(work_dir, ("base", "gamma"))}
        convert(os.path.join(work_dir, "base.keras"), [os.path.join(work_dir, "gamma.patch")],
                os.path.join(work_dir, "ship"), **quantize)
    return os.path.join(work_dir, "ship")
