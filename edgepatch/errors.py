"""Typed errors. Every expected failure is an ``EdgepatchError``.

Messages name the file, the tensor and the expected vs. actual value, so the
CLI can print them as one line and exit with a non-zero status.
"""


class EdgepatchError(Exception):
    """Base class of every error edgepatch raises on bad input."""


class UsageError(EdgepatchError):
    """An argument or option is not allowed (bad value, bad combination)."""


class MissingFileError(EdgepatchError):
    """A file or directory the caller named does not exist."""


class DeltaFormatError(EdgepatchError):
    """A delta or patch file is not a valid file of the format."""


class TruncatedFileError(DeltaFormatError):
    """The file is shorter than its own header says."""


class ChecksumMismatchError(DeltaFormatError):
    """The stored sha256 does not match the bytes of the file."""


class HeaderError(DeltaFormatError):
    """The JSON header is malformed or lies about the payload."""


class WrongBaseError(EdgepatchError):
    """A delta was made for a different base model than the one loaded."""


class ShapeMismatchError(EdgepatchError):
    """A tensor's shape or dtype does not match the base it patches."""


class NonFiniteError(EdgepatchError):
    """A tensor holds NaN or Inf values."""


class BaseModelError(EdgepatchError):
    """A base model file (.tflite/.onnx) is malformed or lacks patch sites."""


class ModelStructureError(EdgepatchError):
    """A Keras model has a structure edgepatch cannot patch or fold."""


class FoldError(EdgepatchError):
    """Folding or conversion changed the model's outputs beyond tolerance."""


class DataError(EdgepatchError):
    """A dataset directory is missing, empty or inconsistent."""


class KeyFileError(EdgepatchError):
    """A signing key file is malformed or holds a key that is not Ed25519."""


class SignatureError(EdgepatchError):
    """A manifest signature is missing, malformed, invalid or made by an untrusted key."""


class BundleError(EdgepatchError):
    """A bundle directory or its manifest is malformed, or lists a file that is missing."""


class IntegrityError(BundleError):
    """A bundle file's size or sha256 differs from what its manifest lists."""


class RollbackError(BundleError):
    """A fetched manifest's model version is lower than the active one, or equal with other content."""


class UnsafeCacheError(BundleError):
    """A cache file fetch would write is a symbolic link or not a regular file; nothing is written through it."""


class FetchError(EdgepatchError):
    """A download failed: connection error, HTTP status, or a response of the wrong size."""


class FetchTimeoutError(FetchError):
    """A fetch ran past its overall deadline, or transferred slower than its minimum rate."""
