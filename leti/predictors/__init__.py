"""leti.predictors: latency predictors over LayerGraphs.

    from leti.predictors import make, load, featurize
    pred = make("lightgbm").fit(graphs, latencies_ms)
    pred.predict(graphs)                       # milliseconds
    save_trained(pred, "pixel4-tflite2.1-cpu-a76", meta)
    load("pixel4-tflite2.1-cpu-a76")           # the target's best saved predictor

Families: lut, flops, xgboost, lightgbm, catboost, gcn, auto, fewshot (see ``registry.FAMILIES``). Training, evaluation and
reports on a store live in ``leti.predictors.evaluate``.
"""

from __future__ import annotations

from leti.predictors.base import FEATURE_VERSION, Predictor
from leti.predictors.metrics import METRIC_KEYS, metrics
from leti.predictors.registry import (
    FAMILIES,
    available_families,
    list_trained,
    load,
    load_dir,
    make,
    predictor_dir,
    save_trained,
)

# Heavier modules load on first use: importing leti.predictors must stay cheap for the CLI and the service
_LAZY = {
    "featurize": ("leti.predictors.features", "featurize"),
    "feature_names": ("leti.predictors.features", "feature_names"),
    "LUTPredictor": ("leti.predictors.lut", "LUTPredictor"),
    "layer_signatures": ("leti.predictors.lut", "layer_signatures"),
    "signature_graph": ("leti.predictors.lut", "signature_graph"),
    "FlopsPredictor": ("leti.predictors.flops", "FlopsPredictor"),
    "XGBoostPredictor": ("leti.predictors.boosting", "XGBoostPredictor"),
    "LightGBMPredictor": ("leti.predictors.boosting", "LightGBMPredictor"),
    "CatBoostPredictor": ("leti.predictors.boosting", "CatBoostPredictor"),
    "AutoPredictor": ("leti.predictors.auto", "AutoPredictor"),
    "FewShotPredictor": ("leti.predictors.fewshot", "FewShotPredictor"),
    "train": ("leti.predictors.evaluate", "train"),
    "evaluate": ("leti.predictors.evaluate", "evaluate"),
    "report": ("leti.predictors.evaluate", "report"),
    "learning_curve": ("leti.predictors.evaluate", "learning_curve"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'leti.predictors' has no attribute {name!r}")


__all__ = [
    "FAMILIES",
    "FEATURE_VERSION",
    "METRIC_KEYS",
    "Predictor",
    "available_families",
    "list_trained",
    "load",
    "load_dir",
    "make",
    "metrics",
    "predictor_dir",
    "save_trained",
    *_LAZY,
]
