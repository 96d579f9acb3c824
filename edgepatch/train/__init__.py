"""Keras side: backbones, data, transfer and multi-task training, patch files (imports TensorFlow)."""
