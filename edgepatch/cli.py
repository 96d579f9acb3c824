"""The ``edgepatch`` command line: a thin click group over the library.

Results go to stdout (JSON with ``--json``); progress and logs to stderr.
Every expected failure is one line on stderr and exit status 2. TensorFlow
is imported only inside the commands that train or convert.
"""

from __future__ import annotations

import os

import click

from edgepatch.cli_bench import bench
from edgepatch.cli_cascade import cascade
from edgepatch.cli_common import emit, expected_errors
from edgepatch.cli_ship import keygen, pack, serve, verify


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgepatch")
def main():
    """K tasks for the price of one model: train per-task patches, ship one base + tiny deltas.

    \b
    Example (the whole pipeline on built-in data, offline):
      edgepatch demo --out demo_out
    """


@main.command()
@click.option("--base", "backbone", default="mobilenet_v2", show_default=True, help="Backbone family.")
@click.option("--alpha", default=1.0, show_default=True, type=float, help="Width multiplier.")
@click.option("--resolution", default=224, show_default=True, type=int, help="Square input size.")
@click.option("--weights", default="imagenet", show_default=True,
              help="imagenet (Keras download) | none (random) | PATH to a .h5 no-top weights file "
                   "or a .keras checkpoint to transfer from.")
@click.option("--data", "data_dir", required=True, help="Class folders: DIR/{train,test}/<class>/ or DIR/<class>/.")
@click.option("--task", "task_name", default=None, help="Task name (default: the data folder's name).")
@click.option("--patch", "patch_spec", default="scale_bias,logits", show_default=True,
              help="Kinds to train: scale_bias, depthwise, logits (comma-separated). Without logits the "
                   "head stays at its random initial value (paper 5.2). 'full' fine-tunes everything "
                   "and writes OUT/model.keras instead of a patch (it has no delta).")
@click.option("--epochs", default=5, show_default=True, type=int)
@click.option("--lr", default=None, type=float, help="Learning rate (default 1e-3 for patches, 1e-4 for full training).")
@click.option("--batch-size", default=32, show_default=True, type=int)
@click.option("--bn-stats", default=None, help="BN statistics handling: frozen | reestimate | momentum "
                                               "(default: frozen, measured best; see README).")
@click.option("--bn-momentum", default=0.9, show_default=True, type=float, help="For --bn-stats momentum.")
@click.option("--holdout", default=0.2, show_default=True, type=float, help="Test fraction when DIR has no test/.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--strategy", default="none", show_default=True,
              help="tf.distribute strategy: none | mirrored | multi_worker (see `multitask --help`).")
@click.option("--out", "out_dir", required=True, help="Writes OUT/base.keras and OUT/<task>.patch; "
              "a killed run restarted with the same OUT resumes from its last epoch.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@expected_errors
def train(backbone, alpha, resolution, weights, data_dir, task_name, patch_spec, epochs, lr, batch_size,
          bn_stats, bn_momentum, holdout, seed, strategy, out_dir, as_json):
    """Train a task patch by transfer: everything outside the patch is frozen.

    \b
    Example:
      edgepatch train --weights imagenet --resolution 128 --data flowers/ --patch scale_bias,logits --out runs/flowers
    """
    from edgepatch.workflows import train_command

    result = train_command(
        backbone=backbone, alpha=alpha, resolution=resolution, weights=weights, data_dir=data_dir,
        task_name=task_name, patch_spec=patch_spec, epochs=epochs, lr=lr, batch_size=batch_size,
        bn_stats=bn_stats, bn_momentum=bn_momentum, holdout=holdout, seed=seed, out_dir=out_dir, strategy=strategy,
    )
    written = ("model", "base_checkpoint", "patch")
    emit(result, as_json, lambda r: click.echo(
        f"task {r['task']}: train accuracy {r['train_accuracy']:.3f}, test accuracy {r['test_accuracy']:.3f}, "
        f"{r['trained_parameters']:,} trained parameters\n" + "\n".join(f"wrote {r[k]}" for k in written if k in r)))


def _task_option(value: str, default_resolution: int) -> tuple[str, str, int]:
    """Parse NAME=DIR[@RESOLUTION]."""
    name, sep, rest = value.partition("=")
    directory, at, resolution = rest.partition("@")
    if not sep or not name or not directory or (at and not resolution.isdigit()):
        raise click.BadParameter(f"expected NAME=DIR or NAME=DIR@RESOLUTION. Received '{value}'")
    return name, directory, int(resolution) if at else default_resolution


_shared_training_options = [
    click.option("--base", "backbone", default="mobilenet_v2", show_default=True, help="Backbone family."),
    click.option("--alpha", default=1.0, show_default=True, type=float, help="Width multiplier."),
    click.option("--weights", default="imagenet", show_default=True,
                 help="imagenet | none | PATH (.h5 no-top weights or a .keras checkpoint)."),
    click.option("--epochs", default=5, show_default=True, type=int),
    click.option("--lr", default=None, type=float, help="Learning rate (default 1e-3)."),
    click.option("--batch-size", default=32, show_default=True, type=int),
    click.option("--seed", default=0, show_default=True, type=int),
    click.option("--strategy", default="none", show_default=True,
                 help="tf.distribute strategy: none | mirrored (all GPUs, or 2 CPU replicas) | "
                      "multi_worker (cluster from TF_CONFIG)."),
    click.option("--out", "out_dir", required=True, help="Writes OUT/base.keras and OUT/<task>.patch per task."),
    click.option("--json", "as_json", is_flag=True),
]


def _training_options(command):
    for option in reversed(_shared_training_options):
        command = option(command)
    return command


def _render_multitask(result: dict) -> None:
    for t in result["tasks"]:
        click.echo(f"{t['task']} @{t['resolution']}: train {t['train_accuracy']:.3f}, test {t['test_accuracy']:.3f}")
    click.echo(f"wrote {result['base_checkpoint']}")


@main.command()
@click.option("--task", "task_values", multiple=True, required=True,
              help="NAME=DIR or NAME=DIR@RESOLUTION, once per task (at least 2).")
@click.option("--resolution", default=224, show_default=True, type=int, help="Resolution of tasks without @RES.")
@click.option("--private", "private_spec", default="scale_bias,logits", show_default=True,
              help="Patch kinds private to each task; every other weight is shared and trained by all.")
@_training_options
@expected_errors
def multitask(task_values, resolution, private_spec, backbone, alpha, weights, epochs, lr, batch_size, seed,
              strategy, out_dir, as_json):
    """Train several tasks at once: shared weights, one private patch per task (paper 5.3).

    \b
    Example:
      edgepatch multitask --task flowers=data/flowers --task cars=data/cars --resolution 128 --out runs/mt
    """
    from edgepatch.workflows import multitask_command

    tasks = [_task_option(value, resolution) for value in task_values]
    result = multitask_command(backbone=backbone, alpha=alpha, weights=weights, tasks=tasks,
                               private_spec=private_spec, epochs=epochs, lr=lr, batch_size=batch_size,
                               seed=seed, out_dir=out_dir, strategy=strategy)
    emit(result, as_json, _render_multitask)


@main.command()
@click.option("--data", "data_dir", required=True, help="One dataset of class folders.")
@click.option("--resolutions", default="96,128,160,192,224", show_default=True,
              help="Comma-separated input sizes; one task each.")
@click.option("--private", "private_spec", default="scale_bias", show_default=True,
              help="Kinds private per resolution, or 'none' for the all-shared baseline (no deltas).")
@_training_options
@expected_errors
def multires(data_dir, resolutions, private_spec, backbone, alpha, weights, epochs, lr, batch_size, seed,
             strategy, out_dir, as_json):
    """Train one model for several input resolutions, a private S/B patch each (paper 5.4).

    \b
    Example:
      edgepatch multires --data data/flowers --resolutions 96,128,160 --out runs/mr
    """
    from edgepatch.workflows import multitask_command

    try:
        sizes = [int(r) for r in _csv(resolutions)]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers. Received '{resolutions}'") from None
    name = os.path.basename(os.path.normpath(data_dir))
    tasks = [(f"{name}_{size}", data_dir, size) for size in sizes]
    result = multitask_command(backbone=backbone, alpha=alpha, weights=weights, tasks=tasks,
                               private_spec=private_spec, epochs=epochs, lr=lr, batch_size=batch_size,
                               seed=seed, out_dir=out_dir, strategy=strategy)
    emit(result, as_json, _render_multitask)


@main.command()
@click.option("--model", "model_path", required=True, help="Base checkpoint (.keras) the patches were trained on.")
@click.option("--patches", "patch_list", default="", help="Comma-separated .patch files, one per task "
              "(none: emit the base alone, e.g. for a fully fine-tuned model).")
@click.option("--out", "out_dir", required=True, help="Output directory (replaced atomically).")
@click.option("--formats", default="tflite,onnx", show_default=True, help="Base formats to emit.")
@click.option("--dtype", default="float32", show_default=True, help="Delta tensor dtype: float32 | float16.")
@click.option("--head-width", default=None, type=int, help="Base head outputs (default: the widest task).")
@click.option("--quantize", type=click.Choice(["int8"]), default=None,
              help="Also emit an int8 base (base_int8.tflite) and <task>.int8.delta files.")
@click.option("--calibration", "calibration_dir", default=None,
              help="For --quantize: DIR/base/ and DIR/<task>/ hold each one's calibration images.")
@click.option("--json", "as_json", is_flag=True)
@expected_errors
def convert(model_path, patch_list, out_dir, formats, dtype, head_width, quantize, calibration_dir, as_json):
    """Fold BN and emit ONE shared base (.tflite/.onnx) plus one delta per task.

    \b
    Example:
      edgepatch convert --model runs/flowers/base.keras --patches runs/flowers/flowers.patch --out ship/
    """
    from edgepatch.workflows import convert_command

    result = convert_command(model_path, _csv(patch_list), out_dir, tuple(_csv(formats)), dtype, head_width,
                             quantize, calibration_dir)
    emit(result, as_json, lambda r: click.echo("\n".join(
        [f"base.{fmt}: {n:,} bytes" for fmt, n in r["base_bytes"].items()]
        + [f"{t['name']}.delta: {t['delta_bytes']:,} bytes, parity max-abs "
           + ", ".join(f"{fmt} {v:.1e}" for fmt, v in t["parity_max_abs"].items()) for t in r["tasks"]])))


@main.command()
@click.argument("path")
@click.option("--base", "base_path", default=None, help="Base file to compare a delta with (default: base.tflite beside it).")
@click.option("--json", "as_json", is_flag=True)
@expected_errors
def inspect(path, base_path, as_json):
    """Describe a base (.tflite/.onnx), a delta (.delta) or a patch (.patch).

    \b
    Example:
      edgepatch inspect ship/flowers.delta
    """
    from edgepatch.describe import describe_file, render

    emit(describe_file(path, base_path), as_json, lambda r: click.echo(render(r)))


@main.command()
@click.option("--base", "base_path", required=True, help="Shared base (.tflite or .onnx).")
@click.option("--delta", "delta_path", required=True, help="The task's delta.")
@click.option("--top-k", default=3, show_default=True, type=click.IntRange(1, 100))
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--json", "as_json", is_flag=True)
@click.argument("images", nargs=-1, required=True)
@expected_errors
def run(base_path, delta_path, top_k, threads, as_json, images):
    """Classify IMAGES with a task: apply its delta to the base, then run.

    \b
    Example:
      edgepatch run --base ship/base.tflite --delta ship/flowers.delta daisy.jpg
    """
    from edgepatch.runtime import load_base, read_task_delta
    from edgepatch.runtime.images import load_images

    delta = read_task_delta(delta_path)
    runner = load_base(base_path, threads).apply(delta)
    batch = load_images(list(images), delta.task)
    results = [
        {"image": image, "top_k": [{"label": p.label, "probability": p.probability} for p in ranked]}
        for image, ranked in zip(images, runner.top_k(batch, top_k))
    ]
    output = {"task": delta.task.name, "swap_ms": runner.swap_seconds * 1e3, "results": results}
    emit(output, as_json, lambda r: click.echo("\n".join(
        f"{x['image']}: " + ", ".join(f"{p['label']} {p['probability']:.3f}" for p in x["top_k"])
        for x in r["results"])))


@main.command()
@click.option("--out", "out_dir", default="demo_out", show_default=True, help="Where to write data, models and deltas.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--quick", is_flag=True, help="Fewer images and epochs (for tests).")
@expected_errors
def demo(out_dir, as_json, quick):
    """Run the whole pipeline offline on built-in procedural data.

    Pretrains a small MobileNetV2, trains S/B+logits patches for two transfer
    tasks, converts to one base + deltas, and checks both runtimes.

    \b
    Example:
      edgepatch demo --out demo_out --json
    """
    from edgepatch.demo import render, run_demo

    emit(run_demo(os.path.abspath(out_dir), quick=quick), as_json, lambda r: click.echo(render(r)))


for _command in (bench, cascade, pack, keygen, verify, serve):  # defined in their own modules
    main.add_command(_command)

if __name__ == "__main__":
    main()
