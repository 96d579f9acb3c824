"""The kind registry: every kind answers every hook; 'full' is a kind; the queries training and convert ask."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.models import small_cnn

from edgepatch.errors import UsageError
from edgepatch.kinds import (
    PatchKind,
    default_learning_rate,
    get_kind,
    head_is_private,
    head_kind,
    kind_names,
    makes_patch,
    parse_kinds,
    parse_trained_kinds,
    patch_kind_names,
    private_layers,
    statistics_are_private,
    whole_model_kinds,
    with_head,
)

ROLES = {"scale", "bias", "kernel"}


@pytest.fixture(scope="module")
def model():
    return small_cnn(num_classes=4)


def test_registered_kinds_in_order():
    assert kind_names() == ("scale_bias", "depthwise", "logits", "full")
    assert patch_kind_names() == ("scale_bias", "depthwise", "logits")
    assert whole_model_kinds() == ("full",)
    assert head_kind().name == "logits"


@pytest.mark.parametrize("name", ["scale_bias", "depthwise", "logits", "full"])
def test_every_kind_answers_every_hook(model, name):
    from edgepatch.kinds.keras_sites import find_sites

    kind = get_kind(name)
    assert isinstance(kind, PatchKind) and kind.name == name and kind.help
    assert all(isinstance(flag, bool) for flag in (kind.makes_patch, kind.owns_head, kind.owns_bn_statistics))
    assert kind.default_learning_rate > 0
    layers = kind.layers(model)
    assert layers and all(layer in model.layers for layer in layers)
    for layer in layers:
        assert all(any(v is w for w in layer.weights) for v in kind.trainable_variables(layer))
    private = {v.path for layer in private_layers(model, (name,)) for v in layer.weights}
    assert private and private <= {v.path for v in model.weights}
    assert isinstance(kind.parameter_count(model), int) and kind.parameter_count(model) > 0
    for site in find_sites(model):
        assert set(kind.delta_roles(site)) <= ROLES


def test_kind_properties():
    owners = {name: (get_kind(name).makes_patch, get_kind(name).owns_head, get_kind(name).owns_bn_statistics,
                     get_kind(name).default_learning_rate) for name in kind_names()}
    assert owners == {"scale_bias": (True, False, True, 3e-3), "depthwise": (True, False, False, 3e-3),
                      "logits": (True, True, False, 1e-3), "full": (False, True, True, 1e-4)}


def test_queries_over_kinds():
    assert head_is_private(("scale_bias", "logits")) and head_is_private(("full",))
    assert not head_is_private(("scale_bias",)) and not head_is_private(())
    assert statistics_are_private(("scale_bias",)) and statistics_are_private(("full",))
    assert not statistics_are_private(("depthwise", "logits"))
    assert makes_patch(("scale_bias", "logits")) and not makes_patch(("full",))
    assert with_head(("scale_bias",)) == ("scale_bias", "logits")
    assert with_head(("logits", "depthwise")) == ("depthwise", "logits")
    assert default_learning_rate(("scale_bias", "logits")) == 3e-3  # the backbone kind's, not the head's
    assert default_learning_rate(("depthwise", "logits")) == 3e-3
    assert default_learning_rate(("logits",)) == 1e-3
    assert default_learning_rate(("full",)) == 1e-4


def test_full_counts_every_trainable_parameter(model):
    from edgepatch.train.transfer import freeze_outside

    copy = small_cnn(num_classes=4)
    assert freeze_outside(copy, ("full",)) == sum(int(np.prod(v.shape)) for v in copy.trainable_variables)
    assert all(layer.trainable for layer in copy.layers)
    assert freeze_outside(copy, ("scale_bias", "logits")) == 2 * (8 + 16 + 8) + 12 * 4 + 4
    assert [layer.name for layer in copy.layers if layer.trainable] == [
        "stem_norm", "dw_norm", "pw_norm", "classifier"]


@pytest.mark.parametrize("spec, message", [
    ("scale_bias,bogus", "unknown patch kind 'bogus'. Allowed: scale_bias, depthwise, logits"),
    ("logits,,", "a patch spec lists kinds separated by commas. Received 'logits,,'"),
    ("logits,logits", "a patch spec names each kind once. Received 'logits,logits'"),
    ("full", "kind 'full' trains the whole model and makes no patch; a patch holds scale_bias, depthwise, "
             "logits. Received 'full'"),
])
def test_patch_spec_errors(spec, message):
    with pytest.raises(UsageError) as error:
        parse_kinds(spec)
    assert str(error.value) == message


def test_trained_kinds_take_full_alone():
    assert parse_trained_kinds("full") == ("full",)
    assert parse_trained_kinds("logits, scale_bias") == ("scale_bias", "logits")
    with pytest.raises(UsageError) as error:
        parse_trained_kinds("full,logits")
    assert str(error.value) == ("kind 'full' trains every layer and cannot be combined with other kinds. "
                                "Received 'full,logits'")
    with pytest.raises(UsageError) as error:
        parse_trained_kinds("scale_bias,bogus")
    assert str(error.value) == "unknown patch kind 'bogus'. Allowed: scale_bias, depthwise, logits"
