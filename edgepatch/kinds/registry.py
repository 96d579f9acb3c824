"""The patch-kind registry: the only place that knows what a kind is.

A kind names a group of parameters that a task trains. Each kind knows, by
model structure, which Keras variables it owns, which of them are trained,
which delta tensors it makes private at each site, whether it owns the
classifier head, whether it owns the BatchNorm statistics (the trainer then
applies the run's BN-statistics mode to them, see ``bn_statistics``) and its
default learning rate. Most kinds make a *patch*; a kind with
``makes_patch = False`` (``full``) trains the whole model, makes no patch
and cannot be combined with other kinds.

Training, patch files and the converters ask the functions below and never
branch on a kind's name; adding a kind is one new module that calls ``register``.
"""

from __future__ import annotations

import numpy as np

from edgepatch.errors import UsageError


class PatchKind:
    """Base class: subclasses set the class attributes and implement ``layers`` and ``delta_roles``."""

    name: str = ""
    help: str = ""
    makes_patch: bool = True  # False: trains every layer and ships a whole model, no patch
    owns_head: bool = False  # trains (and, in a patch, keeps private) the classifier head
    owns_bn_statistics: bool = False  # the run's BN-statistics mode applies to the model's BN layers
    default_learning_rate: float = 1e-3  # Adam's, when the run sets none; chosen by the README's sweep table
    trains_backbone: bool = True  # False for the head alone: a patch with backbone kinds takes their rate
    selectable: bool = False  # a parameter budget may keep some of its layers private and share the rest

    def layers(self, model) -> list:
        """The Keras layers whose variables this kind owns."""
        raise NotImplementedError

    def trainable_variables(self, layer) -> list:
        """The variables of ``layer`` trained by gradient descent (others are statistics)."""
        return list(layer.trainable_variables) if layer.trainable else list(layer.weights)

    def delta_roles(self, site) -> tuple[str, ...]:
        """Delta tensor roles this kind makes private at ``site`` (an ``edgepatch.kinds.keras_sites.Site``)."""
        raise NotImplementedError

    def site_layer(self, site):
        """The layer of ``site`` this kind owns (a selection names it), for a site where ``delta_roles`` is not empty."""
        raise NotImplementedError

    def layer_parameters(self, layer) -> int:
        """Parameters this kind trains in ``layer`` (a budget keeps or shares a layer as one unit)."""
        return sum(int(np.prod(v.shape)) for v in self.trainable_variables(layer))

    def parameter_count(self, model) -> int:
        """Trained parameters of this kind in ``model``."""
        return sum(self.layer_parameters(layer) for layer in self.layers(model))


_KINDS: dict[str, PatchKind] = {}


def register(kind: PatchKind) -> PatchKind:
    if kind.name in _KINDS:
        raise ValueError(f"patch kind '{kind.name}' is already registered")
    _KINDS[kind.name] = kind
    return kind


def kind_names() -> tuple[str, ...]:
    """Every registered kind, in registration order."""
    return tuple(_KINDS)


def patch_kind_names() -> tuple[str, ...]:
    """The kinds a patch can hold, in registration order."""
    return tuple(name for name, kind in _KINDS.items() if kind.makes_patch)


def whole_model_kinds() -> tuple[str, ...]:
    """The trained-kinds tuple that fine-tunes every layer (no patch)."""
    return tuple(name for name, kind in _KINDS.items() if not kind.makes_patch)[:1]


def get_kind(name: str) -> PatchKind:
    if name not in _KINDS:
        raise UsageError(f"unknown patch kind '{name}'. Allowed: {', '.join(patch_kind_names())}")
    return _KINDS[name]


def _split_spec(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    names = [n.strip() for n in spec.split(",")] if isinstance(spec, str) else list(spec)
    if not names or any(not n for n in names):
        raise UsageError(f"a patch spec lists kinds separated by commas. Received '{spec}'")
    for name in names:
        get_kind(name)
    if len(set(names)) != len(names):
        raise UsageError(f"a patch spec names each kind once. Received '{spec}'")
    return names


def parse_kinds(spec: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Parse 'scale_bias,logits' into registry order, rejecting unknown, repeated and non-patch kinds."""
    names = _split_spec(spec)
    for name in names:
        if not _KINDS[name].makes_patch:
            raise UsageError(f"kind '{name}' trains the whole model and makes no patch; a patch holds "
                             f"{', '.join(patch_kind_names())}. Received '{spec}'")
    return tuple(n for n in _KINDS if n in names)


def parse_trained_kinds(spec: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """What a transfer run trains: patch kinds as ``parse_kinds``, or one whole-model kind alone ('full')."""
    names = _split_spec(spec)
    whole = [name for name in names if not _KINDS[name].makes_patch]
    if whole and len(names) > 1:
        raise UsageError(f"kind '{whole[0]}' trains every layer and cannot be combined with other kinds. "
                         f"Received '{spec}'")
    return tuple(names) if whole else parse_kinds(names)


def site_is_patchable(site) -> bool:
    """Whether some patch kind can write ``site`` in a delta; the base may hold the others as plain constants."""
    return any(kind.delta_roles(site) for kind in _KINDS.values() if kind.makes_patch)


def makes_patch(kinds) -> bool:
    """True when training ``kinds`` yields a patch (not a whole fine-tuned model)."""
    return all(get_kind(name).makes_patch for name in kinds)


def head_is_private(kinds) -> bool:
    """True when one of ``kinds`` owns the classifier head."""
    return any(get_kind(name).owns_head for name in kinds)


def head_kind() -> PatchKind:
    """The patch kind that owns the classifier head."""
    return next(kind for kind in _KINDS.values() if kind.makes_patch and kind.owns_head)


def with_head(kinds) -> tuple[str, ...]:
    """``kinds`` plus the head's kind if none of them owns the head (a private, untrained head)."""
    return parse_kinds(kinds) if head_is_private(kinds) else parse_kinds((*kinds, head_kind().name))


def statistics_are_private(kinds) -> bool:
    """True when one of ``kinds`` owns the BatchNorm statistics."""
    return any(get_kind(name).owns_bn_statistics for name in kinds)


def default_learning_rate(kinds) -> float:
    """The smallest default learning rate among the backbone kinds of ``kinds``, else the head's.

    Full fine-tuning wants a small rate, S/B and depthwise patches a larger one than the
    head alone (sweeps on flowers5 and eurosat: benchmarks/results/reproduce/full/REPORT.md).
    """
    chosen = [get_kind(name) for name in kinds]
    backbone = [kind for kind in chosen if kind.trains_backbone] or chosen
    return min((kind.default_learning_rate for kind in backbone), default=PatchKind.default_learning_rate)


def _selected(kind: PatchKind, layer, selection) -> bool:
    return selection is None or not kind.selectable or layer.name in selection


def private_layers(model, kinds, selection=None) -> list:
    """The layers of ``model`` that ``kinds`` keep private, in kind order.

    ``selection`` (layer names, from a parameter budget) narrows the selectable kinds to the
    layers it names; None keeps every layer. The other kinds (the head) are never narrowed.
    """
    return [layer for name in kinds for layer in get_kind(name).layers(model)
            if _selected(get_kind(name), layer, selection)]


def owned_layer_ids(model, kinds, selection=None) -> set[int]:
    """ids of the layers of ``model`` that ``kinds`` own (``private_layers``)."""
    return {id(layer) for layer in private_layers(model, kinds, selection)}


def parameter_count(model, kinds, selection=None) -> int:
    """Parameters ``kinds`` train in ``model``, counting only the selected layers of selectable kinds."""
    if selection is None:
        return sum(get_kind(name).parameter_count(model) for name in kinds)  # a kind may count its own way
    return sum(get_kind(name).layer_parameters(layer) for name in kinds for layer in get_kind(name).layers(model)
               if _selected(get_kind(name), layer, selection))


def selectable_kind_names() -> tuple[str, ...]:
    """The kinds a parameter budget can narrow (``PatchKind.selectable``), in registration order."""
    return tuple(name for name, kind in _KINDS.items() if kind.selectable)


def selectable_layers(model, kinds) -> list:
    """(kind name, layer) for every layer of ``kinds`` a parameter budget chooses among, in model order."""
    position = {id(layer): index for index, layer in enumerate(model.layers)}
    pairs = [(name, layer) for name in kinds if get_kind(name).selectable for layer in get_kind(name).layers(model)]
    return sorted(pairs, key=lambda pair: position.get(id(pair[1]), len(position)))


def site_delta_roles(site, kinds, selection=None) -> set[str]:
    """The delta roles ``kinds`` make private at ``site``; a site whose layer a selection leaves out adds none."""
    roles: set[str] = set()
    for name in kinds:
        kind = get_kind(name)
        here = kind.delta_roles(site)
        if here and _selected(kind, kind.site_layer(site), selection):
            roles.update(here)
    return roles
