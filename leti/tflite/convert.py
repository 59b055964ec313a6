"""LayerGraph / Keras model -> .tflite bytes through the TFLite converter: the reference path.

Precisions:

* ``fp32``: the float model.
* ``fp16``: float16 weights with DEQUANTIZE ops in front of their uses (``Optimize.DEFAULT`` +
  ``supported_types=[float16]``); inputs, outputs and arithmetic stay float32 on the CPU.
* ``int8``: full-integer quantisation calibrated on ``INT8_CALIBRATION_SAMPLES`` seeded standard-normal inputs,
  with **int8 input and output** (``inference_input_type = inference_output_type = tf.int8``) so that the model
  has no QUANTIZE / DEQUANTIZE at its edges: that is how int8 models are deployed and measured on phones, and the
  runners feed int8 inputs.

Speed: ``TFLiteConverter.from_keras_model`` exports a SavedModel to a temporary directory and loads it back; this
module traces the model once into a concrete function and hands that to ``from_concrete_functions`` instead, which
writes the same FlatBuffer (op for op, byte-identical weights) 3-5x faster. TensorFlow is imported on first use
only, so the fast path and the reader never pay for it.

Quiet: TensorFlow's C++ side writes to file descriptors 1 and 2 directly, so conversion runs with both pointed at
a temporary file (see ``silenced``); the last line of that output is kept for error messages.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator

import numpy as np

from leti.errors import LetiError
from leti.graph.layergraph import LayerGraph
from leti.tflite.flatbuffer import FastPathUnsupported, graph_to_tflite

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter is not for users

PRECISIONS = ("fp32", "fp16", "int8")
INT8_CALIBRATION_SAMPLES = 4


class Silenced:
    """What a silenced block wrote (to file descriptors and to Python's streams)."""

    def __init__(self):
        self.text = ""

    def last_line(self) -> str:
        lines = [ln.strip() for ln in self.text.splitlines() if ln.strip()]
        return lines[-1][:300] if lines else ""


@contextlib.contextmanager
def silenced() -> Iterator[Silenced]:
    """Send everything written to stdout / stderr, including by C++ code, to a temporary file for the block.

    Not thread-safe: file descriptors 1 and 2 are process-wide.
    """
    out = Silenced()
    py_sink = io.StringIO()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with tempfile.TemporaryFile(mode="w+b") as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            try:
                with (
                    contextlib.redirect_stdout(py_sink),
                    contextlib.redirect_stderr(py_sink),
                    warnings.catch_warnings(),
                ):
                    warnings.simplefilter("ignore")
                    yield out
            finally:
                for stream in (sys.stdout, sys.stderr):
                    with contextlib.suppress(Exception):
                        stream.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                sink.seek(0)
                out.text = sink.read().decode(errors="replace") + py_sink.getvalue()
    finally:
        for fd in saved:
            os.close(fd)


def check_precision(precision: str, allowed: tuple[str, ...] = PRECISIONS) -> str:
    if precision not in allowed:
        raise LetiError(f"must be one of {', '.join(allowed)}, got {precision!r}", "precision")
    return precision


def _quiet_loggers():
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    with contextlib.suppress(Exception):
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    return tf


def keras_to_tflite(model, precision: str = "fp32", seed: int = 0) -> bytes:
    """.tflite bytes for a Keras model; an unknown batch size becomes 1, other unknown dimensions are refused."""
    check_precision(precision)
    with silenced() as out:
        try:
            return _convert(model, precision, seed)
        except LetiError:
            raise
        except Exception as e:  # noqa: BLE001 - the converter raises many types; report one line
            err = e
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    detail = (lines[0] if lines else out.last_line())[:300]  # the captured output is complete only here
    raise LetiError(f"TFLite conversion failed ({type(err).__name__}: {detail})", "model")


def _convert(model, precision: str, seed: int) -> bytes:
    tf = _quiet_loggers()
    specs = []
    for k, t in enumerate(model.inputs):
        shape = tuple(t.shape)
        if shape and shape[0] is None:
            shape = (1, *shape[1:])  # latency is measured at batch size 1
        if any(d is None for d in shape):
            raise LetiError(
                f"input {k} has shape {tuple(t.shape)}; only the batch size may be unknown", "model"
            )
        specs.append(tf.TensorSpec(shape, t.dtype, name=f"input_{k}"))

    def call(*xs):
        return model(xs[0] if len(xs) == 1 else list(xs), training=False)

    fn = tf.function(call, input_signature=specs).get_concrete_function()
    # no trackable_obj: with one, the converter keeps variables as resources instead of freezing them
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn])
    if precision == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        rng = np.random.default_rng(seed)
        shapes = [tuple(s.shape) for s in specs]

        def representative():
            for _ in range(INT8_CALIBRATION_SAMPLES):
                yield [rng.standard_normal(shp).astype(np.float32) for shp in shapes]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return bytes(conv.convert())


def to_tflite(graph: LayerGraph, precision: str = "fp32", seed: int = 0) -> bytes:
    """.tflite bytes for ``graph`` via ``build_keras`` and the TFLite converter (the reference path)."""
    check_precision(precision)
    with silenced():
        from leti.tflite.keras_model import build_keras  # deferred: loads TensorFlow

        model = build_keras(graph, seed=seed)
    return keras_to_tflite(model, precision, seed)


def build_tflite(graph: LayerGraph, precision: str = "fp32", seed: int = 0, fast: bool = True) -> bytes:
    """.tflite bytes by the fast path where it mirrors the converter, else by the reference path.

    int8 and graphs for which ``flatbuffer.unsupported_reason`` names a reason take the reference path.
    """
    check_precision(precision)
    if fast and precision != "int8":
        try:
            return graph_to_tflite(graph, precision, seed)
        except FastPathUnsupported:
            pass
    return to_tflite(graph, precision, seed)


__all__ = ["PRECISIONS", "build_tflite", "check_precision", "keras_to_tflite", "silenced", "to_tflite"]
