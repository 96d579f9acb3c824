"""``edgepatch cascade fit|run``: a resolution cascade over per-resolution deltas (no TensorFlow)."""

from __future__ import annotations

import click

from edgepatch.cli.options import result_output


def render_fit(result: dict) -> str:
    return (f"cascade {result['resolutions']} thresholds {result['thresholds']}: accuracy {result['accuracy']:.3f} "
            f"at {result['mean_cost']:.2f} ms mean vs best single {result['best_single_resolution']}px "
            f"{result['best_single_accuracy']:.3f} at {result['best_single_cost']:.2f} ms "
            f"({100 * result['cost_reduction']:.0f}% less)")


def render_answers(result: dict) -> str:
    return "\n".join(f"{x['image']}: {x['label']} {x['probability']:.3f} @{x['resolution']}px"
                     for x in result["results"])


@click.group()
def cascade():
    """Resolution cascade: lowest resolution first, escalate when unsure (paper appendix C).

    \b
    Examples:
      edgepatch cascade fit --base ship/base.tflite --delta ship/f_96.delta --delta ship/f_160.delta \\
          --data data/flowers --out cascade.json
      edgepatch cascade run --cascade cascade.json daisy.jpg
    """


@cascade.command()
@click.option("--base", "base_path", required=True, help="The shared base (.tflite or .onnx).")
@click.option("--delta", "delta_paths", multiple=True, required=True, help="One delta per resolution (2+).")
@click.option("--data", "data_dir", required=True, help="Validation images: DIR/test/<class>/ or DIR/<class>/.")
@click.option("--tolerance", default=0.005, show_default=True, type=float,
              help="Accuracy the cascade may give up vs the best single resolution (0.005 = 0.5 points).")
@click.option("--out", "out_path", required=True, help="Cascade file to write (JSON).")
@result_output(render_fit)
def fit(base_path, delta_paths, data_dir, tolerance, out_path):
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
    return {**result.to_json(), "costs_ms": stages.costs_ms, "cascade": out_path}


@cascade.command()
@click.option("--cascade", "cascade_path", required=True, help="A file written by `cascade fit`.")
@click.argument("images", nargs=-1, required=True)
@result_output(render_answers)
def run(cascade_path, images):
    """Classify IMAGES with a fitted cascade.

    \b
    Example:
      edgepatch cascade run --cascade cascade.json daisy.jpg
    """
    from edgepatch.apps.cascade import CascadeRunner

    return {"results": CascadeRunner(cascade_path).classify(list(images))}
