"""Every CLI command and subcommand has ``--help`` with an example, and both module entry points start."""

from __future__ import annotations

import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner
from conftest import REPO

from edgepatch.cli.main import main


def _command_paths(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The group itself and every command below it, as the words that invoke it."""
    paths = [path]
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            paths += _command_paths(command.commands[name], (*path, name))
    return paths


COMMAND_PATHS = _command_paths(main)


def test_the_walk_finds_every_command_group():
    assert {"train", "convert", "inspect", "run", "demo", "bench", "cascade", "pack", "keygen", "verify",
            "serve"} <= {path[0] for path in COMMAND_PATHS if path}
    assert ("cascade", "fit") in COMMAND_PATHS and ("cascade", "run") in COMMAND_PATHS


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=lambda path: " ".join(path) or "edgepatch")
def test_help_exits_0_and_shows_an_example(path):
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.output.splitlines()]
    assert any(line.startswith("Example") for line in lines), result.output
    invocation = " ".join(("edgepatch", *path))
    assert any(line.startswith(invocation + " ") for line in lines), f"no '{invocation} ...' line:\n{result.output}"


@pytest.mark.parametrize("module", ["edgepatch.cli", "edgepatch.cli.main"])
def test_module_entry_points_run_the_group(module):
    result = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("version 0.1.0")
