"""TaskSwitcher: resident runners per delta file, least recently used dropped under the budget."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from edgepatch.format.delta import read_delta, write_delta
from edgepatch.errors import MissingFileError, UsageError
from edgepatch.runtime import OnnxBase, TaskSwitcher, load_base
from edgepatch.runtime import switcher as switcher_module
from edgepatch.runtime.switcher import MIB


@pytest.fixture()
def deltas(small_ship, tmp_path):
    """Three deltas for the small base that give different outputs: paths a, b, c."""
    ship, _ = small_ship
    gamma = read_delta(str(ship / "gamma.delta"))
    paths = {}
    for index, name in enumerate("abc"):
        tensors = {key: value * np.float32(1 + 0.5 * index) if key.endswith("/bias") else value
                   for key, value in gamma.tensors.items()}
        task = dataclasses.replace(gamma.task, name=name)
        paths[name] = str(tmp_path / f"{name}.delta")
        write_delta(paths[name], dataclasses.replace(gamma, task=task, tensors=tensors))
    return paths


def _image(size: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)


@pytest.mark.parametrize("fmt", ["tflite", "onnx", "onnx-adapter"])
def test_switching_back_is_a_lookup_and_runs_the_right_task(small_ship, deltas, fmt):
    ship, _ = small_ship
    path = str(ship / f"base.{fmt.split('-')[0]}")
    base = OnnxBase.from_file(path, swap_mode="adapter") if fmt == "onnx-adapter" else load_base(path)
    switcher = TaskSwitcher(base, budget_mib=64)
    first = switcher.switch(deltas["a"])
    size = first.task.resolution
    second = switcher.switch(deltas["b"])
    assert switcher.switch(deltas["a"]) is first
    assert (switcher.hits, switcher.misses) == (1, 2)
    assert switcher.tasks() == ["b", "a"]
    for name, runner in (("a", first), ("b", second)):
        expected = base.apply(read_delta(deltas[name])).predict(_image(size))
        np.testing.assert_array_equal(runner.predict(_image(size)), expected)
    assert not np.array_equal(first.predict(_image(size)), second.predict(_image(size)))


def test_least_recently_used_task_is_dropped_over_budget(small_ship, deltas, monkeypatch):
    ship, _ = small_ship
    base = load_base(str(ship / "base.tflite"))
    monkeypatch.setattr(switcher_module, "current_rss_bytes", lambda: None)  # count the estimate only
    per_task = 2 * len(base.bytes)  # the LiteRT estimate
    switcher = TaskSwitcher(base, budget_mib=2.5 * per_task / MIB)  # room for two tasks
    switcher.switch(deltas["a"])
    switcher.switch(deltas["b"])
    switcher.switch(deltas["a"])
    switcher.switch(deltas["c"])  # b is the least recently used
    assert switcher.tasks() == ["a", "c"]
    assert switcher.resident_bytes == 2 * per_task
    switcher.switch(deltas["b"])
    assert (switcher.hits, switcher.misses) == (1, 4)
    tiny = TaskSwitcher(base, budget_mib=1e-6)  # the runner just built is kept even over budget
    tiny.switch(deltas["a"])
    tiny.switch(deltas["b"])
    assert tiny.tasks() == ["b"]


def test_a_task_counts_at_least_its_estimate_and_what_it_added_to_rss(small_ship, deltas, monkeypatch):
    ship, _ = small_ship
    base = load_base(str(ship / "base.tflite"))
    switcher = TaskSwitcher(base)
    switcher.switch(deltas["a"])
    first = switcher.resident_bytes
    assert first >= 2 * len(base.bytes)
    sizes = iter([100 * MIB, 100 * MIB + 5 * MIB])  # RSS before and after building the runner
    monkeypatch.setattr(switcher_module, "current_rss_bytes", lambda: next(sizes))
    switcher.switch(deltas["b"])
    assert switcher.resident_bytes == first + 5 * MIB


def test_preloaded_tasks_switch_without_building(small_ship, deltas):
    ship, _ = small_ship
    switcher = TaskSwitcher(load_base(str(ship / "base.tflite")))
    assert switcher.preload([deltas["a"], deltas["b"]]) == ["a", "b"]
    switcher.switch(deltas["a"])
    switcher.switch(deltas["b"])
    assert (switcher.hits, switcher.misses) == (2, 2)


def test_a_file_replaced_on_disk_is_read_again(small_ship, deltas, tmp_path):
    ship, _ = small_ship
    switcher = TaskSwitcher(load_base(str(ship / "base.tflite")))
    old = switcher.switch(deltas["a"])
    replacement = str(tmp_path / "new.delta")
    with open(deltas["c"], "rb") as source, open(replacement, "wb") as target:
        target.write(source.read())
    os.replace(replacement, deltas["a"])  # as fetch updates a delta: atomic rename
    new = switcher.switch(deltas["a"])
    assert new is not old and new.task.name == "c"
    assert switcher.tasks() == ["c"]  # the old version of the file is gone


def test_bad_arguments(small_ship, tmp_path):
    ship, _ = small_ship
    base = load_base(str(ship / "base.tflite"))
    with pytest.raises(UsageError) as error:
        TaskSwitcher(base, budget_mib=0)
    assert str(error.value) == "budget_mib must be > 0. Received 0"
    with pytest.raises(MissingFileError) as error:
        TaskSwitcher(base).switch(str(tmp_path / "absent.delta"))
    assert str(error.value) == f"{tmp_path / 'absent.delta'}: no such file"
