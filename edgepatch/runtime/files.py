"""Opening the files the runtime takes: a base (any format), and a task delta (float or int8), each read once."""

from __future__ import annotations

import os

from edgepatch.errors import MissingFileError, UsageError
from edgepatch.format import delta as float_delta
from edgepatch.format import int8_delta
from edgepatch.format.container import TensorFile, decode_tensor_file, read_bytes, read_tensor_file
from edgepatch.format.open_file import open_regular_file
from edgepatch.runtime.onnx import OnnxBase
from edgepatch.runtime.tflite import TFLiteBase
from edgepatch.runtime.tflite_file import parse_tflite
from edgepatch.runtime.tflite_int8 import TFLiteInt8Base, is_int8_model

EXTENSIONS = (".tflite", ".onnx")
TASK_DELTA_KINDS = (float_delta.FILE_KIND, int8_delta.FILE_KIND)


def load_base(path: str, num_threads: int = 1):
    """Open a base: .onnx, or .tflite (float or int8, told apart by content)."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in EXTENSIONS:
        raise UsageError(f"base must be a .tflite or .onnx file. Received '{path}'")
    if not os.path.lexists(path):
        raise MissingFileError(f"base model '{path}' does not exist")
    handle, size = open_regular_file(path)  # a FIFO or device would block or never end
    with handle:
        data = handle.read(size)
    if extension == ".onnx":
        return OnnxBase(data, path, num_threads)
    if is_int8_model(parse_tflite(data, path)):
        return TFLiteInt8Base(data, path, num_threads)
    return TFLiteBase(data, path, num_threads)


def read_task_delta(path, trusted_keys=None) -> float_delta.Delta | int8_delta.Int8Delta:
    """Read and verify a float delta or an int8 delta, whichever the file is: one read, one verification.

    Args:
        path: the delta file.
        trusted_keys: None checks integrity only (a loose delta is not authenticated: the spec's
            "Integrity, not authenticity"). Else the Ed25519 keys (``{key id: key}``, PEM paths or
            keys, as ``edgepatch.format.signature.trusted_keys`` takes them) one of which must have
            signed the file's exact bytes in ``path + ".sig"``; the signature is checked on the bytes
            read, before they are parsed.
    Raises MissingFileError, SignatureError (no, a malformed or a wrong signature, an untrusted
    key), DeltaFormatError (or a subclass; ``HeaderError`` for a file of another kind),
    NonFiniteError, ShapeMismatchError.
    """
    if trusted_keys is None:
        return task_delta_from_file(read_tensor_file(path, TASK_DELTA_KINDS), os.fsdecode(path))
    from edgepatch.format import signature  # cryptography, only for a caller that checks signatures

    trusted = signature.trusted_keys(trusted_keys)
    signature_file = signature.read_detached_signature(path)
    data, source = read_bytes(path)
    signature.verify_detached(data, signature_file, trusted, source)
    return task_delta_from_file(decode_tensor_file(data, TASK_DELTA_KINDS, source), source)


def task_delta_from_file(stored: TensorFile, source: str) -> float_delta.Delta | int8_delta.Int8Delta:
    """The typed delta of a task delta file the container already verified (its kind's own rules)."""
    kind = int8_delta if stored.file_kind == int8_delta.FILE_KIND else float_delta
    return kind.from_tensor_file(stored, source)
