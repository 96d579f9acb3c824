"""What every base shares: it is read from its file once, known by its sha256, checked as it is indexed."""

from __future__ import annotations

import hashlib
import os

from edgepatch.errors import BaseModelError, MissingFileError


def sha256_hex(data) -> str:
    """The lowercase hex SHA-256 of a base's bytes: what a delta's ``base_sha256`` names."""
    return hashlib.sha256(data).hexdigest()


def require(condition: bool, message: str) -> None:
    """Raise BaseModelError(message) unless ``condition``: a base that breaks the spec's *Bases* rules."""
    if not condition:
        raise BaseModelError(message)


class BaseFile:
    """Mixin for the base classes: ``from_file(path, num_threads, **options)`` reads the file once."""

    @classmethod
    def from_file(cls, path: str, num_threads: int = 1, **options):
        if not os.path.isfile(path):
            raise MissingFileError(f"base model '{path}' does not exist")
        with open(path, "rb") as handle:
            return cls(handle.read(), path, num_threads, **options)
