"""One entry point for model files: ``read_model(path, input_shape)`` -> LayerGraph, by suffix.

``.tflite`` (``leti.tflite.reader``), ``.onnx`` (``onnx_model``), ``.keras`` / ``.h5`` (``keras_file``). A torch
module is not a file: ``leti.importers.torch_module.read_torch(module, input_shape)`` exports it to ONNX first.
"""

from __future__ import annotations

from pathlib import Path

from leti.errors import LetiError, ModelFileError, excerpt
from leti.graph.layergraph import LayerGraph
from leti.importers.common import check_input_shape
from leti.importers.keras_file import read_keras
from leti.importers.onnx_model import read_onnx
from leti.paths import is_file

MODEL_SUFFIXES: tuple[str, ...] = (".tflite", ".onnx", ".keras", ".h5", ".hdf5")


def is_model_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in MODEL_SUFFIXES


def read_model(path: str | Path, input_shape: tuple[int, ...] | str | None = None) -> LayerGraph:
    """The LayerGraph of a model file; ``input_shape`` (H, W, C) fixes a dynamic input."""
    p = Path(path)
    if not is_file(p):
        raise ModelFileError("no such file", excerpt(str(p), 200))
    shape = check_input_shape(input_shape)
    suffix = p.suffix.lower()
    if suffix == ".tflite":
        from leti.tflite.reader import read_tflite  # deferred: loads LiteRT

        g = read_tflite(p.read_bytes())
        if shape is not None and tuple(g.input_shape) != shape:
            raise LetiError(
                f"a .tflite file has a fixed input {g.input_shape}; (H, W, C) = {shape} does not fit it",
                "input_shape",
            )
    elif suffix == ".onnx":
        g = read_onnx(p, shape)
    elif suffix in (".keras", ".h5", ".hdf5"):
        g = read_keras(p, shape)
    else:
        raise ModelFileError(f"unknown model format {suffix!r} (known: {', '.join(MODEL_SUFFIXES)})", str(p))
    g.meta.setdefault("file", p.name)
    return g
