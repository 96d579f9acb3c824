"""Fold BatchNormalization into the preceding conv, in numpy.

For a conv with kernel ``W`` and bias ``b0`` followed by BN (γ, β, μ, σ², ε),
inference computes ``γ (W*x + b0 - μ) / sqrt(σ² + ε) + β``. With the
per-output-channel scale ``s = γ / sqrt(σ² + ε)`` this equals a BN-free conv
with kernel ``W·s`` and bias ``β + (b0 - μ)·s``. ``s`` is kept, because a
task's delta stores its own ``s_task / s_base`` per channel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgepatch.errors import FoldError
from edgepatch.format.layouts import as_in_base, to_runtime
from edgepatch.kinds.keras_sites import Site, find_sites
from edgepatch.format.names import DEPTHWISE_OP


@dataclass(frozen=True)
class FoldedSite:
    """A site's BN-free weights in the Keras (canonical) layout."""

    name: str
    op: str
    kernel: np.ndarray  # conv [H,W,I,O], depthwise [H,W,C,M], dense [I,O]
    bias: np.ndarray  # [O]
    scale: np.ndarray  # [O], the BN multiplier s (ones when no BN)

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


def fold_site(site: Site) -> FoldedSite:
    """Fold one site's BN (if any) into its kernel and bias."""
    kernel = np.asarray(site.layer.kernel, np.float64)
    out = out_channel_view(kernel, site.op).shape[1]
    bias = np.asarray(site.layer.bias, np.float64) if site.layer.use_bias else np.zeros(out)
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
    )
    for label, array in (("kernel", folded.kernel), ("bias", folded.bias), ("scale", folded.scale)):
        if not np.all(np.isfinite(array)):
            raise FoldError(f"site `{site.name}`: folded {label} is not finite (check BN variance and ε)")
    return folded


def fold_batchnorm(model) -> dict[str, FoldedSite]:
    """Fold every BN of ``model``; return the folded sites in graph order."""
    return {site.name: fold_site(site) for site in find_sites(model)}


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


def fold_input_affines(model) -> dict[str, FoldedSite]:
    """Rescaling/Normalization layers as constant 1x1 depthwise convs (kernel = scale, bias = offset).

    The base keeps the model's own input normalisation. As a per-channel multiply/add (the
    default: the fastest ops) the TFLite converter may fuse it into the next conv's kernel, where
    no site can then be found by value; as a depthwise conv it stays a separate op, at a small cost
    (about 0.04 ms at 96 px). These are constants: no delta writes them.
    """
    import keras

    affines = {}
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization)):
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
