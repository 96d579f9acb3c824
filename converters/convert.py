"""The conversion pipeline: base checkpoint + task patches -> one base + deltas.

fold (numpy) -> BN-free Keras model -> export .tflite / .onnx -> one delta
per task -> parity check of every (task, runtime) against the Keras task
model. Outputs are staged in a temporary sibling directory and moved into
place only when everything passed, so a failed or killed conversion leaves
the previous output (or nothing).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass, field

import numpy as np

from converters.calibration import parity_images
from converters.make_delta import make_delta
from converters.fold import FoldedSite, fold_batchnorm, fold_input_affines, fold_model
from converters.folded_model import build_folded_model, foldable_pads
from edgepatch.atomic import is_regular_file, make_stage_dir, replace_dir
from edgepatch.format.delta import DELTA_DTYPES, read_delta, write_delta
from edgepatch.errors import FoldError, UsageError
from edgepatch.train.graph import canonical_model
from edgepatch.train.models import BACKBONES, clone_with_input, load_checkpoint, with_new_head
from edgepatch.train.patchfile import TaskPatch, apply_patch, read_patch
from edgepatch.format.layouts import FORMATS
from edgepatch.runtime.base_file import sha256_hex
from edgepatch.kinds import head_is_private, site_is_patchable
from edgepatch.kinds.keras_sites import find_sites

log = logging.getLogger(__name__)
# Max |logit difference| allowed per unit of max(1, max |logit|): fp16 deltas round the patch.
PARITY_TOLERANCE = {"float32": 1e-4, "float16": 5e-2}
TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
INT8_DELTA_MODES = ("auto", "compact", "exact")
# What convert writes. --out may replace an empty directory, or one holding only these regular files
# (at least one base): convert's own names are its marker, as the byte-pinned output lists no extra file.
CONVERT_BASE_NAMES = (*(f"base.{fmt}" for fmt in FORMATS), "base_int8.tflite")
CONVERT_DELTA_SUFFIX = ".delta"


@dataclass
class ConvertResult:
    out_dir: str
    base_files: dict[str, str]
    base_bytes: dict[str, int]
    base_sha256: dict[str, str]
    head_width: int
    deltas: dict[str, str] = field(default_factory=dict)  # task -> path
    int8: dict = field(default_factory=dict)  # base_bytes, deltas: task -> {bytes, max_abs_vs_task_int8}
    delta_bytes: dict[str, int] = field(default_factory=dict)
    parity: dict[str, dict[str, float]] = field(default_factory=dict)  # task -> fmt -> max-abs
    parity_inputs: dict[str, str] = field(default_factory=dict)  # task -> what the parity check ran on
    notes: tuple = ()  # how the checkpoint was rewritten into the canonical form


@dataclass(frozen=True)
class FoldedBase:
    """The base checkpoint, folded once, as every pass after it needs it."""

    checkpoint: object  # the Keras base model, with BN
    sites: list  # its conv/dense sites, in order (the last is the head)
    folded: dict  # site name -> BN-free weights
    head_width: int  # outputs of the shared head: the widest task, or more
    pads: tuple  # input paddings the folded model must reproduce exactly
    model: object  # the BN-free Keras model the bases are exported from
    notes: tuple = ()  # the rewrites that made the checkpoint canonical (edgepatch.train.graph)
    input_affines: bool = False  # input Rescaling/Normalization as depthwise convs (converters.fold)


def _check_options(formats, dtype, patches, quantize, calibration_dir, int8_delta) -> None:
    unknown = [f for f in formats if f not in FORMATS]
    if not formats or unknown:
        raise UsageError(f"formats must be a non-empty subset of {list(FORMATS)}. Received {list(formats)}")
    if dtype not in DELTA_DTYPES:
        raise UsageError(f"delta dtype must be one of {list(DELTA_DTYPES)}. Received '{dtype}'")
    names = [p.task.name for p in patches]
    for name in names:
        if not TASK_NAME.match(name):
            raise UsageError(f"task name must match {TASK_NAME.pattern} to name its delta file. Received '{name}'")
    if len(set(names)) != len(names):
        raise UsageError(f"task names must be unique. Received {names}")
    if quantize not in (None, "int8"):
        raise UsageError(f"quantize must be 'int8' or None. Received quantize={quantize!r}")
    if int8_delta not in INT8_DELTA_MODES:
        raise UsageError(f"int8_delta must be one of {', '.join(INT8_DELTA_MODES)}. Received int8_delta={int8_delta!r}")


def task_model(base, patch: TaskPatch, source: str):
    """An independent copy of the base, taking any input size, with the patch applied.

    The head is replaced only when the patch owns it (a head-owning kind, ``logits``, private);
    otherwise it is shared with the base, as in multi-resolution training.
    """
    copy = clone_with_input(base, None)
    copy.set_weights(base.get_weights())
    model = with_new_head(copy, len(patch.task.classes)) if head_is_private(patch.kinds) else copy
    apply_patch(model, patch, source)
    return model


def parity_inputs(resolution: int, seed: int = 0, count: int = 2, preprocessing=None) -> np.ndarray:
    """Inputs for runtime-vs-Keras checks: random pixels preprocessed as the task records
    (``preprocessing``), or uniform in [-1, 1] when none is given."""
    rng = np.random.default_rng(seed)
    if preprocessing is None:
        return rng.uniform(-1, 1, (count, resolution, resolution, 3)).astype(np.float32)
    return preprocessing.apply(rng.uniform(0, 255, (count, resolution, resolution, 3)).astype(np.float32))


def check_parity(keras_model, runner, images: np.ndarray) -> tuple[float, float]:
    """Return (max-abs logit difference, max(1, max |logit|)) between runtime and Keras on ``images``."""
    expected = np.asarray(keras_model(images, training=False))
    return float(np.max(np.abs(runner.predict(images) - expected))), max(1.0, float(np.max(np.abs(expected))))


def _fold_base(model_path: str, patches: list[TaskPatch], head_width: int | None,
               input_affines: bool = False) -> FoldedBase:
    """Pass 1: load and fold the base; its head is as wide as the widest task (or ``head_width``).

    The checkpoint's own head counts only when some task shares it: a head every task replaces
    (a checkpoint's 1000 ImageNet classes) would cost every task its bytes and its run time.
    """
    canonical = canonical_model(load_checkpoint(model_path))
    base = canonical.model
    sites = find_sites(base)
    base_folded = fold_model(base, input_affines)
    own_head = base_folded[sites[-1].name]
    shares_head = not patches or not all(head_is_private(p.kinds) for p in patches)
    widest = max([own_head.out_channels] * shares_head + [len(p.task.classes) for p in patches])
    if head_width is not None and head_width < widest:
        raise UsageError(f"head width must be >= {widest} (the widest task). Received head_width={head_width}")
    width = head_width or widest
    if own_head.out_channels > width:  # unused by every task: keep the columns the base's head width holds
        base_folded[own_head.name] = FoldedSite(own_head.name, own_head.op, own_head.kernel[:, :width],
                                                own_head.bias[:width], own_head.scale[:width])
    # Every input size the base must reproduce exactly: its own and each task's.
    pads = foldable_pads(base, tuple(r for r in (base.inputs[0].shape[1], *(p.task.resolution for p in patches)) if r))
    return FoldedBase(base, sites, base_folded, width, pads, build_folded_model(base, base_folded, width, pads),
                      tuple(canonical.notes), input_affines)


def _write_bases(stage: str, shared: FoldedBase, formats, result: ConvertResult) -> dict:
    """Pass 2: export ``base.<fmt>`` per format into ``stage``; return each loaded in its runtime."""
    from converters.export_onnx import export_onnx_base
    from converters.export_tflite import export_tflite_base
    from edgepatch.runtime import OnnxBase, TFLiteBase

    exporters = {"tflite": (export_tflite_base, TFLiteBase), "onnx": (export_onnx_base, OnnxBase)}
    patchable = {site.name for site in shared.sites if site_is_patchable(site)}
    constants = frozenset(name for name in shared.folded if name not in patchable)
    bases = {}
    for fmt in formats:
        data = exporters[fmt][0](shared.model, shared.folded, shared.head_width, constants)
        with open(os.path.join(stage, f"base.{fmt}"), "wb") as handle:
            handle.write(data)
        result.base_files[fmt] = os.path.join(result.out_dir, f"base.{fmt}")
        result.base_bytes[fmt] = len(data)
        result.base_sha256[fmt] = sha256_hex(data)
        bases[fmt] = exporters[fmt][1](data, f"base.{fmt}")
    return bases


def _write_task_delta(stage: str, shared: FoldedBase, patch_path: str, patch: TaskPatch, bases: dict, dtype: str,
                      result: ConvertResult):
    """Pass 3, per task: write ``<task>.delta``, check it on every base; return the Keras task model."""
    name = patch.task.name
    model = task_model(shared.checkpoint, patch, patch_path)
    delta = make_delta(shared.sites, shared.folded, fold_batchnorm(model), patch.task, patch.kinds, result.base_sha256,
                       patch.selection)
    delta_path = os.path.join(stage, f"{name}.delta")
    result.delta_bytes[name] = write_delta(delta_path, delta, dtype)
    result.deltas[name] = os.path.join(result.out_dir, f"{name}.delta")
    stored = read_delta(delta_path)
    result.parity[name] = {}
    # Real images where the patch records them: on random pixels a user's model can leave its range (a random
    # EfficientNetB0: logits of 1,081, where float32 Keras itself is 1.04 off its float64 result).
    images, result.parity_inputs[name] = parity_images(patch) or (
        parity_inputs(patch.task.resolution, preprocessing=patch.task.preprocessing), "2 random-pixel images")
    for fmt, runtime_base in bases.items():
        error, scale = check_parity(model, runtime_base.apply(stored), images)
        result.parity[name][fmt] = error
        if error > PARITY_TOLERANCE[dtype] * scale:
            raise FoldError(
                f"task '{name}': {fmt} base + delta differs from the Keras task model "
                f"by {error:.2e} max-abs logits, above {PARITY_TOLERANCE[dtype] * scale:.1e}"
            )
    return model


def _write_int8(stage: str, shared: FoldedBase, patches: list[TaskPatch], int8_tasks: list, calibration,
                int8_delta: str) -> dict:
    """Pass 4 (``quantize="int8"``): ``base_int8.tflite`` and ``<task>.int8.delta`` per task.

    ``calibration``: where each model's images come from (``converters.calibration.int8_calibration``).
    """
    from converters.quantize import emit_int8

    base = shared.checkpoint
    resolution = int(base.inputs[0].shape[1])
    # A task records its preprocessing; a base converted alone uses the backbone default.
    preprocessing = patches[0].task.preprocessing if patches else BACKBONES["mobilenet_v2"].preprocessing
    # Its own copy: export_int8 nudges the zero biases of the model it is given.
    folded_model = build_folded_model(base, shared.folded, shared.head_width, shared.pads)
    return emit_int8(stage, folded_model, int8_tasks, calibration, resolution, preprocessing, int8_delta)


def check_out_dir(out_dir: str, inputs: list[str]) -> None:
    """Refuse an ``--out`` that is a file, holds an input, or is a non-empty folder not made by convert.

    Raises:
      UsageError: naming the output and why it is kept.
    """
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise UsageError(f"--out {out_dir} exists and is not a directory; refusing to replace it")
    real_out = os.path.realpath(out_dir)
    for path in inputs:
        if os.path.commonpath([real_out, os.path.realpath(path)]) == real_out:
            raise UsageError(f"--out {out_dir} contains the input {path}; choose another directory")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not _is_convert_output(out_dir):
        raise UsageError(f"--out {out_dir} is a non-empty directory that is not a convert output "
                         f"(only {', '.join(CONVERT_BASE_NAMES)} and *{CONVERT_DELTA_SUFFIX} files); "
                         f"refusing to replace it")


def _is_convert_output(directory: str) -> bool:
    names = os.listdir(directory)
    return any(name in CONVERT_BASE_NAMES for name in names) and all(
        (name in CONVERT_BASE_NAMES or name.endswith(CONVERT_DELTA_SUFFIX))
        and is_regular_file(os.path.join(directory, name)) for name in names)


def convert(
    model_path: str,
    patch_paths: list[str],
    out_dir: str,
    formats: tuple[str, ...] = FORMATS,
    dtype: str = "float32",
    head_width: int | None = None,
    quantize: str | None = None,
    calibration_dir: str | None = None,
    int8_delta: str = "auto",
) -> ConvertResult:
    """Emit ``base.<fmt>`` for each format and ``<task>.delta`` per patch into ``out_dir``.

    With ``quantize="int8"`` also ``base_int8.tflite`` and ``<task>.int8.delta``, each
    calibrated on ``calibration_dir/<task>/`` (``calibration_dir/base/`` for the base) or, without
    ``calibration_dir``, on the training images each patch records (the base: all tasks' together);
    ``int8_delta`` is ``"compact"`` (refold codes), ``"exact"`` (see ``edgepatch.format.int8_delta``) or
    ``"auto"``: compact where it reproduces the task's own int8 model (``converters.quantize.emit_int8``).
    """
    check_out_dir(out_dir, [model_path, *patch_paths, *([calibration_dir] if calibration_dir else [])])
    patches = [read_patch(path) for path in patch_paths]  # none: the base alone (e.g. a full fine-tune)
    _check_options(formats, dtype, patches, quantize, calibration_dir, int8_delta)
    if quantize:
        from converters.calibration import int8_calibration

        calibration = int8_calibration(calibration_dir, patches)  # before any work: a bad source fails fast
    shared = _fold_base(model_path, patches, head_width)
    out_dir = os.path.abspath(out_dir)
    stage = make_stage_dir(out_dir, "convert")
    try:
        result = ConvertResult(out_dir, {}, {}, {}, shared.head_width, notes=shared.notes)
        try:
            bases = _write_bases(stage, shared, formats, result)
        except FoldError:
            if not fold_input_affines(shared.checkpoint):
                raise
            # A converter fused the input normalisation into the first conv: keep it a separate op.
            shared = _fold_base(model_path, patches, head_width, input_affines=True)
            bases = _write_bases(stage, shared, formats, result)
        int8_tasks = []
        for path, patch in zip(patch_paths, patches):
            model = _write_task_delta(stage, shared, path, patch, bases, dtype, result)
            if quantize:
                folded_task = build_folded_model(model, fold_model(model, shared.input_affines), shared.head_width,
                                                 shared.pads)
                int8_tasks.append((patch.task, folded_task))
        if quantize:
            result.int8 = _write_int8(stage, shared, patches, int8_tasks, calibration, int8_delta)
        replace_dir(stage, out_dir)
        return result
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
