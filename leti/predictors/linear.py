"""The ``linear`` family: latency as a straight sum of the IR features, the simplest model ``auto`` can pick.

Latency in ms is close to a sum of per-layer costs, so the fit is in ms (not log ms), weighted by 1/y² so that it
minimises relative error as acc@10 measures it. ``inputs``: ``counts`` (layer counts by kind and state: a linear
fit on op counts) or ``features`` (every IR feature column, and the topology groups named in ``topology``). ``loss``: ``ridge`` (least squares
with an L2 penalty) or ``huber`` (relative errors beyond ``delta``, e.g. 5%, count linearly, not squared: a few
badly measured models do not tilt the fit; the threshold is fixed, so the loss is convex and the reweighted fit
finds its minimum from any start). ``alpha``: the L2 penalty on standardised
columns; ``None`` chooses it from a small grid by k-fold CV on the training archs (grouped when groups are given).

Saved as JSON (columns by name, means, scales, coefficients), sealed with a checksum; nothing is pickled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from leti.errors import PredictorError
from leti.predictors.base import Predictor
from leti.predictors.cv import kfold_indices
from leti.predictors.features import FEATURES_ID, TOPOLOGY_ID, design, design_columns, design_names
from leti.predictors.registry import read_json_checked, write_json_checked

INPUTS = ("counts", "features")
LOSSES = ("ridge", "huber")
ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
MODEL_FILE = "linear.json"
_FLOOR_MS = 1e-3  # a straight line can dip below zero far from the data; a latency cannot


def input_columns(inputs: str, topology: str = "none") -> np.ndarray:
    """Columns of ``features.design`` a linear model of ``inputs`` reads (``topology``: see
    ``features.design_columns``)."""
    if inputs == "counts":
        names = design_names()
        return np.array([i for i, n in enumerate(names) if n.startswith("kind.") and n.endswith(".count")])
    return design_columns(topology)


def _solve(Z: np.ndarray, t: np.ndarray, w: np.ndarray, alpha: float) -> np.ndarray:
    """Weighted ridge with an unpenalised intercept (Z's first column is ones)."""
    n = Z.shape[0]
    Zw = Z * w[:, None]
    G = Zw.T @ Z / n
    pen = np.full(Z.shape[1], float(alpha))
    pen[0] = 0.0
    G[np.diag_indices_from(G)] += pen
    try:
        return np.linalg.solve(G, Zw.T @ t / n)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(G, Zw.T @ t / n, rcond=None)[0]


def fit_linear(Z, y, alpha: float, loss: str, delta: float, iters: int = 100) -> np.ndarray:
    """Coefficients of a relative-error ridge (``loss='ridge'``) or Huber ridge (relative threshold ``delta``) on
    design ``Z``, by iteratively reweighted least squares."""
    w0 = 1.0 / y**2
    w0 = w0 / w0.mean()
    coef = _solve(Z, y, w0, alpha)
    if loss == "huber":
        for _ in range(iters):
            r = np.abs(Z @ coef - y) / y
            h = np.where(r <= delta, 1.0, delta / np.maximum(r, 1e-12))
            new = _solve(Z, y, w0 * h, alpha)
            done = np.allclose(new, coef, rtol=1e-6, atol=1e-9 * max(1.0, float(np.abs(coef).max())))
            coef = new
            if done:
                break
    return coef


class LinearPredictor(Predictor):
    """A relative-error linear fit in ms on IR feature columns (see the module doc)."""

    family = "linear"
    complexity = 1  # for auto's one-standard-error rule: the simplest family there is

    def __init__(
        self,
        inputs: str = "counts",
        loss: str = "ridge",
        alpha: float | None = None,
        delta: float = 0.05,
        topology: str = "none",
        folds: int = 4,
        seed: int = 0,
    ):
        self.inputs = inputs
        self.topology = topology
        self.loss = loss
        self.alpha = alpha
        self.delta = delta
        self.folds = folds
        self.seed = seed

    def _check(self) -> None:
        if self.inputs not in INPUTS:
            raise PredictorError(f"must be one of {', '.join(INPUTS)}, got {self.inputs!r}", "inputs")
        if self.loss not in LOSSES:
            raise PredictorError(f"must be one of {', '.join(LOSSES)}, got {self.loss!r}", "loss")
        if self.alpha is not None and not (isinstance(self.alpha, int | float) and self.alpha >= 0):
            raise PredictorError(f"must be a non-negative number or null, got {self.alpha!r}", "alpha")
        if not (isinstance(self.delta, int | float) and self.delta > 0):
            raise PredictorError(f"must be a positive number, got {self.delta!r}", "delta")
        design_columns(self.topology)  # an unknown topology group fails here

    def _design(self, X: np.ndarray) -> np.ndarray:
        Z = (X[:, self.columns_] - self.mean_) / self.scale_
        return np.hstack([np.ones((X.shape[0], 1)), Z])

    def _fit(self, graphs, y):
        self._check()
        X = design(graphs, self._topology())
        cols = input_columns(self.inputs, self.topology)
        cols = cols[np.ptp(X[:, cols], axis=0) > 0] if len(graphs) > 1 else cols[:0]
        self.columns_ = cols
        self.mean_ = X[:, cols].mean(axis=0)
        sd = X[:, cols].std(axis=0)
        self.scale_ = np.where(sd > 0, sd, 1.0)
        Z = self._design(X)
        self.alpha_ = float(self.alpha) if self.alpha is not None else self._choose_alpha(Z, y)
        self.coef_ = fit_linear(Z, y, self.alpha_, self.loss, float(self.delta))

    def _choose_alpha(self, Z, y) -> float:
        """The grid alpha with the lowest mean squared relative error out of fold (ridge loss: cheap and enough)."""
        k = min(int(self.folds), len(set(self._groups)) if self._groups is not None else y.size)
        if k < 2:
            return 1.0
        err = np.zeros(len(ALPHAS))
        for test in kfold_indices(y.size, k, int(self.seed), self._groups):
            train = np.setdiff1d(np.arange(y.size), test)
            for j, a in enumerate(ALPHAS):
                c = fit_linear(Z[train], y[train], a, "ridge", float(self.delta))
                p = np.maximum(Z[test] @ c, _FLOOR_MS)
                err[j] += float(np.sum(np.minimum(np.abs(p - y[test]) / y[test], 1.0) ** 2))
        return float(ALPHAS[int(np.argmin(err))])

    def _predict(self, graphs):
        return np.maximum(self._design(design(graphs, self._topology())) @ self.coef_, _FLOOR_MS)

    def _topology(self) -> str:
        return "none" if self.inputs == "counts" else self.topology

    def _save(self, d: Path) -> None:
        names = design_names()
        write_json_checked(
            d / MODEL_FILE,
            {
                "features_id": FEATURES_ID,
                "topology_id": TOPOLOGY_ID,
                "columns": [names[i] for i in self.columns_],
                "mean": self.mean_.tolist(),
                "scale": self.scale_.tolist(),
                "intercept": float(self.coef_[0]),
                "coef": self.coef_[1:].tolist(),
                "alpha": self.alpha_,
            },
        )

    def _load(self, d: Path) -> None:
        self._check()
        data = read_json_checked(d / MODEL_FILE)
        if data.get("features_id") != FEATURES_ID or data.get("topology_id", TOPOLOGY_ID) != TOPOLOGY_ID:
            raise PredictorError("was trained on other features than this leti computes; retrain it", str(d))
        index = {n: i for i, n in enumerate(design_names())}
        try:
            cols = np.array([index[c] for c in data["columns"]], dtype=np.int64)
        except KeyError as e:
            raise PredictorError(f"unknown feature column {e}", str(d / MODEL_FILE)) from None
        parts = [np.asarray(data[k], dtype=float).ravel() for k in ("mean", "scale", "coef")]
        if any(p.size != cols.size for p in parts) or not all(np.isfinite(p).all() for p in parts):
            raise PredictorError("columns, means, scales and coefficients disagree", str(d / MODEL_FILE))
        if (parts[1] <= 0).any():
            raise PredictorError("scales must be positive", str(d / MODEL_FILE))
        self.columns_, self.mean_, self.scale_ = cols, parts[0], parts[1]
        self.coef_ = np.concatenate([[float(data["intercept"])], parts[2]])
        self.alpha_ = float(data.get("alpha", 0.0))


__all__ = ["ALPHAS", "LinearPredictor", "fit_linear", "input_columns"]
