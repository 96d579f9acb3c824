"""depthwise: every DepthwiseConv2D kernel, re-learned per task (paper §2)."""

from edgepatch.format.names import DEPTHWISE_OP
from edgepatch.kinds.registry import PatchKind, register


class Depthwise(PatchKind):
    name = "depthwise"
    help = "depthwise conv kernels (and their biases, if any)"
    selectable = True
    default_learning_rate = 3e-3

    def layers(self, model) -> list:
        import keras

        return [l for l in model.layers if isinstance(l, keras.layers.DepthwiseConv2D)]

    def trainable_variables(self, layer) -> list:
        return list(layer.weights)

    def delta_roles(self, site) -> tuple[str, ...]:
        return ("kernel", "bias") if site.op == DEPTHWISE_OP else ()

    def site_layer(self, site):
        return site.layer


register(Depthwise())
