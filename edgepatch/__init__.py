"""edgepatch: K tasks for the price of one model (Mudrakarta et al., ICLR 2019).

Train per-task model patches (BN scale/bias, depthwise kernels, logits) in
Keras, fold them into one shared TFLite/ONNX base plus a tiny delta per task,
and apply a delta on device with LiteRT or ONNX Runtime.
"""

__version__ = "0.1.0"
