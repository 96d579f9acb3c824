"""scale_bias: every BatchNormalization's γ, β and moving statistics (paper §2)."""

from edgepatch.kinds.bn_statistics import batch_norm_layers
from edgepatch.kinds.registry import PatchKind, register


class ScaleBias(PatchKind):
    name = "scale_bias"
    help = "BatchNorm gamma/beta (trained) and moving mean/variance (re-estimated)"
    owns_bn_statistics = True
    selectable = True
    default_learning_rate = 3e-3

    def layers(self, model) -> list:
        return batch_norm_layers(model)

    def trainable_variables(self, layer) -> list:
        return [v for v in (getattr(layer, "gamma", None), getattr(layer, "beta", None)) if v is not None]

    def delta_roles(self, site) -> tuple[str, ...]:
        return ("scale", "bias") if site.bn is not None else ()

    def site_layer(self, site):
        return site.bn


register(ScaleBias())
