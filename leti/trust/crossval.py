"""Out-of-fold predictions of any predictor on its own training archs: the calibration data of the intervals.

Works for every family through the public interface only: ``clone()`` (an unfitted copy with the same
hyper-parameters; families that carry fitted parts they reuse, such as ``fewshot``'s source models, keep them) and
``fit``/``predict``. A fitted predictor that already holds honest out-of-fold predictions of its training archs
(``oof_predictions_``, e.g. ``auto`` from its own cross-validation) is not refitted.
"""

from __future__ import annotations

import numpy as np

from leti.errors import PredictorError
from leti.graph.layergraph import LayerGraph
from leti.predictors.auto import kfold_indices
from leti.predictors.base import Predictor

FOLDS = 5
LEAVE_ONE_OUT_BELOW = 20  # with this few archs every fold leaves one group out (the fits are cheap)


def fold_count(n_groups: int, folds: int = FOLDS) -> int:
    if n_groups < 2:
        raise PredictorError(
            f"needs at least 2 distinct training archs to calibrate, got {n_groups}", "graphs"
        )
    return n_groups if n_groups <= LEAVE_ONE_OUT_BELOW else min(int(folds), n_groups)


def out_of_fold(
    pred: Predictor, graphs: list[LayerGraph], y, groups=None, folds: int = FOLDS, seed: int = 0
) -> np.ndarray:
    """Each training arch's prediction by a clone of ``pred`` fitted on the folds without it (grouped by
    ``groups``, e.g. canonical hashes, so isomorphic archs never sit on both sides)."""
    y = np.asarray(y, dtype=float)
    n = len(graphs)
    held = getattr(pred, "oof_predictions_", None)
    if held is not None and np.shape(held) == (n,) and np.isfinite(held).all():
        return np.asarray(held, dtype=float)
    keys = np.asarray(groups if groups is not None else np.arange(n), dtype=object).astype(str)
    k = fold_count(np.unique(keys).size, folds)
    oof = np.empty(n)
    for test in kfold_indices(n, k, seed, keys):
        train = np.setdiff1d(np.arange(n), test)
        model = pred.clone().fit(
            [graphs[i] for i in train], y[train], groups=None if groups is None else keys[train]
        )
        oof[test] = model.predict([graphs[i] for i in test])
    return oof


__all__ = ["FOLDS", "fold_count", "out_of_fold"]
