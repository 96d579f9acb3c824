"""The spec (edgepatch/format/spec.rst) is one text: its sections exist, its constants are the code's."""

import ast
import importlib
import re
from importlib import resources

import pytest

from edgepatch.format.names import MAX_SITE_NAME_BYTES, split_name, tensor_name

SPEC = resources.files("edgepatch.format").joinpath("spec.rst").read_text(encoding="utf-8")  # package data

SECTIONS = ("Container", "Verification order", "Site naming", "Float delta", "int8 delta", "Golomb-Rice codes",
            "Layouts and head padding", "Bases", "Applying a float delta", "Applying an int8 delta", "Constants",
            "Python modules")


def _headings(text: str) -> list[str]:
    lines = text.splitlines()
    return [lines[i] for i in range(len(lines) - 1)
            if lines[i] and set(lines[i + 1]) == {"-"} and len(lines[i + 1]) == len(lines[i])]


def _constants(text: str) -> list[tuple[str, object, str]]:
    """(name, value, module) rows of the Constants table."""
    block = text.split("Constants\n---------\n", 1)[1].split("\nPython modules\n", 1)[0]
    rows = []
    for line in block.splitlines():
        match = re.fullmatch(r"    ([A-Z_0-9]+) +(.+?) +(edgepatch(?:\.\w+)+)", line)
        if match:
            rows.append((match[1], ast.literal_eval(match[2]), match[3]))
    return rows


def test_the_spec_has_its_sections_in_order():
    assert _headings(SPEC) == list(SECTIONS)


def test_every_constant_the_spec_names_has_its_value_in_the_module_it_names():
    rows = _constants(SPEC)
    assert len(rows) == 33  # issue 17: MAX_TENSOR_ELEMENTS, then the preprocessing, site and quant limits
    for name, value, module in rows:
        assert getattr(importlib.import_module(module), name) == value, (name, module)


@pytest.mark.parametrize("site, role", [("conv1", "kernel"), ("block_1/depthwise", "scale"), ("", "bias")])
def test_tensor_names_split_back_at_the_last_separator(site, role):
    assert tensor_name(site, role) == f"{site}/{role}"
    assert split_name(tensor_name(site, role)) == (site, role)


def test_a_name_without_separator_names_no_role():
    assert split_name("kernel") == ("kernel", "")
    assert len(tensor_name("x" * MAX_SITE_NAME_BYTES, "kernel")) == 256
