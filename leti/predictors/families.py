"""The one list of predictor families: name -> (module, class).

It imports nothing, so that the CLI can offer the names without loading numpy or any family's library. The
registry (``leti.predictors.registry``) makes and loads them; the CLI's choices, ``evaluate.DEFAULT_FAMILIES`` and
``leti.predictors``'s lazy class names derive from this table.
"""

from __future__ import annotations

# modules are imported on first use (registry.family_class), so a missing optional family costs nothing
FAMILY_CLASSES: dict[str, tuple[str, str]] = {
    "lut": ("leti.predictors.lut", "LUTPredictor"),
    "flops": ("leti.predictors.flops", "FlopsPredictor"),
    "linear": ("leti.predictors.linear", "LinearPredictor"),
    "xgboost": ("leti.predictors.boosting", "XGBoostPredictor"),
    "lightgbm": ("leti.predictors.boosting", "LightGBMPredictor"),
    "catboost": ("leti.predictors.boosting", "CatBoostPredictor"),
    "gcn": ("leti.predictors.gcn", "GCNPredictor"),
    "kernel": ("leti.predictors.kernel", "KernelPredictor"),
    "auto": ("leti.predictors.auto", "AutoPredictor"),
    "fewshot": ("leti.predictors.fewshot", "FewShotPredictor"),
}
FAMILIES: tuple[str, ...] = tuple(FAMILY_CLASSES)
# families that learn from other targets' measurements too: trained with ``sources``, not in reports by default
NEEDS_SOURCES: tuple[str, ...] = ("fewshot",)
