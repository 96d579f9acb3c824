"""fetch from a served bundle: verify before use, keep the last good version, resume interrupted downloads."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil

import numpy as np
import pytest
from helpers.killing import run_until_killed
from helpers.served import Served
from ship_servers import CutServer

from edgepatch.ship.bundle import pack_bundle, ship_inputs
from edgepatch.format.delta import read_delta, write_delta
from edgepatch.errors import FetchError, IntegrityError, SignatureError, WrongBaseError
from edgepatch.ship.fetch import fetch, open_cached
from edgepatch.ship.manifest import encode_manifest
from edgepatch.runtime import load_base
from edgepatch.ship.serve import BundleHandler, BundleServer
from edgepatch.ship.signing import load_private_key, sign_manifest, write_keypair


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    return {name: write_keypair(str(root / name)) for name in ("publisher", "stranger")}


@pytest.fixture(scope="module")
def versions(small_ship, keys, tmp_path_factory):
    """Bundle v1 (task gamma) and v2 (gamma + a new task 'gamma2' whose delta must be downloaded)."""
    root = tmp_path_factory.mktemp("versions")
    bases, deltas = ship_inputs(str(small_ship[0]))
    delta = read_delta(deltas[0])
    renamed = dataclasses.replace(delta, task=dataclasses.replace(delta.task, name="gamma2"))
    write_delta(str(root / "gamma2.delta"), renamed)
    key = keys["publisher"][0]
    return {"v1": pack_bundle(bases, deltas, str(root / "v1"), "1", key),
            "v2": pack_bundle(bases, deltas + [str(root / "gamma2.delta")], str(root / "v2"), "2", key)}


@pytest.fixture
def served(versions, tmp_path):
    served = Served(versions["v1"].path, str(tmp_path / "www"))
    yield served
    served.close()


def delta_file(report, task: str) -> str:
    return next(t.delta.file for t in report.manifest.tasks if t.name == task)


def test_fetch_verifies_caches_and_runs(served, versions, keys, small_ship, tmp_path):
    cache = str(tmp_path / "cache")
    result = fetch(served.url, keys["publisher"][1], cache, formats=["tflite"])
    v1 = versions["v1"].manifest
    assert (result.manifest, result.key_id, result.formats) == (v1, keys["publisher"][2], ("tflite",))
    assert result.downloaded_bytes == v1.bases["tflite"].bytes + v1.tasks[0].delta.bytes
    assert fetch(served.url, [keys["stranger"][1], keys["publisher"][1]], cache, ["tflite"]).downloaded_bytes == 0
    cached = open_cached(cache, keys["publisher"][1])
    assert cached.manifest == v1 and cached.base_path() == os.path.join(cache, v1.bases["tflite"].file)
    images = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    got = load_base(cached.base_path()).apply(cached.load_delta("gamma")).predict(images)
    want = load_base(str(small_ship[0] / "base.tflite")).apply(read_delta(str(small_ship[0] / "gamma.delta")))
    np.testing.assert_array_equal(got, want.predict(images))
    path = cached.delta_path("gamma")  # swapped on disk after the fetch: caught when it is used
    data = bytearray(open(path, "rb").read())
    data[20] ^= 1
    open(path, "wb").write(bytes(data))
    with pytest.raises(IntegrityError) as error:
        cached.load_delta("gamma")
    assert str(error.value) == (f"{path}: sha256 {hashlib.sha256(data).hexdigest()}, but the manifest lists "
                                f"{v1.tasks[0].delta.sha256}")


def tamper_manifest(root: str, keys) -> None:
    path = os.path.join(root, "manifest.json")
    open(path, "w").write(open(path).read().replace('"model_version": "2"', '"model_version": "3"'))


def tamper_signature(root: str, keys) -> None:
    path = os.path.join(root, "manifest.sig")
    document = json.load(open(path))
    document["signature"] = document["signature"][::-1]
    json.dump(document, open(path, "w"))


def sign_with_stranger(root: str, keys) -> None:
    data = open(os.path.join(root, "manifest.json"), "rb").read()
    open(os.path.join(root, "manifest.sig"), "wb").write(sign_manifest(data, load_private_key(keys["stranger"][0])))


def tamper_new_delta(root: str, keys) -> None:
    path = os.path.join(root, next(t.delta.file for t in _manifest(root).tasks if t.name == "gamma2"))
    data = bytearray(open(path, "rb").read())
    data[-1] ^= 0xFF
    open(path, "wb").write(bytes(data))


def publish_delta_for_another_base(root: str, keys) -> None:
    """A validly signed bundle whose new delta was made for another onnx base."""
    manifest = _manifest(root)
    task = next(t for t in manifest.tasks if t.name == "gamma2")
    delta = read_delta(os.path.join(root, task.delta.file))
    crafted = os.path.join(root, "crafted.delta")
    write_delta(crafted, dataclasses.replace(delta, base_sha256=dict(delta.base_sha256, onnx="cd" * 32)))
    data = open(crafted, "rb").read()
    os.unlink(crafted)
    sha = hashlib.sha256(data).hexdigest()
    open(os.path.join(root, "files", f"{sha}.delta"), "wb").write(data)
    new_task = dataclasses.replace(task, delta=dataclasses.replace(task.delta, file=f"files/{sha}.delta",
                                                                   bytes=len(data), sha256=sha))
    manifest = dataclasses.replace(manifest, tasks=(manifest.tasks[0], new_task))
    data = encode_manifest(manifest)
    open(os.path.join(root, "manifest.json"), "wb").write(data)
    open(os.path.join(root, "manifest.sig"), "wb").write(sign_manifest(data, load_private_key(keys["publisher"][0])))


def _manifest(root: str):
    from edgepatch.ship.manifest import parse_manifest

    return parse_manifest(open(os.path.join(root, "manifest.json"), "rb").read())


def expected_message(attack: str, url: str, root: str, keys) -> tuple[type, str]:
    publisher, stranger = keys["publisher"][2], keys["stranger"][2]
    if attack in ("tamper_manifest", "tamper_signature"):
        return SignatureError, f"{url}manifest.json: signature by key {publisher} does not match the manifest bytes"
    if attack == "sign_with_stranger":
        return SignatureError, (f"{url}manifest.json: signed by key {stranger}, which is not trusted "
                                f"(trusted: {publisher})")
    task = next(t for t in _manifest(root).tasks if t.name == "gamma2")
    if attack == "tamper_new_delta":
        data = open(os.path.join(root, task.delta.file), "rb").read()
        return IntegrityError, (f"{url}{task.delta.file}: sha256 {hashlib.sha256(data).hexdigest()}, "
                                f"but the manifest lists {task.delta.sha256}")
    onnx = _manifest(root).bases["onnx"].sha256
    return WrongBaseError, (f"{url}{task.delta.file}: delta for task 'gamma2' was made for onnx base sha256 "
                            f"{'cd' * 32}, but the bundle's onnx base is {onnx}")


ATTACKS = [tamper_manifest, tamper_signature, sign_with_stranger, tamper_new_delta, publish_delta_for_another_base]


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.__name__ for a in ATTACKS])
def test_bad_update_is_rejected_and_last_good_version_stays(served, versions, keys, tmp_path, attack):
    cache = str(tmp_path / "cache")
    fetch(served.url, keys["publisher"][1], cache)
    served.publish(versions["v2"].path)
    attack(served.root, keys)
    kind, message = expected_message(attack.__name__, served.url, served.root, keys)
    with pytest.raises(kind) as error:
        fetch(served.url, keys["publisher"][1], cache)
    assert str(error.value) == message
    assert open_cached(cache, keys["publisher"][1]).manifest == versions["v1"].manifest


def test_interrupted_download_keeps_last_good_version_then_resumes(versions, keys, tmp_path):
    cache, pubkey = str(tmp_path / "cache"), keys["publisher"][1]
    good = Served(versions["v1"].path, str(tmp_path / "www"))
    fetch(good.url, pubkey, cache)
    good.close()
    cut = Served(versions["v2"].path, str(tmp_path / "www-cut"), CutServer)
    entry = next(t.delta for t in versions["v2"].manifest.tasks if t.name == "gamma2")
    with pytest.raises(FetchError) as error:
        fetch(cut.url, pubkey, cache)
    half = entry.bytes // 2
    assert str(error.value) == f"{cut.url}{entry.file}: connection closed after {half} of {entry.bytes} bytes"
    cut.close()
    assert open_cached(cache, pubkey).manifest == versions["v1"].manifest
    assert os.path.getsize(os.path.join(cache, entry.file + ".part")) == half
    good = Served(versions["v2"].path, str(tmp_path / "www-v2"))
    result = fetch(good.url, pubkey, cache)
    good.close()
    assert (result.manifest, result.downloaded_bytes) == (versions["v2"].manifest, entry.bytes - half)  # resumed
    assert open_cached(cache, pubkey).manifest == versions["v2"].manifest


def test_fetch_killed_at_each_write_keeps_last_good_version(served, versions, keys, tmp_path):
    pristine, cache, pubkey = str(tmp_path / "v1-cache"), str(tmp_path / "cache"), keys["publisher"][1]
    fetch(served.url, pubkey, pristine)
    served.publish(versions["v2"].path)
    code = f"from edgepatch.ship.fetch import fetch\nfetch({served.url!r}, {pubkey!r}, {cache!r})\n"
    # os.replace calls: the new delta's download, manifest.sig, manifest.json, then the `current` pointer
    for nth in (1, 2, 3, 4):
        shutil.rmtree(cache, ignore_errors=True)
        shutil.copytree(pristine, cache)
        assert run_until_killed(code, "os.replace", nth)
        assert open_cached(cache, pubkey).manifest == versions["v1"].manifest
    assert not run_until_killed(code, "os.replace", 99)
    assert open_cached(cache, pubkey).manifest == versions["v2"].manifest


def test_fetch_from_a_closed_port(keys, tmp_path):
    with pytest.raises(FetchError, match=r"^http://127\.0\.0\.1:9/manifest\.sig: cannot connect \("):
        fetch("http://127.0.0.1:9/", keys["publisher"][1], str(tmp_path / "cache"), timeout=5)


class FlappingHandler(BundleHandler):
    """Serves a different signature file on every request, like a bundle replaced again and again."""

    count = 0

    def _send_span(self, handle, data, start, end):
        if self.path == "/manifest.sig":
            FlappingHandler.count += 1
            data = data.replace(b'"algorithm"', b' ' * (FlappingHandler.count % 2) + b'"algorithm"')[:end - start]
        super()._send_span(handle, data, start, end)


class FlappingServer(BundleServer):
    handler_class = FlappingHandler


def test_fetch_gives_up_on_a_bundle_that_keeps_changing(versions, keys, tmp_path):
    flapping = Served(versions["v1"].path, str(tmp_path / "www"), FlappingServer)
    try:
        with pytest.raises(FetchError) as error:
            fetch(flapping.url, keys["publisher"][1], str(tmp_path / "cache"))
    finally:
        flapping.close()
    assert str(error.value) == f"{flapping.url}: the bundle changed during each of 3 attempts; try later"
