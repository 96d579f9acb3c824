"""``edgepatch eval``: a shipped task's accuracy on a labelled image folder, through each device runtime.

Each (base, delta) pair is one runtime, opened as ``edgepatch run`` opens it
(``load_base`` + ``read_task_delta``); images are decoded by
``runtime.images.load_images`` with the delta's own task info, in batches, so
memory stays bounded whatever the folder's size. Each runtime makes its own
pass over the folder (one progress line each). A Keras task model
(``--model``/``--patch``) makes one more pass through the same decoding, and
every runtime's top-1 agreement with it is reported. TensorFlow is imported
only for that Keras pass.
"""

from __future__ import annotations

import io
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from edgepatch.errors import DataError, MissingFileError, UsageError

KERAS_LABEL = "keras"


@dataclass(frozen=True)
class LabelledImages:
    root: str  # the folder holding the class folders (DIR/test or DIR)
    classes: tuple[str, ...]  # in the delta's order: labels index into it
    items: tuple[tuple[str, int], ...]  # (path, label)


@dataclass
class Runtime:
    label: str
    base: str
    delta: str
    runner: object  # a runtime.runner.TaskRunner


def scan_labelled_folder(data_dir: str, classes: tuple[str, ...]) -> LabelledImages:
    """``DIR/test/<class>/*`` or ``DIR/<class>/*``, whose folder names must be ``classes`` (any order)."""
    from edgepatch.train.data import IMAGE_EXTENSIONS

    _check_data_dir(data_dir)
    root = os.path.join(data_dir, "test") if os.path.isdir(os.path.join(data_dir, "test")) else data_dir
    folders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    missing, extra = sorted(set(classes) - set(folders)), sorted(set(folders) - set(classes))
    if missing or extra:
        raise UsageError(f"class folders in '{root}' must be the delta's classes {list(classes)}: "
                         f"missing {missing}, extra {extra}")
    items = []
    for name in folders:
        folder = os.path.join(root, name)
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise DataError(f"class folder '{folder}' holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        items += [(os.path.join(folder, f), classes.index(name)) for f in files]
    return LabelledImages(root, tuple(classes), tuple(items))


def _check_data_dir(data_dir: str) -> None:
    if not os.path.exists(data_dir):
        raise MissingFileError(f"data directory '{data_dir}' does not exist")
    if not os.path.isdir(data_dir):
        raise UsageError(f"--data '{data_dir}' is not a directory")


def runtime_labels(pairs: list[tuple[str, str]]) -> list[str]:
    """``base.tflite+flowers.delta``; full paths where file names collide; ``#n`` for a pair given twice."""
    short = [f"{os.path.basename(b)}+{os.path.basename(d)}" for b, d in pairs]
    labels = short if len(set(short)) == len(short) else [f"{b}+{d}" for b, d in pairs]
    return [label if labels.count(label) == 1 else f"{label}#{labels[:i].count(label) + 1}"
            for i, label in enumerate(labels)]


def read_deltas(pairs: list[tuple[str, str]]) -> list:
    """Every pair's delta; they must be for one task (same classes, in order, and resolution)."""
    from edgepatch.runtime import read_task_delta

    if not pairs:
        raise UsageError("eval needs at least one --base/--delta pair")
    deltas = [read_task_delta(delta) for _, delta in pairs]
    first = deltas[0].task
    for (_, path), delta in zip(pairs[1:], deltas[1:]):
        if (delta.task.classes, delta.task.resolution) != (first.classes, first.resolution):
            raise UsageError(f"'{path}' has classes {list(delta.task.classes)} at {delta.task.resolution} px, but "
                             f"'{pairs[0][1]}' has {list(first.classes)} at {first.resolution} px: "
                             "every --delta must be for the same classes and resolution")
    return deltas


def open_runtimes(pairs: list[tuple[str, str]], deltas: list) -> list[Runtime]:
    from edgepatch.runtime import load_base

    return [Runtime(label, base, path, load_base(base).apply(delta))
            for label, (base, path), delta in zip(runtime_labels(pairs), pairs, deltas)]


def load_keras_task(model_path: str, patch_path: str, task):
    """The Keras task model convert checks parity against (imports TensorFlow), and the patch's task info."""
    from converters.convert import task_model
    from edgepatch.train.graph import canonical_model
    from edgepatch.train.models import load_checkpoint
    from edgepatch.train.patchfile import read_patch

    patch = read_patch(patch_path)
    if (patch.task.classes, patch.task.resolution) != (task.classes, task.resolution):
        raise UsageError(f"--patch '{patch_path}' has classes {list(patch.task.classes)} at {patch.task.resolution} "
                         f"px, but the deltas have {list(task.classes)} at {task.resolution} px")
    base = canonical_model(load_checkpoint(model_path)).model
    return task_model(base, patch, patch_path), patch.task


class Progress:
    """One progress line per pass on stderr: redrawn with ``\\r`` on a terminal.

    Elsewhere (a pipe, a log) each pass's final line is held and written by ``close``, once
    every pass has succeeded, so that a failed run leaves only its one error line.
    """

    def __init__(self, enabled: bool = True, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.live = enabled and getattr(self.stream, "isatty", lambda: False)()
        self.held: list[str] = []
        self.rates: dict[str, float] = {}

    def start(self, label: str, total: int) -> None:
        self.label, self.total, self.began = label, total, time.perf_counter()
        self.update(0)

    def _line(self, done: int) -> str:
        rate = done / max(time.perf_counter() - self.began, 1e-9)
        self.rates[self.label] = rate
        return f"{self.label}: {done}/{self.total} images, {rate:.1f} images/s"

    def update(self, done: int) -> None:
        line = self._line(done)
        if self.live:
            self.stream.write(f"\r{line}")
            self.stream.flush()

    def end(self) -> None:
        line = self._line(self.total)
        if self.live:
            self.stream.write(f"\r{line}\n")
        elif self.enabled:
            self.held.append(line)

    def close(self) -> None:
        for line in self.held:
            self.stream.write(line + "\n")
        self.held = []


def predict_folder(predict, data: LabelledImages, task, batch: int, progress: Progress, label: str) -> np.ndarray:
    """Top-1 class index per image: decoded ``batch`` at a time with ``task``'s resolution and preprocessing."""
    from edgepatch.runtime.images import load_images

    predicted = np.empty(len(data.items), np.int64)
    progress.start(label, len(data.items))
    for start in range(0, len(data.items), batch):
        chunk = data.items[start:start + batch]
        predicted[start:start + len(chunk)] = np.argmax(predict(load_images([p for p, _ in chunk], task)), axis=1)
        progress.update(start + len(chunk))
    progress.end()
    return predicted


def scores(labels: np.ndarray, predicted: np.ndarray, classes: tuple[str, ...]) -> dict:
    """Accuracy, per-class accuracy (recall) and the confusion matrix (rows: true class, columns: predicted)."""
    confusion = np.zeros((len(classes), len(classes)), np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = {name: float(confusion[i, i] / confusion[i].sum()) for i, name in enumerate(classes)}
    return {"accuracy": float(np.trace(confusion) / len(labels)), "per_class": per_class,
            "confusion": confusion.tolist()}


def evaluate(pairs, data_dir: str, model: str | None = None, patch: str | None = None, batch: int = 32,
             progress: bool = True) -> dict:
    """Accuracy of each (base, delta) runtime on ``data_dir``, and of the Keras task model when given.

    Raises:
        UsageError: bad batch, --model without --patch (or the reverse), deltas of different tasks, class
            folders that are not the delta's classes.
        MissingFileError, DataError, DeltaFormatError, WrongBaseError, ...: as ``edgepatch run`` raises them.
    """
    pairs = [(os.fspath(b), os.fspath(d)) for b, d in pairs]
    if batch < 1:
        raise UsageError(f"batch must be >= 1. Received batch={batch}")
    if (model is None) != (patch is None):
        raise UsageError("--model and --patch go together: the Keras task model is the base with the patch applied")
    _check_data_dir(data_dir)  # before the deltas: the cheap checks first
    deltas = read_deltas(pairs)
    task = deltas[0].task
    data = scan_labelled_folder(data_dir, task.classes)
    runtimes = open_runtimes(pairs, deltas)
    keras_model = load_keras_task(model, patch, task) if model is not None else None
    bar = Progress(progress)
    labels = np.array([label for _, label in data.items])
    predictions = {rt.label: predict_folder(rt.runner.predict, data, rt.runner.task, batch, bar, rt.label)
                   for rt in runtimes}
    if keras_model is not None:
        network, keras_task = keras_model
        width = len(task.classes)
        predictions[KERAS_LABEL] = predict_folder(
            lambda images: np.asarray(network(images, training=False))[:, :width], data, keras_task, batch, bar,
            KERAS_LABEL)
    bar.close()
    report = _report(data, labels, predictions)
    report["runtimes"] = {rt.label: {"base": rt.base, "delta": rt.delta, "images_per_second": bar.rates[rt.label]}
                          for rt in runtimes}
    if keras_model is not None:
        report["keras"] = {"model": model, "patch": patch, "images_per_second": bar.rates[KERAS_LABEL]}
        report["agreement_vs_keras"] = {rt.label: float(np.mean(predictions[rt.label] == predictions[KERAS_LABEL]))
                                        for rt in runtimes}
    return report


def _report(data: LabelledImages, labels: np.ndarray, predictions: dict) -> dict:
    scored = {label: scores(labels, predicted, data.classes) for label, predicted in predictions.items()}
    return {
        "data": data.root, "images": len(labels), "classes": list(data.classes),
        **{key: {label: s[key] for label, s in scored.items()} for key in ("accuracy", "per_class", "confusion")},
    }


# The heat map: one panel per runtime (and Keras), rows true class, columns predicted.
FONT_SIZE = 12
MARGIN = 12
TITLE_HEIGHT = 36  # two lines: the runtime and its accuracy
MAX_NAME = 20  # characters of a class name shown on the axes
LOW, HIGH = np.array([247, 251, 255]), np.array([8, 48, 107])  # colour of an empty and of a full row share


def _font():
    from PIL import ImageFont

    return ImageFont.load_default(size=FONT_SIZE)


def _short(name: str) -> str:
    return name if len(name) <= MAX_NAME else name[:MAX_NAME - 2] + ".."


def _cell_size(classes: int) -> int:
    return max(16, min(40, 640 // classes))


def heatmap_size(classes: list[str], panels: int) -> tuple[int, int]:
    """(width, height) in pixels of the heat map of ``panels`` panels over ``classes``."""
    font = _font()
    names = max(int(font.getlength(_short(name))) for name in classes) + 6
    grid = _cell_size(len(classes)) * len(classes)
    panel_width = max(names + grid, 2 * int(font.getlength("x" * 24)))
    return MARGIN + panels * (panel_width + MARGIN), MARGIN + TITLE_HEIGHT + grid + names + MARGIN


def draw_confusion(report: dict):
    """A Pillow image of every confusion matrix in ``report`` (``evaluate``'s result)."""
    from PIL import Image, ImageDraw

    classes, matrices = report["classes"], report["confusion"]
    width, height = heatmap_size(classes, len(matrices))
    panel_width = (width - MARGIN) // len(matrices) - MARGIN
    image = Image.new("RGB", (width, height), "white")
    font = _font()
    names = max(int(font.getlength(_short(name))) for name in classes) + 6
    cell = _cell_size(len(classes))
    for panel, (label, matrix) in enumerate(matrices.items()):
        left = MARGIN + panel * (panel_width + MARGIN)
        draw = ImageDraw.Draw(image)
        draw.text((left, MARGIN), label[:48], fill="black", font=font)
        draw.text((left, MARGIN + 16), f"accuracy {report['accuracy'][label]:.3f} (rows true, columns predicted)",
                  fill="black", font=font)
        _draw_grid(draw, np.asarray(matrix), (left + names, MARGIN + TITLE_HEIGHT), cell, font)
        _draw_names(image, draw, classes, (left, MARGIN + TITLE_HEIGHT), names, cell, font)
    return image


def _draw_grid(draw, matrix: np.ndarray, origin: tuple[int, int], cell: int, font) -> None:
    rows = np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    for (i, j), count in np.ndenumerate(matrix):
        share = count / rows[i, 0]
        colour = tuple(int(c) for c in np.round(LOW + share * (HIGH - LOW)))
        x, y = origin[0] + j * cell, origin[1] + i * cell
        draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=colour, outline=(200, 200, 200))
        if cell >= 24:
            text = str(int(count))
            draw.text((x + cell / 2, y + cell / 2), text, fill="white" if share > 0.5 else "black", font=font,
                      anchor="mm")


def _draw_names(image, draw, classes: list[str], origin: tuple[int, int], names: int, cell: int, font) -> None:
    """True classes left of the rows; predicted classes under the columns, written upwards."""
    from PIL import Image, ImageDraw

    left, top = origin
    for i, name in enumerate(classes):
        draw.text((left + names - 4, top + i * cell + cell / 2), _short(name), fill="black", font=font, anchor="rm")
        strip = Image.new("L", (names, cell), 0)
        ImageDraw.Draw(strip).text((names - 4, cell / 2), _short(name), fill=255, font=font, anchor="rm")
        upright = strip.rotate(90, expand=True)  # reads bottom to top, ending at the grid
        image.paste((0, 0, 0), (left + names + i * cell, top + len(classes) * cell), upright)


def write_confusion_png(path: str, report: dict) -> int:
    """Draw ``report``'s confusion matrices and write them as one PNG, atomically; returns its size in bytes."""
    from edgepatch.atomic import write_bytes_atomic

    buffer = io.BytesIO()
    draw_confusion(report).save(buffer, format="PNG")
    return write_bytes_atomic(path, buffer.getvalue())
