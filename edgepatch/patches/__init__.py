"""Patch kinds: which parameters a task keeps private (see ``registry``).

Importing this package registers the built-in kinds, in this order.
"""

from edgepatch.patches import scale_bias  # noqa: F401,I001  (registration order is listing order)
from edgepatch.patches import depthwise  # noqa: F401
from edgepatch.patches import logits  # noqa: F401
from edgepatch.patches.registry import PatchKind, get_kind, kind_names, parse_kinds, register

__all__ = ["PatchKind", "get_kind", "kind_names", "parse_kinds", "register"]
