"""logits: the classifier head (the Dense layer producing the output)."""

from edgepatch.kinds.keras_sites import head_layer
from edgepatch.kinds.registry import PatchKind, register
from edgepatch.format.names import DENSE_OP


class Logits(PatchKind):
    name = "logits"
    help = "the last Dense layer (kernel and bias)"
    owns_head = True
    trains_backbone = False

    def layers(self, model) -> list:
        return [head_layer(model)]

    def trainable_variables(self, layer) -> list:
        return list(layer.weights)

    def delta_roles(self, site) -> tuple[str, ...]:
        return ("kernel", "bias") if site.op == DENSE_OP else ()

    def site_layer(self, site):
        return site.layer


register(Logits())
