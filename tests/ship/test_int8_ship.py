"""int8 in bundles, served by static servers nobody here wrote: pack (float + int8) -> verify -> serve with
``python -m http.server`` and nginx -> fetch int8-only and float-only (with a resume after a cut) -> run.

The fixture is a small CNN converted with ``--quantize int8`` (seconds), not the demo (minutes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import stat
import tempfile
from types import SimpleNamespace

import numpy as np
import pytest
from helpers.models import make_patch, small_cnn, write_calibration
from helpers.served import Served
from ship_servers import CutServer, nginx_binary, static_server

from edgepatch.errors import BundleError, FetchError, UsageError, WrongBaseError
from edgepatch.format.int8_delta import Int8Delta, read_int8_delta, write_int8_delta
from edgepatch.runtime import load_base, read_task_delta
from edgepatch.ship.bundle import pack_bundle, ship_inputs, verify_bundle
from edgepatch.ship.fetch import fetch, open_cached
from edgepatch.ship.manifest import encode_manifest, parse_manifest
from edgepatch.ship.signing import load_private_key, sign_manifest, write_keypair

IMAGES = np.random.default_rng(3).uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
FLOAT_SUFFIXES = (".onnx", ".delta", ".tflite")
INT8_SUFFIXES = (".int8.tflite", ".int8.delta")


@pytest.fixture(scope="module")
def shipped():
    """A float + int8 convert output and its signed bundle, under a directory any user can traverse."""
    from converters.convert import convert

    root = tempfile.mkdtemp(prefix="edgepatch-int8-ship-")
    os.chmod(root, 0o755)  # nginx workers run as another user: every directory above the bundle must be open
    try:
        base = small_cnn(num_classes=3)
        base.save(os.path.join(root, "base.keras"))
        make_patch(base, os.path.join(root, "gamma.patch"), "gamma", 3, seed=4)
        write_calibration(root, ("base", "gamma"))
        convert(os.path.join(root, "base.keras"), [os.path.join(root, "gamma.patch")], os.path.join(root, "ship"),
                quantize="int8", calibration_dir=os.path.join(root, "calibration"))
        keys = write_keypair(os.path.join(root, "keys", "publisher"))
        ship = os.path.join(root, "ship")
        report = pack_bundle(*ship_inputs(ship), os.path.join(root, "bundle"), "3", keys[0])
        yield SimpleNamespace(root=root, ship=ship, report=report, keys=keys)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def kind_of(name: str) -> str:
    return "int8" if name.endswith(INT8_SUFFIXES) else "float" if name.endswith(FLOAT_SUFFIXES) else "other"


def test_pack_lists_int8_files_beside_the_float_ones(shipped):
    manifest = shipped.report.manifest
    int8_delta = read_task_delta(os.path.join(shipped.ship, "gamma.int8.delta"))
    float_delta = read_task_delta(os.path.join(shipped.ship, "gamma.delta"))
    assert isinstance(int8_delta, Int8Delta) and sorted(manifest.bases) == ["onnx", "tflite", "tflite_int8"]
    int8_base = manifest.bases["tflite_int8"]
    assert int8_base.sha256 == int8_delta.base_sha256 and int8_base.file == f"files/{int8_base.sha256}.int8.tflite"
    assert {fmt: manifest.bases[fmt].sha256 for fmt in ("tflite", "onnx")} == float_delta.base_sha256
    (task,) = manifest.tasks
    assert (task.name, task.kinds, task.delta.bytes) == ("gamma", ("scale_bias", "logits"),
                                                         os.path.getsize(os.path.join(shipped.ship, "gamma.delta")))
    assert task.int8_delta.file == f"files/{task.int8_delta.sha256}.int8.delta"
    assert task.int8_delta.bytes == os.path.getsize(os.path.join(shipped.ship, "gamma.int8.delta"))
    report = verify_bundle(shipped.report.path, shipped.keys[1])
    assert (report.files, report.key_id) == (5, shipped.keys[2])
    with open(os.path.join(shipped.report.path, "manifest.json"), "rb") as handle:
        assert b'"bundle_version": 2' in handle.read()


def test_published_outputs_are_world_readable(shipped):
    for top in (shipped.ship, shipped.report.path):
        for directory, subdirs, files in os.walk(top):
            assert stat.S_IMODE(os.stat(directory).st_mode) == 0o755, directory
            for name in files:
                assert stat.S_IMODE(os.stat(os.path.join(directory, name)).st_mode) == 0o644, name
    assert stat.S_IMODE(os.stat(shipped.keys[0]).st_mode) == 0o600  # the private key stays private


def test_int8_delta_for_another_int8_base_is_refused(shipped, tmp_path):
    delta = read_int8_delta(os.path.join(shipped.ship, "gamma.int8.delta"))
    crafted = str(tmp_path / "gamma.int8.delta")
    write_int8_delta(crafted, dataclasses.replace(delta, base_sha256="cd" * 32))
    bases, deltas = ship_inputs(shipped.ship)
    int8_base = shipped.report.manifest.bases["tflite_int8"].sha256
    message = (f"int8 delta for task 'gamma' was made for tflite_int8 base sha256 {'cd' * 32}, "
               f"but the bundle's tflite_int8 base is {int8_base}")
    with pytest.raises(WrongBaseError) as error:
        pack_bundle(bases, [d for d in deltas if not d.endswith(".int8.delta")] + [crafted],
                    str(tmp_path / "b"), "1")
    assert str(error.value) == f"{crafted}: {message}"
    # The same delta slipped into a validly signed bundle: verify refuses it too.
    bundle = shutil.copytree(shipped.report.path, str(tmp_path / "bundle"))
    data = open(crafted, "rb").read()
    sha = hashlib.sha256(data).hexdigest()
    open(os.path.join(bundle, "files", f"{sha}.int8.delta"), "wb").write(data)
    manifest = shipped.report.manifest
    entry = dataclasses.replace(manifest.tasks[0].int8_delta, file=f"files/{sha}.int8.delta", bytes=len(data),
                                sha256=sha)
    forged = encode_manifest(dataclasses.replace(manifest, tasks=(dataclasses.replace(manifest.tasks[0],
                                                                                      int8_delta=entry),)))
    open(os.path.join(bundle, "manifest.json"), "wb").write(forged)
    open(os.path.join(bundle, "manifest.sig"), "wb").write(sign_manifest(forged, load_private_key(shipped.keys[0])))
    with pytest.raises(WrongBaseError) as error:
        verify_bundle(bundle, shipped.keys[1])
    assert str(error.value) == f"{bundle}{os.sep}files/{sha}.int8.delta: {message}"


def test_pack_pairs_float_and_int8_deltas(shipped, tmp_path):
    bases, deltas = ship_inputs(shipped.ship)
    float_deltas = [d for d in deltas if not d.endswith(".int8.delta")]
    int8_deltas = [d for d in deltas if d.endswith(".int8.delta")]
    with pytest.raises(UsageError) as error:
        pack_bundle(bases, float_deltas, str(tmp_path / "b"), "1")
    assert str(error.value) == ("task 'gamma' has no int8 delta (gamma.int8.delta), but the bundle has the "
                                "tflite_int8 base (base_int8.tflite)")
    with pytest.raises(UsageError) as error:
        pack_bundle({"tflite": bases["tflite"]}, deltas, str(tmp_path / "b"), "1")
    assert str(error.value) == f"{int8_deltas[0]}: an int8 delta, but no tflite_int8 base (base_int8.tflite)"
    with pytest.raises(UsageError) as error:
        pack_bundle({"tflite_int8": bases["tflite_int8"]}, float_deltas, str(tmp_path / "b"), "1")
    assert str(error.value).startswith(f"{float_deltas[0]}: a float delta, but no float base (")
    assert not os.path.exists(tmp_path / "b")
    only_int8 = pack_bundle({"tflite_int8": bases["tflite_int8"]}, int8_deltas, str(tmp_path / "b"), "1")
    (task,) = only_int8.manifest.tasks
    assert (task.kinds, task.delta, only_int8.files) == (("int8",), None, 2)
    assert verify_bundle(only_int8.path).manifest == only_int8.manifest


def test_manifest_versions(shipped):
    manifest = shipped.report.manifest
    float_only = dataclasses.replace(manifest, bases={f: e for f, e in manifest.bases.items() if f != "tflite_int8"},
                                     tasks=(dataclasses.replace(manifest.tasks[0], int8_delta=None),))
    legacy = dataclasses.replace(float_only, bundle_version=1, model_version="spring release")
    assert parse_manifest(encode_manifest(legacy)) == legacy  # version 1 is still read, and written back as 1
    with pytest.raises(BundleError) as error:
        encode_manifest(dataclasses.replace(manifest, bundle_version=1))
    assert str(error.value) == ("<new manifest>: bases must be a non-empty object with keys from "
                                "['tflite', 'onnx'], got ['onnx', 'tflite', 'tflite_int8']")
    with pytest.raises(BundleError) as error:
        encode_manifest(dataclasses.replace(manifest, model_version="spring release"))
    assert str(error.value) == ('<new manifest>: model_version must be integers joined by dots (at most 128 '
                                'characters), got "spring release"')
    with pytest.raises(BundleError) as error:
        encode_manifest(dataclasses.replace(manifest, tasks=(dataclasses.replace(manifest.tasks[0], int8_delta=None),)))
    assert str(error.value) == ("<new manifest>: tasks[0] must have exactly the keys ['classes', 'kinds', 'name', "
                                "'resolution', 'delta', 'int8_delta']; missing ['int8_delta'], unknown []")


def requested_kinds(paths: list[str]) -> set[str]:
    return {kind_of(path) for path in paths if path.startswith("/files/")}


@pytest.mark.parametrize("kind", ["http.server", "nginx"])
def test_static_server_end_to_end(shipped, tmp_path, kind):
    if kind == "nginx" and nginx_binary() is None:
        pytest.skip("nginx is not installed (.ci/run installs Debian's nginx)")
    bundle, public = shipped.report.path, shipped.keys[1]
    manifest = verify_bundle(bundle, public).manifest
    entry = manifest.tasks[0].int8_delta
    cache_int8, cache_float = str(tmp_path / "int8-cache"), str(tmp_path / "float-cache")
    cut = Served(bundle, str(tmp_path / "cut-www"), CutServer)
    try:
        with pytest.raises(FetchError, match="connection closed after"):
            fetch(cut.url, public, cache_int8, formats=["tflite_int8"])
    finally:
        cut.close()
    half = entry.bytes // 2
    assert os.path.getsize(os.path.join(cache_int8, entry.file + ".part")) == half
    with static_server(kind, bundle, str(tmp_path / kind)) as (url, requested):
        result = fetch(url, public, cache_int8, formats=["tflite_int8"])
        # nginx answers the Range request; this http.server has no Range support, so fetch starts over.
        assert result.downloaded_bytes == (entry.bytes - half if kind == "nginx" else entry.bytes)
        assert requested_kinds(requested()) == {"int8"}
        seen = len(requested())
        floats = fetch(url, public, cache_float, formats=["tflite"])
        assert requested_kinds(requested()[seen:]) == {"float"}
    assert {kind_of(name) for name in os.listdir(os.path.join(cache_int8, "files"))} == {"int8"}  # no float base
    assert floats.downloaded_bytes == manifest.bases["tflite"].bytes + manifest.tasks[0].delta.bytes
    cached = open_cached(cache_int8, public)
    assert cached.formats == ("tflite_int8",) and isinstance(cached.load_delta("gamma"), Int8Delta)
    want = load_base(os.path.join(shipped.ship, "base_int8.tflite")).apply(
        read_task_delta(os.path.join(shipped.ship, "gamma.int8.delta"))).predict(IMAGES)
    np.testing.assert_array_equal(cached.runner("gamma", "tflite_int8").predict(IMAGES), want)
    want = load_base(os.path.join(shipped.ship, "base.tflite")).apply(
        read_task_delta(os.path.join(shipped.ship, "gamma.delta"))).predict(IMAGES)
    np.testing.assert_array_equal(open_cached(cache_float, public).runner("gamma").predict(IMAGES), want)
