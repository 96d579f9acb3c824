"""Compute a task's delta against the base, site by site.

Which tensors a site carries comes from the patch-kind registry
(``PatchKind.delta_roles``). A ``scale`` is the per-output-channel ratio
``s_task / s_base`` of the BN multipliers, so the runtime re-folds the task
into the shared kernel as ``kernel_base · scale``. Where the base's
multiplier is 0 on some channel (γ = 0) no ratio exists (nor where the ratio
leaves the spec's bounds), and the site ships its full folded kernel instead;
the delta never holds inf or NaN. A ratio of exactly 1 on every channel (a BN
without γ whose statistics stayed frozen) is left out: a delta ships only what its task changes, and a budgeted patch's
sites outside its selection are not in the delta at all (the base's values serve).

A conv site that absorbed the input's Rescaling/Normalization multiply
(``converters.fold.find_input_fold``) holds ``W·a·s`` in the base: the ratio
per output channel refolds it exactly, and a full kernel the delta ships is
the task's ``W·a·s`` (the task is folded the same way). Base and task must
have absorbed the same affine, since no delta can carry another one.
"""

from __future__ import annotations

import numpy as np

from converters.fold import FoldedSite
from edgepatch.errors import FoldError, NonFiniteError
from edgepatch.format.delta import Delta, TaskInfo
from edgepatch.format.delta_limits import MAX_ABS_SITE_SCALE, MIN_ABS_SITE_SCALE
from edgepatch.format.names import BIAS, KERNEL, SCALE, tensor_name
from edgepatch.kinds import site_delta_roles
from edgepatch.kinds.keras_sites import Site


def site_roles(site: Site, kinds, selection=None) -> set[str]:
    roles = site_delta_roles(site, kinds, selection)
    if KERNEL in roles:
        roles.discard(SCALE)  # a full kernel already holds the task's scale
    return roles


def scale_ratio(task: FoldedSite, base: FoldedSite) -> np.ndarray | None:
    """``s_task / s_base`` per channel, or None where the base scale is 0 or the ratio leaves the spec's
    bounds (``MIN_ABS_SITE_SCALE``..``MAX_ABS_SITE_SCALE``): then the site ships its full kernel."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = task.scale.astype(np.float64) / base.scale.astype(np.float64)
    magnitude = np.abs(ratio)
    if not np.all(np.isfinite(ratio)) or np.any((magnitude < MIN_ABS_SITE_SCALE) | (magnitude > MAX_ABS_SITE_SCALE)):
        return None
    return ratio.astype(np.float32)


def check_input_fold(task: FoldedSite, base: FoldedSite) -> None:
    """Refuse a task site whose absorbed input affine is not the base's: the base has no op left to change it."""
    if (task.input_fold is None) != (base.input_fold is None) or \
            (task.input_fold is not None and not task.input_fold.same_as(base.input_fold)):
        raise FoldError(f"site `{task.name}`: the task's input Rescaling/Normalization differs from the base's; "
                        "a delta cannot change a constant of the base")


def make_delta(
    sites: list[Site],
    base: dict[str, FoldedSite],
    task: dict[str, FoldedSite],
    info: TaskInfo,
    kinds,
    base_sha256: dict[str, str],
    selection=None,
) -> Delta:
    """Build the delta that turns the base (folded) into the task (folded).

    ``selection``: a budgeted patch's private layers; the sites it leaves out are not in the delta.
    """
    tensors: dict[str, np.ndarray] = {}
    ops: dict[str, str] = {}
    for site in sites:
        roles = site_roles(site, kinds, selection)
        if not roles:
            continue
        check_input_fold(task[site.name], base[site.name])
        ratio = scale_ratio(task[site.name], base[site.name]) if SCALE in roles else None
        if SCALE in roles and ratio is None:
            roles = (roles - {SCALE}) | {KERNEL}
        elif ratio is not None and np.all(ratio == 1.0):
            roles = roles - {SCALE}  # unchanged (a BN without γ, statistics frozen): the base's kernel serves
        ops[site.name] = site.op
        if SCALE in roles:
            tensors[tensor_name(site.name, SCALE)] = ratio
        if KERNEL in roles:
            tensors[tensor_name(site.name, KERNEL)] = task[site.name].kernel
        if BIAS in roles:
            tensors[tensor_name(site.name, BIAS)] = task[site.name].bias
    for name, value in tensors.items():
        if not np.all(np.isfinite(value)):
            raise NonFiniteError(f"task '{info.name}': delta tensor '{name}' is not finite")
    return Delta(task=info, kinds=tuple(kinds), base_sha256=dict(base_sha256), sites=ops, tensors=tensors)
