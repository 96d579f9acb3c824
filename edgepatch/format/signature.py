"""Ed25519 signature files, and checking them: the verifying half of ``edgepatch.ship.signing``.

It sits with the formats so that the runtime, which never imports the shipping
layer, can check a loose delta's detached signature (spec: *Verification order*,
"Integrity, not authenticity").

Keys
----
* Public key: SubjectPublicKeyInfo PEM (``NAME.pub``); a verifier holds a set of
  them (``trusted_keys``), keyed by id.
* Key id: the first 16 hex digits of the SHA-256 of the raw 32-byte public key.

Signature file
--------------
One UTF-8 JSON object with exactly these keys::

    {"algorithm": "ed25519", "key_id": "<16 hex>", "signature": "<128 hex>"}

The signature covers the exact bytes of the signed file, unparsed: a bundle's
``manifest.json`` (signature in ``manifest.sig``), or a loose delta ``D``
(a *detached* signature in ``D.sig``, beside it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgepatch.atomic import is_regular_file, read_small_file
from edgepatch.errors import KeyFileError, MissingFileError, SignatureError, UsageError

ALGORITHM = "ed25519"
KEY_ID_HEX = 16
MAX_KEY_FILE_BYTES = 16 * 1024
MAX_SIGNATURE_FILE_BYTES = 4 * 1024
SIGNATURE_KEYS = ("algorithm", "key_id", "signature")
DETACHED_SUFFIX = ".sig"
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_SIGNATURE_HEX = re.compile(r"[0-9a-f]{128}")


def key_id(public_key: Ed25519PublicKey) -> str:
    """The id of a public key: first 16 hex digits of sha256(raw 32-byte key)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_HEX]


def read_key_file(path: str) -> bytes:
    """The bytes of a key file: a regular file of at most MAX_KEY_FILE_BYTES (MissingFileError, KeyFileError)."""
    if not is_regular_file(path):
        raise MissingFileError(f"{path}: no such key file")
    size = os.path.getsize(path)
    if size > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"{path}: key file is {size} bytes, more than {MAX_KEY_FILE_BYTES}")
    with open(path, "rb") as handle:
        return handle.read(MAX_KEY_FILE_BYTES + 1)


def load_public_key(path: str) -> Ed25519PublicKey:
    """Read a PEM (SubjectPublicKeyInfo) Ed25519 public key.

    Raises:
      MissingFileError: no such file.
      KeyFileError: not a PEM public key, or not Ed25519.
    """
    data = read_key_file(os.fsdecode(path))
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as error:
        raise KeyFileError(f"{path}: not a PEM public key ({error})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: expected an Ed25519 public key, got {type(key).__name__}")
    return key


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


def _reject_duplicates(pairs):
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key")
    return dict(pairs)


def parse_signature_file(data: bytes, source: str) -> tuple[str, bytes]:
    """(key id, 64-byte signature) of a signature file's bytes; SignatureError if malformed."""
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


def verify_signature(data: bytes, signature_file: bytes, trusted: Mapping[str, Ed25519PublicKey], source: str,
                     what: str) -> str:
    """Check ``signature_file`` over the exact ``data``; returns the signing key id.

    ``source`` names the signed file in messages, ``what`` its bytes ("the manifest bytes").

    Raises:
      SignatureError: malformed signature file, a key outside ``trusted``, or a
        signature that does not match the bytes.
    """
    signer, signature = parse_signature_file(signature_file, f"{source} signature")
    if signer not in trusted:
        raise SignatureError(f"{source}: signed by key {signer}, which is not trusted "
                             f"(trusted: {', '.join(sorted(trusted))})")
    try:
        trusted[signer].verify(signature, data)
    except InvalidSignature:
        raise SignatureError(f"{source}: signature by key {signer} does not match {what}") from None
    return signer


def detached_signature_path(path) -> str:
    """Where the detached signature of the file at ``path`` lies: ``path + ".sig"``."""
    return os.fsdecode(path) + DETACHED_SUFFIX


def read_detached_signature(path) -> bytes:
    """The bytes of ``path``'s detached signature; SignatureError when there is none (or not a small regular file)."""
    sig_path = detached_signature_path(path)
    try:
        return read_small_file(sig_path, MAX_SIGNATURE_FILE_BYTES, "signature")
    except (MissingFileError, UsageError) as error:
        raise SignatureError(f"{os.fsdecode(path)}: no valid detached signature: {error}") from None


def verify_detached(data: bytes, signature_file: bytes, trusted: Mapping[str, Ed25519PublicKey], source: str) -> str:
    """Check a loose file's detached signature over its exact bytes; returns the key id (SignatureError)."""
    return verify_signature(data, signature_file, trusted, source, "the file's bytes")
