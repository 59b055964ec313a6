"""torch.nn.Module -> LayerGraph, through ``torch.onnx.export`` and the ONNX importer.

The module is exported in eval mode at batch 1 with the TorchScript-based exporter (``dynamo=False``): offline, and
about 0.3 s for a small CNN where ``dynamo=True`` takes 1.5-10 s. It runs with ``training=PRESERVE`` so that
BatchNorm stays a node of its own (the ONNX importer folds it into the conv before it, counting its four vectors as
params, which is torch's parameters plus the running mean and variance). When that exporter fails, the module is
exported again with ``dynamo=True`` (BatchNorm then arrives folded into the conv's bias).

torch is imported on first use only.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

from leti.errors import LetiError
from leti.graph.layergraph import LayerGraph
from leti.importers.common import check_input_shape
from leti.importers.onnx_model import read_onnx


def _first_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return (lines[0] if lines else type(e).__name__)[:200]


def export_onnx(module, input_shape) -> bytes:
    """ONNX bytes of ``module`` called on one (1, C, H, W) zero tensor; LetiError when torch cannot export it."""
    import torch

    if not isinstance(module, torch.nn.Module):
        raise LetiError(f"expected a torch.nn.Module, got {type(module).__name__}", "model")
    shape = check_input_shape(input_shape)
    if shape is None:
        raise LetiError("a torch module has no fixed input shape; give input_shape=(H, W, C)", "input_shape")
    h, w, c = shape
    x = torch.zeros(1, c, h, w)
    was_training = module.training
    module.eval()
    errors = []
    try:
        with warnings.catch_warnings(), torch.no_grad(), _quiet_torch():
            warnings.simplefilter("ignore")
            try:
                f = io.BytesIO()
                torch.onnx.export(module, (x,), f, dynamo=False, training=torch.onnx.TrainingMode.PRESERVE,
                                  do_constant_folding=True, input_names=["input"], output_names=["output"])  # fmt: skip
                return f.getvalue()
            except Exception as e:  # noqa: BLE001 - the exporters raise many types
                errors.append(f"TorchScript exporter: {_first_line(e)}")
            try:
                return torch.onnx.export(
                    module, (x,), dynamo=True, verbose=False
                ).model_proto.SerializeToString()
            except Exception as e:  # noqa: BLE001
                errors.append(f"dynamo exporter: {_first_line(e)}")
    finally:
        module.train(was_training)
    raise LetiError(f"torch.onnx.export failed ({'; '.join(errors)})", "model")


@contextlib.contextmanager
def _quiet_torch():
    """torch.onnx logs warnings (e.g. missing torchvision ops) through logging; not for users."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)


def read_torch(module, input_shape) -> LayerGraph:
    """The LayerGraph of a ``torch.nn.Module`` for an input of ``input_shape`` = (H, W, C)."""
    g = read_onnx(export_onnx(module, input_shape))
    g.meta.update(source="torch", module=type(module).__name__)
    return g


__all__ = ["export_onnx", "read_torch"]
