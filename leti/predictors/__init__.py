"""leti.predictors: latency predictors over LayerGraphs.

    from leti.predictors import make, load, featurize
    pred = make("lightgbm").fit(graphs, latencies_ms)
    pred.predict(graphs)                       # milliseconds
    save_trained(pred, "pixel4-tflite2.1-cpu-a76", meta)
    load("pixel4-tflite2.1-cpu-a76")           # the target's best saved predictor

Families: lut, flops, linear, xgboost, lightgbm, catboost, gcn, kernel, auto, fewshot (see ``leti.predictors.families``). Training,
evaluation and reports on a store live in ``leti.predictors.evaluate``.
"""

from __future__ import annotations

from leti.predictors.families import FAMILIES, FAMILY_CLASSES

# Everything else loads on first use: importing leti.predictors (or its family table) must stay cheap for the CLI
# and the service, without numpy, scipy or a family's library. Each family's class comes from the family table.
_LAZY = {
    **{cls: (module, cls) for module, cls in FAMILY_CLASSES.values()},
    **{
        name: ("leti.predictors.registry", name)
        for name in (
            "available_families",
            "best_family",
            "list_trained",
            "load",
            "load_dir",
            "make",
            "predictor_dir",
            "save_trained",
        )
    },  # fmt: skip
    "Predictor": ("leti.predictors.base", "Predictor"),
    "FEATURE_VERSION": ("leti.predictors.base", "FEATURE_VERSION"),
    "METRIC_KEYS": ("leti.predictors.metrics", "METRIC_KEYS"),
    "metrics": ("leti.predictors.metrics", "metrics"),
    "featurize": ("leti.predictors.features", "featurize"),
    "feature_names": ("leti.predictors.features", "feature_names"),
    "layer_signatures": ("leti.predictors.lut", "layer_signatures"),
    "signature_graph": ("leti.predictors.lut", "signature_graph"),
    "train": ("leti.predictors.evaluate", "train"),
    "evaluate": ("leti.predictors.evaluate", "evaluate"),
    "report": ("leti.predictors.evaluate", "report"),
    "plot": ("leti.predictors.render", "plot"),
    "learning_curve": ("leti.predictors.evaluate", "learning_curve"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'leti.predictors' has no attribute {name!r}")


__all__ = ["FAMILIES", "FAMILY_CLASSES", *_LAZY]
