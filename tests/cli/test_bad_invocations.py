"""The CLI contract on bad invocations: exactly one stderr line starting with ``error:``, exit 2, no stdout.

Every case fails before heavy work (bad options, missing or corrupt files), in-process through
click's CliRunner; none needs TensorFlow. ``{tmp}`` is replaced by the test's tmp_path.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from edgepatch.cli.main import main

M = "{tmp}/missing"  # a path that does not exist
J = "{tmp}/junk.delta"  # 64 junk bytes
E = "{tmp}/empty.delta"  # 0 bytes
D = "{tmp}/dir"  # an empty directory
IMG = "{tmp}/bomb.png"  # a PNG whose header declares 30000x30000

TRAIN = ["train", "--out", "{tmp}/o"]
CONVERT = ["convert", "--model", M, "--out", "{tmp}/o"]
RUN = ["run", "--base", M, "--delta", M]
BENCH = ["bench", "--base", M]
EVAL = ["eval", "--base", M, "--delta", M, "--data", D]
FIT = ["cascade", "fit", "--base", M, "--delta", M, "--data", M, "--out", "{tmp}/c.json"]

BAD_INVOCATIONS = [
    ["--bogus"], ["nosuchcommand"], ["--verbose", "nosuchcommand"],
    # train
    ["train"], TRAIN + ["--bogus"], TRAIN + ["--mode", "nope"], TRAIN + ["--alpha", "x"], TRAIN + ["--resolution", "x"],
    TRAIN + ["--epochs", "x"], TRAIN + ["--lr", "x"], TRAIN + ["--batch-size", "1.5"], TRAIN + ["--bn-momentum", "x"],
    TRAIN + ["--holdout", "x"], TRAIN + ["--seed", "x"], TRAIN + ["--out"], ["train", "--data", M],
    # check
    ["check"], ["check", M], ["check", "{tmp}/notes.txt"], ["check", D], ["check", J], ["check", M, "--bogus"],
    ["check", M, "extra"], ["check", M, "--preprocessing", "nope"], ["check", "{tmp}/notes.txt", "--patch", "bogus"],
    ["check", "{tmp}/notes.txt", "--base", "nope"], ["check", "--json", M],
    # convert
    ["convert"], ["convert", "--model", M], ["convert", "--out", "{tmp}/o"], CONVERT + ["--bogus"],
    CONVERT + ["--head-width", "x"], CONVERT + ["--quantize", "int4"], CONVERT + ["--int8-delta", "nope"],
    CONVERT + ["--model"], CONVERT + ["extra"],
    # inspect
    ["inspect"], ["inspect", M], ["inspect", J], ["inspect", E], ["inspect", "{tmp}/notes.txt"], ["inspect", D],
    ["inspect", J, "--bogus"], ["inspect", J, "extra"], ["inspect", "--base"], ["inspect", "--json", M],
    # run
    ["run"], ["run", "--base", M], ["run", "--delta", M, "x.png"], RUN, RUN + ["x.png", "--threads", "0"],
    RUN + ["x.png", "--threads", "65"], RUN + ["x.png", "--threads", "x"], RUN + ["x.png", "--top-k", "0"],
    RUN + ["x.png", "--top-k", "x"], RUN + ["x.png", "--bogus"], RUN + ["x.png"], ["run", "--base", J, "--delta", J, "x.png"],
    ["run", "--base", E, "--delta", J, "x.png"], ["run", "--base", D, "--delta", D, "x.png"],
    # eval
    ["eval"], ["eval", "--base", M], ["eval", "--base", M, "--delta", M], EVAL,
    ["eval", "--base", J, "--delta", J, "--data", M], ["eval", "--base", J, "--delta", J, "--data", "{tmp}/notes.txt"],
    ["eval", "--base", M, "--base", M, "--delta", M, "--data", D], ["eval", "--base", J, "--delta", J, "--data", D],
    ["eval", "--base", E, "--delta", E, "--data", D], ["eval", "--base", D, "--delta", D, "--data", D],
    ["eval", "--base", J, "--delta", "/dev/zero", "--data", D], EVAL + ["--batch", "0"], EVAL + ["--batch", "x"],
    EVAL + ["--batch", "5000"], EVAL + ["--model", M], EVAL + ["--patch", M], EVAL + ["--confusion", "{tmp}/no/cm.png"],
    EVAL + ["--bogus"], EVAL + ["extra"], EVAL + ["--data"], ["eval", "--json", "--base", M, "--delta", M, "--data", D],
    # bench
    ["bench"], BENCH + ["--runs", "0"], BENCH + ["--runs", "1e9"], BENCH + ["--runs", "x"], BENCH + ["--warmup", "-1"],
    BENCH + ["--warmup", "x"], BENCH + ["--onnx-swap", "nope"], BENCH + ["--bogus"], BENCH + ["extra"], ["bench", "--base"],
    # cascade
    ["cascade", "nope"], ["cascade", "fit"], ["cascade", "fit", "--base", M], FIT + ["--tolerance", "x"], FIT + ["--bogus"],
    ["cascade", "run"], ["cascade", "run", "--cascade", M], ["cascade", "run", "x.png"],
    ["cascade", "run", "--cascade", M, "x.png"], ["cascade", "run", "--cascade", D, "x.png"],
    ["cascade", "run", "--cascade", "/dev/zero", "x.png"], ["cascade", "run", "--cascade", "{tmp}/fifo", "x.png"],
    ["cascade", "run", "--cascade", J, "x.png"], ["cascade", "run", "--cascade", E, "x.png"],
    ["cascade", "run", "--cascade", "{tmp}/big.json", "x.png"], ["cascade", "run", "--cascade", "{tmp}/list.json", "x.png"],
    ["cascade", "run", "--cascade", M, "x.png", "--bogus"],
    # keygen
    ["keygen"], ["keygen", "--out"], ["keygen", "--out", "{tmp}/k", "--bogus"], ["keygen", "--out", "{tmp}/k", "extra"],
    ["keygen", "--out", "{tmp}/notes.txt/key"],
    # pack
    ["pack"], ["pack", D], ["pack", D, "--out", "{tmp}/b"], ["pack", M, "--out", "{tmp}/b", "--model-version", "1"],
    ["pack", D, "--out", "{tmp}/b", "--model-version", "1"], ["pack", D, "--bogus"], ["pack", "--out"],
    # sign-delta
    ["sign-delta"], ["sign-delta", M], ["sign-delta", "--key", M], ["sign-delta", M, "--key", M],
    ["sign-delta", J, "--key", "{tmp}/notes.txt"], ["sign-delta", J, "--key"], ["sign-delta", J, "--key", M, "--bogus"],
    RUN + ["x.png", "--pubkey"], RUN + ["x.png", "--pubkey", M], BENCH + ["--pubkey"],
    # verify
    ["verify"], ["verify", M], ["verify", D], ["verify", D, "--bogus"], ["verify", "--pubkey"], ["verify", D, "extra"],
    # serve
    ["serve"], ["serve", D, "--port", "70000"], ["serve", D, "--port", "-1"], ["serve", D, "--port", "x"],
    ["serve", D, "--bogus"], ["serve", "--host"], ["serve", M, "extra"],
    # demo
    ["demo", "--bogus"], ["demo", "--out"], ["demo", "extra"], ["demo", "--quick", "--quick=maybe"],
]


@pytest.fixture
def bad_files(tmp_path):
    import os

    (tmp_path / "junk.delta").write_bytes(bytes(range(64)))
    (tmp_path / "empty.delta").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("notes")
    (tmp_path / "dir").mkdir()
    (tmp_path / "big.json").write_bytes(b" " * (2 << 20))
    (tmp_path / "list.json").write_text("[1, 2]")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo")
    return tmp_path


def test_the_table_covers_every_command():
    assert len(BAD_INVOCATIONS) >= 80
    named = {args[0] for args in BAD_INVOCATIONS}
    assert set(main.commands) <= named


@pytest.mark.parametrize("args", BAD_INVOCATIONS, ids=" ".join)
def test_a_bad_invocation_is_one_error_line_and_exit_2(args, bad_files):
    argv = [a.replace("{tmp}", str(bad_files)) for a in args]
    result = CliRunner().invoke(main, argv)
    lines = result.stderr.splitlines()
    assert (result.exit_code, len(lines), result.stdout) == (2, 1, ""), (argv, result.stderr, result.exception)
    assert lines[0].startswith("error: ")


def test_a_click_error_names_the_option_and_the_help(tmp_path):
    result = CliRunner().invoke(main, ["run", "--base", "b", "--delta", "d", "--threads", "0", "x.png"])
    assert result.stderr == ("error: Invalid value for '--threads': 0 is not in the range 1<=x<=64. "
                             "(see 'edgepatch run --help')\n")


def test_cascade_file_must_be_a_small_regular_file(bad_files):
    cases = {
        "/dev/zero": "error: cascade file '/dev/zero' is not a regular file",
        str(bad_files / "fifo"): f"error: cascade file '{bad_files / 'fifo'}' is not a regular file",
        str(bad_files / "dir"): f"error: cascade file '{bad_files / 'dir'}' is not a regular file",
        str(bad_files / "big.json"): f"error: cascade file '{bad_files / 'big.json'}' is larger than 1048576 bytes",
        str(bad_files / "missing"): f"error: cascade file '{bad_files / 'missing'}' does not exist",
    }
    for path, message in cases.items():
        result = CliRunner().invoke(main, ["cascade", "run", "--cascade", path, "x.png"])
        assert (result.exit_code, result.stderr) == (2, message + "\n")


def _png_header_only(path, width: int, height: int) -> None:
    """A PNG of a few dozen bytes whose header declares ``width`` x ``height`` (an image bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
                     + chunk(b"IEND", b""))


def test_image_bombs_are_refused_before_decoding(small_ship, tmp_path):
    from edgepatch.runtime.images import MAX_IMAGE_PIXELS

    ship, _ = small_ship
    bomb, large = tmp_path / "bomb.png", tmp_path / "large.png"
    _png_header_only(bomb, 30000, 30000)  # past Pillow's own bomb limit: raised inside Image.open
    _png_header_only(large, 12000, 12000)  # under Pillow's limit, over ours
    cases = {bomb: f"error: image '{bomb}' declares more than {MAX_IMAGE_PIXELS} pixels",
             large: f"error: image '{large}' declares more than {MAX_IMAGE_PIXELS} pixels (12000x12000)"}
    for image, message in cases.items():
        result = CliRunner().invoke(main, ["run", "--base", str(ship / "base.tflite"),
                                           "--delta", str(ship / "gamma.delta"), str(image)])
        assert (result.exit_code, result.stderr, result.stdout) == (2, message + "\n", "")


# The CLI reads a task delta of either kind, so two corpus cases that a kind-specific reader
# refuses by its kind get the general reader's error instead.
RUN_MESSAGES = {
    "bad/file_kind_patch.delta": "bad/file_kind_patch.delta: file_kind: expected one of delta, int8_delta, got 'patch'",
    ("base_int8_compact.tflite", "gamma.delta"): "float delta for task 'gamma' needs a float base; "
                                                 "base_int8_compact.tflite is an int8 base (it takes int8 deltas)",
}


def test_every_corpus_case_through_run_is_its_error_line(tmp_path, monkeypatch):
    """Each file of the shared bad-input corpus (tests/corpus) through `edgepatch run`: its exact message."""
    import json
    import os
    import shutil

    import numpy as np
    from PIL import Image

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    shutil.copytree(os.path.join(repo, "tests", "corpus", "bad"), tmp_path / "bad")
    for name in ("base.tflite", "base_int8_compact.tflite", "gamma.delta"):
        shutil.copy(os.path.join(repo, "android_demo", "patchloader", "testdata", name), tmp_path / name)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "x.png")
    with open(os.path.join(repo, "tests", "corpus", "bad.json"), encoding="utf-8") as handle:
        cases = json.load(handle)
    monkeypatch.chdir(tmp_path)  # the corpus names files relative to its folder
    for case in cases:
        delta = case["delta"] or "gamma.delta"
        result = CliRunner().invoke(main, ["run", "--base", case["base"], "--delta", delta, "x.png"])
        expected = RUN_MESSAGES.get(case["delta"], RUN_MESSAGES.get((case["base"], delta), case["message"]))
        assert (result.exit_code, result.stderr, result.stdout) == (2, f"error: {expected}\n", ""), case
