"""edgepatch: K tasks for the price of one model (Mudrakarta et al., ICLR 2019).

Train per-task model patches (BN scale/bias, depthwise kernels, logits) in
Keras, fold them into one shared TFLite/ONNX base plus a tiny delta per task,
and apply a delta on device with LiteRT or ONNX Runtime.
"""

__version__ = "0.1.0"


def patch_model(model, kinds=("scale_bias", "logits"), **options):
    """A trainable task copy of a Keras ``model`` (``edgepatch.train.native.patch_model``; imports Keras)."""
    from edgepatch.train.native import patch_model as patch

    return patch(model, kinds, **options)


def save_patch(model, path: str, **task):
    """Write the ``.patch`` of a model trained after ``patch_model`` (``edgepatch.train.native.save_patch``)."""
    from edgepatch.train.native import save_patch as save

    return save(model, path, **task)
