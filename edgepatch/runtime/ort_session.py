"""The ONNX Runtime session options every edgepatch session uses (onnxruntime is imported on first use)."""

from __future__ import annotations


def session_options(num_threads: int, optimize: bool = True):
    """SessionOptions for ``num_threads`` intra-op threads; ``optimize=False`` for a model ORT optimized already."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    # Spinning threads keep a core busy after each run and skew whatever runs next.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not optimize:  # optimizing ORT's own optimized model again changes nothing
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return options
