"""leti.compression: low-rank and pruning candidates for a Keras model, and plans that meet a latency budget.

Public API (imported lazily: the numerical modules do not pull in Keras)::

    from leti.compression import plan, apply, list_candidates, apply_candidates, keras_to_arch
    p = plan(model, "host-litert-cpu-1t", "0.6x")      # Plan: per-layer choices, predicted latency
    compressed = apply(p)                               # keras.Model

See docs/compression.md.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "plan": "plan", "apply": "plan", "Plan": "plan", "Budget": "plan", "parse_budget": "plan",
    "default_predictor": "plan", "calibration_archs": "plan",
    "list_candidates": "candidates", "layer_candidates": "candidates", "apply_candidates": "candidates",
    "CandidateOptions": "candidates", "Candidate": "candidates", "edited_arch": "candidates",
    "Edit": "keras_surgery", "apply_edits": "keras_surgery", "units": "keras_surgery",
    "output_error": "keras_surgery",
    "keras_to_arch": "keras_ir", "check_arch": "keras_ir", "keras_macs": "keras_ir",
    "resnet_like": "models", "mobilenetv2_like": "models",
}  # fmt: skip

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"leti.compression.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'leti.compression' has no attribute {name!r}")
