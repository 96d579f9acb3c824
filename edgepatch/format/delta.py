"""Float task deltas: the ``"delta"`` file kind (spec: *Float delta* in ``edgepatch/format/spec.rst``).

``write_delta``/``read_delta`` and ``encode_delta``/``decode_delta`` add the
delta rules (verification step 11) on top of the container; ``from_tensor_file``
applies them to a file the container already verified. A ``Delta`` holds the
unpacked, per-site form (tensor names from ``edgepatch.format.names``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from edgepatch.errors import HeaderError, NonFiniteError, ShapeMismatchError, UsageError
from edgepatch.format.checks import check_finite, check_keys, is_int, plain, show, string_list, string_map
# The container and task API are re-exported: one format, one import.
from edgepatch.format.container import (  # noqa: F401
    ALIGN, DTYPES, FILE_KINDS, FLOAT_DTYPES, FORMAT_VERSION, HEADER_ALIGN, MAGIC, MAX_FILE_BYTES, MAX_HEADER_BYTES,
    MAX_NAME_BYTES, MAX_RANK, MAX_TENSORS, MIN_FILE_BYTES, MIN_HEADER_BYTES, PREAMBLE_BYTES, TRAILER_BYTES, TensorFile,
    decode_tensor_file, encode_tensor_file, read_bytes, read_tensor_file, write_bytes_atomic, write_tensor_file,
)
from edgepatch.format.delta_limits import check_head, check_site_scales
from edgepatch.format.names import BIAS, CONV_OP, DENSE_OP, DEPTHWISE_OP, KERNEL, MAX_SITE_NAME_BYTES, SCALE, SITE_OPS, TENSOR_ROLES, split_name, tensor_name
from edgepatch.format.task import (  # noqa: F401
    MAX_RESOLUTION, MIN_RESOLUTION, Preprocessing, TaskInfo, task_from_json, task_to_json,
)

FILE_KIND = "delta"
SITE_OPS = (CONV_OP, DEPTHWISE_OP, DENSE_OP)
ROLE_SETS = ("scale", "bias", "scale+bias", "kernel", "kernel+bias")
PACKED_ROLES = (SCALE, BIAS)  # stored as one tensor each, concatenated over the sites
MAX_SITES = 8192
DELTA_DTYPES = FLOAT_DTYPES
_META_KEYS = ("base_sha256", "kinds", "sites", "task")
_HEX = frozenset("0123456789abcdef")
_ROLE_TEXT_ORDER = (SCALE, KERNEL, BIAS)  # how ROLE_SETS strings list their roles
_FLOAT_MAX = {"float32": float(np.finfo(np.float32).max), "float16": float(np.finfo(np.float16).max)}


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
                          f"got {show(item)}")
    name, op, channels, roles = item
    if (type(name) is str and name not in seen and type(op) is str and op in SITE_OPS  # the valid case, quickly
            and type(roles) is str and roles in ROLE_SETS and is_int(channels, 1, MAX_FILE_BYTES)
            and _is_site_name(name)):
        seen.add(name)
        return _Site(name, op, channels, roles)
    where = f"meta.sites[{index}]"
    if not _is_site_name(name):
        raise HeaderError(f"{source}: {where}: name must be a string of 1..{MAX_SITE_NAME_BYTES} UTF-8 "
                          f"bytes, got {show(name)}")
    if name in seen:
        raise HeaderError(f"{source}: {where}: duplicate site name {name!r}")
    seen.add(name)
    where = f"{where} ({show(name)})"
    if not _is_site_op(op):
        raise HeaderError(f"{source}: {where}: op must be one of {', '.join(SITE_OPS)}, got {show(op)}")
    if not is_int(channels, 1, MAX_FILE_BYTES):
        raise HeaderError(f"{source}: {where}: channels must be an integer in 1..{MAX_FILE_BYTES}, "
                          f"got {show(channels)}")
    if not (isinstance(roles, str) and roles in ROLE_SETS):
        raise HeaderError(f"{source}: {where}: roles must be one of {', '.join(map(repr, ROLE_SETS))} "
                          f"(a kernel takes no scale), got {show(roles)}")
    return _Site(name, op, channels, roles)


def _parse_sites(value, source: str) -> list[_Site]:
    if not (isinstance(value, list) and 1 <= len(value) <= MAX_SITES):
        got = f"{len(value)} entries" if isinstance(value, list) else show(value)
        raise HeaderError(f"{source}: meta.sites must be an array of 1..{MAX_SITES} entries, got {got}")
    seen: set[str] = set()
    return [_parse_site(item, index, seen, source) for index, item in enumerate(value)]


def _parse_delta_meta(meta, source: str, version: int = FORMAT_VERSION):
    """Validate delta meta of a file of ``version``; returns (task, kinds, base_sha256, sites as a list of _Site)."""
    check_keys(meta, _META_KEYS, "meta", source)
    task = task_from_json(meta["task"], source, version)
    kinds = tuple(string_list(meta["kinds"], "meta.kinds", source))
    base = string_map(meta["base_sha256"], "meta.base_sha256", _is_sha256_hex,
                       "64 lowercase hex digits", source)
    return task, kinds, base, _parse_sites(meta["sites"], source)


def _kernel_outputs(op: str, shape: tuple) -> int:
    return shape[2] * shape[3] if op == DEPTHWISE_OP else shape[-1]


def _kernel_rank(op: str) -> int:
    return 2 if op == DENSE_OP else 4


# In memory a delta is per site ({site}/{role}); these rules hold for it on encode and,
# through meta.sites (roles, channels) and the packed checks below, for every decoded file.


def _check_site(site: str, op: str, shapes: dict, source: str) -> None:
    if not shapes:
        raise HeaderError(f"{source}: site {site!r} is listed in sites but has no tensors")
    if SCALE in shapes and KERNEL in shapes:
        raise HeaderError(f"{source}: site {site!r} has both a scale and a kernel; a kernel replaces "
                          f"the base kernel in full, so it takes no scale")
    lengths = {}
    for role, shape in shapes.items():
        rank = 1 if role != KERNEL else _kernel_rank(op)
        if len(shape) != rank:
            raise ShapeMismatchError(f"{source}: tensor '{tensor_name(site, role)}' of a {op} site must have rank "
                                     f"{rank}, got shape {list(shape)}")
        lengths[role] = _kernel_outputs(op, shape) if role == KERNEL else shape[0]
    if len(set(lengths.values())) > 1:
        found = ", ".join(f"{role} {lengths[role]}" for role in TENSOR_ROLES if role in lengths)
        raise ShapeMismatchError(f"{source}: site {site!r}: output channels differ between its tensors: "
                                 f"{found}")


def _check_delta_tensors(sites: dict, specs: dict, source: str) -> None:
    """The per-site rules of ``Delta.tensors``; specs: tensor name -> (dtype name, shape)."""
    by_site: dict[str, dict] = {site: {} for site in sites}
    for name, (dtype, shape) in specs.items():
        if not isinstance(name, str):
            raise HeaderError(f"{source}: tensor name must be a string, got {show(name)}")
        site, role = split_name(name)
        if role not in TENSOR_ROLES or not site:
            raise HeaderError(f"{source}: tensor {name!r}: name must be '{tensor_name('{site}', '{role}')}' with role "
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
    names.update({tensor_name(site.name, KERNEL): [site] for site in sites if site.holds(KERNEL)})
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
            raise HeaderError(f"{source}: tensor {show(name)}: delta tensors must be float32 or float16, "
                              f"got {dtype}")
        if name not in expected:
            raise HeaderError(f"{source}: tensor {show(name)} does not belong in a delta: expected one of "
                              f"{show(list(expected))} ('scale', 'bias', then '{tensor_name('{site}', KERNEL)}' per "
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
            name = tensor_name(site.name, role)
            if role == KERNEL:
                tensors[name] = _read_only_float32(stored[name])
            else:
                start, cursor[role] = cursor[role], cursor[role] + site.channels
                tensors[name] = packed[role][start:cursor[role]]
    return tensors


def _site_entries(sites: dict, tensors: dict) -> list:
    """meta.sites in its JSON form, from per-site tensors that passed ``_check_delta_tensors``."""
    entries = []
    for site, op in sites.items():
        roles = [role for role in _ROLE_TEXT_ORDER if tensor_name(site, role) in tensors]
        shape = tensors[tensor_name(site, roles[0])].shape
        channels = _kernel_outputs(op, shape) if roles[0] == KERNEL else shape[0]
        entries.append([site, op, int(channels), "+".join(roles)])
    return entries


def _pack(sites: list[_Site], tensors: dict) -> dict[str, np.ndarray]:
    packed = {}
    for role in PACKED_ROLES:
        parts = [tensors[tensor_name(site.name, role)] for site in sites if site.holds(role)]
        if parts:
            packed[role] = np.concatenate(parts)
    kernels = [tensor_name(site.name, KERNEL) for site in sites if site.holds(KERNEL)]
    packed.update({name: tensors[name] for name in kernels})
    return packed


def _cast_for_file(name: str, array, dtype: str, source: str) -> np.ndarray:
    if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
        kind = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
        raise ShapeMismatchError(f"{source}: tensor {show(name)}: expected a float numpy array, got {kind}")
    check_finite(name, array, source)
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
    task = task_to_json(delta.task, source)
    kinds = string_list(plain(delta.kinds), "meta.kinds", source)
    base = string_map(plain(delta.base_sha256), "meta.base_sha256", _is_sha256_hex,
                       "64 lowercase hex digits", source)
    sites = string_map(plain(delta.sites), "sites", _is_site_op, f"one of {', '.join(SITE_OPS)}", source)
    tensors = {name: _cast_for_file(name, array, dtype, source) for name, array in delta.tensors.items()}
    _check_delta_tensors(sites, _specs(tensors), source)
    meta = {"task": task, "kinds": kinds, "base_sha256": base, "sites": _site_entries(sites, tensors)}
    parsed_sites = _parse_delta_meta(meta, source)[3]
    packed = _pack(parsed_sites, tensors)
    _check_stored_tensors(parsed_sites, _specs(packed), source)
    check_head(delta.task.classes, parsed_sites, source)
    check_site_scales(parsed_sites, packed.get(SCALE), source)
    return encode_tensor_file(FILE_KIND, packed, meta, source)


def from_tensor_file(stored: TensorFile, source: str) -> Delta:
    """Step 11 on a ``"delta"`` file the container already verified; per-site read-only float32 tensors."""
    task, kinds, base, sites = _parse_delta_meta(stored.meta, source, stored.version)
    _check_stored_tensors(sites, _specs(stored.tensors), source)
    check_head(task.classes, sites, source)
    check_site_scales(sites, stored.tensors.get(SCALE), source)
    return Delta(task=task, kinds=kinds, base_sha256=base, sites={site.name: site.op for site in sites},
                 tensors=_unpack(sites, stored.tensors))


def decode_delta(data: bytes, source: str = "<bytes>") -> Delta:
    """Verify and decode a delta held in memory; per-site tensors come back as read-only float32."""
    return from_tensor_file(decode_tensor_file(data, FILE_KIND, source), source)


def write_delta(path, delta: Delta, dtype: str = "float32") -> int:
    """Validate, encode and atomically write a delta; returns the bytes written."""
    source = os.fsdecode(path)
    return write_bytes_atomic(path, encode_delta(delta, dtype, source))


def read_delta(path) -> Delta:
    """Read and verify a delta file (the full verification order); float32 tensors."""
    data, source = read_bytes(path)
    return decode_delta(data, source)
