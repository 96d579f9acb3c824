"""What every CLI command shares: one-line expected errors (exit 2), ``--json`` output, list options."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable

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


def emit(result: dict, as_json: bool, render: Callable[[dict], str]) -> None:
    """Print ``result`` on stdout: as sorted, indented JSON, or as the text ``render`` makes of it."""
    click.echo(json.dumps(result, indent=2, sort_keys=True) if as_json else render(result))


def result_output(render: Callable[[dict], str]):
    """Give a command ``--json`` and print the dict it returns (see ``emit``); expected errors as one line.

    Put it directly above the command's function, in place of ``expected_errors``;
    the function then returns its result instead of printing it.
    """

    def decorate(command):
        @functools.wraps(command)
        def print_result(*args, as_json: bool, **kwargs):
            emit(command(*args, **kwargs), as_json, render)

        with_json = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(print_result)
        return expected_errors(with_json)

    return decorate


def comma_list(value: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [v.strip() for v in value.split(",") if v.strip()]
