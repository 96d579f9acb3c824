"""``edgepatch convert``: fold BN, emit one shared base and a delta per task (imports TensorFlow when run)."""

from __future__ import annotations

import click

from edgepatch.cli.options import comma_list, result_output


def render_conversion(result: dict) -> str:
    lines = [f"base.{fmt}: {n:,} bytes" for fmt, n in result["base_bytes"].items()]
    lines += [f"{t['name']}.delta: {t['delta_bytes']:,} bytes, parity max-abs "
              + ", ".join(f"{fmt} {v:.1e}" for fmt, v in t["parity_max_abs"].items())
              + f" on {t['parity_inputs']}" for t in result["tasks"]]
    return "\n".join(lines)


@click.command()
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
              help="For --quantize: DIR/base/ and DIR/<task>/ hold each one's calibration images. Default: the "
              "training images each patch records (edgepatch train records them), the base all tasks' together.")
@click.option("--int8-delta", "int8_delta", type=click.Choice(["auto", "compact", "exact"]), default="auto",
              show_default=True, help="For --quantize: conv scales and biases as refold codes (compact: about an "
              "eighth of the bytes, near int8 precision), bit-exact, or auto: compact where it agrees with the "
              "task's own int8 model on 99% of its calibration images, else exact.")
@result_output(render_conversion)
def convert(model_path, patch_list, out_dir, formats, dtype, head_width, quantize, calibration_dir, int8_delta):
    """Fold BN and emit ONE shared base (.tflite/.onnx) plus one delta per task.

    \b
    Example:
      edgepatch convert --model runs/flowers/base.keras --patches runs/flowers/flowers.patch --out ship/
    """
    from edgepatch.apps.jobs import convert_command

    return convert_command(model_path, comma_list(patch_list), out_dir, tuple(comma_list(formats)), dtype,
                           head_width, quantize, calibration_dir, int8_delta)
