"""Bundles: pack, sign, verify; every bad input a typed error with its full message; atomic pack."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner
from conftest import REPO
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from helpers.killing import run_until_killed

from edgepatch.ship.bundle import pack_bundle, ship_inputs, verify_bundle
from edgepatch.cli.ship import keygen, pack, serve, verify
from edgepatch.format.delta import read_delta, write_delta
from edgepatch.errors import (
    BundleError,
    IntegrityError,
    KeyFileError,
    SignatureError,
    UsageError,
    WrongBaseError,
)
from edgepatch.ship.manifest import encode_manifest, parse_manifest
from edgepatch.ship.signing import (
    load_private_key,
    load_public_key,
    sign_manifest,
    write_keypair,
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Two key pairs: name -> (private path, public path, key id)."""
    root = tmp_path_factory.mktemp("keys")
    return {name: write_keypair(str(root / name)) for name in ("old", "new")}


@pytest.fixture(scope="module")
def packed(small_ship, keys, tmp_path_factory):
    """A bundle of the small ship, signed with the 'old' key."""
    out = str(tmp_path_factory.mktemp("packed") / "bundle")
    bases, deltas = ship_inputs(str(small_ship[0]))
    return pack_bundle(bases, deltas, out, "1.0", keys["old"][0])


@pytest.fixture
def bundle(packed, tmp_path) -> str:
    """A private copy of the packed bundle, free to tamper with."""
    return shutil.copytree(packed.path, str(tmp_path / "bundle"))


def file_of(bundle: str, ext: str) -> str:
    return os.path.join(bundle, "files", next(n for n in os.listdir(os.path.join(bundle, "files")) if n.endswith(ext)))


def test_pack_writes_content_addressed_files_and_manifest(packed, small_ship, keys):
    ship = str(small_ship[0])
    manifest = packed.manifest
    assert sorted(os.listdir(packed.path)) == ["files", "manifest.json", "manifest.sig"]
    assert manifest.model_version == "1.0" and manifest.key_id == keys["old"][2] == packed.key_id
    delta = read_delta(os.path.join(ship, "gamma.delta"))
    for fmt, entry in manifest.bases.items():
        assert entry.sha256 == delta.base_sha256[fmt]
        assert entry.file == f"files/{entry.sha256}.{fmt}"
        with open(os.path.join(packed.path, entry.file), "rb") as a, open(os.path.join(ship, f"base.{fmt}"), "rb") as b:
            assert a.read() == b.read()
    (task,) = manifest.tasks
    assert (task.name, task.classes, task.resolution, task.kinds) == (
        "gamma", ("gamma_0", "gamma_1", "gamma_2"), 32, ("scale_bias", "logits"))
    assert task.delta.bytes == os.path.getsize(os.path.join(ship, "gamma.delta"))
    report = verify_bundle(packed.path, [keys["new"][1], keys["old"][1]])
    assert (report.key_id, report.files, report.bytes) == (keys["old"][2], 3, packed.bytes)


def test_pack_is_deterministic(packed, small_ship, keys, tmp_path):
    again = pack_bundle(*ship_inputs(str(small_ship[0])), str(tmp_path / "again"), "1.0", keys["old"][0])
    for name in ("manifest.json", "manifest.sig"):  # Ed25519 signatures are deterministic
        with open(os.path.join(packed.path, name), "rb") as a, open(os.path.join(again.path, name), "rb") as b:
            assert a.read() == b.read()


def test_tampered_delta_is_rejected(bundle, keys):
    path = file_of(bundle, ".delta")
    data = bytearray(open(path, "rb").read())
    data[100] ^= 1
    open(path, "wb").write(bytes(data))
    name = os.path.basename(path)
    with pytest.raises(IntegrityError) as error:
        verify_bundle(bundle, keys["old"][1])
    import hashlib
    assert str(error.value) == (f"{path}: sha256 {hashlib.sha256(data).hexdigest()}, but the manifest lists "
                                f"{name.split('.')[0]}")


def test_truncated_or_missing_file_is_rejected(bundle, keys):
    path = file_of(bundle, ".tflite")
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:
        handle.truncate(size - 1)
    with pytest.raises(IntegrityError, match=None) as error:
        verify_bundle(bundle, keys["old"][1])
    assert str(error.value) == f"{path}: {size - 1} bytes, but the manifest lists {size}"
    os.unlink(path)
    with pytest.raises(BundleError) as error:
        verify_bundle(bundle, keys["old"][1])
    assert str(error.value) == f"{path}: missing (the manifest lists files/{os.path.basename(path)})"


@pytest.mark.parametrize("tamper", ["manifest", "signature"])
def test_tampered_manifest_or_signature_is_rejected(bundle, keys, tamper):
    manifest_path = os.path.join(bundle, "manifest.json")
    if tamper == "manifest":
        text = open(manifest_path).read().replace('"model_version": "1.0"', '"model_version": "9.9"')
        open(manifest_path, "w").write(text)
    else:
        document = json.load(open(os.path.join(bundle, "manifest.sig")))
        document["signature"] = ("0" if document["signature"][0] != "0" else "1") + document["signature"][1:]
        json.dump(document, open(os.path.join(bundle, "manifest.sig"), "w"))
    with pytest.raises(SignatureError) as error:
        verify_bundle(bundle, keys["old"][1])
    assert str(error.value) == f"{manifest_path}: signature by key {keys['old'][2]} does not match the manifest bytes"


def test_wrong_key_and_unsigned_bundle_are_rejected(bundle, small_ship, keys, tmp_path):
    with pytest.raises(SignatureError) as error:
        verify_bundle(bundle, keys["new"][1])
    assert str(error.value) == (f"{bundle}/manifest.json: signed by key {keys['old'][2]}, which is not trusted "
                                f"(trusted: {keys['new'][2]})")
    unsigned = pack_bundle(*ship_inputs(str(small_ship[0])), str(tmp_path / "unsigned"), "1.0")
    assert unsigned.manifest.key_id is None and verify_bundle(unsigned.path).key_id is None
    with pytest.raises(SignatureError) as error:
        verify_bundle(unsigned.path, keys["old"][1])
    assert str(error.value) == f"{unsigned.path}/manifest.sig: no such file; the bundle is unsigned"


def test_key_rotation(small_ship, keys, tmp_path):
    rotated = pack_bundle(*ship_inputs(str(small_ship[0])), str(tmp_path / "b"), "2.0", keys["new"][0])
    assert rotated.manifest.key_id == keys["new"][2]
    assert verify_bundle(rotated.path, [keys["old"][1], keys["new"][1]]).key_id == keys["new"][2]
    with pytest.raises(SignatureError, match=f"signed by key {keys['new'][2]}, which is not trusted"):
        verify_bundle(rotated.path, [keys["old"][1]])


def test_manifest_naming_another_key_is_rejected(bundle, keys):
    manifest = parse_manifest(open(os.path.join(bundle, "manifest.json"), "rb").read())
    data = encode_manifest(dataclasses.replace(manifest, key_id=keys["old"][2]))
    open(os.path.join(bundle, "manifest.json"), "wb").write(data)
    open(os.path.join(bundle, "manifest.sig"), "wb").write(sign_manifest(data, load_private_key(keys["new"][0])))
    with pytest.raises(SignatureError) as error:
        verify_bundle(bundle, [keys["old"][1], keys["new"][1]])
    assert str(error.value) == (f"{bundle}/manifest.json: names key_id {keys['old'][2]}, "
                                f"but is signed by key {keys['new'][2]}")


def test_delta_for_another_base_is_rejected(small_ship, tmp_path):
    ship = str(small_ship[0])
    delta = read_delta(os.path.join(ship, "gamma.delta"))
    other = dict(delta.base_sha256, onnx="ab" * 32)
    write_delta(str(tmp_path / "other.delta"), dataclasses.replace(delta, base_sha256=other))
    bases, _ = ship_inputs(ship)
    with pytest.raises(WrongBaseError) as error:
        pack_bundle(bases, [str(tmp_path / "other.delta")], str(tmp_path / "b"), "1")
    assert str(error.value) == (f"{tmp_path}/other.delta: delta for task 'gamma' was made for onnx base sha256 "
                                f"{'ab' * 32}, but the bundle's onnx base is {delta.base_sha256['onnx']}")
    write_delta(str(tmp_path / "tflite_only.delta"),
                dataclasses.replace(delta, base_sha256={"tflite": delta.base_sha256["tflite"]}))
    with pytest.raises(WrongBaseError) as error:
        pack_bundle(bases, [str(tmp_path / "tflite_only.delta")], str(tmp_path / "b"), "1")
    assert str(error.value) == (f"{tmp_path}/tflite_only.delta: delta for task 'gamma' has no onnx base "
                                f"fingerprint (it has: tflite)")
    assert not os.path.exists(tmp_path / "b")
    assert pack_bundle({"tflite": bases["tflite"]}, [str(tmp_path / "tflite_only.delta")],
                       str(tmp_path / "b"), "1").files == 2


def test_pack_refuses_bad_arguments(small_ship, keys, tmp_path):
    bases, deltas = ship_inputs(str(small_ship[0]))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.txt").write_text("precious")
    cases = [
        (dict(out_dir=str(tmp_path / "docs")), UsageError,
         f"--out {tmp_path}/docs is a non-empty directory without manifest.json; "
         "refusing to replace what is not a bundle"),
        (dict(out_dir=str(small_ship[0].parent)), UsageError,
         f"--out {small_ship[0].parent} contains the input {bases['tflite']}; choose another directory"),
        (dict(model_version=' 1'), UsageError,
         "model version must be an integer or integers joined by dots (compared numerically; at most 128 "
         "characters), e.g. 3 or 2024.6.1; received ' 1'"),
        (dict(model_version='load'), UsageError,
         "model version must be an integer or integers joined by dots (compared numerically; at most 128 "
         "characters), e.g. 3 or 2024.6.1; received 'load'"),
        (dict(model_version='1.x'), UsageError,
         "model version must be an integer or integers joined by dots (compared numerically; at most 128 "
         "characters), e.g. 3 or 2024.6.1; received '1.x'"),
        (dict(model_version='v2'), UsageError,
         "model version must be an integer or integers joined by dots (compared numerically; at most 128 "
         "characters), e.g. 3 or 2024.6.1; received 'v2'"),
        (dict(model_version='1..2'), UsageError,
         "model version must be an integer or integers joined by dots (compared numerically; at most 128 "
         "characters), e.g. 3 or 2024.6.1; received '1..2'"),
        (dict(model_version='111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111'), UsageError,
         "model version must be an integer or integers joined by dots (compared numerically; at most 128 "
         "characters), e.g. 3 or 2024.6.1; received '111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111'"),
        (dict(signing_key=keys["old"][1]), KeyFileError, None),
    ]
    for change, kind, message in cases:
        arguments = dict(bases=bases, deltas=deltas, out_dir=str(tmp_path / "b"), model_version="1") | change
        with pytest.raises(kind) as error:
            pack_bundle(**arguments)
        if message:
            assert str(error.value) == message
    assert (tmp_path / "docs" / "thesis.txt").read_text() == "precious"


def test_key_files(keys, tmp_path):
    private, public, _ = keys["old"]
    assert oct(os.stat(private).st_mode & 0o777) == "0o600"
    with pytest.raises(UsageError) as error:
        write_keypair(private[:-4])
    assert str(error.value) == f"{private} already exists; refusing to overwrite a key (choose another --out)"
    with pytest.raises(KeyFileError) as error:
        load_public_key(private)
    assert str(error.value).startswith(f"{private}: not a PEM public key (")
    rsa_pem = rsa.generate_private_key(65537, 2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "rsa.pub").write_bytes(rsa_pem)
    with pytest.raises(KeyFileError) as error:
        load_public_key(str(tmp_path / "rsa.pub"))
    assert str(error.value) == f"{tmp_path}/rsa.pub: expected an Ed25519 public key, got RSAPublicKey"


def ship_cli() -> click.Group:
    group = click.Group("edgepatch")
    for command in (pack, keygen, verify, serve):
        group.add_command(command)
    return group


def test_cli_keygen_pack_verify(small_ship, tmp_path):
    runner = CliRunner()
    result = runner.invoke(ship_cli(), ["keygen", "--out", str(tmp_path / "k"), "--json"])
    assert result.exit_code == 0, result.output
    key_id = json.loads(result.output)["key_id"]
    result = runner.invoke(ship_cli(), ["pack", str(small_ship[0]), "--out", str(tmp_path / "b"),
                                        "--model-version", "3", "--sign", str(tmp_path / "k.key")])
    assert result.exit_code == 0 and f"signed by key {key_id}, 3 files" in result.output
    result = runner.invoke(ship_cli(), ["pack", str(small_ship[0]), "--out", str(tmp_path / "b"),
                                        "--model-version", "spring"])
    assert (result.exit_code, result.output) == (2, "error: model version must be an integer or integers joined "
                                                    "by dots (compared numerically; at most 128 characters), e.g. 3 "
                                                    "or 2024.6.1; received 'spring'\n")
    result = runner.invoke(ship_cli(), ["verify", str(tmp_path / "b"), "--pubkey", str(tmp_path / "k.pub"), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["key_id"] == key_id
    result = runner.invoke(ship_cli(), ["verify", str(tmp_path / "b")])
    assert (result.exit_code, result.output) == (2, "error: give --pubkey (one or more) to check the signature, "
                                                    "or --allow-unsigned to check integrity only; received neither\n")
    os.unlink(file_of(str(tmp_path / "b"), ".onnx"))
    result = runner.invoke(ship_cli(), ["verify", str(tmp_path / "b"), "--allow-unsigned"])
    assert result.exit_code == 2 and result.output.startswith("error: ") and result.output.count("\n") == 1
    for command in ("pack", "keygen", "verify", "serve"):
        assert "Example:" in runner.invoke(ship_cli(), [command, "--help"]).output


def test_shipping_modules_do_not_import_tensorflow():
    code = ("import sys, edgepatch.ship.bundle, edgepatch.ship.fetch, edgepatch.ship.serve, edgepatch.ship.signing, edgepatch.cli.ship;"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.stdout.strip() == "ok", result.stderr


# Kill points of pack, in call order: staging (os.replace per staged file), then the swap
# (rename the old bundle aside, rename the stage in), then removing the old copy.
PACK_KILL_POINTS = [("os.replace", 1), ("os.replace", 4), ("os.rename", 1), ("os.rename", 2), ("shutil.rmtree", 1)]


@pytest.mark.parametrize("hook,nth", PACK_KILL_POINTS)
def test_killed_pack_leaves_old_bundle_or_nothing(packed, small_ship, keys, tmp_path, hook, nth):
    target = shutil.copytree(packed.path, str(tmp_path / "bundle"))
    old_manifest = open(os.path.join(target, "manifest.json"), "rb").read()
    code = (f"from edgepatch.ship.bundle import pack_bundle, ship_inputs\n"
            f"pack_bundle(*ship_inputs({str(small_ship[0])!r}), {target!r}, '2.0', {keys['new'][0]!r})\n")
    assert run_until_killed(code, hook, nth), f"pack finished before call {nth} of {hook}"
    if not os.path.exists(target):
        assert (hook, nth) == ("os.rename", 2)  # killed between the two renames: nothing, never a mix
        return
    report = verify_bundle(target, [keys["old"][1], keys["new"][1]])
    manifest = open(os.path.join(target, "manifest.json"), "rb").read()
    if hook == "shutil.rmtree":
        assert report.manifest.model_version == "2.0"  # the swap was done: the new complete bundle
    else:
        assert manifest == old_manifest and report.key_id == keys["old"][2]
