"""Rebuild a Keras model without BatchNormalization, from folded site weights.

The rebuilt graph is the original one with each folded BN replaced by an
identity, each conv given a bias, and the head widened to ``head_width``
outputs (extra outputs have zero weights; the runtime slices them off).
Its input has a dynamic height and width so that one base serves every
resolution.
"""

from __future__ import annotations

import logging

from converters.fold import FoldedSite
from edgepatch.errors import FoldError, ModelStructureError
from edgepatch.models import clone_with_input
from edgepatch.runtime.layouts import pad_head
from edgepatch.sites import find_sites

log = logging.getLogger(__name__)


def _pass_through_layer(keras, name: str):
    """A weightless identity that accepts BN's call arguments (training, mask)."""

    class FoldedBatchNorm(keras.layers.Layer):
        def call(self, inputs, training=None, mask=None):
            return inputs

    return FoldedBatchNorm(name=name)


def build_folded_model(model, folded: dict[str, FoldedSite], head_width: int):
    """Return a BN-free Keras model computing ``model`` with the given folded weights."""
    import keras

    sites = {site.name: site for site in find_sites(model)}
    folded_bns = {site.bn.name for site in sites.values() if site.bn is not None}
    head_name = next(site.name for site in sites.values() if site.op == "dense")

    def clone_layer(layer):
        config = layer.get_config()
        if layer.name in folded_bns:
            return _pass_through_layer(keras, layer.name)
        if layer.name == head_name:
            return type(layer).from_config({**config, "units": head_width})
        if layer.name in sites:
            return type(layer).from_config({**config, "use_bias": True})
        if layer.weights:
            raise ModelStructureError(
                f"layer `{layer.name}` ({type(layer).__name__}) has weights but is neither a conv, "
                "a folded BatchNormalization nor the head; edgepatch cannot place it in the base"
            )
        return type(layer).from_config(config)

    folded_model = clone_with_input(model, None, clone_layer)
    for name, site in folded.items():
        kernel, bias = site.kernel, site.bias
        if site.op == "dense":
            kernel, bias = pad_head(kernel, bias, head_width)
        folded_model.get_layer(name).set_weights([kernel, bias])
    bn_left = [l.name for l in folded_model.layers if isinstance(l, keras.layers.BatchNormalization)]
    if bn_left:
        raise FoldError(f"BatchNormalization layers left after folding: {bn_left}")
    log.info(
        "folded %d BN layers: %d layers -> %d layers",
        len(folded_bns),
        len(model.layers),
        len(folded_model.layers) - len(folded_bns),
    )
    return folded_model
