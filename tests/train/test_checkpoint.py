"""EpochCheckpoint, the one resume mechanism of both trainers: a kill at any instant resumes from a complete epoch."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.killing import run_until_killed

from edgepatch.errors import UsageError

SAVE_THREE_EPOCHS = """
import tensorflow as tf
from edgepatch.train.checkpoint import EpochCheckpoint
value = tf.Variable([0.0] * 4)
checkpoint = EpochCheckpoint({directory!r}, value=value)
for epoch in (1, 2, 3):
    value.assign([float(epoch)] * 4)
    checkpoint.save(epoch)
"""


def _restored(directory, size=4):
    import tensorflow as tf

    from edgepatch.train.checkpoint import EpochCheckpoint

    value = tf.Variable([-1.0] * size)
    epoch = EpochCheckpoint(str(directory), value=value).restore()
    return epoch, value.numpy()


def test_saves_keep_only_the_last_epoch(tmp_path, capsys):
    import tensorflow as tf

    from edgepatch.train.checkpoint import EpochCheckpoint

    assert _restored(tmp_path / "none")[0] == 0
    value = tf.Variable([0.0] * 4)
    checkpoint = EpochCheckpoint(str(tmp_path / "ckpt"), value=value)
    for epoch in (1, 2):
        value.assign([float(epoch)] * 4)
        checkpoint.save(epoch)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "backup.json", "epoch-2.data-00000-of-00001", "epoch-2.index"]
    assert json.loads((tmp_path / "ckpt" / "backup.json").read_text()) == {"epoch": 2, "state": "epoch-2"}
    epoch, restored = _restored(tmp_path / "ckpt")
    assert epoch == 2 and np.array_equal(restored, [2.0] * 4)
    assert f"resumed from {tmp_path / 'ckpt'} after epoch 2" in capsys.readouterr().err
    checkpoint.clear()
    assert not (tmp_path / "ckpt").exists()


def test_half_written_epoch_is_ignored_then_cleaned(tmp_path):
    import tensorflow as tf

    from edgepatch.train.checkpoint import EpochCheckpoint

    value = tf.Variable([1.0] * 4)
    checkpoint = EpochCheckpoint(str(tmp_path), value=value)
    checkpoint.save(1)
    (tmp_path / "epoch-2.index").write_bytes(b"\x00half")  # a write killed midway
    (tmp_path / "epoch-2_temp").mkdir()
    epoch, restored = _restored(tmp_path)
    assert epoch == 1 and np.array_equal(restored, [1.0] * 4)
    checkpoint.save(3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup.json", "epoch-3.data-00000-of-00001",
                                                        "epoch-3.index"]


def test_state_of_another_run_is_refused(tmp_path):
    import tensorflow as tf

    from edgepatch.train.checkpoint import EpochCheckpoint

    EpochCheckpoint(str(tmp_path), value=tf.Variable([1.0] * 4)).save(1)
    with pytest.raises(UsageError) as error:
        _restored(tmp_path, size=5)
    assert str(error.value).startswith(f"{tmp_path}: the state saved after epoch 1 does not fit this run (")
    assert str(error.value).endswith("); remove the directory to start afresh")


def test_index_of_an_older_layout_starts_afresh(tmp_path, capsys):
    (tmp_path / "backup.json").write_text(json.dumps({"epoch": 3, "weights": "epoch-3.weights.h5"}))
    assert _restored(tmp_path)[0] == 0
    assert "not written by this version; training starts afresh" in capsys.readouterr().err


@pytest.mark.parametrize("hook, nth, expected", [
    ("edgepatch.train.checkpoint.write_bytes_atomic", 3, 2),  # epoch 3's state written, its index not yet
    ("edgepatch.train.checkpoint.write_bytes_atomic", 2, 1),
    ("os.replace", 3, 2),  # epoch 3's index complete in its temporary file, not yet renamed
    ("os.remove", 3, 3),  # epoch 3 indexed, epoch 2 half removed
])
def test_killed_save_resumes_from_a_complete_epoch(tmp_path, hook, nth, expected):
    assert run_until_killed(SAVE_THREE_EPOCHS.format(directory=str(tmp_path)), hook, nth)
    epoch, restored = _restored(tmp_path)
    assert epoch == expected and np.array_equal(restored, [float(expected)] * 4)
