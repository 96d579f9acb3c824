"""``edgepatch cascade fit|run``: a resolution cascade over per-resolution deltas (no TensorFlow)."""

from __future__ import annotations

import click

from edgepatch.cli.options import emit, expected_errors


@click.group()
def cascade():
    """Resolution cascade: lowest resolution first, escalate when unsure (paper appendix C)."""


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
    from edgepatch.apps.cascade import fit_cascade, measure_stages, save_cascade
    from edgepatch.train.data import scan_image_folders
    from edgepatch.runtime import load_base

    stages = measure_stages(load_base(base_path), delta_paths, scan_image_folders(data_dir))
    result = fit_cascade(stages.probabilities, stages.labels, stages.costs_ms, tolerance)
    save_cascade(out_path, result, stages.deltas, base_path)
    emit({**result.to_json(), "costs_ms": stages.costs_ms, "cascade": out_path}, as_json, lambda r: click.echo(
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
    from edgepatch.apps.cascade import CascadeRunner

    results = CascadeRunner(cascade_path).classify(list(images))
    emit({"results": results}, as_json, lambda r: click.echo("\n".join(
        f"{x['image']}: {x['label']} {x['probability']:.3f} @{x['resolution']}px" for x in r["results"])))
