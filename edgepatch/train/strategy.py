"""Choose a tf.distribute strategy for training (same code on CPU and GPU).

- ``none``: TensorFlow's default strategy (one device: the GPU if present).
- ``mirrored``: synchronous data parallelism on one machine: all GPUs, or,
  without a GPU, the CPU split into ``cpu_replicas`` logical devices.
- ``multi_worker``: synchronous data parallelism across processes/machines
  described by the ``TF_CONFIG`` environment variable.

Create the strategy before any other TensorFlow work in the process, and
build models and optimizers inside ``strategy.scope()``.
"""

from __future__ import annotations

import json
import os

from edgepatch.errors import UsageError

STRATEGIES = ("none", "mirrored", "multi_worker")


def _split_cpu(tf, replicas: int) -> list[str]:
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * replicas)
    except RuntimeError:
        pass  # TensorFlow is already initialised: use the logical devices it has
    return [device.name for device in tf.config.list_logical_devices("CPU")]


def make_strategy(name: str, cpu_replicas: int = 2):
    """Return the tf.distribute strategy called ``name`` (one of ``STRATEGIES``)."""
    if name not in STRATEGIES:
        raise UsageError(f"strategy must be one of {list(STRATEGIES)}. Received '{name}'")
    import tensorflow as tf

    if name == "none":
        return tf.distribute.get_strategy()
    if name == "multi_worker":
        config = os.environ.get("TF_CONFIG")
        if not config or "cluster" not in json.loads(config):
            raise UsageError("strategy 'multi_worker' needs TF_CONFIG with a 'cluster' and a 'task'")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if tf.config.list_physical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    devices = _split_cpu(tf, cpu_replicas)
    if len(devices) < 2:
        raise UsageError(
            "strategy 'mirrored' on a CPU-only machine needs 2+ logical CPU devices, but TensorFlow "
            "was initialised with one; choose the strategy before any other TensorFlow work"
        )
    return tf.distribute.MirroredStrategy(devices)
