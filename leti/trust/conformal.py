"""Normalised conformal intervals on log latency.

Every training arch has an out-of-fold prediction (from a model that never saw it: cross-validation, CV+ style), so
its log residual ``r = |log y - log ŷ|`` is an honest sample of the error on new archs. Dividing by a difficulty
``σ`` (``Difficulty``: how wrong the model was on the training archs nearest to it) gives normalised scores; the
``⌈(n+1)c⌉``-th smallest score ``q`` makes ``[ŷ e^{-qσ}, ŷ e^{qσ}]`` a coverage-``c`` interval for an exchangeable
new arch, wide where the model was unsure and narrow where it was not. Scores are kept whole, so any coverage can be
asked for at prediction time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from leti.errors import LetiError, PredictorError
from leti.trust.embedding import nearest, rounded

DEFAULT_COVERAGE = 0.9
NEIGHBOURS = 30  # training archs whose errors set an arch's difficulty
FLOOR = 0.2  # share of the median training error every difficulty has at least (no zero-width intervals)


def check_coverage(coverage, field: str = "coverage") -> float:
    """``coverage`` as a float in (0, 1), else a LetiError naming ``field``."""
    if isinstance(coverage, bool) or not isinstance(coverage, int | float | np.integer | np.floating):
        raise LetiError(f"must be a number in (0, 1), got {coverage!r}", field)
    c = float(coverage)
    if not (0.0 < c < 1.0):
        raise LetiError(f"must be in (0, 1), got {coverage!r}", field)
    return c


@dataclass(frozen=True)
class Difficulty:
    """σ(x) = floor + the mean out-of-fold |log residual| of the ``k`` training archs nearest to x.

    Archs with identical features (isomorphic duplicates) are one reference point carrying their mean error, so
    that which of several equidistant duplicates counts among the ``k`` never depends on rounding.
    """

    ref_z: np.ndarray  # (m, dims) distinct embedded reference archs
    ref_err: np.ndarray  # (m,) their (mean) out-of-fold |log residual|
    k: int
    floor: float

    @classmethod
    def fit(cls, ref_z: np.ndarray, ref_err: np.ndarray, k: int = NEIGHBOURS,
            floor: float = FLOOR) -> tuple[Difficulty, np.ndarray]:  # fmt: skip
        """(the difficulty, σ of each given reference arch from the *other* distinct archs: what calibration
        must use, as an arch's own error is not known when it is predicted)."""
        err = np.asarray(ref_err, dtype=float)
        z = np.asarray(ref_z, dtype=float)
        uniq, inv = np.unique(np.round(z, 9), axis=0, return_inverse=True)
        inv = inv.ravel()
        err_u = np.bincount(inv, weights=err, minlength=uniq.shape[0]) / np.bincount(
            inv, minlength=uniq.shape[0]
        )
        med = float(np.median(err)) if err.size else 0.0
        d = cls(uniq, err_u, int(k), max(floor * med, 1e-6))
        _, idx = nearest(uniq, uniq, d.k, exclude_self=True)
        return d, d.of_neighbours(idx)[inv]

    def of_neighbours(self, idx: np.ndarray) -> np.ndarray:
        if idx.shape[1] == 0:
            return np.full(
                idx.shape[0], self.floor + (float(self.ref_err.mean()) if self.ref_err.size else 0.0)
            )
        return self.floor + self.ref_err[idx].mean(axis=1)

    def sigma(self, Z: np.ndarray) -> np.ndarray:
        _, idx = nearest(Z, self.ref_z, self.k)
        return self.of_neighbours(idx)


@dataclass(frozen=True)
class Conformal:
    scores: np.ndarray  # sorted normalised scores |log y - log ŷ_oof| / σ

    @classmethod
    def fit(cls, y, y_oof, sigma) -> Conformal:
        y = np.asarray(y, dtype=float)
        p = np.asarray(y_oof, dtype=float)
        s = np.abs(np.log(y) - np.log(np.maximum(p, 1e-12))) / np.asarray(sigma, dtype=float)
        return cls(np.sort(s[np.isfinite(s)]))

    @property
    def n(self) -> int:
        return int(self.scores.size)

    def max_coverage(self) -> float:
        """The highest coverage with a finite interval: n / (n + 1)."""
        return self.n / (self.n + 1.0)

    def quantile(self, coverage: float) -> float:
        c = check_coverage(coverage)
        k = math.ceil((self.n + 1) * c - 1e-9)
        if k > self.n:
            need = math.ceil(c / (1 - c) - 1e-9)
            raise LetiError(
                f"{c:g} needs at least {need} calibration archs, this predictor has {self.n} "
                f"(at most {self.max_coverage():.4g})",
                "coverage",
            )
        return float(self.scores[max(k, 1) - 1])

    def interval(self, pred_ms: np.ndarray, sigma: np.ndarray, coverage: float) -> np.ndarray:
        """(n, 2) [lo, hi] in ms."""
        h = self.quantile(coverage) * np.asarray(sigma, dtype=float)
        p = np.asarray(pred_ms, dtype=float)
        return np.stack([p * np.exp(-h), p * np.exp(h)], axis=1)

    def to_dict(self) -> dict:
        return {"scores": rounded(self.scores)}

    @classmethod
    def from_dict(cls, d: dict, where: str) -> Conformal:
        s = np.asarray(d["scores"], dtype=float).reshape(-1)
        if s.size == 0 or not np.isfinite(s).all() or (s < 0).any():
            raise PredictorError("the conformal scores are missing or invalid", where)
        return cls(np.sort(s))


__all__ = ["DEFAULT_COVERAGE", "Conformal", "Difficulty", "check_coverage"]
