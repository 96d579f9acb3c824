"""Tensor names of a site's roles: ``"{site}/{role}"`` (spec: *Site naming* in ``edgepatch/format/spec.rst``).

The only place that spells the separator and the role names; the Java loader
mirrors it in ``TensorNames.java``.
"""

from __future__ import annotations

from edgepatch.format.container import MAX_NAME_BYTES

SEPARATOR = "/"
# The ops a site can be (spec: *Float delta*, meta.sites); compared by these names, never by literals.
CONV_OP, DEPTHWISE_OP, DENSE_OP = "conv", "depthwise", "dense"
SITE_OPS = (CONV_OP, DEPTHWISE_OP, DENSE_OP)
SCALE, BIAS, KERNEL = "scale", "bias", "kernel"
TENSOR_ROLES = (SCALE, BIAS, KERNEL)
# The longest site name whose every role name (the longest: kernel) is a valid tensor name.
MAX_SITE_NAME_BYTES = MAX_NAME_BYTES - max(len(SEPARATOR + role) for role in TENSOR_ROLES)


def tensor_name(site: str, role: str) -> str:
    """The tensor name of ``site``'s ``role``, e.g. ``tensor_name("conv1", "kernel") == "conv1/kernel"``."""
    return f"{site}{SEPARATOR}{role}"


def split_name(name: str) -> tuple[str, str]:
    """``(site, role)`` of a tensor name, split at its last separator; ``(name, "")`` without one.

    The role is not checked: callers compare it with the role they expect.
    """
    site, separator, role = name.rpartition(SEPARATOR)
    return (site, role) if separator else (name, "")
