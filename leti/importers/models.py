"""One entry point for model files: ``read_model(path)`` -> LayerGraph, by suffix."""

from __future__ import annotations

from pathlib import Path

from leti.errors import ModelFileError, excerpt
from leti.graph.layergraph import LayerGraph
from leti.paths import is_file

MODEL_SUFFIXES: tuple[str, ...] = (".tflite",)


def is_model_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in MODEL_SUFFIXES


def read_model(path: str | Path, input_shape: tuple[int, ...] | None = None) -> LayerGraph:
    """The LayerGraph of a model file; ``input_shape`` fixes a dynamic input (H, W, C)."""
    p = Path(path)
    if not is_file(p):
        raise ModelFileError("no such file", excerpt(str(p), 200))
    suffix = p.suffix.lower()
    if suffix == ".tflite":
        from leti.tflite.reader import read_tflite

        return read_tflite(p.read_bytes())
    raise ModelFileError(f"unknown model format {suffix!r} (known: {', '.join(MODEL_SUFFIXES)})", str(p))
