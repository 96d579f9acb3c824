"""The ``edgepatch`` command line: a thin click group over the library.

Each command group lives in its own module (train, convert, inspect_run,
demo, bench, cascade, ship); this one only registers them. Results go to
stdout (JSON with ``--json``, see ``options.result_output``); progress and
logs to stderr. Every expected failure is one line on stderr and exit
status 2. TensorFlow is imported only inside the commands that train or
convert.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

import click

from edgepatch.cli.bench import bench
from edgepatch.cli.cascade import cascade
from edgepatch.cli.check import check
from edgepatch.cli.convert import convert
from edgepatch.cli.demo import demo
from edgepatch.cli.eval import eval_command
from edgepatch.cli.inspect_run import inspect, run
from edgepatch.cli.options import EXIT_EXPECTED_ERROR
from edgepatch.cli.ship import keygen, pack, serve, sign_delta, verify
from edgepatch.cli.train import train

COMMANDS = (train, check, convert, inspect, run, eval_command, demo, bench, cascade, pack, keygen, sign_delta, verify,
            serve)


class OneLineErrorGroup(click.Group):
    """A group whose click usage errors are one stderr line, ``error: ... (see '... --help')``, exit 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            returned = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as error:  # a bare group: show its help, as click does
            error.show()
            sys.exit(error.exit_code)
        except click.UsageError as error:
            click.echo(f"error: {_one_line(error.format_message())} (see '{_command_path(error.ctx)} --help')",
                       err=True)
            sys.exit(EXIT_EXPECTED_ERROR)
        except click.ClickException as error:
            click.echo(f"error: {_one_line(error.format_message())}", err=True)
            sys.exit(EXIT_EXPECTED_ERROR)
        except click.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(returned if isinstance(returned, int) else 0)


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _command_path(ctx: click.Context | None) -> str:
    """``edgepatch run``, whatever name the program was started under."""
    names = []
    while ctx is not None:
        names.append(ctx.info_name if ctx.parent is not None else "edgepatch")
        ctx = ctx.parent
    return " ".join(reversed(names or ["edgepatch"]))


def _quiet_libraries() -> None:
    """Keep numpy, PIL, TensorFlow/Keras warnings and absl logs off stderr (see --verbose)."""
    warnings.simplefilter("ignore")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("absl").setLevel(logging.ERROR)


@click.group(cls=OneLineErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgepatch")
@click.option("--verbose", is_flag=True, help="Show library warnings and logs (numpy, PIL, TensorFlow) on stderr.")
def main(verbose):
    """K tasks for the price of one model: train per-task patches, ship one base + tiny deltas.

    \b
    Example (the whole pipeline on built-in data, offline):
      edgepatch demo --out demo_out
    """
    if not verbose:
        _quiet_libraries()


for _command in COMMANDS:
    main.add_command(_command)

if __name__ == "__main__":
    main()
