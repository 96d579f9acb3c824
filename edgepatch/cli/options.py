"""What every CLI command shares: one-line expected errors (exit 2) and JSON-or-text output."""

from __future__ import annotations

import functools
import json
import sys

import click

from edgepatch.errors import EdgepatchError

EXIT_EXPECTED_ERROR = 2


def expected_errors(command):
    """Turn an EdgepatchError into one line on stderr and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except EdgepatchError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(EXIT_EXPECTED_ERROR)

    return wrapper


def emit(result: dict, as_json: bool, render) -> None:
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
    else:
        render(result)
