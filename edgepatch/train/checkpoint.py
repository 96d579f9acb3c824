"""Per-epoch training state that a kill at any instant leaves usable: the one resume mechanism.

Both trainers use ``EpochCheckpoint``: transfer training saves the model's
weights, multi-task training every task model and its optimizer. The state
(any ``tf.train.Checkpoint`` objects) is written under the prefix
``epoch-N``; only then is ``backup.json`` (naming that prefix) replaced
atomically, and older epochs are removed. A restart reads ``backup.json``
and continues after epoch N, so a kill mid-write costs at most that epoch.
(Keras' BackupAndRestore writes its file in place, so a kill mid-write
leaves a backup that cannot be read.)
"""

from __future__ import annotations

import json
import os
import shutil
import sys

from edgepatch.atomic import write_bytes_atomic
from edgepatch.errors import UsageError

INDEX_NAME = "backup.json"
_PREFIX = "epoch-"


class EpochCheckpoint:
    """Saves and restores ``state`` (name -> trackable, as ``tf.train.Checkpoint`` takes) per epoch in ``directory``.

    Example (a custom loop)::

        checkpoint = EpochCheckpoint(".ckpt", model=model, optimizer=optimizer)
        for epoch in range(checkpoint.restore(), epochs):
            ...  # one epoch
            checkpoint.save(epoch + 1)
    """

    def __init__(self, directory: str, **state):
        import tensorflow as tf

        self.directory = directory
        self.index = os.path.join(directory, INDEX_NAME)
        self._checkpoint = tf.train.Checkpoint(**state)

    def restore(self) -> int:
        """Load the last complete epoch's state; return that epoch count (0: nothing saved)."""
        if not os.path.isfile(self.index):
            return 0
        with open(self.index) as handle:
            record = json.load(handle)
        if "state" not in record:  # an index an older edgepatch wrote, in another layout
            print(f"ignoring {self.index}: not written by this version; training starts afresh", file=sys.stderr)
            return 0
        try:
            self._checkpoint.read(os.path.join(self.directory, record["state"])).assert_existing_objects_matched()
        except (AssertionError, ValueError) as error:
            raise UsageError(f"{self.directory}: the state saved after epoch {record['epoch']} does not fit "
                             f"this run ({error}); remove the directory to start afresh") from None
        print(f"resumed from {self.directory} after epoch {record['epoch']}", file=sys.stderr)
        return int(record["epoch"])

    def save(self, epoch: int) -> None:
        """Write the state as epoch ``epoch``, then point the index at it, then drop older epochs."""
        os.makedirs(self.directory, exist_ok=True)
        name = f"{_PREFIX}{epoch}"
        self._checkpoint.write(os.path.join(self.directory, name))
        write_bytes_atomic(self.index, json.dumps({"epoch": epoch, "state": name}).encode())
        for entry in os.listdir(self.directory):
            if entry.startswith(_PREFIX) and entry.split(".", 1)[0] != name:
                path = os.path.join(self.directory, entry)
                if os.path.isdir(path):  # a write killed midway leaves a temporary folder
                    shutil.rmtree(path)
                else:
                    os.remove(path)

    def keras_callback(self):
        """A Keras callback that saves after every epoch of ``fit``."""
        import keras

        checkpoint = self

        class SaveEachEpoch(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                checkpoint.save(epoch + 1)

        return SaveEachEpoch()

    def clear(self) -> None:
        """Remove the directory, the index first, so a kill midway never leaves an index without its state."""
        if os.path.isfile(self.index):
            os.remove(self.index)
        shutil.rmtree(self.directory, ignore_errors=True)
