"""The ``edgepatch`` command line: a thin click group over the library.

Results go to stdout (JSON with ``--json``); progress and logs to stderr.
Every expected failure is one line on stderr and exit status 2. TensorFlow
is imported only inside the commands that train or convert.
"""

from __future__ import annotations

import os

import click

from edgepatch.cli.bench import bench
from edgepatch.cli.cascade import cascade
from edgepatch.cli.options import emit, expected_errors
from edgepatch.cli.ship import keygen, pack, serve, verify


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


def _task_option(value: str, default_resolution: int) -> tuple[str, str, int]:
    """Parse NAME=DIR[@RESOLUTION]."""
    name, sep, rest = value.partition("=")
    directory, at, resolution = rest.partition("@")
    if not sep or not name or not directory or (at and not resolution.isdigit()):
        raise click.BadParameter(f"expected NAME=DIR or NAME=DIR@RESOLUTION. Received '{value}'", param_hint="--task")
    return name, directory, int(resolution) if at else default_resolution


def _resolution_list(value: str) -> list[int]:
    try:
        return [int(r) for r in _csv(value)]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers. Received '{value}'",
                                 param_hint="--resolutions") from None


def _render_training(result: dict) -> None:
    for t in result.get("tasks", [result]):
        click.echo(f"{t['task']} @{t.get('resolution', '')}: train accuracy {t['train_accuracy']:.3f}, "
                   f"test accuracy {t['test_accuracy']:.3f}")
    for key in ("model", "base_checkpoint", "patch"):
        if key in result:
            click.echo(f"wrote {result[key]}")


@main.command()
@click.option("--mode", type=click.Choice(["transfer", "multitask", "multires"]), default="transfer",
              show_default=True, help="transfer: one task, all but the patch frozen (paper 5.2). multitask: "
              "several tasks, shared weights trained by all, a private patch each (5.3). multires: one "
              "dataset, one task per --resolutions entry (5.4).")
@click.option("--base", "backbone", default="mobilenet_v2", show_default=True, help="Backbone family.")
@click.option("--alpha", default=1.0, show_default=True, type=float, help="Width multiplier.")
@click.option("--resolution", default=224, show_default=True, type=int, help="Square input size.")
@click.option("--weights", default="imagenet", show_default=True,
              help="imagenet (Keras download) | none (random) | PATH to a .h5 no-top weights file "
                   "or a .keras checkpoint to start from.")
@click.option("--data", "data_dir", default=None,
              help="transfer/multires: class folders, DIR/{train,test}/<class>/ or DIR/<class>/.")
@click.option("--task", "task_values", multiple=True,
              help="multitask: NAME=DIR or NAME=DIR@RESOLUTION, once per task; transfer: the task name.")
@click.option("--resolutions", default="96,128,160", show_default=True, help="multires: input sizes, one task each.")
@click.option("--patch", "patch_spec", default=None,
              help="Kinds private to each task: scale_bias, depthwise, logits (comma-separated). Default: "
                   "scale_bias,logits (multires: scale_bias; 'none' there is the all-shared baseline). In "
                   "transfer, without logits the head stays at its random initial value (paper 5.2), and "
                   "'full' fine-tunes everything into OUT/model.keras (no delta).")
@click.option("--epochs", default=5, show_default=True, type=int)
@click.option("--lr", default=None, type=float, help="Learning rate (default 1e-3; 1e-4 for full fine-tuning).")
@click.option("--batch-size", default=32, show_default=True, type=int)
@click.option("--bn-stats", default=None, help="transfer: BN statistics handling, frozen | reestimate | momentum "
                                               "(default: frozen, measured best; see README).")
@click.option("--bn-momentum", default=0.9, show_default=True, type=float, help="For --bn-stats momentum.")
@click.option("--holdout", default=0.2, show_default=True, type=float, help="Test fraction when DIR has no test/.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--strategy", default="none", show_default=True,
              help="tf.distribute: none | mirrored (all GPUs, or 2 CPU replicas) | multi_worker (TF_CONFIG).")
@click.option("--out", "out_dir", required=True, help="Writes OUT/base.keras and OUT/<task>.patch per task; "
              "a killed run restarted with the same OUT resumes from its last epoch.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@expected_errors
def train(mode, backbone, alpha, resolution, weights, data_dir, task_values, resolutions, patch_spec, epochs, lr,
          batch_size, bn_stats, bn_momentum, holdout, seed, strategy, out_dir, as_json):
    """Train task patches: transfer, multi-task or multi-resolution.

    \b
    Examples:
      edgepatch train --weights imagenet --resolution 128 --data flowers/ --out runs/flowers
      edgepatch train --mode multitask --task flowers=flowers/ --task cars=cars/@160 --out runs/mt
      edgepatch train --mode multires --data flowers/ --resolutions 96,128,160 --out runs/mr
    """
    from edgepatch.apps.jobs import multitask_command, train_command

    common = dict(backbone=backbone, alpha=alpha, weights=weights, epochs=epochs, lr=lr, batch_size=batch_size,
                  seed=seed, out_dir=out_dir, strategy=strategy)
    if mode != "multitask" and not data_dir:
        raise click.UsageError(f"--mode {mode} needs --data")
    if mode == "transfer":
        if len(task_values) > 1:
            raise click.BadParameter("transfer trains one task; give at most one --task NAME", param_hint="--task")
        result = train_command(resolution=resolution, data_dir=data_dir, task_name=task_values[0] if task_values else None,
                               patch_spec=patch_spec or "scale_bias,logits", bn_stats=bn_stats,
                               bn_momentum=bn_momentum, holdout=holdout, **common)
    else:
        if mode == "multitask":
            tasks = [_task_option(value, resolution) for value in task_values]
        else:
            name = os.path.basename(os.path.normpath(data_dir))
            tasks = [(f"{name}_{size}", data_dir, size) for size in _resolution_list(resolutions)]
        default_private = "scale_bias,logits" if mode == "multitask" else "scale_bias"
        result = multitask_command(tasks=tasks, private_spec=patch_spec or default_private, **common)
    emit(result, as_json, _render_training)


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
@click.option("--int8-delta", "int8_delta", type=click.Choice(["auto", "compact", "exact"]), default="auto",
              show_default=True, help="For --quantize: conv scales and biases as refold codes (compact: about an "
              "eighth of the bytes, near int8 precision), bit-exact, or auto: compact where it agrees with the "
              "task's own int8 model on 99% of its calibration images, else exact.")
@click.option("--json", "as_json", is_flag=True)
@expected_errors
def convert(model_path, patch_list, out_dir, formats, dtype, head_width, quantize, calibration_dir, int8_delta,
            as_json):
    """Fold BN and emit ONE shared base (.tflite/.onnx) plus one delta per task.

    \b
    Example:
      edgepatch convert --model runs/flowers/base.keras --patches runs/flowers/flowers.patch --out ship/
    """
    from edgepatch.apps.jobs import convert_command

    result = convert_command(model_path, _csv(patch_list), out_dir, tuple(_csv(formats)), dtype, head_width,
                             quantize, calibration_dir, int8_delta)
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
    from edgepatch.apps.inspect import describe_file, render

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
    from edgepatch.apps.demo import render, run_demo

    emit(run_demo(os.path.abspath(out_dir), quick=quick), as_json, lambda r: click.echo(render(r)))


for _command in (bench, cascade, pack, keygen, verify, serve):  # defined in their own modules
    main.add_command(_command)

if __name__ == "__main__":
    main()
