"""Order-keeping corrections of a model's predictions, learnt from its out-of-fold predictions on training archs.

Both are strictly increasing maps of the prediction, so they never change how the archs are ranked (Spearman's
rho and Kendall's tau stay exactly as they were); they only move each prediction to where acc@10 counts it.

* **Mode shift** (``ModeShift``): on noisy boards the measurements of one network scatter lopsidedly (a share of
  runs much slower, or much faster, than the rest). A model fitted for the mean then sits off the typical value,
  and by an amount that depends on the latency itself. The shift multiplies a prediction by exp(s(log p)), where s
  is piecewise linear in log p, with knots at quantiles of the predictions, each knot's value the one that puts
  the most training archs within 10% (the mode of the ratios in a ±10% window), its slope bounded so the map
  stays increasing.
* **Grid snap** (``grid_step``, ``snap``): a phone app that reports whole milliseconds gives readings on a grid;
  a prediction of 3.4 ms for a reading of 3 ms misses acc@10 though it may be the better estimate of the true time.
  Predictions are pulled towards the nearest grid point by a factor chosen on the out-of-fold predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHIFTS = np.linspace(-0.15, 0.15, 61)  # candidate log shifts at a knot
KNOTS = 8
MIN_PER_KNOT = 10
MAX_SLOPE = 0.9  # |ds/dlog p| < 1 keeps p * exp(s(log p)) strictly increasing
SHRINKS = (1.0, 0.5, 0.25, 0.05)  # 1 = predictions as they are; 0.05 = all but on the grid point
_GRIDS = tuple(m * 10.0**e for e in range(-3, 2) for m in (1.0, 2.0, 5.0))


def acc10(y, p) -> float:
    return float(np.mean(np.abs(np.asarray(p) - y) / y <= 0.1 + 1e-12))


@dataclass
class ModeShift:
    """p -> p * exp(s(log p)), s piecewise linear through (``knots``, ``shifts``), flat beyond them."""

    knots: np.ndarray
    shifts: np.ndarray

    @classmethod
    def fit(cls, pred, y) -> ModeShift:
        lp = np.log(np.maximum(np.asarray(pred, dtype=float), 1e-9))
        r = np.log(np.asarray(y, dtype=float)) - lp
        edges = np.quantile(lp, np.linspace(0, 1, KNOTS + 1))
        knots, shifts = [], []
        for i in range(KNOTS):
            m = (lp >= edges[i]) & (lp <= edges[i + 1])
            if m.sum() < MIN_PER_KNOT:
                continue
            # share of archs within 10% when their prediction is scaled by e^s, for every candidate s
            hits = (np.abs(np.exp(SHIFTS[:, None] - r[None, m]) - 1.0) <= 0.1).mean(axis=1)
            best = SHIFTS[hits >= hits.max() - 1e-12]
            knots.append(float(np.median(lp[m])))
            shifts.append(float(np.median(best)))
        if not knots:
            return cls(np.zeros(1), np.zeros(1))
        k, s = np.array(knots), np.array(shifts)
        k, first = np.unique(k, return_index=True)
        s = s[first]
        for i in range(1, s.size):
            lim = MAX_SLOPE * (k[i] - k[i - 1])
            s[i] = np.clip(s[i], s[i - 1] - lim, s[i - 1] + lim)
        return cls(k, s)

    def __call__(self, pred) -> np.ndarray:
        p = np.asarray(pred, dtype=float)
        return p * np.exp(np.interp(np.log(np.maximum(p, 1e-9)), self.knots, self.shifts))

    def to_json(self) -> dict:
        return {"knots_log_ms": self.knots.tolist(), "shifts": self.shifts.tolist()}

    @classmethod
    def from_json(cls, d: dict) -> ModeShift:
        k = np.asarray(d["knots_log_ms"], dtype=float)
        s = np.asarray(d["shifts"], dtype=float)
        if (
            k.ndim != 1
            or k.size < 1
            or k.shape != s.shape
            or not (np.isfinite(k).all() and np.isfinite(s).all())
        ):
            raise ValueError("knots and shifts must be equally long finite lists")
        if k.size > 1 and (
            (np.diff(k) <= 0).any() or (np.abs(np.diff(s)) > MAX_SLOPE * np.diff(k) + 1e-9).any()
        ):
            raise ValueError("the mode shift would not keep the order of predictions")
        return cls(k, s)


def cross_fitted_shift(y, oof: np.ndarray, parts: list[list[np.ndarray]]) -> np.ndarray:
    """Out-of-fold predictions after a mode shift, each fold's shift learnt on the other folds only (so the
    shift's own gain is measured honestly)."""
    out = np.empty_like(oof)
    for r, folds in enumerate(parts):
        for test in folds:
            train = np.setdiff1d(np.arange(y.size), test)
            out[r, test] = ModeShift.fit(oof[r, train], y[train])(oof[r, test])
    return out


# ---- quantised targets -----------------------------------------------------------------------------------------
def grid_step(y, coarse: float = 0.005) -> float | None:
    """The step of the grid the latencies lie on (e.g. 1.0 for whole ms), if it is coarse: half a step is at least
    ``coarse`` of the median latency (finer grids are only the measurement's resolution). None otherwise."""
    y = np.asarray(y, dtype=float)
    if y.size < 10:
        return None
    for q in sorted(_GRIDS, reverse=True):
        k = y / q
        if np.mean(np.abs(k - np.round(k)) <= 1e-6 * np.maximum(k, 1.0)) < 0.99:
            continue
        return q if 0.5 * q >= coarse * float(np.median(y)) else None
    return None


def snap(p, step: float, shrink: float, lowest: float) -> np.ndarray:
    """Pull predictions towards the nearest grid point (never below ``lowest``) by ``shrink`` (1: unchanged). It is
    strictly increasing in ``p`` for ``shrink`` > 0, so the order of the predictions is kept."""
    p = np.asarray(p, dtype=float)
    if shrink >= 1.0:
        return p
    k = np.maximum(np.round(p / step), np.round(lowest / step))
    return step * (k + shrink * (p / step - k))


def best_shrink(y, oof: np.ndarray, step: float | None) -> float:
    """The shrink with the best out-of-fold acc@10 (ties: the least pull)."""
    if step is None:
        return 1.0
    lowest = float(np.min(y))
    acc = [np.mean([acc10(y, snap(o, step, s, lowest)) for o in oof]) for s in SHRINKS]
    return float(SHRINKS[int(np.argmax(np.round(acc, 12)))])


__all__ = ["SHRINKS", "ModeShift", "best_shrink", "cross_fitted_shift", "grid_step", "snap"]
