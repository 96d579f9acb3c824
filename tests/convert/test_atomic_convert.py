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


def _inputs(tmp_path):
    base = small_cnn(num_classes=3)
    base.save(str(tmp_path / "base.keras"))
    make_patch(base, str(tmp_path / "t.patch"), "t", 3, seed=1)
    return str(tmp_path / "base.keras"), [str(tmp_path / "t.patch")]


def test_convert_out_refuses_a_file_a_foreign_folder_and_the_inputs_folder(tmp_path):
    from converters.convert import convert
    from edgepatch.errors import UsageError

    model, patches = _inputs(tmp_path)
    target_file = tmp_path / "notes.txt"
    target_file.write_bytes(b"mine")
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "a.jpg").write_bytes(b"jpeg")
    (foreign / "base.tflite").write_bytes(b"a base of the user's, beside other files")
    cases = [
        (target_file, f"--out {target_file} exists and is not a directory; refusing to replace it"),
        (foreign, f"--out {foreign} is a non-empty directory that is not a convert output "
                  "(only base.tflite, base.onnx, base_int8.tflite and *.delta files); refusing to replace it"),
        (tmp_path, f"--out {tmp_path} contains the input {model}; choose another directory"),
    ]
    def files(directory):
        return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}

    before = files(tmp_path), files(foreign)
    for out, message in cases:
        with pytest.raises(UsageError) as caught:
            convert(model, patches, str(out), formats=("tflite",))
        assert str(caught.value) == message
    assert (files(tmp_path), files(foreign)) == before  # every user file survives


def test_convert_out_replaces_its_own_previous_output(tmp_path):
    from converters.convert import convert

    model, patches = _inputs(tmp_path)
    out = tmp_path / "ship"
    convert(model, patches, str(out), formats=("tflite",))
    first = _snapshot(out)
    convert(model, patches, str(out), formats=("tflite",))
    assert _snapshot(out) == first
