"""``edgepatch inspect`` and ``edgepatch run``: read shipped files and classify with them (no TensorFlow)."""

from __future__ import annotations

import click

from edgepatch.cli.options import result_output


def _render_description(result: dict) -> str:
    from edgepatch.apps.inspect import render

    return render(result)


def render_classification(result: dict) -> str:
    return "\n".join(f"{x['image']}: " + ", ".join(f"{p['label']} {p['probability']:.3f}" for p in x["top_k"])
                     for x in result["results"])


@click.command()
@click.argument("path")
@click.option("--base", "base_path", default=None, help="Base file to compare a delta with (default: base.tflite beside it).")
@result_output(_render_description)
def inspect(path, base_path):
    """Describe a base (.tflite/.onnx), a delta (.delta) or a patch (.patch).

    \b
    Example:
      edgepatch inspect ship/flowers.delta
    """
    from edgepatch.apps.inspect import describe_file

    return describe_file(path, base_path)


@click.command()
@click.option("--base", "base_path", required=True, help="Shared base (.tflite or .onnx).")
@click.option("--delta", "delta_path", required=True, help="The task's delta.")
@click.option("--top-k", default=3, show_default=True, type=click.IntRange(1, 100))
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--pubkey", "pubkeys", multiple=True,
              help="Trusted public key (PEM; repeat for rotation): accept the delta only with a valid DELTA.sig "
                   "by one of them. Without it a delta is integrity-checked, not authenticated.")
@click.argument("images", nargs=-1, required=True)
@result_output(render_classification)
def run(base_path, delta_path, top_k, threads, pubkeys, images):
    """Classify IMAGES with a task: apply its delta to the base, then run.

    \b
    Example:
      edgepatch run --base ship/base.tflite --delta ship/flowers.delta daisy.jpg
      edgepatch run --base ship/base.tflite --delta ship/flowers.delta --pubkey publisher.pub daisy.jpg
    """
    from edgepatch.runtime import load_base, read_task_delta
    from edgepatch.runtime.images import load_images

    delta = read_task_delta(delta_path, list(pubkeys) or None)
    runner = load_base(base_path, threads).apply(delta)
    batch = load_images(list(images), delta.task)
    results = [
        {"image": image, "top_k": [{"label": p.label, "probability": p.probability} for p in ranked]}
        for image, ranked in zip(images, runner.top_k(batch, top_k))
    ]
    return {"task": delta.task.name, "swap_ms": runner.swap_seconds * 1e3, "results": results}
