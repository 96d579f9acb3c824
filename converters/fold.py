"""Fold BatchNormalization into the preceding conv, in numpy.

For a conv with kernel ``W`` and bias ``b0`` followed by BN (γ, β, μ, σ², ε),
inference computes ``γ (W*x + b0 - μ) / sqrt(σ² + ε) + β``. With the
per-output-channel scale ``s = γ / sqrt(σ² + ε)`` this equals a BN-free conv
with kernel ``W·s`` and bias ``β + (b0 - μ)·s``. ``s`` is kept, because a
task's delta stores its own ``s_task / s_base`` per channel.

A model that starts with Rescaling/Normalization layers feeding one conv site
(EfficientNet: ``x/255``, an identity Normalization, a pad, the stem conv) has
that per-input-channel multiply ``a`` folded into the site's kernel too,
``W·a·s``, where it is exact (``find_input_fold``): the base then has no op
for it, as the TFLite converter's own conversion has none. The refold ratio
``s_task / s_base`` per output channel is unchanged, and a full kernel a
delta ships is the task's kernel folded the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgepatch.errors import FoldError
from edgepatch.format.layouts import as_in_base, to_runtime
from edgepatch.kinds.keras_sites import Site, consumers_by_layer, find_sites
from edgepatch.format.names import CONV_OP, DEPTHWISE_OP


@dataclass(frozen=True)
class InputFold:
    """Input Rescaling/Normalization layers whose per-channel affine ``x·scale + offset`` a conv site absorbs."""

    layers: tuple[str, ...]  # the absorbed layers, input first: the folded model passes its input through them
    scale: np.ndarray  # [I] float64: multiplies the kernel per input channel
    offset: np.ndarray  # [I] float64: zero, unless the conv pads nothing (then folded into its bias)

    def same_as(self, other: "InputFold | None") -> bool:
        return other is not None and self.layers == other.layers and np.array_equal(self.scale, other.scale) \
            and np.array_equal(self.offset, other.offset)


@dataclass(frozen=True)
class FoldedSite:
    """A site's BN-free weights in the Keras (canonical) layout."""

    name: str
    op: str
    kernel: np.ndarray  # conv [H,W,I,O], depthwise [H,W,C,M], dense [I,O]
    bias: np.ndarray  # [O]
    scale: np.ndarray  # [O], the BN multiplier s (ones when no BN)
    input_fold: InputFold | None = None  # the input affine its kernel (and bias) absorbed, if any

    @property
    def out_channels(self) -> int:
        return int(self.bias.shape[0])


def out_channel_view(kernel: np.ndarray, op: str) -> np.ndarray:
    """View a canonical kernel with the output channel as the last axis of a 2-D array."""
    if op == DEPTHWISE_OP:  # [H,W,C,M]: output channel c*M + m
        return kernel.reshape(-1, kernel.shape[2] * kernel.shape[3])
    return kernel.reshape(-1, kernel.shape[-1])


def bn_scale_shift(bn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (s, β, μ) of a BatchNormalization layer, in float64."""
    channels = int(bn.moving_mean.shape[0])
    gamma = np.asarray(bn.gamma, np.float64) if bn.scale else np.ones(channels)
    beta = np.asarray(bn.beta, np.float64) if bn.center else np.zeros(channels)
    variance = np.asarray(bn.moving_variance, np.float64)
    mean = np.asarray(bn.moving_mean, np.float64)
    return gamma / np.sqrt(variance + bn.epsilon), beta, mean


def fold_site(site: Site, input_fold: InputFold | None = None) -> FoldedSite:
    """Fold one site's BN (if any) into its kernel and bias, after the input affine ``input_fold`` (a conv's)."""
    kernel = np.asarray(site.layer.kernel, np.float64)
    out = out_channel_view(kernel, site.op).shape[1]
    bias = np.asarray(site.layer.bias, np.float64) if site.layer.use_bias else np.zeros(out)
    if input_fold is not None:  # conv(x·a + o) = conv_{W·a}(x) + Σ W·o, with no padding to break the offset
        bias = bias + np.einsum("hwio,i->o", kernel, input_fold.offset)
        kernel = kernel * input_fold.scale[None, None, :, None]
    if site.bn is None:
        scale = np.ones(out)
        folded_kernel, folded_bias = kernel, bias
    else:
        scale, beta, mean = bn_scale_shift(site.bn)
        if scale.shape[0] != out:
            raise FoldError(
                f"site `{site.name}`: `{site.bn.name}` has {scale.shape[0]} channels, "
                f"the conv has {out} output channels"
            )
        folded_kernel = (out_channel_view(kernel, site.op) * scale).reshape(kernel.shape)
        folded_bias = beta + (bias - mean) * scale
    folded = FoldedSite(
        site.name,
        site.op,
        folded_kernel.astype(np.float32),
        folded_bias.astype(np.float32),
        scale.astype(np.float32),
        input_fold,
    )
    for label, array in (("kernel", folded.kernel), ("bias", folded.bias), ("scale", folded.scale)):
        if not np.all(np.isfinite(array)):
            raise FoldError(f"site `{site.name}`: folded {label} is not finite (check BN variance and ε)")
    return folded


def fold_batchnorm(model) -> dict[str, FoldedSite]:
    """Fold every BN of ``model``, and its input affine where exact (``find_input_fold``);
    return the folded sites in graph order."""
    sites = find_sites(model)
    found = find_input_fold(model, sites)
    return {site.name: fold_site(site, found[1] if found and found[0] == site.name else None) for site in sites}


def _affine_of(layer) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-channel (scale, offset) of a Rescaling/Normalization layer on NHWC images, or None."""
    import keras

    shape = layer.input.shape
    channels = shape[-1] if len(shape) == 4 else None
    if channels is None:
        return None
    if isinstance(layer, keras.layers.Rescaling):
        scale, offset = np.asarray(layer.scale, np.float64), np.asarray(layer.offset, np.float64)
    elif isinstance(layer, keras.layers.Normalization) and tuple(layer.axis) in ((-1,), (3,)):
        deviation = np.maximum(np.sqrt(np.asarray(layer.variance, np.float64)), keras.config.epsilon())
        mean = np.asarray(layer.mean, np.float64)
        scale, offset = (deviation, mean) if layer.invert else (1 / deviation, -mean / deviation)
    else:
        return None
    try:
        return np.broadcast_to(scale.reshape(-1), (channels,)), np.broadcast_to(offset.reshape(-1), (channels,))
    except ValueError:
        return None


def _input_chain(model) -> tuple[list, object] | None:
    """From the model's single input: the Rescaling/Normalization/ZeroPadding2D layers in a row, each
    the only consumer of the one before, and the operation after them; None where the path branches."""
    import keras

    if len(model.inputs) != 1:
        return None
    consumers = consumers_by_layer(model)
    chain, current = [], model.inputs[0]._keras_history.operation
    while True:
        following = consumers.get(current.name, [])
        if len(following) != 1:
            return None
        current = following[0]
        if not isinstance(current, (keras.layers.Rescaling, keras.layers.Normalization, keras.layers.ZeroPadding2D)):
            return chain, current
        chain.append(current)


def find_input_fold(model, sites: list[Site] | None = None) -> tuple[str, InputFold] | None:
    """(conv site, ``InputFold``) when the input's Rescaling/Normalization layers feed one conv site only
    and their affine folds into its weights exactly, else None (they stay ops of the base).

    A per-input-channel multiply always folds into the kernel (a zero pad stays zero). An offset folds
    into the bias only where no padding meets it (no ZeroPadding2D, a ``valid`` conv): at a zero-padded
    border the conv sees 0, not the offset.
    """
    import keras

    found = _input_chain(model)
    if found is None:
        return None
    chain, conv = found
    site = next((s for s in (sites if sites is not None else find_sites(model)) if s.layer is conv), None)
    affine_layers = [layer for layer in chain if not isinstance(layer, keras.layers.ZeroPadding2D)]
    if site is None or site.op != CONV_OP or conv.groups != 1 or not affine_layers:
        return None
    channels = int(conv.kernel.shape[2])
    scale, offset = np.ones(channels), np.zeros(channels)
    for layer in affine_layers:
        affine = _affine_of(layer)
        if affine is None or affine[0].shape[0] != channels:
            return None
        scale, offset = scale * affine[0], offset * affine[0] + affine[1]
    if np.any(offset != 0) and (len(affine_layers) < len(chain) or conv.padding != "valid"):
        return None
    if not (np.all(np.isfinite(scale)) and np.all(np.isfinite(offset))):
        return None
    return site.name, InputFold(tuple(layer.name for layer in affine_layers), scale, offset)


def fold_input_affines(model) -> dict[str, FoldedSite]:
    """Rescaling/Normalization layers as constant 1x1 depthwise convs (kernel = scale, bias = offset).

    The base keeps the model's own input normalisation. As a per-channel multiply/add (the
    default: the fastest ops) the TFLite converter may fuse it into the next conv's kernel, where
    no site can then be found by value; as a depthwise conv it stays a separate op, at a small cost
    (about 0.04 ms at 96 px). These are constants: no delta writes them. Layers a conv site absorbs
    (``find_input_fold``) are not among them: the folded model has no op for them.
    """
    import keras

    found = find_input_fold(model)
    absorbed = set(found[1].layers) if found else set()
    affines = {}
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization)) and layer.name not in absorbed:
            affine = _affine_of(layer)
            if affine is not None:
                scale, offset = affine
                affines[layer.name] = FoldedSite(layer.name, DEPTHWISE_OP, scale.reshape(1, 1, -1, 1).astype(np.float32),
                                                 offset.astype(np.float32), np.ones_like(scale, np.float32))
    return affines


def fold_model(model, input_affines: bool = False) -> dict[str, FoldedSite]:
    """Everything the BN-free model takes from ``model``: its folded sites, after its input affines
    as depthwise convs when ``input_affines`` (``fold_input_affines``; else they stay as Keras has them)."""
    return {**(fold_input_affines(model) if input_affines else {}), **fold_batchnorm(model)}


def expected_weights(folded: dict[str, FoldedSite], head_width: int, fmt: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per site, the (kernel, bias) a base in ``fmt`` must hold: runtime layout, head padded."""
    expected = {}
    for name, site in folded.items():
        kernel, bias = as_in_base(site.op, site.kernel, site.bias, head_width)
        expected[name] = (to_runtime(kernel, site.op, fmt), bias)
    return expected
