"""LayerGraph <-> .tflite.

* ``to_tflite`` / ``keras_to_tflite``: the reference path (Keras model + TFLite converter), fp32 / fp16 / int8.
* ``graph_to_tflite``: the fast path, writing the FlatBuffer directly (fp32 / fp16), verified op for op against
  the reference; ``build_tflite`` takes it where it mirrors the converter and falls back otherwise.
* ``read_tflite``: any .tflite file -> LayerGraph; ``parse_tflite`` / ``diff_op_graphs`` for the raw op graph.

Importing this package does not import TensorFlow: the reference path loads it on first use.
"""

from leti.tflite.convert import PRECISIONS, build_tflite, keras_to_tflite, to_tflite
from leti.tflite.flatbuffer import FastPathUnsupported, graph_to_tflite, unsupported_reason
from leti.tflite.reader import diff_op_graphs, parse_tflite, read_tflite

__all__ = [
    "PRECISIONS",
    "FastPathUnsupported",
    "build_tflite",
    "diff_op_graphs",
    "graph_to_tflite",
    "keras_to_tflite",
    "parse_tflite",
    "read_tflite",
    "to_tflite",
    "unsupported_reason",
]
