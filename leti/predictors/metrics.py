"""Accuracy metrics every predictor reports (see DESIGN.md, Conventions)."""

from __future__ import annotations

import numpy as np

from leti.errors import LetiError

METRIC_KEYS = ("acc5", "acc10", "acc20", "rmse", "mape", "r2", "spearman", "kendall")


def acc_within(y_true, y_pred, tol: float) -> float:
    """Share of archs whose relative error |pred - true| / true is at most ``tol``."""
    t, p = _arrays(y_true, y_pred)
    return float(np.mean(np.abs(p - t) / t <= tol + 1e-12))


def _arrays(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(y_pred, dtype=float).ravel()
    if t.shape != p.shape:
        raise LetiError(f"{t.size} true values but {p.size} predictions", "predictions")
    if t.size == 0:
        raise LetiError("no archs to evaluate", "test set")
    if (t <= 0).any() or not np.isfinite(t).all():
        raise LetiError("true latencies must be positive and finite", "latency_ms")
    return t, p


def metrics(y_true, y_pred) -> dict[str, float]:
    """acc@5/10/20 % (as fractions), RMSE (ms), MAPE (fraction), R², Spearman ρ and Kendall τ."""
    t, p = _arrays(y_true, y_pred)
    err = p - t
    ss_tot = float(((t - t.mean()) ** 2).sum())
    out = {
        "acc5": acc_within(t, p, 0.05),
        "acc10": acc_within(t, p, 0.10),
        "acc20": acc_within(t, p, 0.20),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mape": float(np.mean(np.abs(err) / t)),
        "r2": float(1.0 - (err**2).sum() / ss_tot) if ss_tot > 0 else float("nan"),
    }
    if t.size > 1 and np.ptp(p) > 0 and np.ptp(t) > 0:
        from scipy import stats  # 1-2 s to import: only where metrics are computed

        out["spearman"] = float(stats.spearmanr(t, p).statistic)
        out["kendall"] = float(stats.kendalltau(t, p).statistic)
    else:
        out["spearman"] = out["kendall"] = float("nan")
    return out
