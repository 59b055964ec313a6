"""``TrustModel``: intervals and out-of-distribution flags for one trained predictor, saved next to it.

    tm = calibrate(pred, graphs, y, groups=hashes)      # cross-validates a clone of pred on its training archs
    a = tm.assess(new_graphs, pred.predict(new_graphs), coverage=0.9)
    a.interval_ms, a.in_distribution, a.why
    tm.save(predictor_dir); load(predictor_dir)          # trust.json, sealed like every predictor file

It reads only the IR features and the predictor's outputs, so it works for every family.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leti.errors import LetiError, PredictorError
from leti.graph.layergraph import LayerGraph
from leti.predictors import features as F
from leti.predictors import manifest
from leti.predictors.base import Predictor
from leti.predictors.registry import GZ_SUFFIX, read_json_checked, write_json_checked
from leti.trust.conformal import DEFAULT_COVERAGE, Conformal, Difficulty, check_coverage
from leti.trust.crossval import FOLDS, out_of_fold
from leti.trust.embedding import Embedding, nearest, rounded
from leti.trust.ood import MAX_REASONS, TOLERANCE, OODReference

TRUST_FILE = "trust.json"
VERSION = 2  # 2: a fused activation is a layer type of its own
MAX_REFERENCE = 2000  # reference archs kept for nearest-neighbour questions (a seeded sample beyond that)


@dataclass
class Assessment:
    """Per arch: the prediction, its interval at ``coverage``, whether it is in distribution, and why not."""

    latency_ms: np.ndarray
    interval_ms: (
        np.ndarray
    )  # (n, 2) [lo, hi]; inf where the coverage needs more calibration archs than there are
    in_distribution: np.ndarray  # bool
    why: list[str]  # "" where in distribution
    coverage: float

    def to_dict(self) -> dict:
        """JSON-ready parallel lists; a non-finite number becomes null."""

        def num(v: float):
            return float(v) if np.isfinite(v) else None

        return {
            "latency_ms": [num(v) for v in self.latency_ms],
            "interval_ms": [[num(lo), num(hi)] for lo, hi in self.interval_ms],
            "in_distribution": [bool(b) for b in self.in_distribution],
            "why": list(self.why),
            "coverage": self.coverage,
        }


def _codes(groups, n: int) -> np.ndarray:
    """Integer labels of ``groups`` (each arch its own group when None)."""
    if groups is None:
        return np.arange(n)
    if len(groups) != n:
        raise PredictorError(f"{len(groups)} groups for {n} archs", "groups")
    return np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)[1].astype(np.int64)


def _sample(n: int, m: int, seed: int) -> np.ndarray:
    if n <= m:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, m, replace=False))


class TrustModel:
    def __init__(self, embedding: Embedding, difficulty: Difficulty, conformal: Conformal, ood: OODReference,
                 ood_z: np.ndarray | None, info: dict | None = None):  # fmt: skip
        self.embedding = embedding
        self.difficulty = difficulty
        self.conformal = conformal
        self.ood = ood
        self.ood_z = ood_z  # None: the (distinct) calibration archs are the reference archs too
        self.info = dict(info or {})
        self._memo: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    # ---- fitting ------------------------------------------------------------------------------------------------
    @classmethod
    def fit(cls, graphs: list[LayerGraph], latency_ms, oof_ms, reference_graphs: list[LayerGraph] | None = None,
            groups=None, tolerance: float = TOLERANCE, seed: int = 0) -> TrustModel:  # fmt: skip
        """From the training archs, their latencies and out-of-fold predictions. ``groups`` (canonical hashes)
        make the distance reference leave-one-group-out, as the train/test split is. ``reference_graphs`` are
        more archs that count as in distribution (``fewshot``: the source targets' archs)."""
        y = np.asarray(latency_ms, dtype=float)
        oof = np.asarray(oof_ms, dtype=float)
        if y.shape != (len(graphs),) or oof.shape != y.shape:
            raise PredictorError(f"{len(graphs)} archs, {y.size} latencies, {oof.size} predictions", "oof_ms")
        X = F.featurize(graphs)
        ref = list(graphs) + list(reference_graphs or [])
        Xref = np.vstack([X, F.featurize(reference_graphs)]) if reference_graphs else X
        emb = Embedding.fit(Xref)
        cal = _sample(len(graphs), MAX_REFERENCE, seed)
        err = np.abs(np.log(y) - np.log(np.maximum(oof, 1e-12)))
        zcal = emb.transform(X[cal])
        diff, sigma_cal = Difficulty.fit(zcal, err[cal])
        conf = Conformal.fit(y[cal], oof[cal], sigma_cal)
        codes = _codes(groups, len(graphs))
        if reference_graphs:
            pick = _sample(len(ref), MAX_REFERENCE, seed + 1)
            ood_z = emb.transform(Xref[pick])
            ref_codes = np.concatenate([codes, codes.max() + 1 + np.arange(len(reference_graphs))])[pick]
            loo, _ = nearest(ood_z, ood_z, 1, exclude_self=True, groups=ref_codes)
        else:
            ood_z = None
            loo, _ = nearest(zcal, zcal, 1, exclude_self=True, groups=codes[cal])
        ood = OODReference.fit(ref, Xref, loo[:, 0] if loo.size else np.zeros(0), y, tolerance)
        info = {"n_calibration": int(cal.size), "n_reference": len(ref), "features_id": F.FEATURES_ID}
        return cls(emb, diff, conf, ood, ood_z, info)

    # ---- assessing ----------------------------------------------------------------------------------------------
    def _per_graph(self, graphs: list[LayerGraph]) -> list[tuple[float, tuple[str, ...]]]:
        """(σ, reasons that do not depend on the prediction) per graph, memoised for as long as a graph lives."""

        def compute(chunk: list[LayerGraph]):
            X = F.featurize(chunk)
            Z = self.embedding.transform(X)
            dist, idx = nearest(Z, self.difficulty.ref_z, self.difficulty.k)
            sigma = self.difficulty.of_neighbours(idx)
            if self.ood_z is not None:
                dist, _ = nearest(Z, self.ood_z, 1)
            d0 = dist[:, 0] if dist.shape[1] else np.full(len(chunk), np.inf)
            reasons = self.ood.check(chunk, X, d0)
            return [(float(s), tuple(r)) for s, r in zip(sigma, reasons, strict=True)]

        return F.memoised(graphs, self._memo, compute)

    def assess(self, graphs: list[LayerGraph], pred_ms, coverage: float = DEFAULT_COVERAGE) -> Assessment:
        coverage = check_coverage(coverage)
        graphs = list(graphs)
        p = np.asarray(pred_ms, dtype=float).reshape(-1)
        if p.size != len(graphs):
            raise PredictorError(f"{p.size} predictions for {len(graphs)} archs", "pred_ms")
        if not graphs:
            return Assessment(p, np.zeros((0, 2)), np.zeros(0, dtype=bool), [], coverage)
        per = self._per_graph(graphs)
        sigma = np.fromiter((s for s, _ in per), dtype=float, count=len(per))
        flagged = np.fromiter((bool(r) for _, r in per), dtype=bool, count=len(per))
        try:
            interval = self.conformal.interval(p, sigma, coverage)
        except LetiError:  # a coverage beyond n/(n+1): no finite interval exists
            interval = np.stack([np.zeros_like(p), np.full_like(p, np.inf)], axis=1)
        lat = self.ood.latency_outside(p)
        ok = ~(flagged | lat)
        why = [""] * len(graphs)
        for i in np.flatnonzero(~ok):  # reasons are written for the flagged archs only: most are not
            r = list(per[i][1])
            if lat[i]:
                r.append(self.ood.latency_reason(float(p[i])))
            why[i] = "; ".join(r[:MAX_REASONS])
        return Assessment(p, interval, ok, why, coverage)

    def node_reasons(self, graph: LayerGraph) -> list[tuple[int, str]]:
        """(node id, reason) of the layers of ``graph`` that are out of distribution (see ``OODReference``)."""
        return self.ood.node_reasons(graph)

    def coverage_of(self, graphs, pred_ms, latency_ms, coverage: float = DEFAULT_COVERAGE) -> dict:
        """``coverage`` (share of archs inside their interval) and ``interval_rel_width`` (median (hi-lo)/pred)."""
        a = self.assess(graphs, pred_ms, coverage)
        y = np.asarray(latency_ms, dtype=float)
        lo, hi = a.interval_ms[:, 0], a.interval_ms[:, 1]
        return {
            "coverage": float(np.mean((y >= lo) & (y <= hi))),
            "interval_rel_width": float(np.median((hi - lo) / a.latency_ms)),
            "ood_share": float(np.mean(~a.in_distribution)),
            "requested_coverage": coverage,
        }

    # ---- persistence ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "version": VERSION,
            "info": self.info,
            "embedding": self.embedding.to_dict(),
            "difficulty": {
                "ref_z": rounded(self.difficulty.ref_z),
                "ref_err": rounded(self.difficulty.ref_err),
                "k": self.difficulty.k,
                "floor": self.difficulty.floor,
            },
            "conformal": self.conformal.to_dict(),
            "ood": self.ood.to_dict(),
            "ood_z": None if self.ood_z is None else rounded(self.ood_z),
        }

    def save(self, d) -> Path:
        p = Path(d) / TRUST_FILE
        write_json_checked(p, self.to_dict())
        manifest.seal(d)  # the predictor directory's seal now covers the trust data
        return p

    @classmethod
    def from_dict(cls, obj: dict, where: str) -> TrustModel:
        if obj.get("version") != VERSION:
            raise PredictorError(
                f"trust data version {obj.get('version')!r}, this leti reads {VERSION}", where
            )
        info = dict(obj.get("info") or {})
        if info.get("features_id") != F.FEATURES_ID:
            raise PredictorError("trust data was computed on other features than this leti's; retrain", where)
        emb = Embedding.from_dict(obj["embedding"], F.N_FEATURES, where)
        dd = obj["difficulty"]
        ref_z = np.asarray(dd["ref_z"], dtype=float).reshape(-1, emb.dims)
        ref_err = np.asarray(dd["ref_err"], dtype=float).reshape(-1)
        if ref_z.shape[0] != ref_err.size or ref_err.size == 0:
            raise PredictorError("the trust difficulty table is inconsistent", where)
        diff = Difficulty(ref_z, ref_err, int(dd["k"]), float(dd["floor"]))
        conf = Conformal.from_dict(obj["conformal"], where)
        ood = OODReference.from_dict(obj["ood"], where)
        oz = obj.get("ood_z")
        ood_z = None if oz is None else np.asarray(oz, dtype=float).reshape(-1, emb.dims)
        return cls(emb, diff, conf, ood, ood_z, info)

    @classmethod
    def load(cls, d) -> TrustModel | None:
        """The trust data saved in predictor directory ``d``; None when it has none (saved without calibration)."""
        p = Path(d) / TRUST_FILE
        gz = p.with_name(TRUST_FILE + GZ_SUFFIX)  # the zoo ships it gzipped; read_checked inflates it
        if not p.exists() and not gz.exists():
            return None
        manifest.verify(d, only=TRUST_FILE if p.exists() else gz.name)
        obj = read_json_checked(p)
        try:
            return cls.from_dict(obj, str(p))
        except PredictorError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise PredictorError(f"trust data is malformed ({type(e).__name__}: {e})", str(p)) from None


def calibrate(pred: Predictor, graphs: list[LayerGraph], latency_ms, groups=None, folds: int = FOLDS,
              seed: int = 0, reference_graphs: list[LayerGraph] | None = None,
              tolerance: float = TOLERANCE) -> TrustModel:  # fmt: skip
    """The TrustModel of ``pred`` (fitted on ``graphs``): out-of-fold predictions by clones of it (grouped by
    ``groups``), then difficulty, conformal scores and the out-of-distribution reference."""
    graphs = list(graphs)
    y = np.asarray(latency_ms, dtype=float)
    oof = out_of_fold(pred, graphs, y, groups, folds, seed)
    tm = TrustModel.fit(graphs, y, oof, reference_graphs, groups, tolerance, seed)
    tm.info.update({"family": pred.family, "folds": int(folds), "seed": int(seed)})
    return tm


def load(d) -> TrustModel | None:
    return TrustModel.load(d)


__all__ = ["TRUST_FILE", "Assessment", "TrustModel", "calibrate", "load"]
