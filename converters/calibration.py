"""Where convert's real images come from: ``convert --calibration DIR``, else each task's training images.

``edgepatch train`` records in each patch (``training["train_data"]``) how to find its training
images again. int8 calibration needs them (``int8_calibration`` checks every source before any
conversion work, so a bad folder fails fast with one error); the float parity check prefers them
(``parity_images``) and falls back to random pixels without them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from edgepatch.errors import DataError, EdgepatchError, UsageError
from edgepatch.format.delta import TaskInfo

CALIBRATION_LIMIT = 200  # images per model: the representative dataset and the bias correction
PARITY_IMAGES = 8  # real images per task for convert's float parity check
TRAIN_DATA = "train_data"  # the key of a patch's training record naming its training images


def train_data_record(data_dir: str, holdout: float, seed: int) -> dict:
    """What ``edgepatch train`` records in a patch (``training["train_data"]``) to find its training images
    again: ``scan_image_folders``' arguments, the folder made absolute."""
    return {"dir": os.path.abspath(data_dir), "holdout": holdout, "seed": seed}


def _folder_images(folder: str) -> list[str]:
    from edgepatch.train.data import IMAGE_EXTENSIONS

    return sorted(os.path.join(root, f) for root, _, files in os.walk(folder) for f in files
                  if f.lower().endswith(IMAGE_EXTENSIONS))


def _sample(paths, limit: int) -> list[str]:
    rng = np.random.default_rng(0)  # files are sorted by class: sample across all of them
    return [paths[i] for i in sorted(rng.choice(len(paths), min(len(paths), limit), replace=False))]


@dataclass(frozen=True)
class Calibration:
    """Where each int8 model's calibration images come from.

    ``directory``: ``DIR/base/`` and ``DIR/<task>/`` (``convert --calibration``). Else ``training``:
    each task's training images; the base takes an equal share of every task's.
    """

    directory: str | None = None
    training: dict = field(default_factory=dict)  # task name -> its training image paths

    def paths(self, name: str) -> list[str]:
        """Up to CALIBRATION_LIMIT image paths for ``name`` (a task, or ``"base"``).

        Raises:
          DataError: ``DIR/<name>/`` holds no images.
        """
        if self.directory is not None:
            folder = os.path.join(self.directory, name)
            paths = _folder_images(folder)
            if not paths:
                raise DataError(f"int8 calibration: '{folder}' holds no images; give each task (and 'base') a folder")
            return _sample(paths, CALIBRATION_LIMIT)
        if name != "base":
            return _sample(self.training[name], CALIBRATION_LIMIT)
        share = max(1, CALIBRATION_LIMIT // len(self.training))
        return [path for task in self.training.values() for path in _sample(task, share)][:CALIBRATION_LIMIT]

    def images(self, name: str, resolution: int, preprocessing) -> np.ndarray:
        """``paths(name)`` decoded at ``resolution`` and preprocessed: NHWC float32."""
        from edgepatch.runtime.images import load_images

        return load_images(self.paths(name), TaskInfo(name, ("x",), resolution, preprocessing))

    @property
    def source(self) -> str:
        return self.directory if self.directory is not None else "training images"


def int8_calibration(directory: str | None, patches) -> Calibration:
    """Where calibration images come from, checked before any conversion work.

    ``directory`` wins; without it every task needs the training images its patch records
    (``train_data_record``), and a base converted alone needs a directory.

    Raises:
      UsageError: no directory, and no patch or a patch that records no training images.
      DataError: a folder holds no images, or recorded training images cannot be read.
    """
    if directory is not None:
        calibration = Calibration(directory)
        for name in ("base", *(p.task.name for p in patches)):
            calibration.paths(name)
        return calibration
    if not patches:
        raise UsageError("int8 calibration: a base converted without patches needs --calibration DIR (DIR/base/ "
                         "holds its images)")
    return Calibration(None, {patch.task.name: recorded_training_images(patch) for patch in patches})


def recorded_training_images(patch) -> list[str]:
    """The training image paths ``patch`` records (``train_data_record``), as ``edgepatch train`` split them.

    Raises:
      UsageError: the patch records none.
      DataError: the recorded folder cannot be read now.
    """
    from edgepatch.train.data import scan_image_folders

    name, record = patch.task.name, patch.training.get(TRAIN_DATA)
    if not (isinstance(record, dict) and isinstance(record.get("dir"), str)
            and type(record.get("holdout")) in (int, float) and type(record.get("seed")) is int):
        raise UsageError(f"int8 calibration: the patch of task '{name}' records no training images (made "
                         f"before edgepatch recorded them, or outside edgepatch train); pass --calibration DIR "
                         f"with DIR/base/ and DIR/{name}/")
    try:
        split = scan_image_folders(record["dir"], record["holdout"], record["seed"])
    except EdgepatchError as error:
        raise DataError(f"int8 calibration: task '{name}' was trained on '{record['dir']}', which cannot be "
                        f"read now ({error}); pass --calibration DIR") from None
    return [path for path, _ in split.train]


def parity_images(patch, limit: int = PARITY_IMAGES) -> tuple[np.ndarray, str] | None:
    """Up to ``limit`` of the task's recorded training images, decoded as the task records, and a label
    saying so; None when the patch records none or they cannot be read (the check then uses random pixels)."""
    from edgepatch.runtime.images import load_images

    try:
        paths = _sample(recorded_training_images(patch), limit)
        return (load_images(paths, patch.task), f"{len(paths)} training images") if paths else None
    except EdgepatchError:
        return None


def load_calibration(directory: str, name: str, resolution: int, preprocessing) -> np.ndarray:
    """Up to CALIBRATION_LIMIT images from ``directory/<name>/`` (any depth), preprocessed."""
    return Calibration(directory).images(name, resolution, preprocessing)
