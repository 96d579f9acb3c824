"""Ed25519 signatures over bundle manifests, made and checked by the ``cryptography`` package.

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
the same key id, so the id is signed too.

Key rotation
------------
A verifier holds a set of trusted public keys (``trusted_keys``), keyed by id.
To rotate, ship the new public key to devices (trusting old and new), then
sign new bundles with the new key; drop the old key from the set later.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from edgepatch.atomic import is_regular_file, write_bytes_atomic
from edgepatch.errors import KeyFileError, MissingFileError, SignatureError, UsageError

ALGORITHM = "ed25519"
KEY_ID_HEX = 16
MAX_KEY_FILE_BYTES = 16 * 1024
MAX_SIGNATURE_FILE_BYTES = 4 * 1024
SIGNATURE_KEYS = ("algorithm", "key_id", "signature")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_SIGNATURE_HEX = re.compile(r"[0-9a-f]{128}")


def key_id(public_key: Ed25519PublicKey) -> str:
    """The id of a public key: first 16 hex digits of sha256(raw 32-byte key)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_HEX]


def _read_key_file(path: str) -> bytes:
    if not is_regular_file(path):
        raise MissingFileError(f"{path}: no such key file")
    size = os.path.getsize(path)
    if size > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"{path}: key file is {size} bytes, more than {MAX_KEY_FILE_BYTES}")
    with open(path, "rb") as handle:
        return handle.read(MAX_KEY_FILE_BYTES + 1)


def load_private_key(path: str) -> Ed25519PrivateKey:
    """Read an unencrypted PKCS#8 PEM Ed25519 private key.

    Raises:
      MissingFileError: no such file.
      KeyFileError: not a PEM private key, encrypted, or not Ed25519.
    """
    data = _read_key_file(os.fsdecode(path))
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise KeyFileError(f"{path}: not an unencrypted PEM private key ({error})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: expected an Ed25519 private key, got {type(key).__name__}")
    return key


def load_public_key(path: str) -> Ed25519PublicKey:
    """Read a PEM (SubjectPublicKeyInfo) Ed25519 public key.

    Raises:
      MissingFileError: no such file.
      KeyFileError: not a PEM public key, or not Ed25519.
    """
    data = _read_key_file(os.fsdecode(path))
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as error:
        raise KeyFileError(f"{path}: not a PEM public key ({error})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: expected an Ed25519 public key, got {type(key).__name__}")
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


def trusted_keys(keys) -> dict[str, Ed25519PublicKey]:
    """Normalise trusted public keys to {key id: key}.

    Args:
      keys: one key or a path to a PEM file, or an iterable / mapping of them.

    Raises:
      UsageError: no key, or an item that is neither a key nor a path.
      MissingFileError, KeyFileError: as ``load_public_key``.
    """
    if isinstance(keys, (str, os.PathLike, Ed25519PublicKey)):
        keys = [keys]
    elif isinstance(keys, Mapping):
        keys = list(keys.values())
    if not isinstance(keys, Iterable):
        raise UsageError(f"pubkeys must be an Ed25519PublicKey, a PEM path or a list of them; got {keys!r}")
    trusted = {}
    for item in keys:
        if isinstance(item, (str, os.PathLike)):
            item = load_public_key(item)
        if not isinstance(item, Ed25519PublicKey):
            raise UsageError(f"pubkeys must be Ed25519PublicKey objects or PEM paths; got {item!r}")
        trusted[key_id(item)] = item
    if not trusted:
        raise UsageError("at least one trusted public key is required; received none")
    return trusted


def sign_manifest(manifest: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """The ``manifest.sig`` bytes for the exact ``manifest`` bytes."""
    signature = private_key.sign(manifest)
    document = {"algorithm": ALGORITHM, "key_id": key_id(private_key.public_key()), "signature": signature.hex()}
    return (json.dumps(document, sort_keys=True, indent=2) + "\n").encode("ascii")


def _reject_duplicates(pairs):
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key")
    return dict(pairs)


def _parse_signature_file(data: bytes, source: str) -> tuple[str, bytes]:
    if len(data) > MAX_SIGNATURE_FILE_BYTES:
        raise SignatureError(f"{source}: signature file is {len(data)} bytes, more than {MAX_SIGNATURE_FILE_BYTES}")
    try:
        document = json.loads(data.decode("utf-8"), object_pairs_hook=_reject_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise SignatureError(f"{source}: not a JSON signature file") from None
    if not (isinstance(document, dict) and sorted(document) == list(SIGNATURE_KEYS)):
        raise SignatureError(f"{source}: expected a JSON object with exactly the keys {list(SIGNATURE_KEYS)}")
    if document["algorithm"] != ALGORITHM:
        raise SignatureError(f"{source}: algorithm must be '{ALGORITHM}', got {document['algorithm']!r}")
    if not (isinstance(document["key_id"], str) and _KEY_ID.fullmatch(document["key_id"])):
        raise SignatureError(f"{source}: key_id must be 16 lowercase hex digits, got {document['key_id']!r:.40}")
    if not (isinstance(document["signature"], str) and _SIGNATURE_HEX.fullmatch(document["signature"])):
        raise SignatureError(f"{source}: signature must be 128 lowercase hex digits")
    return document["key_id"], bytes.fromhex(document["signature"])


def verify_manifest(manifest: bytes, signature_file: bytes, trusted: Mapping[str, Ed25519PublicKey],
                    source: str = "<manifest>") -> str:
    """Check ``signature_file`` over the exact ``manifest`` bytes; returns the signing key id.

    Args:
      manifest: the bytes of manifest.json, unparsed.
      signature_file: the bytes of manifest.sig.
      trusted: {key id: public key}, as from ``trusted_keys``.
      source: names the manifest in error messages.

    Raises:
      SignatureError: malformed signature file, a key outside ``trusted``, or a
        signature that does not match the bytes.
    """
    signer, signature = _parse_signature_file(signature_file, f"{source} signature")
    if signer not in trusted:
        raise SignatureError(f"{source}: signed by key {signer}, which is not trusted "
                             f"(trusted: {', '.join(sorted(trusted))})")
    try:
        trusted[signer].verify(signature, manifest)
    except InvalidSignature:
        raise SignatureError(f"{source}: signature by key {signer} does not match the manifest bytes") from None
    return signer
