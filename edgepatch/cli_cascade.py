"""``edgepatch cascade fit|run``: a resolution cascade over per-resolution deltas (no TensorFlow)."""

from __future__ import annotations

import statistics

import click

from edgepatch.cli_common import emit, expected_errors


@click.group()
def cascade():
    """Resolution cascade: lowest resolution first, escalate when unsure (paper appendix C)."""


def _median_ms(runner, image, runs: int = 15) -> float:
    runner.time_one(image)  # warm-up
    return statistics.median(runner.time_one(image) for _ in range(runs)) * 1e3


@cascade.command()
@click.option("--base", "base_path", required=True, help="The shared base (.tflite or .onnx).")
@click.option("--delta", "delta_paths", multiple=True, required=True, help="One delta per resolution (2+).")
@click.option("--data", "data_dir", required=True, help="Validation images: DIR/test/<class>/ or DIR/<class>/.")
@click.option("--tolerance", default=0.005, show_default=True, type=float,
              help="Accuracy the cascade may give up vs the best single resolution (0.005 = 0.5 points).")
@click.option("--out", "out_path", required=True, help="Cascade file to write (JSON).")
@click.option("--json", "as_json", is_flag=True)
@expected_errors
def fit(base_path, delta_paths, data_dir, tolerance, out_path, as_json):
    """Fit per-stage confidence thresholds on validation data; costs are measured latencies.

    \b
    Example:
      edgepatch cascade fit --base ship/base.tflite --delta ship/f_96.delta --delta ship/f_160.delta \\
          --data data/flowers --out cascade.json
    """
    import numpy as np

    from edgepatch.cascade import fit_cascade, save_cascade
    from edgepatch.data import scan_image_folders
    from edgepatch.errors import UsageError
    from edgepatch.runtime import load_base, read_task_delta
    from edgepatch.runtime.images import load_images
    from edgepatch.runtime.runner import softmax

    base = load_base(base_path)
    split = scan_image_folders(data_dir)
    labels = np.array([label for _, label in split.test])
    probabilities, costs, deltas = {}, {}, {}
    for path in delta_paths:
        runner = base.apply(read_task_delta(path))
        resolution = runner.task.resolution
        if resolution in probabilities or tuple(runner.task.classes) != split.classes:
            raise UsageError(f"'{path}': each delta needs its own resolution and the data's classes {list(split.classes)}")
        images = load_images([p for p, _ in split.test], runner.task)
        probabilities[resolution] = np.concatenate([softmax(runner.predict(images[i:i + 32]))
                                                    for i in range(0, len(images), 32)])
        costs[resolution] = _median_ms(runner, images[:1])
        deltas[resolution] = path
    result = fit_cascade(probabilities, labels, costs, tolerance)
    save_cascade(out_path, result, deltas, base_path)
    emit({**result.to_json(), "costs_ms": costs, "cascade": out_path}, as_json, lambda r: click.echo(
        f"cascade {r['resolutions']} thresholds {r['thresholds']}: accuracy {r['accuracy']:.3f} at "
        f"{r['mean_cost']:.2f} ms mean vs best single {r['best_single_resolution']}px "
        f"{r['best_single_accuracy']:.3f} at {r['best_single_cost']:.2f} ms ({100 * r['cost_reduction']:.0f}% less)"))


@cascade.command()
@click.option("--cascade", "cascade_path", required=True, help="A file written by `cascade fit`.")
@click.option("--json", "as_json", is_flag=True)
@click.argument("images", nargs=-1, required=True)
@expected_errors
def run(cascade_path, as_json, images):
    """Classify IMAGES with a fitted cascade.

    \b
    Example:
      edgepatch cascade run --cascade cascade.json daisy.jpg
    """
    from edgepatch.cascade import CascadeRunner

    results = CascadeRunner(cascade_path).classify(list(images))
    emit({"results": results}, as_json, lambda r: click.echo("\n".join(
        f"{x['image']}: {x['label']} {x['probability']:.3f} @{x['resolution']}px" for x in r["results"])))
