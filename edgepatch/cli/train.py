"""``edgepatch train``: transfer, multi-task or multi-resolution patch training (imports TensorFlow when run)."""

from __future__ import annotations

import os

import click

from edgepatch.cli.options import comma_list, result_output
from edgepatch.train.budget import SELECTORS


def _task_option(value: str, default_resolution: int) -> tuple[str, str, int]:
    """Parse NAME=DIR[@RESOLUTION]."""
    name, sep, rest = value.partition("=")
    directory, at, resolution = rest.partition("@")
    if not sep or not name or not directory or (at and not resolution.isdigit()):
        raise click.BadParameter(f"expected NAME=DIR or NAME=DIR@RESOLUTION. Received '{value}'", param_hint="--task")
    return name, directory, int(resolution) if at else default_resolution


def _resolution_list(value: str) -> list[int]:
    try:
        return [int(r) for r in comma_list(value)]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers. Received '{value}'",
                                 param_hint="--resolutions") from None


def render_training(result: dict) -> str:
    lines = [f"{t['task']} @{t.get('resolution', '')}: train accuracy {t['train_accuracy']:.3f}, "
             f"test accuracy {t['test_accuracy']:.3f}" for t in result.get("tasks", [result])]
    lines += [f"wrote {result[key]}" for key in ("model", "base_checkpoint", "patch") if key in result]
    return "\n".join(lines)


@click.command()
@click.option("--mode", type=click.Choice(["transfer", "multitask", "multires"]), default="transfer",
              show_default=True, help="transfer: one task, all but the patch frozen (paper 5.2). multitask: "
              "several tasks, shared weights trained by all, a private patch each (5.3). multires: one "
              "dataset, one task per --resolutions entry (5.4).")
@click.option("--base", "backbone", default=None,
              help="Backbone family: mobilenet_v2 (default), mobilenet_v3_small, mobilenet_v3_large, "
                   "efficientnet_b0, resnet50, inception_v3. With --weights a .keras checkpoint, the "
                   "checkpoint's own architecture is used and --base only names its family for "
                   "--preprocessing auto.")
@click.option("--alpha", default=1.0, show_default=True, type=float,
              help="Width multiplier (mobilenet_v2: 0.35..1.4; mobilenet_v3_*: 0.75, 1.0; others 1.0). "
                   "Ignored with a .keras checkpoint.")
@click.option("--preprocessing", type=click.Choice(["auto", "tf", "torch", "caffe", "raw"]), default="auto",
              show_default=True, help="What the task records as its input: tf x/127.5-1; torch x/255 then "
              "ImageNet mean/std; caffe BGR minus ImageNet means; raw 0..255 (models that rescale inside). "
              "auto: raw when the model starts with Rescaling/Normalization, else the --base family's mode.")
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
                   "'full' fine-tunes everything into OUT/model.keras (no delta). 'logits' alone trains "
                   "on the backbone's features computed once (exact: the pipeline has no augmentation; a "
                   "model with Dropout or random layers takes the full pass each epoch).")
@click.option("--budget", default=None,
              help="Keep only some layers of the patch's scale_bias/depthwise kinds private, within this many "
                   "parameters (20000) or this share of their full patch (25%), per task (multires: per "
                   "resolution); the rest stay the base's and are not in the delta. The head is not counted.")
@click.option("--selector", type=click.Choice(sorted(SELECTORS)), default="score",
              show_default=True, help="With --budget, how layers are chosen: score (loss-gradient Fisher per "
              "parameter, after fitting the head), learned (a group-lasso warm-up epoch; ranked by movement), "
              "last (nearest the output), random.")
@click.option("--epochs", default=5, show_default=True, type=int)
@click.option("--lr", default=None, type=float, help="Learning rate (default: 3e-3 with scale_bias or depthwise, 1e-3 for logits alone, "
                   "1e-4 for full fine-tuning; see the README's defaults table).")
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
@click.option("--quiet", is_flag=True, help="No per-step progress bar on stderr.")
@result_output(render_training)
def train(mode, backbone, alpha, preprocessing, resolution, weights, data_dir, task_values, resolutions, patch_spec,
          budget, selector, epochs, lr, batch_size, bn_stats, bn_momentum, holdout, seed, strategy, out_dir, quiet):
    """Train task patches: transfer, multi-task or multi-resolution.

    \b
    Examples:
      edgepatch train --weights imagenet --resolution 128 --data flowers/ --out runs/flowers
      edgepatch train --mode multitask --task flowers=flowers/ --task cars=cars/@160 --out runs/mt
      edgepatch train --mode multires --data flowers/ --resolutions 96,128,160 --out runs/mr
      edgepatch train --data eurosat/ --resolution 96 --budget 25% --selector score --out runs/eurosat
    """
    from edgepatch.apps.jobs import multitask_command, train_command

    common = dict(backbone=backbone, alpha=alpha, weights=weights, epochs=epochs, lr=lr, batch_size=batch_size,
                  seed=seed, out_dir=out_dir, strategy=strategy, preprocessing=preprocessing, quiet=quiet)
    if mode != "multitask" and not data_dir:
        raise click.UsageError(f"--mode {mode} needs --data")
    if mode == "transfer":
        if len(task_values) > 1:
            raise click.BadParameter("transfer trains one task; give at most one --task NAME", param_hint="--task")
        return train_command(resolution=resolution, data_dir=data_dir, task_name=task_values[0] if task_values else None,
                             patch_spec=patch_spec or "scale_bias,logits", bn_stats=bn_stats,
                             bn_momentum=bn_momentum, holdout=holdout, budget=budget, selector=selector, **common)
    if mode == "multitask":
        tasks = [_task_option(value, resolution) for value in task_values]
    else:
        name = os.path.basename(os.path.normpath(data_dir))
        tasks = [(f"{name}_{size}", data_dir, size) for size in _resolution_list(resolutions)]
    default_private = "scale_bias,logits" if mode == "multitask" else "scale_bias"
    return multitask_command(tasks=tasks, private_spec=patch_spec or default_private, budget=budget, selector=selector,
                             **common)
