"""The file formats: the tensor-file container, float and int8 deltas (numpy only, no TensorFlow)."""
