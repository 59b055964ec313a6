"""The ``flops`` family: latency as a straight line in MACs, fitted with RANSAC so a few bad measurements do not
tilt it; optionally one line per peak-memory cluster (KMeans on log peak bytes), as in LETI's figure 3.6, because
models of equal MACs run slower when their activations no longer fit the caches."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from leti.errors import PredictorError
from leti.predictors.base import Predictor
from leti.predictors.features import feature_index, featurize
from leti.predictors.registry import read_json_checked, write_json_checked

MODEL_FILE = "flops.json"
_GMACS = 1e9  # fit in GMACs: keeps the coefficients O(1)
_MACS_COLUMN = {"live": "tot.live_macs", "all": "tot.macs"}


def _columns(graphs, macs: str) -> tuple[np.ndarray, np.ndarray]:
    X = featurize(graphs)
    x = X[:, feature_index(_MACS_COLUMN[macs])] / _GMACS
    peak = np.log(np.maximum(X[:, feature_index("tot.peak_bytes")], 1.0))
    return x, peak


def _line(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[float, float]:
    """(slope, intercept) by RANSAC; a plain least-squares line when there are too few points for RANSAC."""
    from sklearn.linear_model import LinearRegression, RANSACRegressor

    if x.size < 2 or np.ptp(x) == 0:
        return 0.0, float(np.median(y))
    X = x[:, None]
    if x.size < 6:
        lr = LinearRegression().fit(X, y)
        return float(lr.coef_[0]), float(lr.intercept_)
    # inliers: within 2.5 robust standard deviations of the line, the scale taken from the residuals of a
    # repeated-medians (Siegel) line on at most 400 points, which outliers cannot drag
    from scipy.stats import siegelslopes

    sub = np.random.default_rng(seed).permutation(x.size)[:400]
    slope, icpt = siegelslopes(y[sub], x[sub])
    res = y - (slope * x + icpt)
    mad = float(np.median(np.abs(res - np.median(res)))) * 1.4826
    thresh = max(2.5 * mad, 1e-6 * float(np.median(np.abs(y))), 1e-12)
    r = RANSACRegressor(
        LinearRegression(), min_samples=2, residual_threshold=thresh,
        max_trials=200, random_state=seed,
    )  # fmt: skip
    try:
        r.fit(X, y)
    except ValueError:  # no consensus set: fall back to least squares rather than fail the whole fit
        lr = LinearRegression().fit(X, y)
        return float(lr.coef_[0]), float(lr.intercept_)
    est = r.estimator_
    return float(est.coef_[0]), float(est.intercept_)


class FlopsPredictor(Predictor):
    """``latency = a * GMACs + b`` per cluster. ``clusters``: KMeans clusters on log peak memory (1 = one line);
    ``macs``: ``live`` (MACs of nodes that reach the output) or ``all``."""

    family = "flops"

    param_ranges = {"clusters": (1, 64)}

    def __init__(self, clusters: int = 1, macs: str = "live", seed: int = 0):
        self.clusters = clusters
        self.macs = macs
        self.seed = seed

    def _check(self) -> None:
        if self.macs not in _MACS_COLUMN:
            raise PredictorError(f"must be 'live' or 'all', got {self.macs!r}", "macs")
        if isinstance(self.clusters, bool) or not isinstance(self.clusters, int) or self.clusters < 1:
            raise PredictorError(f"must be a positive integer, got {self.clusters!r}", "clusters")

    def _fit(self, graphs, y):
        self._check()
        x, peak = _columns(graphs, self.macs)
        k = min(self.clusters, np.unique(peak).size)
        if k > 1:
            from sklearn.cluster import KMeans

            km = KMeans(n_clusters=k, n_init=10, random_state=self.seed).fit(peak[:, None])
            order = np.argsort(
                km.cluster_centers_.ravel()
            )  # clusters sorted by memory: stable, readable JSON
            centers = km.cluster_centers_.ravel()[order]
            label = np.argsort(order)[km.labels_]
        else:
            centers, label = np.array([float(np.mean(peak))]), np.zeros(x.size, dtype=int)
        lines = []
        for c in range(centers.size):
            m = label == c
            lines.append(_line(x[m], y[m], self.seed) if m.sum() >= 2 else _line(x, y, self.seed))
        self.centers_ = centers
        self.slopes_ = np.array([a for a, _ in lines])
        self.intercepts_ = np.array([b for _, b in lines])

    def cluster_of(self, graphs) -> np.ndarray:
        _, peak = _columns(list(graphs), self.macs)
        return np.argmin(np.abs(peak[:, None] - self.centers_[None, :]), axis=1)

    def _predict(self, graphs):
        x, peak = _columns(graphs, self.macs)
        c = np.argmin(np.abs(peak[:, None] - self.centers_[None, :]), axis=1)
        # a line can dip below zero far outside the data; latency cannot
        return np.maximum(self.slopes_[c] * x + self.intercepts_[c], 1e-6)

    def _save(self, d: Path) -> None:
        write_json_checked(
            d / MODEL_FILE,
            {
                "centers_log_peak_bytes": self.centers_.tolist(),
                "ms_per_gmac": self.slopes_.tolist(),
                "intercept_ms": self.intercepts_.tolist(),
            },
        )

    def _load(self, d: Path) -> None:
        self._check()
        data = read_json_checked(d / MODEL_FILE)
        c = np.asarray(data["centers_log_peak_bytes"], dtype=float)
        a = np.asarray(data["ms_per_gmac"], dtype=float)
        b = np.asarray(data["intercept_ms"], dtype=float)
        if not (c.ndim == a.ndim == b.ndim == 1 and c.size == a.size == b.size >= 1):
            raise PredictorError("clusters, slopes and intercepts disagree in length", str(d / MODEL_FILE))
        if not (np.isfinite(c).all() and np.isfinite(a).all() and np.isfinite(b).all()):
            raise PredictorError("non-finite coefficients", str(d / MODEL_FILE))
        self.centers_, self.slopes_, self.intercepts_ = c, a, b


__all__ = ["FlopsPredictor"]
