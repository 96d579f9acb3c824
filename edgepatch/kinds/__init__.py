"""Patch kinds: which parameters a task keeps private (see ``registry``).

Importing this package registers the built-in kinds, in this order.
"""

from edgepatch.kinds import scale_bias  # noqa: F401,I001  (registration order is listing order)
from edgepatch.kinds import depthwise  # noqa: F401
from edgepatch.kinds import logits  # noqa: F401
from edgepatch.kinds.registry import PatchKind, get_kind, kind_names, parse_kinds, register

__all__ = ["PatchKind", "get_kind", "kind_names", "parse_kinds", "register"]
