"""Decoded-image cache shared by every run of one process.

``edgepatch.train.data.make_dataset`` decodes every JPEG again for each
pipeline. ``DecodedCache.make_dataset`` is a drop-in ``PipelineBuilder``
that the runs hand to ``train(..., pipeline=)`` and ``train_multitask(...,
pipeline=)``: images are decoded once per (file list, resolution,
preprocessing) by the original ``make_dataset`` itself, so the values are
bit-identical, and later pipelines are sliced from the arrays in memory with
the same shuffle, batch and prefetch steps.
"""

from __future__ import annotations

import numpy as np



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
