"""The ``auto`` family: repeated k-fold cross-validation on the training set picks a family (and settings), then
that candidate is refitted on all the training archs and does the predicting.

* **Folds** are grouped by ``groups`` (pass the archs' canonical hashes) when given, so isomorphic archs never sit
  on both sides of a fold, as in the real train/test split; otherwise they are plain and seeded. The CV is repeated
  ``repeats`` times with other fold assignments, so a choice does not hang on one lucky split.
* **Scores.** Each candidate is scored on every held-out fold by the four numbers leti reports: acc@10, acc@5,
  Spearman's rho and Kendall's tau. ``select="rank"`` (the default) ranks the candidates on each of them within
  each fold and averages: a model that is within 10% more often but ranks archs worse does not win by that alone.
  ``select="acc10"`` scores by acc@10 alone.
* **One standard error.** The best mean score is uncertain; every candidate within one standard error of it (over
  the folds) is as good as far as the data can tell, and the *simplest* of those wins (``complexity``: linear fits
  and FLOPs lines, then the lookup table, then boosting). ``one_se=False`` takes the best mean.
* **Blends** (``stack``): the equal-weight geometric mean of the best 2 .. ``stack`` candidates is scored like any
  other candidate (it counts as one step more complex than its most complex member).
* **Order-keeping corrections** (``leti.predictors.calibrate``), each tried on every candidate's out-of-fold
  predictions and kept when it helps there: a *mode shift* that moves predictions from the mean to the typical
  value of lopsidedly noisy measurements (learnt on the other folds for each fold: its gain is measured honestly),
  and, when the training latencies lie on a coarse grid (a phone app that reports whole ms; ``quantised``), a pull
  towards the nearest grid point. Both keep the order of the predictions, so rho and tau are unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from leti.errors import LetiError, PredictorError
from leti.predictors.base import Predictor
from leti.predictors.calibrate import ModeShift, acc10, best_shrink, cross_fitted_shift, grid_step, snap
from leti.predictors.cv import kfold_indices
from leti.predictors.metrics import metrics
from leti.predictors.registry import family_class, load_dir, make, read_json_checked, write_json_checked

MODEL_DIR = "model"  # the first member's directory; further blend members go to model.1, model.2
INFO_FILE = "auto.json"

_Q6 = {
    "objective": "quantile",
    "alpha": 0.6,
    "min_child_samples": 20,
    "n_estimators": 600,
    "base_robust": 1.0,
}
# What ``auto`` tries by default: straight relative-error lines on op counts (least squares and Huber), the LUT also
# with Huber-robust NNLS, and LightGBM plain and with a mode-seeking loss over a robust LUT base, for targets whose
# measurements have one-sided outliers (docs/accuracy.md). Lines on every feature, monotone LightGBM, FLOPs lines,
# XGBoost and CatBoost were candidates too; on the six public targets (raw and whole-ms, 300 and 900 archs) they
# changed nothing beyond noise and cost time, so they are tried only when asked for. So is the GCN (minutes on a CPU).
DEFAULT_CANDIDATES: tuple[tuple[str, dict], ...] = (
    ("linear", {"inputs": "counts"}),
    ("linear", {"inputs": "counts", "loss": "huber"}),
    ("lut", {}),
    ("lut", {"robust": 1.0}),
    ("lightgbm", {}),
    ("lightgbm", _Q6),
)
SELECT = ("rank", "acc10")
RANKED = ("acc10", "acc5", "spearman", "kendall")
# How complex each family is, for the one-standard-error rule (lower is simpler)
COMPLEXITY = {
    "linear": 1.0,
    "flops": 1.0,
    "lut": 2.0,
    "lightgbm": 3.0,
    "xgboost": 3.0,
    "catboost": 3.0,
    "gcn": 4.0,
}


def complexity(family: str, params: dict) -> float:
    """How complex a candidate is (see ``COMPLEXITY``); a linear fit on every feature counts a little more than one
    on op counts, and monotone boosting a little less than free boosting."""
    c = COMPLEXITY.get(family, 3.0)
    if family == "linear" and params.get("inputs", "counts") != "counts":
        c += 0.5
    if family in ("lightgbm", "xgboost", "catboost") and params.get("monotone"):
        c -= 0.5
    return c


# ---- selection -------------------------------------------------------------------------------------------------
def fold_scores(y, oof: np.ndarray, parts: list[list[np.ndarray]]) -> np.ndarray:
    """(folds, RANKED) metrics of one candidate on every held-out fold of every repeat; NaN where undefined."""
    rows = []
    for r, folds in enumerate(parts):
        for test in folds:
            try:
                m = metrics(y[test], oof[r][test])
                rows.append([m[k] for k in RANKED])
            except LetiError:
                rows.append([np.nan] * len(RANKED))
    return np.array(rows, dtype=float)


def selection_scores(scores: np.ndarray, select: str = "rank") -> np.ndarray:
    """Per candidate and fold, the score to select by (higher is better): minus the mean rank over ``RANKED``
    within the fold (``rank``) or acc@10 (``acc10``). ``scores``: (candidates, folds, RANKED)."""
    S = np.nan_to_num(np.asarray(scores, dtype=float), nan=-np.inf)
    if select == "acc10":
        return S[:, :, 0]
    # rank 1 = best; equal values share their best rank
    ranks = 1 + (S[None, :, :, :] > S[:, None, :, :]).sum(axis=1)
    return -ranks.mean(axis=2)


def choose(scores, complexities=None, select: str = "rank", one_se: bool = True) -> int:
    """Index of the winning candidate: among those whose mean score is within one standard error (over folds) of
    the best mean, the simplest; ties go to the better mean, then to the earlier candidate."""
    s = selection_scores(scores, select)
    n_c, n_f = s.shape
    mean = s.mean(axis=1)
    se = s.std(axis=1, ddof=1) / np.sqrt(n_f) if n_f > 1 else np.zeros(n_c)
    cx = np.zeros(n_c) if complexities is None else np.asarray(complexities, dtype=float)
    # tie-break by acc@10 then rho: these are what leti reports first
    acc = np.nan_to_num(np.asarray(scores, dtype=float)[:, :, 0], nan=-1.0).mean(axis=1)
    rho = np.nan_to_num(np.asarray(scores, dtype=float)[:, :, 2], nan=-1.0).mean(axis=1)
    best = int(min(range(n_c), key=lambda i: (-mean[i], -acc[i], -rho[i], i)))
    if not one_se:
        return best
    ok = [i for i in range(n_c) if mean[i] >= mean[best] - (se[best] if np.isfinite(se[best]) else 0.0)]
    return int(min(ok, key=lambda i: (cx[i], -mean[i], -acc[i], -rho[i], i)))


def blend(preds) -> np.ndarray:
    """Equal-weight geometric mean of several predictions."""
    return np.exp(np.mean(np.log(np.maximum(np.asarray(preds, dtype=float), 1e-9)), axis=0))


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


class AutoPredictor(Predictor):
    """``candidates``: family names or ``[family, params]`` pairs; ``folds`` x ``repeats``: the repeated k-fold CV;
    ``select``, ``one_se``, ``stack``, ``mode_shift`` and ``quantised`` (``auto``: try it; ``off``): see the
    module doc."""

    family = "auto"
    param_ranges = {"folds": (2, 100)}

    def __init__(
        self,
        candidates=None,
        folds: int = 5,
        repeats: int = 2,
        seed: int = 0,
        select: str = "rank",
        one_se: bool = True,
        stack: int = 0,
        mode_shift: str = "auto",
        quantised: str = "auto",
    ):
        self.candidates = candidates
        self.folds = folds
        self.repeats = repeats
        self.seed = seed
        self.select = select
        self.one_se = one_se
        self.stack = stack
        self.mode_shift = mode_shift
        self.quantised = quantised

    def _candidates(self) -> list[tuple[str, dict]]:
        return _normalise(DEFAULT_CANDIDATES if self.candidates is None else self.candidates)

    def _check(self, n: int) -> None:
        if self.select not in SELECT:
            raise PredictorError(f"must be one of {', '.join(SELECT)}, got {self.select!r}", "select")
        for name in ("quantised", "mode_shift"):
            if getattr(self, name) not in ("auto", "off"):
                raise PredictorError(f"must be 'auto' or 'off', got {getattr(self, name)!r}", name)
        for name in ("folds", "repeats", "stack"):
            v = getattr(self, name)
            if (
                isinstance(v, bool)
                or not isinstance(v, int | np.integer)
                or v < (2 if name == "folds" else 0)
            ):
                raise PredictorError(f"must be an integer of at least {2 if name == 'folds' else 0}", name)
        n_groups = len(set(self._groups)) if self._groups is not None else n
        if n_groups < self.folds:
            raise PredictorError(f"{n_groups} distinct archs cannot fill {self.folds} folds", "folds")

    def _fit(self, graphs, y):
        cands = self._candidates()
        self._check(len(graphs))
        reps = max(int(self.repeats), 1)
        parts = [
            kfold_indices(len(graphs), int(self.folds), int(self.seed) + r, self._groups) for r in range(reps)
        ]
        step = grid_step(y) if self.quantised == "auto" else None
        oofs = [self._oof(fam, params, graphs, y, parts) for fam, params in cands]
        members = [[i] for i in range(len(cands))]
        cx = [complexity(f, p) for f, p in cands]
        post = [self._post(y, o, parts, step) for o in oofs]
        if int(self.stack) >= 2 and len(cands) >= 2:
            order = np.argsort(-selection_scores(np.array([p[0] for p in post]), self.select).mean(axis=1),
                               kind="stable")  # fmt: skip
            for m in range(2, min(int(self.stack), len(cands)) + 1):
                top = [int(i) for i in order[:m]]
                oofs.append(np.array([blend([oofs[i][r] for i in top]) for r in range(reps)]))
                members.append(top)
                cx.append(max(cx[i] for i in top) + 1.0)
                post.append(self._post(y, oofs[-1], parts, step))
        S = np.array([p[0] for p in post])
        win = choose(S, cx, self.select, bool(self.one_se))
        sel = selection_scores(S, self.select)
        self.cv_scores_ = [
            {
                "family": "+".join(cands[i][0] for i in mem),
                "params": cands[mem[0]][1] if len(mem) == 1 else [cands[i][1] for i in mem],
                **{k: float(np.nanmean(S[j][:, c])) for c, k in enumerate(RANKED)},
                "score": float(sel[j].mean()),
                "score_se": float(sel[j].std(ddof=1) / np.sqrt(sel.shape[1])) if sel.shape[1] > 1 else 0.0,
                "complexity": cx[j],
                "mode_shift": post[j][1],
                "shrink": post[j][2],
            }
            for j, mem in enumerate(members)
        ]
        chosen = [cands[i] for i in members[win]]
        self.chosen_ = {
            "family": "+".join(f for f, _ in chosen),
            "params": chosen[0][1] if len(chosen) == 1 else {},
            "members": [{"family": f, "params": p} for f, p in chosen],
        }
        self.shift_ = ModeShift.fit(oofs[win].ravel(), np.tile(y, reps)) if post[win][1] else None
        self.grid_ms_ = step
        self.shrink_ = post[win][2]
        # only its grid point matters to snap(); keeping that, not the measured value, keeps measurements out of files
        self.lowest_ms_ = float(np.round(np.min(y) / step) * step) if step else 0.0
        # the winner's out-of-fold predictions, corrected as predict() corrects: honest errors on the training
        # archs, which leti.trust calibrates on without refitting
        oof = oofs[win][0]
        if self.shift_ is not None:
            oof = self.shift_(oof)
        if step:
            oof = snap(oof, step, self.shrink_, self.lowest_ms_)
        self.oof_predictions_ = oof
        self.models_ = [self._fit_one(f, p, graphs, y, np.arange(len(graphs))) for f, p in chosen]

    def _post(self, y, oof, parts, step) -> tuple[np.ndarray, bool, float]:
        """(fold scores after the corrections that help, whether the mode shift is used, the grid shrink)."""
        use_shift = False
        if self.mode_shift == "auto":
            shifted = cross_fitted_shift(y, oof, parts)
            if np.mean([acc10(y, o) for o in shifted]) > np.mean([acc10(y, o) for o in oof]):
                oof, use_shift = shifted, True
        shrink = best_shrink(y, oof, step)
        if step is not None:
            oof = np.array([snap(o, step, shrink, float(np.min(y))) for o in oof])
        return fold_scores(y, oof, parts), use_shift, shrink

    def _oof(self, fam, params, graphs, y, parts) -> np.ndarray:
        """Out-of-fold predictions of one candidate, one row per repeat."""
        out = np.empty((len(parts), len(graphs)))
        for r, folds in enumerate(parts):
            for test in folds:
                train = np.setdiff1d(np.arange(len(graphs)), test)
                model = self._fit_one(fam, params, [graphs[i] for i in train], y[train], train)
                out[r, test] = model.predict([graphs[i] for i in test])
        return out

    def _fit_one(self, fam: str, params: dict, graphs, y, rows: np.ndarray) -> Predictor:
        groups = None if self._groups is None else self._groups[rows]  # e.g. the GCN early stopping
        return make(fam, **params).fit(graphs, y, groups=groups)

    @property
    def model_(self) -> Predictor:
        """The (first) fitted model."""
        return self.models_[0]

    def _predict(self, graphs):
        p = (
            self.models_[0].predict(graphs)
            if len(self.models_) == 1
            else blend([m.predict(graphs) for m in self.models_])
        )
        if self.shift_ is not None:
            p = self.shift_(p)
        if self.grid_ms_:
            p = snap(p, self.grid_ms_, self.shrink_, self.lowest_ms_)
        return p

    # ---- persistence ----------------------------------------------------------------------------------------
    @staticmethod
    def _member_dir(i: int) -> str:
        return MODEL_DIR if i == 0 else f"{MODEL_DIR}.{i}"

    def _save(self, d: Path) -> None:
        for i, m in enumerate(self.models_):
            m.save(d / self._member_dir(i), {"chosen_by": "auto"})
        write_json_checked(
            d / INFO_FILE,
            {"chosen": self.chosen_, "cv_scores": self.cv_scores_, "grid_ms": self.grid_ms_,
             "shrink": self.shrink_, "lowest_ms": self.lowest_ms_,
             "mode_shift": None if self.shift_ is None else self.shift_.to_json()},
        )  # fmt: skip

    def _load(self, d: Path) -> None:
        info = read_json_checked(d / INFO_FILE)
        chosen = info["chosen"]
        members = chosen.get("members") or [{"family": chosen["family"], "params": chosen.get("params", {})}]
        models = []
        for i, mem in enumerate(members):
            model = load_dir(d / self._member_dir(i))
            if model.family != mem["family"]:
                raise PredictorError(
                    f"auto.json names {mem['family']!r} but {self._member_dir(i)}/ holds {model.family!r}",
                    str(d),
                )
            models.append(model)
        grid = info.get("grid_ms")
        shrink = float(info.get("shrink", 1.0))
        lowest = float(info.get("lowest_ms", 0.0))
        if grid is not None and not (float(grid) > 0 and 0 < shrink <= 1 and lowest >= 0):
            raise PredictorError("bad grid, shrink or lowest value", str(d / INFO_FILE))
        shift = info.get("mode_shift")
        try:
            self.shift_ = None if shift is None else ModeShift.from_json(shift)
        except (KeyError, TypeError, ValueError) as e:
            raise PredictorError(f"bad mode shift ({e})", str(d / INFO_FILE)) from None
        self.models_ = models
        self.chosen_ = chosen
        self.cv_scores_ = info.get("cv_scores", [])
        self.grid_ms_ = None if grid is None else float(grid)
        self.shrink_, self.lowest_ms_ = shrink, lowest

    def summary(self) -> str:
        def num(v, fmt: str = ".3f") -> str:
            return "nan" if v is None else format(v, fmt)  # NaN is saved as null

        rows = [f"{s['family']} {json.dumps(s['params'], sort_keys=True)}: acc10 {num(s.get('acc10'))}, "
                f"rho {num(s.get('spearman'))}, score {num(s.get('score'), '.2f')} ± {num(s.get('score_se'), '.2f')}"
                for s in getattr(self, "cv_scores_", [])]  # fmt: skip
        return "\n".join(rows)


__all__ = [
    "DEFAULT_CANDIDATES",
    "AutoPredictor",
    "blend",
    "choose",
    "complexity",
    "fold_scores",
    "kfold_indices",
    "selection_scores",
]
