"""The file formats: the tensor-file container, float and int8 deltas (numpy only, no TensorFlow).

The specification, of the files and of how a delta is applied, is ``edgepatch/format/spec.rst``.
"""
