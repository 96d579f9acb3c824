"""What a backend returns after applying a delta: a runnable task model."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from edgepatch.errors import NonFiniteError, ShapeMismatchError
from edgepatch.format.task import TaskInfo


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    probability: float


class TaskRunner:
    """A base with one task's delta applied, ready to run.

    ``predict(images)`` takes preprocessed NHWC float32 images at the task's
    resolution and returns the task's logits ``[N, len(classes)]``.
    Subclasses implement ``_run(images) -> [N, head_width]``. ``predict``
    raises NonFiniteError rather than return NaN or Inf logits.
    """

    def __init__(self, task: TaskInfo | None, swap_seconds: float):
        self.task = task
        self.swap_seconds = swap_seconds  # delta in memory -> ready to run

    def _run(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ShapeMismatchError(f"images must be NHWC with 3 channels. Received shape {list(images.shape)}")
        if not np.all(np.isfinite(images)):
            raise ShapeMismatchError("images hold NaN or Inf values")
        logits = self._run(np.ascontiguousarray(images))
        if self.task is not None and logits.shape[-1] < len(self.task.classes):
            raise ShapeMismatchError(f"task '{self.task.name}' has {len(self.task.classes)} classes, but the model "
                                     f"computes {logits.shape[-1]} outputs")
        logits = logits[:, : len(self.task.classes)] if self.task is not None else logits
        if not np.all(np.isfinite(logits)):
            # Finite weights can still overflow activations (a delta with huge scales or biases).
            name = f"task '{self.task.name}'" if self.task is not None else "the base task"
            raise NonFiniteError(f"{name} computed NaN or Inf logits for {int(np.sum(~np.isfinite(logits).all(1)))} "
                                 f"of {len(logits)} images: its weights overflow float32 at run time")
        return logits

    def top_k(self, images: np.ndarray, k: int = 3) -> list[list[Prediction]]:
        probabilities = softmax(self.predict(images))
        classes = self.task.classes if self.task is not None else [str(i) for i in range(probabilities.shape[1])]
        ranked = np.argsort(-probabilities, axis=1)[:, :k]
        return [
            [Prediction(classes[i], int(i), float(row[i])) for i in order]
            for row, order in zip(probabilities, ranked)
        ]

    def time_one(self, images: np.ndarray) -> float:
        start = time.perf_counter()
        self._run(np.ascontiguousarray(images, dtype=np.float32))
        return time.perf_counter() - start
