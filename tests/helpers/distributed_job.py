"""A small multi-task job run in a fresh process by test_distribute.py (TF must start under the strategy).

Usage: python distributed_job.py STRATEGY DATA_DIR
Prints one JSON line: replicas, whether replica copies of a shared weight agree, its sha256,
and whether the two tasks' private patches differ.
"""

import hashlib
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from edgepatch.train.strategy import make_strategy  # noqa: E402

strategy = make_strategy(sys.argv[1])

from helpers.models import small_cnn  # noqa: E402

from edgepatch.train.data import scan_image_folders  # noqa: E402
from edgepatch.format.delta import Preprocessing, TaskInfo  # noqa: E402
from edgepatch.apps.demo_data import write_datasets  # noqa: E402
from edgepatch.train.multitask import MultiTaskConfig, TaskRun, train_multitask  # noqa: E402

folders = write_datasets(sys.argv[2], train_per_class=6, test_per_class=3, size=32)
runs = []
for name in ("colors", "quadrants"):
    split = scan_image_folders(folders[name])
    runs.append(TaskRun(TaskInfo(name, split.classes, 32, Preprocessing(1 / 127.5, -1.0)), split))
with strategy.scope():
    base = small_cnn(num_classes=4)
train_multitask(base, runs, MultiTaskConfig(private=("scale_bias", "logits"), epochs=1, batch_size=8), strategy,
                verbose=0)
shared = runs[0].model.get_layer("pw").kernel._value  # the distributed variable behind the Keras one
copies = [np.asarray(v) for v in getattr(shared, "values", [shared])]
print(json.dumps({
    "replicas": strategy.num_replicas_in_sync,
    "copies": len(copies),
    "copies_agree": all(np.array_equal(copies[0], c) for c in copies),
    "shared_sha256": hashlib.sha256(copies[0].tobytes()).hexdigest(),
    "patches_differ": not np.array_equal(runs[0].patch.tensors["stem_norm/gamma"],
                                         runs[1].patch.tensors["stem_norm/gamma"]),
}))
