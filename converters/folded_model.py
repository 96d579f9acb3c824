"""Rebuild a Keras model without BatchNormalization, from folded site weights.

The rebuilt graph is the original one with each folded BN replaced by an
identity, each conv given a bias, and the head widened to ``head_width``
outputs (extra outputs have zero weights; the runtime slices them off).
Its input has a dynamic height and width so that one base serves every
resolution.

A stride-2 3x3 conv after a ``ZeroPadding2D(((0, 1), (0, 1)))`` (MobileNet's
``correct_pad`` for even sizes) computes the same as one with ``"same"``
padding wherever its input is even. When that holds at every resolution the
tasks use, the pad is folded into the conv: the converters then emit no PAD
op, as they do for a fixed-shape model (a PAD op costs latency).
At other input sizes the base pads the way ``"same"`` does, as MobileNetV2
built at that size would.

Input Rescaling/Normalization layers whose affine a conv site's folded
weights absorbed (``converters.fold.find_input_fold``) become identities.
"""

from __future__ import annotations

import logging

from converters.fold import FoldedSite
from edgepatch.errors import FoldError, ModelStructureError
from edgepatch.format.layouts import as_in_base
from edgepatch.kinds.keras_sites import find_sites, head_layer, is_constant_layer
from edgepatch.train.models import clone_with_input

BASE_INPUT_NAME = "input"  # the base model's input, in both formats
BASE_MODEL_NAME = "edgepatch_base"

log = logging.getLogger(__name__)


def unplaceable_layer(layer) -> str:
    """Why a weighted layer that is no site, folded BN or constant cannot go into the base."""
    return (f"layer `{layer.name}` ({type(layer).__name__}) has weights but is neither a conv, "
            "a folded BatchNormalization, a Normalization nor the head; edgepatch cannot place it in the base")


def _pass_through_layer(keras, name: str):
    """A weightless identity (a folded BN, pad or input affine) that accepts BN's call arguments (training, mask)."""

    class FoldedBatchNorm(keras.layers.Layer):
        def call(self, inputs, training=None, mask=None):
            return inputs

    return FoldedBatchNorm(name=name)


def _export_conv_layer(keras, config: dict):
    """A Conv2D site of the folded model; a grouped one convolves without XLA.

    Keras runs a grouped conv on the CPU through an XLA-compiled function, which tf2onnx cannot
    read; the export only traces the graph, and a plain grouped convolution converts to ONNX's
    ``Conv(group=g)`` and TFLite's grouped CONV_2D.
    """
    if config.get("groups", 1) == 1:
        return keras.layers.Conv2D.from_config(config)

    class GroupedConv2D(keras.layers.Conv2D):
        def convolution_op(self, inputs, kernel):
            import tensorflow as tf

            return tf.nn.convolution(inputs, kernel, self.strides, self.padding.upper(), dilations=self.dilation_rate)

    return GroupedConv2D.from_config(config)


def _single_input(layer):
    try:
        return layer.input
    except (AttributeError, ValueError):  # a layer called more than once has no single input
        return None


def foldable_pads(model, resolutions) -> dict[str, str]:
    """Pad layer name -> conv name, for pads a ``"same"`` conv computes identically at every resolution.

    All or nothing: when some resolution gives one of them an odd input, none is folded.
    """
    import keras

    size = model.inputs[0].shape[1]
    if size is None or not resolutions:
        return {}
    pairs, strides = {}, []
    for pad in model.layers:
        if not isinstance(pad, keras.layers.ZeroPadding2D) or tuple(map(tuple, pad.padding)) != ((0, 1), (0, 1)):
            continue
        consumers = [layer for layer in model.layers if layer is not pad and _single_input(layer) is pad.output]
        conv = consumers[0] if len(consumers) == 1 else None
        if not isinstance(conv, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)) \
                or tuple(conv.kernel_size) != (3, 3) or tuple(conv.strides) != (2, 2) or conv.padding != "valid" \
                or tuple(conv.dilation_rate) != (1, 1) or size % pad.input.shape[1]:
            return {}  # a pad we cannot reason about: keep them all
        pairs[pad.name] = conv.name
        strides.append(size // pad.input.shape[1])
    if any(r % (2 * stride) for r in resolutions for stride in strides):
        return {}
    return pairs


def build_folded_model(model, folded: dict[str, FoldedSite], head_width: int, pads: dict[str, str] | None = None):
    """Return a BN-free Keras model computing ``model`` with the given folded weights.

    ``pads``: pad layer -> conv, as ``foldable_pads`` finds them on the base; each pad is
    folded into its conv. The base and every task model get the same ``pads`` so that their
    graphs stay alike (int8 deltas compare them op by op).
    """
    import keras

    pads = pads or {}
    same_convs = set(pads.values())
    sites = {site.name: site for site in find_sites(model)}
    folded_bns = {site.bn.name for site in sites.values() if site.bn is not None}
    absorbed = {name for site in folded.values() if site.input_fold is not None for name in site.input_fold.layers}
    head_name = head_layer(model).name

    def clone_layer(layer):
        if layer.name in absorbed:  # its multiply (and add) is in a site's kernel (and bias)
            return _pass_through_layer(keras, layer.name)
        if layer.name in folded and layer.name not in sites:  # an input affine (converters.fold.fold_input_affines)
            return keras.layers.DepthwiseConv2D(1, use_bias=True, name=layer.name)
        if not isinstance(layer, keras.layers.Layer) or is_constant_layer(layer):
            return layer  # a raw operation (x + y, ops.*) or a layer whose weights are constants of the base
        config = layer.get_config()
        if layer.name in folded_bns or layer.name in pads:
            return _pass_through_layer(keras, layer.name)
        if layer.name in same_convs:
            config = {**config, "padding": "same"}
        if layer.name == head_name:
            return type(layer).from_config({**config, "units": head_width})
        if layer.name in sites and isinstance(layer, keras.layers.Conv2D):
            return _export_conv_layer(keras, {**config, "use_bias": True})
        if layer.name in sites:
            return type(layer).from_config({**config, "use_bias": True})
        if layer.weights:
            raise ModelStructureError(unplaceable_layer(layer))
        return type(layer).from_config(config)

    # Fixed input and model names: the converters write them into the base, whose bytes must not
    # depend on how many Keras objects this process made before (deltas name the base by its sha256).
    clone = clone_with_input(model, None, clone_layer, input_name=BASE_INPUT_NAME)
    folded_model = keras.Model(clone.inputs, clone.outputs, name=BASE_MODEL_NAME)
    for name, site in folded.items():
        folded_model.get_layer(name).set_weights(list(as_in_base(site.op, site.kernel, site.bias, head_width)))
    bn_left = [l.name for l in folded_model.layers if isinstance(l, keras.layers.BatchNormalization)]
    if bn_left:
        raise FoldError(f"BatchNormalization layers left after folding: {bn_left}")
    log.info(
        "folded %d BN layers, %d pads and %d input affines: %d layers -> %d layers",
        len(folded_bns),
        len(pads),
        len(absorbed),
        len(model.layers),
        len(folded_model.layers) - len(folded_bns) - len(pads) - len(absorbed),
    )
    return folded_model
