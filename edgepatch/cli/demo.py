"""``edgepatch demo``: the whole pipeline offline on built-in procedural data (imports TensorFlow when run)."""

from __future__ import annotations

import os

import click

from edgepatch.cli.options import result_output


def _render_demo(result: dict) -> str:
    from edgepatch.apps.demo import render

    return render(result)


@click.command()
@click.option("--out", "out_dir", default="demo_out", show_default=True, help="Where to write data, models and deltas.")
@click.option("--quick", is_flag=True, help="Fewer images and epochs (for tests).")
@result_output(_render_demo)
def demo(out_dir, quick):
    """Run the whole pipeline offline on built-in procedural data.

    Pretrains a small MobileNetV2, trains S/B+logits patches for two transfer
    tasks, converts to one base + deltas, and checks both runtimes.

    \b
    Example:
      edgepatch demo --out demo_out --json
    """
    from edgepatch.apps.demo import run_demo

    return run_demo(os.path.abspath(out_dir), quick=quick)
