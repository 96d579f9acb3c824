"""Kinds: which parameters a task trains and keeps private (see ``registry``).

Importing this package registers the built-in kinds, in this order.
"""

from edgepatch.kinds import scale_bias  # noqa: F401,I001  (registration order is listing order)
from edgepatch.kinds import depthwise  # noqa: F401
from edgepatch.kinds import logits  # noqa: F401
from edgepatch.kinds import full  # noqa: F401
from edgepatch.kinds.bn_statistics import (
    BN_STATS_MODES,
    DEFAULT_BN_STATS,
    average_batch_statistics,
    batch_norm_layers,
    reestimate_statistics,
    statistics_after_training,
    statistics_during_training,
    statistics_frozen,
)
from edgepatch.kinds.registry import (
    PatchKind,
    default_learning_rate,
    get_kind,
    head_is_private,
    head_kind,
    kind_names,
    makes_patch,
    owned_layer_ids,
    parse_kinds,
    parse_trained_kinds,
    parameter_count,
    patch_kind_names,
    private_layers,
    register,
    selectable_kind_names,
    selectable_layers,
    site_delta_roles,
    site_is_patchable,
    statistics_are_private,
    whole_model_kinds,
    with_head,
)

__all__ = [
    "BN_STATS_MODES", "DEFAULT_BN_STATS", "PatchKind", "average_batch_statistics", "batch_norm_layers", "default_learning_rate", "get_kind",
    "head_is_private", "head_kind", "kind_names", "makes_patch", "owned_layer_ids", "parameter_count", "parse_kinds",
    "parse_trained_kinds", "patch_kind_names", "private_layers", "reestimate_statistics", "register", "selectable_kind_names", "selectable_layers",
    "site_delta_roles", "statistics_after_training",
    "statistics_are_private", "statistics_during_training", "statistics_frozen", "whole_model_kinds", "with_head",
]
