"""The ``auto`` family: k-fold cross-validation on the training set picks a family (and settings), then that
candidate is refitted on all the training archs and does the predicting.

Folds are grouped by ``groups`` (pass the archs' canonical hashes) when given, so isomorphic archs never sit on both
sides of a fold, as in the real train/test split; otherwise folds are plain and seeded. Each candidate is scored on
its pooled out-of-fold predictions by the four numbers leti reports: acc@10, acc@5, Spearman's rho and Kendall's
tau. ``select="rank"`` (the default) takes the best mean rank over the four (ties: acc@10), so a model that is
within 10% more often but ranks archs worse does not win by that alone; ``select="acc10"`` takes the best acc@10
(ties: rho).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from leti.errors import LetiError, PredictorError
from leti.predictors.base import Predictor
from leti.predictors.metrics import metrics
from leti.predictors.registry import family_class, load_dir, make, read_json_checked, write_json_checked

MODEL_DIR = "model"
INFO_FILE = "auto.json"

# What ``auto`` tries by default: every tabular family, the LUT also with Huber-robust NNLS, and LightGBM also with
# mode-seeking losses over a robust LUT base, for targets whose measurements have one-sided outliers (a share of runs
# much faster or slower than the rest; docs/accuracy.md). The GCN is tried only when asked for (minutes on a CPU).
DEFAULT_CANDIDATES: tuple[tuple[str, dict], ...] = (
    ("lut", {}),
    ("lut", {"robust": 1.0}),
    ("flops", {"clusters": 3}),
    ("lightgbm", {}),
    (
        "lightgbm",
        {
            "objective": "quantile",
            "alpha": 0.6,
            "min_child_samples": 20,
            "n_estimators": 600,
            "base_robust": 1.0,
        },
    ),  # fmt: skip
    ("lightgbm", {"objective": "quantile", "alpha": 0.5, "base_robust": 1.0}),
    ("xgboost", {}),
    ("catboost", {}),
)
SELECT = ("rank", "acc10")
RANKED = ("acc10", "acc5", "spearman", "kendall")


def kfold_indices(n: int, folds: int, seed: int, groups=None) -> list[np.ndarray]:
    """Test indices of each fold; whole groups stay together when ``groups`` is given."""
    rng = np.random.default_rng(seed)
    if groups is None:
        perm = rng.permutation(n)
        return [np.sort(perm[k::folds]) for k in range(folds)]
    uniq, inv = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    fold_of_group = np.empty(uniq.size, dtype=np.int64)
    fold_of_group[rng.permutation(uniq.size)] = np.arange(uniq.size) % folds
    return [np.flatnonzero(fold_of_group[inv] == k) for k in range(folds)]


def _normalise(candidates) -> list[tuple[str, dict]]:
    out = []
    for i, c in enumerate(candidates):
        if isinstance(c, str):
            c = (c, {})
        try:
            fam, params = c
        except (TypeError, ValueError):
            raise PredictorError(
                "each candidate is a family name or [family, params]", f"candidates[{i}]"
            ) from None
        if fam == "auto":
            raise PredictorError("auto cannot be its own candidate", f"candidates[{i}]")
        family_class(fam)  # unknown or unavailable families fail here, before any training
        out.append((str(fam), dict(params or {})))
    if not out:
        raise PredictorError("needs at least one candidate", "candidates")
    return out


def choose(scores: list[dict], select: str = "rank") -> int:
    """Index of the winning candidate (see the module doc); NaN (degenerate) scores count as the worst."""
    M = np.array([[s[k] for k in RANKED] for s in scores], dtype=float)
    M = np.nan_to_num(M, nan=-np.inf)
    acc10 = M[:, 0]
    if select == "acc10":
        return int(max(range(len(scores)), key=lambda i: (acc10[i], M[i, 2])))
    ranks = np.empty_like(M)
    for j in range(M.shape[1]):
        # rank 1 = best; equal values share their best rank
        ranks[:, j] = 1 + (M[:, j][None, :] > M[:, j][:, None]).sum(axis=1)
    mean = ranks.mean(axis=1)
    return int(min(range(len(scores)), key=lambda i: (mean[i], -acc10[i], i)))


class AutoPredictor(Predictor):
    """``candidates``: family names or ``[family, params]`` pairs; ``folds``: k of the k-fold CV."""

    family = "auto"
    param_ranges = {"folds": (2, 100)}

    def __init__(self, candidates=None, folds: int = 5, seed: int = 0, select: str = "rank"):
        self.candidates = candidates
        self.folds = folds
        self.seed = seed
        self.select = select

    def _candidates(self) -> list[tuple[str, dict]]:
        return _normalise(DEFAULT_CANDIDATES if self.candidates is None else self.candidates)

    def _fit(self, graphs, y):
        cands = self._candidates()
        if self.select not in SELECT:
            raise PredictorError(f"must be one of {', '.join(SELECT)}, got {self.select!r}", "select")
        k = int(self.folds)
        if k < 2:
            raise PredictorError(f"needs at least 2 folds, got {self.folds!r}", "folds")
        n_groups = len(set(self._groups)) if self._groups is not None else len(graphs)
        if n_groups < k:
            raise PredictorError(f"{n_groups} distinct archs cannot fill {k} folds", "folds")
        parts = kfold_indices(len(graphs), k, int(self.seed), self._groups)
        scores = []
        for fam, params in cands:
            oof = np.empty(len(graphs))
            for test in parts:
                train = np.setdiff1d(np.arange(len(graphs)), test)
                model = self._fit_one(fam, params, [graphs[i] for i in train], y[train], train)
                oof[test] = model.predict([graphs[i] for i in test])
            try:
                m = metrics(y, oof)
            except LetiError:
                m = {"acc10": float("nan"), "spearman": float("nan")}
            scores.append({"family": fam, "params": params, **{key: float(v) for key, v in m.items()}})
        best = choose(scores, self.select)
        fam, params = cands[best]
        self.cv_scores_ = scores
        self.chosen_ = {"family": fam, "params": params}
        self.model_ = self._fit_one(fam, params, graphs, y, np.arange(len(graphs)))

    def _fit_one(self, fam: str, params: dict, graphs, y, rows: np.ndarray) -> Predictor:
        groups = None if self._groups is None else self._groups[rows]  # e.g. the GCN's early stopping
        return make(fam, **params).fit(graphs, y, groups=groups)

    def _predict(self, graphs):
        return self.model_.predict(graphs)

    def _save(self, d: Path) -> None:
        self.model_.save(d / MODEL_DIR, {"chosen_by": "auto"})
        write_json_checked(d / INFO_FILE, {"chosen": self.chosen_, "cv_scores": self.cv_scores_})

    def _load(self, d: Path) -> None:
        info = read_json_checked(d / INFO_FILE)
        chosen = info["chosen"]
        model = load_dir(d / MODEL_DIR)
        if model.family != chosen["family"]:
            raise PredictorError(
                f"auto.json names {chosen['family']!r} but {MODEL_DIR}/ holds {model.family!r}", str(d)
            )
        self.model_ = model
        self.chosen_ = chosen
        self.cv_scores_ = info.get("cv_scores", [])

    def summary(self) -> str:
        def num(v) -> str:
            return "nan" if v is None else f"{v:.3f}"  # NaN is saved as null

        rows = [f"{s['family']} {json.dumps(s['params'], sort_keys=True)}: acc10 {num(s.get('acc10'))}, "
                f"rho {num(s.get('spearman'))}" for s in getattr(self, "cv_scores_", [])]  # fmt: skip
        return "\n".join(rows)


__all__ = ["DEFAULT_CANDIDATES", "AutoPredictor", "choose", "kfold_indices"]
