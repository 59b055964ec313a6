"""The ``fewshot`` family: a predictor for a new target from a handful of its measurements and other targets' data.

Each *source* target gets its own predictor (``source_family``, the lookup table by default), trained on all of its
measurements. On the new target, latency is modelled as a linear combination of the sources' predictions,
``y ≈ b + Σ_s w_s · p_s(x) / m_s`` (``m_s``: the source's median latency), fitted to the K measured archs by ridge
regression on relative errors, its penalty chosen by leave-one-out among a few. A new phone is rarely unlike every known one (a Pixel 4 CPU and a Snapdragon 855 CPU are the same core), and
where it is, a mix of a CPU and a GPU with a negative weight often is what it is like; the head learns that from
the few archs, and the sources carry everything that is shared (which layers cost what, how they add up).

Why this and not a meta-learned network (HELP) or per-layer corrections: it is a few lines, it needs no training
across devices, and on the six public NB201 devices (leave one out, docs/trust.md) it did as well as or better than
what was tried besides: a per-layer correction on top of it (cross-validation chose it away), a log-space head and
non-negative weights (both worse on sd855-cpu, the device least like the others), an evidence-maximised Bayesian
ridge (better at K = 10, but its penalty grew too weak as K grew and sd855-cpu's ranking fell apart), and lightgbm
source models (better for the Pixel 3 / Raspberry Pi 4 pair, worse for the rest).

``suggest`` picks which archs of a pool to measure first: spread evenly over the sources' mean predicted latency
(the K archs at the centres of K equal-count bins), which keeps the head's fit well conditioned without chasing the
extremes (a D-optimal design picks degenerate archs whose measurements say little about the rest).

Saving: each source predictor in ``sources/<i>/`` (its own family's format), the head in ``fewshot.json``, sealed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from leti.errors import PredictorError
from leti.graph.layergraph import LayerGraph
from leti.predictors.base import Predictor
from leti.predictors.registry import load_dir, make, read_json_checked, write_json_checked

INFO_FILE = "fewshot.json"
SOURCE_DIR = "sources"
FLOOR_MS = 1e-3  # a linear head can dip below zero far from its data; latency cannot
# ridge penalties tried (on weights of sources scaled to median 1); leave-one-out picks one. The floor of 1e-3 matters:
# weaker penalties let a few archs set large weights of opposite signs that rank the rest badly
RIDGE_GRID = (1e-3, 1e-2, 1e-1, 1.0)


class FewShotPredictor(Predictor):
    """``sources``: names of the source targets (for the record and for loading them back); ``source_family`` and
    ``source_params``: the predictor trained per source; ``max_source_archs``: a seeded sample of at most this many
    of each source's archs trains its predictor; ``seed``.

    ``fit(graphs, latencies_ms, source_data=...)`` takes the sources as ``{target: (graphs, latencies_ms)}`` or as
    ``{target: (fitted predictor, median latency ms)}``; without ``source_data`` it reuses the sources it already has (a
    clone keeps them: cross-validation refits the head only).
    """

    family = "fewshot"

    def __init__(self, sources=None, source_family: str = "lut", source_params=None,
                 max_source_archs: int = 5000, seed: int = 0):  # fmt: skip
        self.sources = sources
        self.source_family = source_family
        self.source_params = source_params
        self.max_source_archs = max_source_archs
        self.seed = seed

    # ---- sources ----------------------------------------------------------------------------------------------
    def clone(self) -> FewShotPredictor:
        c = super().clone()
        if hasattr(self, "source_models_"):
            c.source_models_, c.source_scales_ = self.source_models_, self.source_scales_
        return c

    def fit_sources(self, source_data: dict) -> FewShotPredictor:
        """Train (or take) one predictor per source; ``source_data`` as for ``fit``."""
        if not isinstance(source_data, dict) or not source_data:
            raise PredictorError("give at least one source target", "sources")
        names = list(source_data)
        if self.sources is not None and list(self.sources) != names:
            raise PredictorError(f"the data is for {names}, the predictor was made for {list(self.sources)}",
                                 "sources")  # fmt: skip
        models, scales = {}, {}
        rng = np.random.default_rng(self.seed)
        for name in names:
            try:
                first, second = source_data[name]
            except (TypeError, ValueError):
                raise PredictorError("must be (graphs, latencies_ms) or (fitted predictor, median latency ms)",
                                     f"sources.{name}") from None  # fmt: skip
            if isinstance(first, Predictor):
                if not hasattr(first, "n_train_"):
                    raise PredictorError("is not fitted", f"sources.{name}")
                models[name], scales[name] = first, float(second)
                continue
            g, y = list(first), np.asarray(second, dtype=float)
            if len(g) != y.size or y.size == 0:
                raise PredictorError(f"{len(g)} graphs but {y.size} latencies", f"sources.{name}")
            if y.size > int(self.max_source_archs):
                pick = np.sort(rng.choice(y.size, int(self.max_source_archs), replace=False))
                g, y = [g[i] for i in pick], y[pick]
            models[name] = make(self.source_family, **(self.source_params or {})).fit(g, y)
            scales[name] = float(np.median(y))
        self.sources = names
        self.source_models_ = models
        self.source_scales_ = scales
        return self

    def source_matrix(self, graphs: list[LayerGraph]) -> np.ndarray:
        """(n, sources) each source's prediction divided by its median latency."""
        cols = [self.source_models_[s].predict(graphs) / self.source_scales_[s] for s in self.sources]
        return np.stack(cols, axis=1) if cols else np.zeros((len(graphs), 0))

    # ---- the head ---------------------------------------------------------------------------------------------
    def fit(self, graphs, latencies_ms, groups=None, source_data: dict | None = None) -> FewShotPredictor:
        if source_data is not None:
            self.fit_sources(source_data)
        if not hasattr(self, "source_models_"):
            raise PredictorError("has no sources: pass source_data", "sources")
        return super().fit(graphs, latencies_ms, groups)

    def _fit(self, graphs, y):
        F = self.source_matrix(graphs)
        scale = float(np.median(y))
        # rows divided by y/scale: the squared error of each row is a relative error, all rows weigh the same
        A = np.hstack([np.ones((len(y), 1)), F]) / (y / scale)[:, None]
        coef, lam = ridge_loo(A, np.ones(len(y)), RIDGE_GRID)
        self.coef_ = coef * scale
        self.ridge_ = lam

    def _predict(self, graphs):
        F = self.source_matrix(graphs)
        return np.maximum(self.coef_[0] + F @ self.coef_[1:], FLOOR_MS)

    # ---- persistence ------------------------------------------------------------------------------------------
    def _save(self, d: Path) -> None:
        for i, s in enumerate(self.sources):
            self.source_models_[s].save(d / SOURCE_DIR / str(i), {"target": s, "fewshot_source": True})
        write_json_checked(d / INFO_FILE, {
            "sources": list(self.sources),
            "scales": [self.source_scales_[s] for s in self.sources],
            "coef": self.coef_.tolist(),
            "ridge": self.ridge_,
        })  # fmt: skip

    def _load(self, d: Path) -> None:
        info = read_json_checked(d / INFO_FILE)
        names = [str(s) for s in info["sources"]]
        scales = [float(v) for v in info["scales"]]
        coef = np.asarray(info["coef"], dtype=float)
        if len(scales) != len(names) or coef.shape != (len(names) + 1,) or not np.isfinite(coef).all():
            raise PredictorError("sources, scales and coefficients disagree", str(d / INFO_FILE))
        if self.sources is not None and list(self.sources) != names:
            raise PredictorError("meta.json and fewshot.json name different sources", str(d))
        models = {}
        for i, s in enumerate(names):
            m = load_dir(d / SOURCE_DIR / str(i))
            if m.meta_.get("target") != s:
                raise PredictorError(
                    f"holds {m.meta_.get('target')!r}, not {s!r}", str(d / SOURCE_DIR / str(i))
                )
            models[s] = m
        self.sources = names
        self.source_models_ = models
        self.source_scales_ = dict(zip(names, scales, strict=True))
        self.coef_ = coef
        self.ridge_ = float(info.get("ridge", 0.0))


def ridge_loo(A: np.ndarray, b: np.ndarray, grid) -> tuple[np.ndarray, float]:
    """Ridge regression of ``b`` on ``A`` (column 0, the intercept, unpenalised) with the penalty of ``grid`` whose
    leave-one-out error (closed form through the hat matrix) is least: (coefficients, penalty). The worst tenth of
    the leave-one-out errors is left out of that mean: one arch the sources cannot explain (an arch they predict at
    ~0 ms because their runtime folds it away) must not pick the penalty for all."""
    n = A.shape[0]
    keep = n - (n // 10 if n >= 10 else 0)
    best = None
    for lam in grid:
        P = lam * np.eye(A.shape[1])
        P[0, 0] = 0.0
        M = np.linalg.pinv(A.T @ A + P)
        H = A @ M @ A.T
        r = (b - H @ b) / np.maximum(1.0 - np.diag(H), 1e-6)
        err = float(np.mean(np.sort(r**2)[:keep]))
        if best is None or err < best[0]:
            best = (err, M @ A.T @ b, float(lam))
    return best[1], best[2]


def suggest(pool: list[LayerGraph], source_models: dict[str, Predictor], scales: dict[str, float],
            k: int) -> np.ndarray:  # fmt: skip
    """Indices into ``pool`` of the ``k`` archs to measure first on a new target: the archs at the centres of ``k``
    equal-count bins of the sources' mean log predicted latency (relative to each source's median)."""
    n = len(pool)
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise PredictorError(f"must be a positive integer, got {k!r}", "n")
    if k > n:
        raise PredictorError(f"{k} archs asked for, the pool has {n}", "n")
    if not source_models:
        raise PredictorError("give at least one source target", "sources")
    logs = [np.log(np.maximum(m.predict(pool), FLOOR_MS) / scales[s]) for s, m in source_models.items()]
    score = np.mean(logs, axis=0)
    order = np.argsort(score, kind="stable")
    centres = ((np.arange(k) + 0.5) / k * n).astype(np.int64)
    return np.sort(order[np.minimum(centres, n - 1)])


__all__ = ["FewShotPredictor", "suggest"]
