"""Decoded-image cache shared by every run of one process, and the derived far-domain dataset.

``edgepatch.train.data.make_dataset`` decodes every JPEG again for each
pipeline. ``DecodedCache.make_dataset`` is a drop-in ``PipelineBuilder``
that the runs hand to ``train(..., pipeline=)`` and ``train_multitask(...,
pipeline=)``: images are decoded once per (file list, resolution,
preprocessing) by the original ``make_dataset`` itself, so the values are
bit-identical, and later pipelines are sliced from the arrays in memory with
the same shuffle, batch and prefetch steps.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

INVERTED_DESCRIPTION = (
    "every photo of the source dataset with its RGB values inverted (v -> 255 - v), saved as PNG; "
    "same classes and the same train/test split as the source"
)
_COMPLETE = ".complete.json"


class DecodedCache:
    """Decoded, resized, preprocessed images per (items, resolution, preprocessing), kept in memory."""

    def __init__(self):
        self._arrays: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self.hits = 0
        self.misses = 0

    def arrays(self, items, resolution: int, preprocessing) -> tuple[np.ndarray, np.ndarray]:
        key = (tuple(items), resolution, preprocessing)  # a frozen dataclass: every field counts
        if key not in self._arrays:
            from edgepatch.train.data import make_dataset

            self.misses += 1
            batches = list(make_dataset(items, resolution, preprocessing, 64, shuffle=False))
            images = np.concatenate([b[0].numpy() for b in batches])
            labels = np.concatenate([b[1].numpy() for b in batches])
            self._arrays[key] = (images, labels)
        else:
            self.hits += 1
        return self._arrays[key]

    def make_dataset(self, items, resolution: int, preprocessing, batch_size: int, shuffle: bool, seed: int = 0):
        """Same signature and stream as ``edgepatch.train.data.make_dataset``, from memory."""
        import tensorflow as tf

        images, labels = self.arrays(items, resolution, preprocessing)
        dataset = tf.data.Dataset.from_tensor_slices((images, labels))
        if shuffle:
            dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _source_fingerprint(files: list[str], source: str) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(os.path.relpath(path, source).encode())
        digest.update(str(os.path.getsize(path)).encode())
    return digest.hexdigest()[:12]


def derive_inverted(source: str, cache_root: str) -> str:
    """Write (once) the colour-inverted copy of ``source`` under ``cache_root``; return its folder.

    ``source`` is a class-folder dataset (``train/<class>/*`` and
    ``test/<class>/*``, or ``<class>/*``). The folder name carries a
    fingerprint of the source's file names and sizes, so a changed source
    gets a fresh copy; a half-written copy (no completion marker) is rewritten.
    """
    from PIL import Image, ImageOps

    from edgepatch.train.data import IMAGE_EXTENSIONS

    if not os.path.isdir(source):
        raise FileNotFoundError(f"far-domain source '{source}' is not a directory")
    files = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(source)
        for name in names
        if name.lower().endswith(IMAGE_EXTENSIONS)
    )
    if not files:
        raise ValueError(f"far-domain source '{source}' holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    name = f"{os.path.basename(os.path.normpath(source))}-inverted-{_source_fingerprint(files, source)}"
    target = os.path.join(cache_root, name)
    if os.path.isfile(os.path.join(target, _COMPLETE)):
        return target
    for path in files:
        out = os.path.join(target, os.path.splitext(os.path.relpath(path, source))[0] + ".png")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with Image.open(path) as image:
            ImageOps.invert(image.convert("RGB")).save(out)
    with open(os.path.join(target, _COMPLETE), "w") as handle:
        json.dump({"source": os.path.abspath(source), "images": len(files), "transform": INVERTED_DESCRIPTION},
                  handle, indent=1)
    return target
