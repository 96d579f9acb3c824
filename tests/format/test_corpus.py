"""The bad-input corpus (tests/corpus, format in its README) through the Python readers.

The Java loader's ``BadInputTest`` reads the same files and expectations, so each case pins one
error class and message in both languages. Each case runs as an app would: decode the delta,
load the base, apply the delta; the first step that fails must raise exactly the expected error.
"""

from __future__ import annotations

import json
import os

import pytest
from conftest import REPO

from edgepatch import errors
from edgepatch.format.delta import decode_delta
from edgepatch.format.int8_delta import FILE_KIND as INT8_KIND
from edgepatch.format.int8_delta import decode_int8_delta
from edgepatch.runtime.tflite import TFLiteBase
from edgepatch.runtime.tflite_int8 import TFLiteInt8Base

CORPUS = os.path.join(REPO, "tests", "corpus")
GOLDEN = os.path.join(REPO, "android_demo", "patchloader", "testdata")
with open(os.path.join(CORPUS, "bad.json"), encoding="utf-8") as _handle:
    CASES = json.load(_handle)


def _bytes(name: str) -> bytes:
    """A file the corpus names: its own files sit under bad/; the others are golden files."""
    with open(os.path.join(CORPUS if name.startswith("bad/") else GOLDEN, name), "rb") as handle:
        return handle.read()


def _run(case: dict) -> None:
    int8 = case.get("kind") == INT8_KIND
    name = case["delta"]
    delta = None if name is None else (decode_int8_delta if int8 else decode_delta)(_bytes(name), name)
    base = (TFLiteInt8Base if int8 else TFLiteBase)(_bytes(case["base"]), case["base"])
    if delta is not None:
        base.patched_bytes(delta)


@pytest.mark.parametrize("case", CASES, ids=[case["delta"] or case["base"] for case in CASES])
def test_bad_file_raises_the_expected_class_and_message(case):
    expected = getattr(errors, case["error"])
    with pytest.raises(errors.EdgepatchError) as raised:
        _run(case)
    assert (type(raised.value), str(raised.value)) == (expected, case["message"])


def test_corpus_lists_every_bad_file_once():
    named = [case[key] for case in CASES for key in ("base", "delta") if (case[key] or "").startswith("bad/")]
    on_disk = sorted(f"bad/{name}" for name in os.listdir(os.path.join(CORPUS, "bad")))
    assert sorted(named) == on_disk
    assert len(CASES) >= 80 and sum(case.get("kind") == INT8_KIND for case in CASES) >= 40
