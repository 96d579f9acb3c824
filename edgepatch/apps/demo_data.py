"""Procedural images with several labelings, for the offline demo.

Each image shows one shape on a noisy background. The same images are
labelled three ways: by shape (the pretraining task), by colour and by the
quadrant the shape sits in (the transfer tasks), so the transfer tasks need
features the pretraining never asked for.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np

SHAPES = ("circle", "square", "triangle", "ring")
COLORS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 70, 230)}
QUADRANTS = ("top_left", "top_right", "bottom_left", "bottom_right")
LABELINGS = {"shapes": SHAPES, "colors": tuple(COLORS), "quadrants": QUADRANTS}


@dataclass(frozen=True)
class Sample:
    shape: int
    color: int
    quadrant: int

    def label(self, labeling: str) -> int:
        return {"shapes": self.shape, "colors": self.color, "quadrants": self.quadrant}[labeling]


def _mask(shape: str, size: int, cx: float, cy: float, radius: float) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = x - cx, y - cy
    if shape == "circle":
        return dx**2 + dy**2 <= radius**2
    if shape == "square":
        return (np.abs(dx) <= radius * 0.85) & (np.abs(dy) <= radius * 0.85)
    if shape == "triangle":
        return (dy <= radius) & (dy >= -radius) & (np.abs(dx) <= (dy + radius) / 2)
    distance = np.sqrt(dx**2 + dy**2)
    return (distance <= radius) & (distance >= radius * 0.55)


def render(sample: Sample, size: int, rng: np.random.Generator) -> np.ndarray:
    """An HxWx3 uint8 image of ``sample``."""
    image = rng.normal(rng.uniform(60, 160), 18, (size, size, 3))
    radius = rng.uniform(0.16, 0.22) * size
    half = size / 2
    cx = rng.uniform(radius, half - 2) + (half if sample.quadrant in (1, 3) else 0)
    cy = rng.uniform(radius, half - 2) + (half if sample.quadrant in (2, 3) else 0)
    color = np.array(list(COLORS.values())[sample.color], np.float32) + rng.normal(0, 15, 3)
    mask = _mask(SHAPES[sample.shape], size, cx, cy, radius)
    image[mask] = color + rng.normal(0, 10, (int(mask.sum()), 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def write_datasets(root: str, train_per_class: int, test_per_class: int, size: int = 64, seed: int = 0) -> dict[str, str]:
    """Write ``root/<labeling>/{train,test}/<class>/*.png`` for every labeling; return their dirs."""
    rng = np.random.default_rng(seed)
    per_split = {"train": train_per_class * len(SHAPES), "test": test_per_class * len(SHAPES)}
    for split, count in per_split.items():
        for index in range(count):
            sample = Sample(index % len(SHAPES), int(rng.integers(len(COLORS))), int(rng.integers(len(QUADRANTS))))
            data = _png(render(sample, size, rng))
            for labeling, classes in LABELINGS.items():
                folder = os.path.join(root, labeling, split, classes[sample.label(labeling)])
                os.makedirs(folder, exist_ok=True)
                with open(os.path.join(folder, f"{index:05d}.png"), "wb") as handle:
                    handle.write(data)
    return {labeling: os.path.join(root, labeling) for labeling in LABELINGS}
