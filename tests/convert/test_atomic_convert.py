"""A convert killed at any point leaves the previous complete output, or nothing."""

from __future__ import annotations

import hashlib

import pytest

from helpers.models import make_patch, small_cnn
from helpers.killing import run_until_killed


def _snapshot(directory) -> dict[str, str]:
    if not directory.exists():
        return {}
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("hook, nth", [
    ("converters.convert.write_delta", 1),  # mid-way: bases written to the stage, deltas not yet
    ("os.rename", 1),  # the old output moved aside, the new one not yet in place
    ("os.rename", 2),  # the new output moved in, the old one not yet deleted
])
def test_killed_convert_keeps_old_output_or_nothing(tmp_path, hook, nth):
    from converters.convert import convert

    base = small_cnn(num_classes=3)
    base.save(str(tmp_path / "base.keras"))
    make_patch(base, str(tmp_path / "old.patch"), "old", 3, seed=1)
    make_patch(base, str(tmp_path / "new.patch"), "new", 3, seed=2)
    out = tmp_path / "ship"
    convert(str(tmp_path / "base.keras"), [str(tmp_path / "old.patch")], str(out), formats=("tflite",))
    before = _snapshot(out)
    code = (f"from converters.convert import convert; convert({str(tmp_path / 'base.keras')!r}, "
            f"[{str(tmp_path / 'new.patch')!r}], {str(out)!r}, formats=('tflite',))")
    assert run_until_killed(code, hook, nth), "the kill point was never reached"
    after = _snapshot(out)
    if hook == "os.rename" and nth == 2:
        assert after == {} or set(after) == {"base.tflite", "new.delta"}
    else:
        assert after in (before, {})
    if after and "old.delta" in after:
        assert after == before  # complete and unchanged
