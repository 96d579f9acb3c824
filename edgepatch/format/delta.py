"""The edgepatch tensor file format, version 1: deltas and training patches.

This docstring is the specification. A reader in another language must be
writable from it alone. The Python code follows it step by step: the
container (layout, header, steps 1-10) in ``edgepatch/format/container.py``, the
delta layer (step 11) below.

Layout
------
All integers are unsigned little-endian. Offsets are in bytes.

====================  ========  =============================================
bytes                 field     meaning
====================  ========  =============================================
0 .. 8                magic     ``MAGIC`` = ASCII ``EDGEPTCH``
8 .. 12               u32       ``FORMAT_VERSION`` = 1; any other is rejected
12 .. 16              u32  H    header_len: length of the header field
16 .. 16+H            header    UTF-8 JSON object, then ASCII spaces (0x20)
16+H .. 16+H+P        payload   P = header["payload_bytes"] bytes of tensors
16+H+P .. 16+H+P+32   trailer   SHA-256 of every byte before the trailer
====================  ========  =============================================

The file is exactly ``16 + H + P + 32`` bytes. H is a multiple of
``HEADER_ALIGN`` (16), so the payload starts 16-byte aligned;
``MIN_HEADER_BYTES`` (16) <= H <= ``MAX_HEADER_BYTES`` (1 MiB). A file is at
most ``MAX_FILE_BYTES`` (1 GiB) and at least ``MIN_FILE_BYTES`` (64) bytes.

Header
------
The whole header field is one RFC 8259 JSON text whose value is an object
(JSON allows whitespace around the value; writers pad with spaces only).
Readers reject: invalid UTF-8, duplicate keys in any object, the non-JSON
constants NaN/Infinity, numbers that overflow a double, nesting deeper than
the reader's parser allows. An *integer* below is a JSON number written
without fraction or exponent (``true``/``false`` are not integers).

Top-level keys, all required, no others allowed:

* ``"file_kind"``: ``"delta"``, ``"patch"`` or ``"int8_delta"`` (``FILE_KINDS``;
  the int8 delta's meta and tensors are specified in ``edgepatch/int8_delta.py``).
  The reader is told which kind(s) it expects and rejects the others.
* ``"payload_bytes"``: integer P, 0 <= P <= ``MAX_FILE_BYTES``.
* ``"tensors"``: array of at most ``MAX_TENSORS`` (8192) entries.
* ``"meta"``: object. For ``"patch"`` files it is free-form; for ``"delta"``
  files its content is given under *Delta meta* below.

Each tensor entry is an object with exactly these keys:

* ``"name"``: string of 1..``MAX_NAME_BYTES`` (256) bytes once encoded as
  UTF-8 (so no unpaired surrogate escape), unique.
* ``"dtype"``: a key of the dtype table below.
* ``"shape"``: array of at most ``MAX_RANK`` (4) integers, each
  0..``MAX_FILE_BYTES``. ``[]`` is a scalar (one element).
* ``"offset"``: integer 0..``MAX_FILE_BYTES``, relative to the payload
  start, a multiple of ``ALIGN`` (8).
* ``"nbytes"``: integer 0..``MAX_FILE_BYTES``, equal to product(shape) times
  the itemsize. (Compute the product with overflow checks; a product above
  ``MAX_FILE_BYTES`` can never match.)

Entries are sorted by offset and do not overlap: each offset is >= the end
(offset + nbytes) of the entry before it, and the last end is <= P. Payload
bytes that belong to no tensor are 0x00. Each tensor is stored as the raw
little-endian C-order (row-major) array.

=========  ========  ========
dtype      itemsize  numpy
=========  ========  ========
float32    4         ``<f4``
float16    2         ``<f2``  (IEEE 754 binary16)
int32      4         ``<i4``
int8       1         ``i1``
uint8      1         ``u1``
=========  ========  ========

Float tensors hold only finite values (no NaN, no +-Inf).

Writers are canonical, so equal inputs give equal bytes: tensors in the
caller's order (for a delta: the order E under *Delta tensors*, all in one
dtype), each at the previous end rounded up to ``ALIGN``;
P = the last end rounded up to ``ALIGN`` (0 without tensors); the JSON has
sorted keys, no whitespace (separators ``,`` and ``:``), only ASCII
(``\\uXXXX`` escapes), then space padding to a multiple of 16.

Verification order
------------------
A reader checks in this order and stops at the first failure. Each failure
is one typed error from ``edgepatch.errors``; its message starts with the
file path (``<bytes>`` for in-memory data) and gives the offending value.
Which check fails first, and its error class, are part of this spec; the
message wording is not. Within an object, missing keys are reported in the
order listed here, then unknown keys in sorted order.

1.  The path exists and is a regular file (``MissingFileError``).
2.  size >= ``MIN_FILE_BYTES`` (``TruncatedFileError``), then
    size <= ``MAX_FILE_BYTES`` (``DeltaFormatError``). The size comes from
    the file system before anything is read.
3.  magic (``DeltaFormatError``), then version (``DeltaFormatError``).
4.  ``MIN_HEADER_BYTES`` <= H <= ``MAX_HEADER_BYTES`` and H % 16 == 0
    (``HeaderError``), then 16 + H + 32 <= size (``TruncatedFileError``).
5.  Parse the header. Only if it parses to an object whose
    ``payload_bytes`` is a valid integer: size == 16 + H + P + 32,
    ``TruncatedFileError`` when shorter, ``DeltaFormatError`` when longer.
    If it does not parse, its error waits for step 7, so a corrupted
    header is reported as a checksum mismatch.
6.  SHA-256 of bytes [0, size - 32) equals the last 32 bytes
    (``ChecksumMismatchError``).
7.  The header parses (``HeaderError``), is an object, has exactly the
    top-level keys, ``file_kind`` is known and the expected one,
    ``payload_bytes`` valid, ``meta`` an object, ``tensors`` an array of at
    most ``MAX_TENSORS`` (all ``HeaderError``).
8.  Each entry in order (``HeaderError``): an object with exactly its keys;
    name; name unique; dtype; shape; offset and nbytes integers; nbytes ==
    product(shape) * itemsize; offset % ``ALIGN`` == 0; offset >= previous
    end; offset + nbytes <= P.
9.  Payload bytes outside every tensor are zero (``DeltaFormatError``).
10. Float tensors are finite (``NonFiniteError`` naming the tensor).
11. Delta files only: the delta meta and tensor rules below (``HeaderError``
    for structure, ``ShapeMismatchError`` for shapes).

No number from the file is used to allocate or index before it has been
checked against the actual file size by the steps above.

Delta meta
----------
``meta`` of a ``"delta"`` file is an object with exactly these keys::

    {"task": {"name": str, "classes": [str, ...], "resolution": int,
              "preprocessing": {"scale": number, "offset": number}},
     "kinds": [str, ...],
     "base_sha256": {format: hex, ...},
     "sites": [[name, op, channels, roles], ...]}

* task.name: non-empty string. task.classes: non-empty array of unique
  non-empty strings. task.resolution: integer 8..4096. preprocessing: finite
  numbers; the model input is ``pixel (0..255) * scale + offset``.
* kinds: non-empty array of unique non-empty strings (patch kinds private to
  this task, e.g. ``"scale_bias"``, ``"logits"``).
* base_sha256: non-empty object mapping a runtime format name (e.g.
  ``"tflite"``, ``"onnx"``) to the lowercase hex SHA-256 (64 characters) of
  the exact base file bytes the delta was made for.
* sites: array of 1..``MAX_SITES`` (8192) site entries. Their array order is
  the *site order* used below. Each entry is an array of exactly four
  values, e.g. ``["block_1_depthwise", "depthwise", 96, "scale+bias"]``:

  - name: the site, i.e. the Keras layer name. It is a string of
    1..``MAX_SITE_NAME_BYTES`` (249) bytes once encoded as UTF-8, so that
    ``{name}/kernel`` fits ``MAX_NAME_BYTES``. Names are unique within
    ``sites`` (exact string comparison).
  - op: one of ``SITE_OPS``: ``"conv"``, ``"depthwise"``, ``"dense"``.
  - channels: integer 1..``MAX_FILE_BYTES``, the site's output channels O.
  - roles: which of the site's tensors the delta holds. It is exactly one
    of the five ``ROLE_SETS`` strings ``"scale"``, ``"bias"``,
    ``"scale+bias"``, ``"kernel"``, ``"kernel+bias"``. Compare whole
    strings; a string lists its roles joined by ``+`` in the order scale,
    kernel, bias. No set has both scale and kernel: a kernel replaces the
    base kernel in full, so it takes no scale.

The roles of a site with output channels O:

* scale: [O]; multiplies the base's folded kernel per output channel. When
  applying it, a loader refuses (``NonFiniteError``, once every site's names
  and shapes passed) a scale whose product with the largest |value| of that
  channel's base kernel exceeds the float32 maximum, computed in double.
* bias: [O]; replaces the base's folded bias.
* kernel: the full folded kernel, in Keras layout: conv [H, W, I, O]
  and depthwise [H, W, C, M] (rank 4), dense [I, O] (rank 2). Its output
  channels are the last axis, or C * M for depthwise, and equal O.

Delta tensors
-------------
Scale and bias vectors are packed: each is stored as one tensor over all
sites. From ``sites``, build the list E of expected tensor names, in order:

1. ``"scale"``, if at least one site's roles include scale. It has rank 1,
   and its length is the sum of the channels of those sites.
2. ``"bias"``, likewise for the sites whose roles include bias.
3. ``"{name}/kernel"`` for each site whose roles include kernel, in site
   order. The rank is 4 for conv and depthwise and 2 for dense. Its output
   channels equal the site's channels.

The file's tensors are exactly E, in E's order. Each is float32 or float16;
they need not share a dtype. Sums of channels fit a signed 64-bit integer
(at most 8192 sites of at most 2^30 channels), as does C * M.

Unpacking: keep one cursor for ``"scale"`` and one for ``"bias"``, both
starting at 0. Visit the sites in site order, and each site's roles in the
order scale, bias, kernel:

* For scale or bias, the site's vector ``{name}/{role}`` is the elements
  [cursor, cursor + channels) of that packed tensor. Then add channels to
  the cursor.
* For kernel, ``{name}/kernel`` is that stored tensor.

The length checks below make every cursor end exactly at its tensor's
length.

Order of the step 11 checks:

a. The meta keys as listed above: task, kinds, base_sha256, sites. For
   sites, check first that it is an array of 1..``MAX_SITES``. Then, for
   each entry in order: it is a 4-element array, then name, name unique,
   op, channels, roles. All of step a raises ``HeaderError``.
b. Each tensor in file order: the dtype is float32 or float16
   (``HeaderError``); the name is in E (``HeaderError``); the rank
   (``ShapeMismatchError``); then, for ``"scale"``/``"bias"``, the length
   equals the declared sum, and for a kernel, its output channels equal the
   site's channels (both ``ShapeMismatchError``).
c. Every name of E is present. Report the first missing name, in E's order
   (``HeaderError``).
d. The tensors are in E's order. Report the first position that differs
   (``HeaderError``).

After these checks every site has at least one tensor, no site has both a
scale and a kernel, and all of a site's tensors have its channel count.

Python API
----------
``write_tensor_file``/``read_tensor_file`` and ``encode_tensor_file``/
``decode_tensor_file`` handle any file of the container (training patches
use ``file_kind="patch"``). ``write_delta``/``read_delta`` and
``encode_delta``/``decode_delta`` add the delta rules on top.

A ``Delta`` holds the unpacked, per-site form:

* ``sites`` maps each site name to its op, in site order.
* ``tensors`` maps ``"{site}/{role}"`` to an array, where role is one of
  ``TENSOR_ROLES`` (the name is split at its last ``/``).

``encode_delta`` checks the per-site rules. Every tensor names a site of
``sites``. Every site has at least one tensor. No site has both a scale and
a kernel. Ranks are as above. A site's scale length, bias length and kernel
output channels are equal. It then derives each site's channels and roles,
packs the tensors, and checks the result by the reader's rules.
``decode_delta`` unpacks into read-only float32 arrays; the scale and bias
arrays are slices of the packed tensors. ``task_to_json``/``task_from_json``
convert the ``meta["task"]`` object that deltas and patches share.

Writes are atomic (temp file in the same directory, fsync, rename). They
validate with the reader's own rules first. Read arrays are read-only.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from edgepatch.errors import HeaderError, NonFiniteError, ShapeMismatchError, UsageError
from edgepatch.format.container import (  # noqa: F401  (the container API is re-exported: one format, one import)
    ALIGN,
    DTYPES,
    FILE_KINDS,
    FLOAT_DTYPES,
    FORMAT_VERSION,
    HEADER_ALIGN,
    MAGIC,
    MAX_FILE_BYTES,
    MAX_HEADER_BYTES,
    MAX_NAME_BYTES,
    MAX_RANK,
    MAX_TENSORS,
    MIN_FILE_BYTES,
    MIN_HEADER_BYTES,
    PREAMBLE_BYTES,
    TRAILER_BYTES,
    TensorFile,
    _check_finite,
    _check_keys,
    _is_int,
    _read_bytes,
    _show,
    decode_tensor_file,
    encode_tensor_file,
    read_tensor_file,
    write_bytes_atomic,
    write_tensor_file,
)

SITE_OPS = ("conv", "depthwise", "dense")
TENSOR_ROLES = ("scale", "bias", "kernel")
ROLE_SETS = ("scale", "bias", "scale+bias", "kernel", "kernel+bias")
PACKED_ROLES = ("scale", "bias")  # stored as one tensor each, concatenated over the sites
MAX_SITES = 8192
MAX_SITE_NAME_BYTES = MAX_NAME_BYTES - len("/kernel")  # so "{site}/kernel" is a valid tensor name
DELTA_DTYPES = FLOAT_DTYPES
MIN_RESOLUTION = 8
MAX_RESOLUTION = 4096
_META_KEYS = ("base_sha256", "kinds", "sites", "task")
_TASK_KEYS = ("classes", "name", "preprocessing", "resolution")
_PREPROCESSING_KEYS = ("offset", "scale")
_HEX = frozenset("0123456789abcdef")
_ROLE_TEXT_ORDER = ("scale", "kernel", "bias")  # how ROLE_SETS strings list their roles
_FLOAT_MAX = {"float32": float(np.finfo(np.float32).max), "float16": float(np.finfo(np.float16).max)}


# ------------------------------------------------------ typed delta layer


@dataclass(frozen=True)
class Preprocessing:
    """Model input = pixel (0..255) * scale + offset."""

    scale: float
    offset: float


@dataclass(frozen=True)
class TaskInfo:
    """What a task is: its name, class labels, input resolution and preprocessing."""

    name: str
    classes: tuple[str, ...]
    resolution: int
    preprocessing: Preprocessing


@dataclass(frozen=True, eq=False)
class Delta:
    """One task's delta against a base model.

    Fields:
      task: the task's ``TaskInfo``.
      kinds: patch kinds private to this task, e.g. ``("scale_bias", "logits")``.
      base_sha256: runtime format -> lowercase hex sha256 of the exact base file bytes.
      sites: site name -> op, one of ``SITE_OPS``.
      tensors: ``"{site}/{role}"`` -> float array (float32 after ``read_delta``).

    Two deltas are equal when all fields are and every tensor has the same
    dtype, shape and values. A Delta is validated when it is encoded or
    decoded, not when it is constructed.
    """

    task: TaskInfo
    kinds: tuple[str, ...]
    base_sha256: dict[str, str]
    sites: dict[str, str]
    tensors: dict[str, np.ndarray]

    @property
    def nbytes_payload(self) -> int:
        """Bytes of the tensors as held here (the raw size a file can't beat)."""
        return sum(int(np.asarray(array).nbytes) for array in self.tensors.values())

    def __eq__(self, other):
        if not isinstance(other, Delta):
            return NotImplemented
        same_arrays = self.tensors.keys() == other.tensors.keys() and all(
            a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
            for a, b in ((np.asarray(self.tensors[n]), np.asarray(other.tensors[n])) for n in self.tensors))
        return (self.task, self.kinds, self.base_sha256, self.sites) == (
            other.task, other.kinds, other.base_sha256, other.sites) and same_arrays


def _string_list(value, where: str, source: str) -> list[str]:
    if not (isinstance(value, list) and value and all(isinstance(s, str) and s for s in value)
            and len(set(value)) == len(value)):
        raise HeaderError(f"{source}: {where} must be a non-empty array of unique non-empty strings, "
                          f"got {_show(value)}")
    return value


def _finite_number(value, where: str, source: str) -> float:
    try:  # a huge JSON integer is finite as an int but overflows a double
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise HeaderError(f"{source}: {where} must be a finite number, got {_show(value)}")
    return number


def task_from_json(task, source: str = "<json>") -> TaskInfo:
    """Validate ``meta["task"]`` (the JSON form, shared by deltas and patches) into a TaskInfo.

    Raises HeaderError naming ``source`` and the offending field.
    """
    _check_keys(task, _TASK_KEYS, "meta.task", source)
    if not (isinstance(task["name"], str) and task["name"]):
        raise HeaderError(f"{source}: meta.task.name must be a non-empty string, got {_show(task['name'])}")
    classes = _string_list(task["classes"], "meta.task.classes", source)
    if not _is_int(task["resolution"], MIN_RESOLUTION, MAX_RESOLUTION):
        raise HeaderError(f"{source}: meta.task.resolution must be an integer in {MIN_RESOLUTION}.."
                          f"{MAX_RESOLUTION}, got {_show(task['resolution'])}")
    pre = task["preprocessing"]
    _check_keys(pre, _PREPROCESSING_KEYS, "meta.task.preprocessing", source)
    preprocessing = Preprocessing(
        scale=_finite_number(pre["scale"], "meta.task.preprocessing.scale", source),
        offset=_finite_number(pre["offset"], "meta.task.preprocessing.offset", source))
    return TaskInfo(task["name"], tuple(classes), task["resolution"], preprocessing)


def _string_map(value, where: str, allowed, rule: str, source: str) -> dict[str, str]:
    if not (isinstance(value, dict) and value):
        raise HeaderError(f"{source}: {where} must be a non-empty JSON object, got {_show(value)}")
    for key, item in value.items():
        if not (isinstance(key, str) and key):
            raise HeaderError(f"{source}: {where} keys must be non-empty strings, got {_show(key)}")
        if not allowed(item):
            raise HeaderError(f"{source}: {where}[{key!r}] must be {rule}, got {_show(item)}")
    return dict(value)


def _is_sha256_hex(value) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX


def _is_site_op(value) -> bool:
    return isinstance(value, str) and value in SITE_OPS


def _is_site_name(value) -> bool:
    try:
        return isinstance(value, str) and 1 <= len(value.encode("utf-8")) <= MAX_SITE_NAME_BYTES
    except UnicodeEncodeError:  # an unpaired surrogate escape
        return False


@dataclass(frozen=True)
class _Site:
    """One validated ``meta.sites`` entry."""

    name: str
    op: str
    channels: int
    roles: str  # one of ROLE_SETS

    def holds(self, role: str) -> bool:
        return role in _ROLES_OF[self.roles]


_ROLES_OF = {roles: tuple(role for role in TENSOR_ROLES if role in roles.split("+")) for roles in ROLE_SETS}


def _parse_site(item, index: int, seen: set, source: str) -> _Site:
    if not (isinstance(item, list) and len(item) == 4):
        raise HeaderError(f"{source}: meta.sites[{index}] must be an array [name, op, channels, roles], "
                          f"got {_show(item)}")
    name, op, channels, roles = item
    if (type(name) is str and name not in seen and type(op) is str and op in SITE_OPS  # the valid case, quickly
            and type(roles) is str and roles in ROLE_SETS and _is_int(channels, 1, MAX_FILE_BYTES)
            and _is_site_name(name)):
        seen.add(name)
        return _Site(name, op, channels, roles)
    where = f"meta.sites[{index}]"
    if not _is_site_name(name):
        raise HeaderError(f"{source}: {where}: name must be a string of 1..{MAX_SITE_NAME_BYTES} UTF-8 "
                          f"bytes, got {_show(name)}")
    if name in seen:
        raise HeaderError(f"{source}: {where}: duplicate site name {name!r}")
    seen.add(name)
    where = f"{where} ({_show(name)})"
    if not _is_site_op(op):
        raise HeaderError(f"{source}: {where}: op must be one of {', '.join(SITE_OPS)}, got {_show(op)}")
    if not _is_int(channels, 1, MAX_FILE_BYTES):
        raise HeaderError(f"{source}: {where}: channels must be an integer in 1..{MAX_FILE_BYTES}, "
                          f"got {_show(channels)}")
    if not (isinstance(roles, str) and roles in ROLE_SETS):
        raise HeaderError(f"{source}: {where}: roles must be one of {', '.join(map(repr, ROLE_SETS))} "
                          f"(a kernel takes no scale), got {_show(roles)}")
    return _Site(name, op, channels, roles)


def _parse_sites(value, source: str) -> list[_Site]:
    if not (isinstance(value, list) and 1 <= len(value) <= MAX_SITES):
        got = f"{len(value)} entries" if isinstance(value, list) else _show(value)
        raise HeaderError(f"{source}: meta.sites must be an array of 1..{MAX_SITES} entries, got {got}")
    seen: set[str] = set()
    return [_parse_site(item, index, seen, source) for index, item in enumerate(value)]


def _parse_delta_meta(meta, source: str):
    """Validate delta meta; returns (task, kinds, base_sha256, sites as a list of _Site)."""
    _check_keys(meta, _META_KEYS, "meta", source)
    task = task_from_json(meta["task"], source)
    kinds = tuple(_string_list(meta["kinds"], "meta.kinds", source))
    base = _string_map(meta["base_sha256"], "meta.base_sha256", _is_sha256_hex,
                       "64 lowercase hex digits", source)
    return task, kinds, base, _parse_sites(meta["sites"], source)


def _kernel_outputs(op: str, shape: tuple) -> int:
    return shape[2] * shape[3] if op == "depthwise" else shape[-1]


def _kernel_rank(op: str) -> int:
    return 2 if op == "dense" else 4


# In memory a delta is per site ({site}/{role}); these rules hold for it on encode and,
# through meta.sites (roles, channels) and the packed checks below, for every decoded file.


def _check_site(site: str, op: str, shapes: dict, source: str) -> None:
    if not shapes:
        raise HeaderError(f"{source}: site {site!r} is listed in sites but has no tensors")
    if "scale" in shapes and "kernel" in shapes:
        raise HeaderError(f"{source}: site {site!r} has both a scale and a kernel; a kernel replaces "
                          f"the base kernel in full, so it takes no scale")
    lengths = {}
    for role, shape in shapes.items():
        rank = 1 if role != "kernel" else _kernel_rank(op)
        if len(shape) != rank:
            raise ShapeMismatchError(f"{source}: tensor '{site}/{role}' of a {op} site must have rank "
                                     f"{rank}, got shape {list(shape)}")
        lengths[role] = _kernel_outputs(op, shape) if role == "kernel" else shape[0]
    if len(set(lengths.values())) > 1:
        found = ", ".join(f"{role} {lengths[role]}" for role in TENSOR_ROLES if role in lengths)
        raise ShapeMismatchError(f"{source}: site {site!r}: output channels differ between its tensors: "
                                 f"{found}")


def _check_delta_tensors(sites: dict, specs: dict, source: str) -> None:
    """The per-site rules of ``Delta.tensors``; specs: tensor name -> (dtype name, shape)."""
    by_site: dict[str, dict] = {site: {} for site in sites}
    for name, (dtype, shape) in specs.items():
        if not isinstance(name, str):
            raise HeaderError(f"{source}: tensor name must be a string, got {_show(name)}")
        site, _, role = name.rpartition("/")
        if role not in TENSOR_ROLES or not site:
            raise HeaderError(f"{source}: tensor {name!r}: name must be '{{site}}/{{role}}' with role "
                              f"one of {', '.join(TENSOR_ROLES)}")
        if site not in sites:
            raise HeaderError(f"{source}: tensor {name!r}: site {site!r} is not in sites")
        by_site[site][role] = tuple(shape)
    for site, op in sites.items():
        _check_site(site, op, by_site[site], source)


# On disk the scale and bias vectors of all sites are packed into one tensor per role.


def _stored_names(sites: list[_Site]) -> dict[str, list[_Site]]:
    """The tensor names of a delta file, in file order, each with the sites it holds values for."""
    names = {role: [site for site in sites if site.holds(role)] for role in PACKED_ROLES}
    names = {name: holders for name, holders in names.items() if holders}
    names.update({f"{site.name}/kernel": [site] for site in sites if site.holds("kernel")})
    return names


def _check_packed_length(name: str, length: int, holders: list[_Site], source: str) -> None:
    declared = sum(site.channels for site in holders)
    if length == declared:
        return
    problem = f"tensor {name!r} has {length} values, but meta.sites declares {declared}"
    start = 0
    for site in holders:
        if start + site.channels > length:
            raise ShapeMismatchError(f"{source}: {problem}: site {site.name!r} ({site.channels} channels) "
                                     f"needs values {start}..{start + site.channels}")
        start += site.channels
    raise ShapeMismatchError(f"{source}: {problem}: the last site with a {name}, {holders[-1].name!r}, "
                             f"ends at value {declared}")


def _check_stored_kernel(name: str, site: _Site, shape: tuple, source: str) -> None:
    rank = _kernel_rank(site.op)
    if len(shape) != rank:
        raise ShapeMismatchError(f"{source}: tensor {name!r} of a {site.op} site must have rank {rank}, "
                                 f"got shape {list(shape)}")
    outputs = _kernel_outputs(site.op, shape)
    if outputs != site.channels:
        raise ShapeMismatchError(f"{source}: tensor {name!r} has {outputs} output channels (shape "
                                 f"{list(shape)}), but meta.sites declares {site.channels} for site "
                                 f"{site.name!r}")


def _check_stored_tensors(sites: list[_Site], specs: dict, source: str) -> None:
    """Step 11's tensor rules; specs: stored tensor name -> (dtype name, shape), in file order."""
    expected = _stored_names(sites)
    for name, (dtype, shape) in specs.items():
        if dtype not in DELTA_DTYPES:
            raise HeaderError(f"{source}: tensor {_show(name)}: delta tensors must be float32 or float16, "
                              f"got {dtype}")
        if name not in expected:
            raise HeaderError(f"{source}: tensor {_show(name)} does not belong in a delta: expected one of "
                              f"{_show(list(expected))} ('scale', 'bias', then '{{site}}/kernel' per "
                              f"meta.sites roles)")
        if name in PACKED_ROLES:
            if len(shape) != 1:
                raise ShapeMismatchError(f"{source}: tensor {name!r} must have rank 1, "
                                         f"got shape {list(shape)}")
            _check_packed_length(name, shape[0], expected[name], source)
        else:
            _check_stored_kernel(name, expected[name][0], tuple(shape), source)
    for name, holders in expected.items():
        if name not in specs:
            raise HeaderError(f"{source}: tensor {name!r} is missing: meta.sites gives site "
                              f"{holders[0].name!r} the roles {holders[0].roles!r}")
    for position, (got, want) in enumerate(zip(specs, expected)):
        if got != want:
            raise HeaderError(f"{source}: tensors[{position}] is {got!r}, expected {want!r}: a delta "
                              f"stores 'scale', 'bias', then each kernel in meta.sites order")


def _read_only_float32(array: np.ndarray) -> np.ndarray:
    out = array if array.dtype == np.float32 else array.astype(np.float32)
    out.flags.writeable = False
    return out


def _unpack(sites: list[_Site], stored: dict) -> dict[str, np.ndarray]:
    """Per-site tensors: slices of the packed scale/bias (a cursor per role), kernels as stored."""
    packed = {role: _read_only_float32(stored[role]) for role in PACKED_ROLES if role in stored}
    cursor = dict.fromkeys(PACKED_ROLES, 0)
    tensors = {}
    for site in sites:
        for role in _ROLES_OF[site.roles]:
            name = f"{site.name}/{role}"
            if role == "kernel":
                tensors[name] = _read_only_float32(stored[name])
            else:
                start, cursor[role] = cursor[role], cursor[role] + site.channels
                tensors[name] = packed[role][start:cursor[role]]
    return tensors


def _site_entries(sites: dict, tensors: dict) -> list:
    """meta.sites in its JSON form, from per-site tensors that passed ``_check_delta_tensors``."""
    entries = []
    for site, op in sites.items():
        roles = [role for role in _ROLE_TEXT_ORDER if f"{site}/{role}" in tensors]
        shape = tensors[f"{site}/{roles[0]}"].shape
        channels = _kernel_outputs(op, shape) if roles[0] == "kernel" else shape[0]
        entries.append([site, op, int(channels), "+".join(roles)])
    return entries


def _pack(sites: list[_Site], tensors: dict) -> dict[str, np.ndarray]:
    packed = {}
    for role in PACKED_ROLES:
        parts = [tensors[f"{site.name}/{role}"] for site in sites if site.holds(role)]
        if parts:
            packed[role] = np.concatenate(parts)
    packed.update({f"{site.name}/kernel": tensors[f"{site.name}/kernel"]
                   for site in sites if site.holds("kernel")})
    return packed


def _plain(value):
    """Tuples to lists, mappings to dicts; odd types pass through for the validator to name."""
    return list(value) if isinstance(value, (list, tuple)) else (
        dict(value) if isinstance(value, Mapping) else value)


def _task_json(task: TaskInfo) -> dict:
    pre = task.preprocessing
    return {"name": task.name, "classes": _plain(task.classes), "resolution": task.resolution,
            "preprocessing": {"scale": pre.scale, "offset": pre.offset}}


def task_to_json(task: TaskInfo, source: str = "<task>") -> dict:
    """The JSON form of a TaskInfo, as stored in ``meta["task"]``; validated as a reader would.

    Raises UsageError if ``task`` is not a TaskInfo with a Preprocessing, HeaderError
    (naming ``source``) if a field is invalid.
    """
    if not (isinstance(task, TaskInfo) and isinstance(task.preprocessing, Preprocessing)):
        raise UsageError(f"{source}: expected a TaskInfo with a Preprocessing, got {_show(task)}")
    return _task_json(task_from_json(_task_json(task), source))


def _cast_for_file(name: str, array, dtype: str, source: str) -> np.ndarray:
    if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
        kind = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
        raise ShapeMismatchError(f"{source}: tensor {_show(name)}: expected a float numpy array, got {kind}")
    _check_finite(name, array, source)
    with np.errstate(over="ignore"):  # overflow is reported below, with the value
        stored = array.astype(DTYPES[dtype])
    if not np.isfinite(stored).all():
        first = int(np.argmin(np.isfinite(stored).reshape(-1)))
        value = float(array.reshape(-1)[first])
        raise NonFiniteError(f"{source}: tensor {name!r}: value {value!r} at flat index {first} "
                             f"overflows {dtype} (max {_FLOAT_MAX[dtype]:g})")
    return stored


def _specs(arrays: Mapping) -> dict:
    return {name: (array.dtype.name, array.shape) for name, array in arrays.items()}


def encode_delta(delta: Delta, dtype: str = "float32", source: str = "<bytes>") -> bytes:
    """Validate a delta, pack it and encode it as a ``"delta"`` file with tensors in ``dtype``.

    Checks, in order: task, kinds, base_sha256, sites; each tensor (a float
    array, finite, fits ``dtype``); the per-site rules; then meta.sites and
    the packed tensors by the reader's own rules.

    Raises UsageError, HeaderError, ShapeMismatchError, NonFiniteError (NaN/Inf,
    or a value that overflows ``dtype``).
    """
    if dtype not in DELTA_DTYPES:
        raise UsageError(f"dtype must be one of {', '.join(DELTA_DTYPES)}; received dtype={dtype!r}")
    if not (isinstance(delta, Delta) and isinstance(delta.task, TaskInfo)
            and isinstance(delta.task.preprocessing, Preprocessing) and isinstance(delta.tensors, Mapping)):
        raise UsageError(f"{source}: expected a Delta with a TaskInfo, Preprocessing and a tensors dict")
    task = _task_json(task_from_json(_task_json(delta.task), source))
    kinds = _string_list(_plain(delta.kinds), "meta.kinds", source)
    base = _string_map(_plain(delta.base_sha256), "meta.base_sha256", _is_sha256_hex,
                       "64 lowercase hex digits", source)
    sites = _string_map(_plain(delta.sites), "sites", _is_site_op, f"one of {', '.join(SITE_OPS)}", source)
    tensors = {name: _cast_for_file(name, array, dtype, source) for name, array in delta.tensors.items()}
    _check_delta_tensors(sites, _specs(tensors), source)
    meta = {"task": task, "kinds": kinds, "base_sha256": base, "sites": _site_entries(sites, tensors)}
    parsed_sites = _parse_delta_meta(meta, source)[3]
    packed = _pack(parsed_sites, tensors)
    _check_stored_tensors(parsed_sites, _specs(packed), source)
    return encode_tensor_file("delta", packed, meta, source)


def decode_delta(data: bytes, source: str = "<bytes>") -> Delta:
    """Verify and decode a delta held in memory; per-site tensors come back as read-only float32."""
    decoded = decode_tensor_file(data, "delta", source)
    task, kinds, base, sites = _parse_delta_meta(decoded.meta, source)
    _check_stored_tensors(sites, _specs(decoded.tensors), source)
    return Delta(task=task, kinds=kinds, base_sha256=base, sites={site.name: site.op for site in sites},
                 tensors=_unpack(sites, decoded.tensors))


def write_delta(path, delta: Delta, dtype: str = "float32") -> int:
    """Validate, encode and atomically write a delta; returns the bytes written."""
    source = os.fsdecode(path)
    return write_bytes_atomic(path, encode_delta(delta, dtype, source))


def read_delta(path) -> Delta:
    """Read and verify a delta file (the full verification order); float32 tensors."""
    data, source = _read_bytes(path)
    return decode_delta(data, source)
