"""full: every layer, fine-tuned; the result is a whole model, not a patch (paper §5.2's baseline)."""

import numpy as np

from edgepatch.kinds.registry import PatchKind, register


class Full(PatchKind):
    name = "full"
    help = "every layer (full fine-tuning: a whole model, no patch)"
    makes_patch = False
    owns_head = True
    owns_bn_statistics = True
    default_learning_rate = 1e-4

    def layers(self, model) -> list:
        return list(model.layers)

    def trainable_variables(self, layer) -> list:
        return [v for v in layer.weights if v.trainable]

    def delta_roles(self, site) -> tuple[str, ...]:
        return ()  # a whole model ships as a base, never as a delta

    def parameter_count(self, model) -> int:
        return sum(int(np.prod(v.shape)) for v in model.weights if v.trainable)  # a shared variable counts once


register(Full())
