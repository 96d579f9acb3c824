"""``edgepatch eval``: accuracy of a shipped task on a labelled image folder, per runtime (no TensorFlow
unless ``--model`` is given)."""

from __future__ import annotations

import os

import click

from edgepatch.cli.options import result_output
from edgepatch.errors import MissingFileError, UsageError


def render_evaluation(result: dict) -> str:
    agreement = result.get("agreement_vs_keras", {})
    lines = [f"{result['images']} images, {len(result['classes'])} classes in {result['data']}"]
    for label, accuracy in result["accuracy"].items():
        versus = f", top-1 agreement with keras {agreement[label]:.3f}" if label in agreement else ""
        lines.append(f"{label}: accuracy {accuracy:.3f}{versus}")
        lines.append("  per class: " + ", ".join(f"{name} {value:.3f}"
                                                 for name, value in result["per_class"][label].items()))
    if result.get("confusion_png"):
        lines.append(f"confusion matrices: {result['confusion_png']}")
    return "\n".join(lines)


@click.command(name="eval")
@click.option("--base", "base_paths", multiple=True, required=True,
              help="A base (.tflite float or int8, .onnx); repeat it, one per --delta.")
@click.option("--delta", "delta_paths", multiple=True, required=True,
              help="The task's delta for the --base at the same position (.delta, .int8.delta).")
@click.option("--data", "data_dir", required=True, help="Labelled images: DIR/test/<class>/ or DIR/<class>/.")
@click.option("--model", "model_path", default=None,
              help="The .keras base the patch was trained on (imports TensorFlow).")
@click.option("--patch", "patch_path", default=None, help="The task's .patch: with --model, the Keras task model.")
@click.option("--batch", default=32, show_default=True, type=click.IntRange(1, 1024), help="Images decoded at once.")
@click.option("--confusion", "confusion_path", default=None, help="Write the confusion matrices as a PNG heat map.")
@click.option("--quiet", is_flag=True, help="No progress line on stderr.")
@result_output(render_evaluation)
def eval_command(base_paths, delta_paths, data_dir, model_path, patch_path, batch, confusion_path, quiet):
    """Accuracy, per-class accuracy and confusion of a task through each runtime given.

    --base and --delta pair up in order; each pair is run as `edgepatch run`
    runs it. Class folders must be the delta's classes, in any order. With
    --model/--patch the Keras task model is evaluated on the same images, and
    each runtime's top-1 agreement with it is reported.

    \b
    Example:
      edgepatch eval --base ship/base.tflite --delta ship/flowers.delta \\
          --base ship/base_int8.tflite --delta ship/flowers.int8.delta --data data/flowers --confusion cm.png
    """
    from edgepatch.apps.evaluate import evaluate, write_confusion_png

    if len(base_paths) != len(delta_paths):
        raise UsageError(f"--base and --delta pair up in order: got {len(base_paths)} --base and "
                         f"{len(delta_paths)} --delta")
    if confusion_path and not os.path.isdir(os.path.dirname(os.path.abspath(confusion_path))):
        raise MissingFileError(f"--confusion: directory of '{confusion_path}' does not exist")
    result = evaluate(list(zip(base_paths, delta_paths)), data_dir, model_path, patch_path, batch, not quiet)
    if confusion_path:
        write_confusion_png(confusion_path, result)
        result["confusion_png"] = confusion_path
    return result
