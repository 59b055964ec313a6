"""What the model importers share: the input-shape argument and the error for an op the IR cannot hold."""

from __future__ import annotations

from collections.abc import Sequence

from leti.errors import LetiError, ModelFileError
from leti.graph.builder import GraphBuilder
from leti.graph.layergraph import LayerGraph

MAX_SIDE = 8192  # bounds every input dimension a user can ask for
MAX_CHANNELS = 65536


class UnsupportedOpError(ModelFileError):
    """An op of a model file that the LayerGraph IR cannot represent (the field names the op and the node)."""


def unsupported(op: str, node: str, reason: str = "has no LayerGraph equivalent") -> UnsupportedOpError:
    return UnsupportedOpError(reason, f"node {node!r} ({op})")


def check_input_shape(shape: Sequence[int] | str | None) -> tuple[int, int, int] | None:
    """``(H, W, C)`` from a tuple or an ``"H,W,C"`` string (``"1,H,W,C"`` also accepted); None stays None."""
    if shape is None:
        return None
    if isinstance(shape, str):
        parts = [p for p in shape.replace("x", ",").split(",") if p.strip()]
        try:
            shape = [int(p) for p in parts]
        except ValueError:
            raise LetiError(f"expected H,W,C as integers, got {shape!r}", "input_shape") from None
    try:
        dims = [int(d) for d in shape]
        exact = all(not isinstance(d, bool) and int(d) == d for d in shape)
    except (TypeError, ValueError):
        exact = False
    if not exact:
        raise LetiError(f"expected H,W,C as integers, got {shape!r}", "input_shape")
    if len(dims) == 4 and dims[0] == 1:
        dims = dims[1:]
    if len(dims) != 3:
        raise LetiError(f"expected H,W,C (three integers), got {list(dims)}", "input_shape")
    h, w, c = dims
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE and 1 <= c <= MAX_CHANNELS):
        raise LetiError(
            f"H and W must be in [1, {MAX_SIDE}] and C in [1, {MAX_CHANNELS}], got {h},{w},{c}", "input_shape"
        )
    return (h, w, c)


def dynamic_input_error(dims: Sequence) -> ModelFileError:
    return ModelFileError(
        f"the input shape {list(dims)} is not fixed; give it with --input-shape H,W,C (input_shape=(H, W, C))",
        "input_shape",
    )


def finish_graph(b: GraphBuilder, out: int | None, meta: dict) -> LayerGraph:
    """The graph built so far, whose last node must be the model's output (one output, no dead ends after it)."""
    if out is None:
        raise ModelFileError("the output is not computed from the input", "model")
    if out != len(b) - 1:
        raise ModelFileError("the output is not the last node's result", "model")
    return b.finish(meta)


__all__ = ["UnsupportedOpError", "check_input_shape", "dynamic_input_error", "finish_graph", "unsupported"]
