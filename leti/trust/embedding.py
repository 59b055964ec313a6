"""A small Euclidean space of archs for nearest-neighbour questions: how far is an arch from the training archs,
and how wrong was the model on the training archs around it.

The IR features (``leti.predictors.features``) are counts, MACs and bytes spanning orders of magnitude, so they are
taken as ``log1p``, standardised on the training archs and projected on their first principal components. Columns
that are constant on the training archs carry no distance there; the out-of-distribution range check covers them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from leti.errors import PredictorError

DIMS = 16  # principal components kept: enough for >95% of the variance on the NB201 data, cheap to search
CHUNK = 2048  # query rows per distance block (keeps the block under ~32 MB for 2,000 references)


def _log(X: np.ndarray) -> np.ndarray:
    return np.log1p(np.maximum(X, 0.0))


@dataclass(frozen=True)
class Embedding:
    columns: np.ndarray  # feature columns used (int64)
    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray  # (dims, len(columns))

    @classmethod
    def fit(cls, X: np.ndarray, dims: int = DIMS) -> Embedding:
        U = _log(np.asarray(X, dtype=float))
        cols = np.flatnonzero(np.ptp(U, axis=0) > 1e-12) if U.shape[0] > 1 else np.zeros(0, dtype=np.int64)
        U = U[:, cols]
        mean = U.mean(axis=0)
        scale = U.std(axis=0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        S = (U - mean) / scale
        if cols.size == 0:
            comps = np.zeros((0, 0))
        else:
            _, _, vt = np.linalg.svd(S, full_matrices=False)
            comps = vt[: min(dims, vt.shape[0])]
        return cls(cols.astype(np.int64), mean, scale, comps)

    @property
    def dims(self) -> int:
        return int(self.components.shape[0])

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        if self.dims == 0:
            return np.zeros((X.shape[0], 0))
        S = (_log(X[:, self.columns]) - self.mean) / self.scale
        return S @ self.components.T

    def to_dict(self) -> dict:
        return {
            "columns": self.columns.tolist(),
            "mean": rounded(self.mean),
            "scale": rounded(self.scale),
            "components": rounded(self.components),
        }

    @classmethod
    def from_dict(cls, d: dict, n_features: int, where: str) -> Embedding:
        cols = np.asarray(d["columns"], dtype=np.int64).reshape(-1)
        mean = np.asarray(d["mean"], dtype=float).reshape(-1)
        scale = np.asarray(d["scale"], dtype=float).reshape(-1)
        comps = np.asarray(d["components"], dtype=float)
        if comps.size == 0:
            comps = np.zeros((0, cols.size))
        if (
            (cols.size and (cols.min() < 0 or cols.max() >= n_features))
            or mean.size != cols.size
            or scale.size != cols.size
            or comps.ndim != 2
            or comps.shape[1] != cols.size
            or not (np.isfinite(mean).all() and np.isfinite(scale).all() and (scale > 0).all())
        ):
            raise PredictorError("the trust embedding is inconsistent", where)
        return cls(cols, mean, scale, comps)


def rounded(a: np.ndarray) -> list:
    """Floats to 10 significant digits: the JSON stays compact, and a loaded model's nearest neighbours (and so its
    intervals) are the same as the saved one's."""
    return np.vectorize(lambda v: float(f"{v:.10g}"), otypes=[float])(np.asarray(a, dtype=float)).tolist()


def nearest(Zq: np.ndarray, Zref: np.ndarray, k: int, exclude_self: bool = False,
            groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(distances, indices) of the ``k`` nearest reference rows of each query row, nearest first.

    ``exclude_self`` (queries are the references themselves) skips each row's own entry: leave-one-out; with
    ``groups`` (one integer label per row) it skips every row of the query's group: leave-one-group-out, as a new
    arch of an unseen canonical class stands to the training archs. Rows left without ``k`` others get inf.
    """
    Zq = np.asarray(Zq, dtype=float)
    Zref = np.asarray(Zref, dtype=float)
    m = Zref.shape[0]
    k = int(min(k, m - (1 if exclude_self else 0)))
    n = Zq.shape[0]
    if k < 1 or n == 0:
        return np.zeros((n, 0)), np.zeros((n, 0), dtype=np.int64)
    rn = (Zref**2).sum(axis=1)
    dist = np.empty((n, k))
    idx = np.empty((n, k), dtype=np.int64)
    for a in range(0, n, CHUNK):
        q = Zq[a : a + CHUNK]
        d2 = (q**2).sum(axis=1)[:, None] + rn[None, :] - 2.0 * (q @ Zref.T)
        if exclude_self:
            rows = np.arange(q.shape[0])
            d2[rows, a + rows] = np.inf
            if groups is not None:
                d2[groups[a : a + q.shape[0], None] == groups[None, :]] = np.inf
        part = np.argpartition(d2, k - 1, axis=1)[:, :k] if k < m else np.tile(np.arange(m), (q.shape[0], 1))
        pd2 = np.take_along_axis(d2, part, axis=1)
        order = np.argsort(pd2, axis=1)
        idx[a : a + q.shape[0]] = np.take_along_axis(part, order, axis=1)
        dist[a : a + q.shape[0]] = np.sqrt(np.maximum(np.take_along_axis(pd2, order, axis=1), 0.0))
    return dist, idx


__all__ = ["DIMS", "Embedding", "nearest", "rounded"]
