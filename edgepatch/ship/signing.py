"""Ed25519 signatures over bundle manifests and loose deltas, made and checked by the ``cryptography`` package.

Keys
----
* Private key: PKCS#8 PEM, unencrypted, written with mode 0600 (``NAME.key``).
* Public key: SubjectPublicKeyInfo PEM (``NAME.pub``).
* Key id: the first 16 hex digits of the SHA-256 of the raw 32-byte public key.

Signature file
--------------
``manifest.sig`` is one UTF-8 JSON object with exactly these keys::

    {"algorithm": "ed25519", "key_id": "<16 hex>", "signature": "<128 hex>"}

The signature covers the exact bytes of ``manifest.json``; nothing in the
manifest is parsed before the signature has been checked. The manifest names
the same key id, so the id is signed too. A loose delta ``D`` is signed the
same way, over its exact bytes, in the detached file ``D.sig``
(``write_detached_signature``); ``edgepatch run/bench --pubkey`` and the
runtime's ``trusted_keys`` accept a delta only with a valid one.

The verifying half (public keys, parsing and checking signature files) lives in
``edgepatch.format.signature``, so that the runtime can check deltas without
this shipping layer; its names are re-exported here.

Key rotation
------------
A verifier holds a set of trusted public keys (``trusted_keys``), keyed by id.
To rotate, ship the new public key to devices (trusting old and new), then
sign new bundles with the new key; drop the old key from the set later.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgepatch.atomic import write_bytes_atomic
from edgepatch.errors import KeyFileError, UsageError
from edgepatch.format.container import MAX_FILE_BYTES
from edgepatch.format.open_file import open_regular_file
from edgepatch.format.signature import (  # noqa: F401  (re-exported: one import for shipping code)
    ALGORITHM,
    DETACHED_SUFFIX,
    KEY_ID_HEX,
    MAX_KEY_FILE_BYTES,
    MAX_SIGNATURE_FILE_BYTES,
    SIGNATURE_KEYS,
    detached_signature_path,
    key_id,
    load_public_key,
    read_key_file,
    trusted_keys,
    verify_detached,
    verify_signature,
)


def load_private_key(path: str) -> Ed25519PrivateKey:
    """Read an unencrypted PKCS#8 PEM Ed25519 private key.

    Raises:
      MissingFileError: no such file.
      KeyFileError: not a PEM private key, encrypted, or not Ed25519.
    """
    data = read_key_file(os.fsdecode(path))
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise KeyFileError(f"{path}: not an unencrypted PEM private key ({error})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: expected an Ed25519 private key, got {type(key).__name__}")
    return key


def write_keypair(prefix: str) -> tuple[str, str, str]:
    """Generate a key pair; write ``PREFIX.key`` (mode 0600) and ``PREFIX.pub`` atomically.

    Args:
      prefix: path prefix of the two files; missing directories are created (mode 0700).

    Returns:
      (private key path, public key path, key id).

    Raises:
      UsageError: either file already exists (keys are never overwritten), or the
        directory cannot be created.
    """
    private_path, public_path = f"{prefix}.key", f"{prefix}.pub"
    for path in (private_path, public_path):
        if os.path.lexists(path):
            raise UsageError(f"{path} already exists; refusing to overwrite a key (choose another --out)")
    directory = os.path.dirname(os.path.abspath(private_path))
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create the key directory {directory}: {error.strerror or error}") from None
    private = Ed25519PrivateKey.generate()
    public = private.public_key()
    write_bytes_atomic(private_path, private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), mode=0o600)
    write_bytes_atomic(public_path, public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private_path, public_path, key_id(public)


def sign_manifest(manifest: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """The signature file's bytes for the exact ``manifest`` bytes (or any file's: see ``write_detached_signature``)."""
    signature = private_key.sign(manifest)
    document = {"algorithm": ALGORITHM, "key_id": key_id(private_key.public_key()), "signature": signature.hex()}
    return (json.dumps(document, sort_keys=True, indent=2) + "\n").encode("ascii")


def verify_manifest(manifest: bytes, signature_file: bytes, trusted: Mapping[str, Ed25519PublicKey],
                    source: str = "<manifest>") -> str:
    """Check ``signature_file`` over the exact ``manifest`` bytes; returns the signing key id.

    Raises:
      SignatureError: malformed signature file, a key outside ``trusted``, or a
        signature that does not match the bytes.
    """
    return verify_signature(manifest, signature_file, trusted, source, "the manifest bytes")


def write_detached_signature(path: str, key_path: str) -> tuple[str, str]:
    """Sign the file at ``path`` (a delta) with the private key at ``key_path``: writes ``path.sig`` atomically.

    Returns (signature path, key id). The file is read whole (a regular file of at most the
    format's MAX_FILE_BYTES); it is not parsed: the signature covers its exact bytes.

    Raises:
      MissingFileError: no such file or key. UsageError: the file is larger than MAX_FILE_BYTES.
      KeyFileError: as ``load_private_key``.
    """
    key = load_private_key(key_path)
    handle, size = open_regular_file(os.fsdecode(path))
    with handle:
        if size > MAX_FILE_BYTES:
            raise UsageError(f"{os.fsdecode(path)}: file is {size} bytes, more than {MAX_FILE_BYTES}; not signed")
        data = handle.read(MAX_FILE_BYTES + 1)
    signature_path = detached_signature_path(path)
    write_bytes_atomic(signature_path, sign_manifest(data, key))
    return signature_path, key_id(key.public_key())
