"""The patch-kind registry.

A patch kind names a group of parameters that a task keeps private. Each kind
knows, by model structure, which Keras variables it owns, which of them are
trained, and which delta tensors it makes private at each site. Training,
patch files and the converters loop over the registry and never branch on a
kind's name; adding a kind is one new module that calls ``register``.
"""

from __future__ import annotations

import numpy as np

from edgepatch.errors import UsageError


class PatchKind:
    """Base class: subclasses set ``name``/``help`` and implement the three hooks."""

    name: str = ""
    help: str = ""

    def layers(self, model) -> list:
        """The Keras layers whose variables this kind makes private."""
        raise NotImplementedError

    def trainable_variables(self, layer) -> list:
        """The variables of ``layer`` trained by gradient descent (others are statistics)."""
        return list(layer.trainable_variables) if layer.trainable else list(layer.weights)

    def delta_roles(self, site) -> tuple[str, ...]:
        """Delta tensor roles this kind makes private at ``site`` (an ``edgepatch.kinds.keras_sites.Site``)."""
        raise NotImplementedError

    def private_variables(self, model) -> list:
        return [variable for layer in self.layers(model) for variable in layer.weights]

    def parameter_count(self, model) -> int:
        """Trained parameters of this kind in ``model``."""
        return sum(int(np.prod(v.shape)) for layer in self.layers(model) for v in self.trainable_variables(layer))


_KINDS: dict[str, PatchKind] = {}


def register(kind: PatchKind) -> PatchKind:
    if kind.name in _KINDS:
        raise ValueError(f"patch kind '{kind.name}' is already registered")
    _KINDS[kind.name] = kind
    return kind


def kind_names() -> tuple[str, ...]:
    return tuple(_KINDS)


def get_kind(name: str) -> PatchKind:
    if name not in _KINDS:
        raise UsageError(f"unknown patch kind '{name}'. Allowed: {', '.join(_KINDS)}")
    return _KINDS[name]


def parse_kinds(spec: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Parse 'scale_bias,logits' into registry order, rejecting unknown and repeated kinds."""
    names = [n.strip() for n in spec.split(",")] if isinstance(spec, str) else list(spec)
    if not names or any(not n for n in names):
        raise UsageError(f"a patch spec lists kinds separated by commas. Received '{spec}'")
    for name in names:
        get_kind(name)
    if len(set(names)) != len(names):
        raise UsageError(f"a patch spec names each kind once. Received '{spec}'")
    return tuple(n for n in _KINDS if n in names)
