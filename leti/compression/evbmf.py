"""Empirical variational Bayesian matrix factorization (EVBMF), global analytic solution.

Model (Nakajima, Sugiyama, Babacan, Tomioka, JMLR 2013): ``Y = B A^T + E`` with ``E`` i.i.d. N(0, sigma2) and
Gaussian priors on the columns of A and B whose variances are learned from the data (the "empirical" part).
For an L x M matrix (L <= M, alpha = L / M) with singular values gamma_h, the global optimum is a shrunk SVD:

* a component survives iff ``gamma_h > sqrt(M * sigma2 * x_bar)`` where ``x_bar = (1 + tau_) (1 + alpha / tau_)``
  and ``tau_`` is the positive zero of ``log(1 + t) + alpha * log(1 + t / alpha) - t``;
* a surviving value is shrunk to ``gamma_h * tau(x_h) / x_h`` with ``x_h = gamma_h^2 / (M sigma2)`` and
  ``tau(x) = (x - 1 - alpha + sqrt((x - 1 - alpha)^2 - 4 alpha)) / 2``.

When sigma2 is unknown it is the minimiser of the free energy, which (per unit M, constants dropped) reads
``sum_h x_h + L log sigma2 + sum_{h active} [log(1 + tau_h) + alpha log(1 + tau_h / alpha) - tau_h]``; the
minimiser lies between the analytic bounds of the paper, so a bounded 1-D search suffices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq, minimize_scalar

from leti.errors import LetiError

__all__ = ["EVBMFResult", "evbmf", "evb_threshold_constant"]


@dataclass(frozen=True, eq=False)
class EVBMFResult:
    """EVBMF estimate ``Y ~= u @ diag(s) @ v.T``.

    ``u``: (rows, rank), ``s``: (rank,) shrunk singular values in decreasing order, ``v``: (cols, rank);
    ``rank``: number of surviving components; ``sigma2``: noise variance (estimated or as given);
    ``threshold``: the singular value a component had to exceed to survive.
    """

    u: np.ndarray
    s: np.ndarray
    v: np.ndarray
    rank: int
    sigma2: float
    threshold: float

    def reconstruct(self) -> np.ndarray:
        return (self.u * self.s) @ self.v.T


def _free_energy_gap(t: float, alpha: float) -> float:
    # Free energy of an active component minus that of a pruned one (per unit M); zero at the EVB threshold.
    return math.log1p(t) + alpha * math.log1p(t / alpha) - t


def evb_threshold_constant(alpha: float) -> tuple[float, float]:
    """Return ``(tau_, x_bar)`` for the aspect ratio ``alpha = L / M`` in (0, 1].

    ``tau_`` is close to ``2.5129 * sqrt(alpha)``; the EVB threshold is ``sqrt(M * sigma2 * x_bar)``.
    """
    if not 0 < alpha <= 1:
        raise LetiError(f"must be in (0, 1], got {alpha}", field="alpha")
    lo, hi = 0.5 * math.sqrt(alpha), 10.0 * math.sqrt(alpha)
    # The gap is positive just right of 0 and negative for large t; widen the bracket if ever needed.
    while _free_energy_gap(lo, alpha) <= 0:
        lo /= 2
    while _free_energy_gap(hi, alpha) >= 0:
        hi *= 2
    tau_ = brentq(_free_energy_gap, lo, hi, args=(alpha,), xtol=1e-14, rtol=1e-14)
    return tau_, (1 + tau_) * (1 + alpha / tau_)


def _tau(x: np.ndarray, alpha: float) -> np.ndarray:
    d = x - (1 + alpha)
    return 0.5 * (d + np.sqrt(np.maximum(d * d - 4 * alpha, 0.0)))


def _objective(sigma2: float, s2: np.ndarray, m: int, alpha: float, x_bar: float) -> float:
    x = s2 / (m * sigma2)
    tau = _tau(x[x > x_bar], alpha)
    # sum(x - log x) is the data term plus L log sigma2 (up to a constant); active components add their gap.
    return float(np.sum(x - np.log(x)) + np.sum(np.log1p(tau) + alpha * np.log1p(tau / alpha) - tau))


def _estimate_sigma2(s2: np.ndarray, l_dim: int, m: int, alpha: float, x_bar: float) -> float:
    upper = float(np.sum(s2)) / (l_dim * m)
    # EVB never keeps more than ceil(L / (1 + alpha)) - 1 components, which bounds sigma2 from below.
    h_max = min(max(math.ceil(l_dim / (1 + alpha)) - 1, 0), l_dim - 1)
    lower = max(float(s2[h_max]) / (m * x_bar), float(np.mean(s2[h_max:])) / m)
    lower = min(max(lower, upper * 1e-12), upper)
    if upper - lower <= 1e-15 * upper:
        return upper
    # The objective can have several local minima: scan a log grid, then refine around the best point.
    grid = np.geomspace(lower, upper, 97)
    values = np.array([_objective(g, s2, m, alpha, x_bar) for g in grid])
    i = int(np.argmin(values))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    res = minimize_scalar(
        _objective, bounds=(a, b), args=(s2, m, alpha, x_bar), method="bounded", options={"xatol": 1e-12 * b}
    )
    return float(res.x) if res.fun <= values[i] else float(grid[i])


def evbmf(y: np.ndarray, sigma2: float | None = None) -> EVBMFResult:
    """Global EVBMF solution of matrix ``y``; ``sigma2`` (noise variance) is estimated when None."""
    y = np.asarray(y)
    if y.ndim != 2 or min(y.shape) < 1:
        raise LetiError(f"must be a non-empty 2-D matrix, got shape {y.shape}", field="y")
    if not np.issubdtype(y.dtype, np.number) or np.iscomplexobj(y):
        raise LetiError(f"must be real-valued, got dtype {y.dtype}", field="y")
    y = y.astype(np.float64)
    if not np.all(np.isfinite(y)):
        raise LetiError("contains NaN or infinite values", field="y")
    if sigma2 is not None and (
        isinstance(sigma2, bool) or not np.isscalar(sigma2) or not np.isfinite(sigma2) or sigma2 <= 0
    ):
        raise LetiError(f"must be a positive finite number, got {sigma2!r}", field="sigma2")

    transposed = y.shape[0] > y.shape[1]
    mat = y.T if transposed else y
    l_dim, m = mat.shape
    alpha = l_dim / m
    _, x_bar = evb_threshold_constant(alpha)

    u, s, vt = np.linalg.svd(mat, full_matrices=False)
    s2 = s * s
    if s2[0] == 0.0:
        empty = np.zeros((0,))
        return EVBMFResult(
            np.zeros((y.shape[0], 0)),
            empty,
            np.zeros((y.shape[1], 0)),
            0,
            float(sigma2 or 0.0),
            0.0,
        )
    # Exactly-zero singular values make -log x infinite; floor them at round-off level.
    s2 = np.maximum(s2, s2[0] * np.finfo(np.float64).eps ** 2)

    if sigma2 is None:
        sigma2 = _estimate_sigma2(s2, l_dim, m, alpha, x_bar)
    sigma2 = float(sigma2)
    threshold = math.sqrt(m * sigma2 * x_bar)
    rank = int(np.sum(s > threshold))
    x = s2[:rank] / (m * sigma2)
    shrunk = s[:rank] * _tau(x, alpha) / x

    uu, vv = u[:, :rank], vt[:rank].T
    if transposed:
        uu, vv = vv, uu
    return EVBMFResult(uu, shrunk, vv, rank, sigma2, threshold)
