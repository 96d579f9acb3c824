"""The ``edgepatch`` command line: a thin click group over the library.

Each command group lives in its own module (train, convert, inspect_run,
demo, bench, cascade, ship); this one only registers them. Results go to
stdout (JSON with ``--json``, see ``options.result_output``); progress and
logs to stderr. Every expected failure is one line on stderr and exit
status 2. TensorFlow is imported only inside the commands that train or
convert.
"""

from __future__ import annotations

import click

from edgepatch.cli.bench import bench
from edgepatch.cli.cascade import cascade
from edgepatch.cli.convert import convert
from edgepatch.cli.demo import demo
from edgepatch.cli.inspect_run import inspect, run
from edgepatch.cli.ship import keygen, pack, serve, verify
from edgepatch.cli.train import train

COMMANDS = (train, convert, inspect, run, demo, bench, cascade, pack, keygen, verify, serve)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgepatch")
def main():
    """K tasks for the price of one model: train per-task patches, ship one base + tiny deltas.

    \b
    Example (the whole pipeline on built-in data, offline):
      edgepatch demo --out demo_out
    """


for _command in COMMANDS:
    main.add_command(_command)

if __name__ == "__main__":
    main()
