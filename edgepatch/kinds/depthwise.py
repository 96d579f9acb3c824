"""depthwise: every DepthwiseConv2D kernel, re-learned per task (paper §2)."""

from edgepatch.kinds.registry import PatchKind, register


class Depthwise(PatchKind):
    name = "depthwise"
    help = "depthwise conv kernels (and their biases, if any)"

    def layers(self, model) -> list:
        import keras

        return [l for l in model.layers if isinstance(l, keras.layers.DepthwiseConv2D)]

    def trainable_variables(self, layer) -> list:
        return list(layer.weights)

    def delta_roles(self, site) -> tuple[str, ...]:
        return ("kernel", "bias") if site.op == "depthwise" else ()


register(Depthwise())
