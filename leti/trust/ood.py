"""Out-of-distribution checks: is an arch like the ones the predictor was trained on?

An arch is flagged, with a short reason, when
* it has no multiply-accumulate layers at all (0 MACs: nothing a latency model has learnt applies);
* one of its layer types never occurs in the training archs (op with kernel, stride, groups, dilation and fused
  activation: a depthwise 3x1 conv, a hard-swish);
* a layer's channels or spatial size lie outside what that layer type had in training, beyond the tolerance;
* one of its IR features (MACs, params, depth, per-kind counts, input shape, ...) lies outside the training range,
  beyond the tolerance (compared as ``log1p``, so the tolerance is relative: 0.25 allows 25% beyond the range);
* its distance to the nearest training arch (``Embedding`` space) is beyond the training archs' own
  nearest-neighbour distances (their 99th percentile, times 1 + tolerance);
* its predicted latency lies outside the training latencies, beyond the tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from leti.errors import PredictorError
from leti.graph.layergraph import ACTS, COL_ATTR, COL_IN, COL_OP, COL_OUT, OPS, A, LayerGraph
from leti.predictors import features as F
from leti.trust.embedding import rounded

TOLERANCE = 0.25
NN_QUANTILE = 0.99
MAX_REASONS = 3
# layer shape columns checked against the training range of the layer's type: (name, row column)
_SHAPES = (("input height", COL_IN), ("input width", COL_IN + 1), ("input channels", COL_IN + 2),
           ("output channels", COL_OUT + 2))  # fmt: skip
_NICE = {"tot.macs": "MACs", "tot.params": "params", "tot.nodes": "layers", "tot.depth": "depth",
         "tot.peak_bytes": "peak memory (bytes)", "io.in_h": "input height", "io.in_w": "input width",
         "io.in_c": "input channels", "io.out_c": "output width",
         "tot.const_output": "constant output (1: the output does not depend on the input)",
         "tot.add_fan_in": "inputs of adds", "tot.live_edges": "live edges", "tot.edges": "edges",
         "tot.activation_bytes": "activation bytes", "tot.live_macs": "MACs of live layers"}  # fmt: skip
_WINDOWED = {"conv", "dwconv", "maxpool", "avgpool"}


def _checked_columns() -> np.ndarray:
    """Features whose range is checked: the whole-network totals of live nodes and the input/output shape. Per-kind
    columns are left to the layer checks (a new layer type, a layer shape out of range); totals of dead or constant
    nodes are not checked, as runtimes drop or fold those nodes, except whether the whole output is constant."""
    names = F.feature_names()
    keep = [i for i, n in enumerate(names)
            if n.startswith("io.") or (n.startswith("tot.") and not n.startswith(("tot.dead", "tot.const_n", "tot.const_m")))]  # fmt: skip
    return np.asarray(keep, dtype=np.int64)


def layer_type(row: np.ndarray) -> str:
    """A node row's type: op, kernel and stride for windowed ops, groups and dilation. A fused activation is a type
    of its own (``layer_types``): a runtime's fused epilogue and a separate activation op (per-op graphs) are the
    same work, so one must not make the other look unseen."""
    op = OPS[int(row[COL_OP])]
    a = row[COL_ATTR:COL_IN]
    kh, kw, sh, sw, dil, groups, act = (int(v) for v in a[:7])
    if op == "act":
        return f"act {ACTS[act]}" if 0 <= act < len(ACTS) else "act"
    s = op
    if op in _WINDOWED:
        s += f" {kh}x{kw}/s{sh}" + (f"x{sw}" if sw != sh else "")
        if dil > 1:
            s += f" dil{dil}"
    if op == "conv" and groups > 1:
        s += " grouped"
    return s


def layer_types(row: np.ndarray) -> list[str]:
    """The types a node row counts as: its own, and ``act NAME`` for a fused activation."""
    t = layer_type(row)
    act = int(row[COL_ATTR + A["act"]])
    if OPS[int(row[COL_OP])] != "act" and 0 < act < len(ACTS):
        return [t, f"act {ACTS[act]}"]
    return [t]


def _fmt(v: float) -> str:
    a = abs(v)
    if a >= 1e9:
        return f"{v / 1e9:.3g}G"
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    return f"{v:.4g}"


def _outside(v: float, lo: float, hi: float, tol: float) -> bool:
    return v > hi * (1 + tol) or v < lo / (1 + tol)


@dataclass
class OODReference:
    tolerance: float
    feat_lo: np.ndarray  # (N_FEATURES,) training minimum of log1p(feature)
    feat_hi: np.ndarray
    layers: dict[str, list[float]]  # layer type -> [lo, hi] per _SHAPES column, flattened
    nn_threshold: float
    latency_lo: float
    latency_hi: float
    _row_memo: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def fit(cls, graphs: list[LayerGraph], X: np.ndarray, nn_loo: np.ndarray, latency_ms,
            tolerance: float = TOLERANCE) -> OODReference:  # fmt: skip
        U = np.log1p(np.maximum(np.asarray(X, dtype=float), 0.0))
        layers: dict[str, list[float]] = {}
        for t, shape in _layer_rows(graphs):
            cur = layers.get(t)
            vals = [float(v) for v in shape]
            if cur is None:
                layers[t] = [v for v in vals for _ in (0, 1)]
            else:
                for j, v in enumerate(vals):
                    cur[2 * j] = min(cur[2 * j], v)
                    cur[2 * j + 1] = max(cur[2 * j + 1], v)
        d = np.asarray(nn_loo, dtype=float)
        d = d[np.isfinite(d)]
        thr = float(np.quantile(d, NN_QUANTILE)) * (1 + tolerance) if d.size else float("inf")
        y = np.asarray(latency_ms, dtype=float)
        return cls(float(tolerance), U.min(axis=0), U.max(axis=0), layers, thr, _outward(float(y.min()), False),
                   _outward(float(y.max()), True))  # fmt: skip

    # ---- checks ---------------------------------------------------------------------------------------------
    def _row_reasons(self, rid: int) -> tuple[str | None, str | None]:
        """(unseen layer type, shape reason) of one distinct node row, memoised by row id."""
        hit = self._row_memo.get(rid)
        if hit is None:
            hit = self._check_row(F.ROWS.row(rid))
            self._row_memo[rid] = hit
        return hit

    def node_reasons(self, graph: LayerGraph) -> list[tuple[int, str]]:
        """(node id, reason) for each node of ``graph`` whose layer type is unseen or whose shape is out of range:
        which layers make a whole model out of distribution."""
        rows = F.node_rows(F.batch([graph]))
        out = []
        for i, row in enumerate(rows):
            if int(row[COL_OP]) == 0:  # the input node
                continue
            unseen, shape = self._check_row(row)
            if unseen is not None:
                out.append((i, f"{unseen}: layer type never seen in training"))
            elif shape is not None:
                out.append((i, shape))
        return out

    def _check_row(self, row: np.ndarray) -> tuple[str | None, str | None]:
        """(the first of the row's types never seen in training, else the first shape outside its type's range)."""
        types = layer_types(row)
        for t in types:
            if t not in self.layers:
                return t, None
        for t in types:
            rng = self.layers[t]
            for j, (name, col) in enumerate(_SHAPES):
                v = float(row[col])
                lo, hi = rng[2 * j], rng[2 * j + 1]
                if _outside(v, lo, hi, self.tolerance):
                    return None, f"{t} with {name} {v:.0f} (training {lo:.0f}–{hi:.0f})"
        return None, None

    def layer_reasons(self, graphs: list[LayerGraph]) -> list[list[str]]:
        out = []
        for s in F.summaries(graphs):
            unseen: dict[str, int] = {}
            shape = None
            for rid, cnt in zip(s.ids.tolist(), s.counts.tolist(), strict=True):
                t, sr = self._row_reasons(rid)
                if t is not None:
                    unseen[t] = unseen.get(t, 0) + cnt
                elif sr is not None and shape is None:
                    shape = sr
            reasons = []
            if unseen:
                names = sorted(unseen, key=lambda k: -unseen[k])
                more = f" (+{len(names) - 3} more)" if len(names) > 3 else ""
                reasons.append("layer types never seen in training: " + ", ".join(names[:3]) + more)
            if shape is not None:
                reasons.append(shape)
            out.append(reasons)
        return out

    def feature_reasons(self, X: np.ndarray) -> list[list[str]]:
        U = np.log1p(np.maximum(np.asarray(X, dtype=float), 0.0))
        t = np.log1p(self.tolerance)
        over = U - (self.feat_hi + t)
        under = (self.feat_lo - t) - U
        worst = np.maximum(over, under)
        mask = np.full(worst.shape[1], -np.inf)
        mask[_checked_columns()] = 0.0
        worst = worst + mask
        out: list[list[str]] = [[] for _ in range(U.shape[0])]
        macs = F.feature_index("tot.macs")
        names = F.feature_names()
        for i in np.flatnonzero((worst > 0).any(axis=1) | (X[:, macs] <= 0)):
            if X[i, macs] <= 0:
                out[i].append("0 MACs: no conv or dense layer to base a latency on")
                continue
            j = int(np.argmax(worst[i]))
            lo, hi = np.expm1(self.feat_lo[j]), np.expm1(self.feat_hi[j])
            name = _NICE.get(names[j], names[j])
            out[i].append(f"{name} {_fmt(X[i, j])} outside the training range {_fmt(lo)}–{_fmt(hi)}")
        return out

    def check(self, graphs: list[LayerGraph], X: np.ndarray, nn_dist: np.ndarray) -> list[list[str]]:
        """Reasons (empty: in distribution) that do not depend on the prediction."""
        lay = self.layer_reasons(graphs)
        feat = self.feature_reasons(X)
        out = []
        for i in range(len(graphs)):
            # no MACs at all says most: it goes first
            r = feat[i] + lay[i] if feat[i] and feat[i][0].startswith("0 MACs") else lay[i] + feat[i]
            d = float(nn_dist[i])
            if d > self.nn_threshold:
                r.append(
                    f"far from every training arch (distance {d:.2f}, training archs ≤ {self.nn_threshold:.2f})"
                )
            out.append(r)
        return out

    def latency_outside(self, pred_ms: np.ndarray) -> np.ndarray:
        """True where a prediction lies outside the training latencies beyond the tolerance (or is not a number)."""
        p = np.asarray(pred_ms, dtype=float)
        with np.errstate(invalid="ignore"):
            inside = (p <= self.latency_hi * (1 + self.tolerance)) & (
                p >= self.latency_lo / (1 + self.tolerance)
            )
        return ~inside

    def latency_reason(self, pred_ms: float) -> str:
        if not np.isfinite(pred_ms):
            return "the prediction is not a number"
        side = "below" if pred_ms < self.latency_lo else "above"
        return (f"predicted {pred_ms:.4g} ms is {side} the training latencies "
                f"({self.latency_lo:.4g}–{self.latency_hi:.4g} ms)")  # fmt: skip

    # ---- persistence ----------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "tolerance": self.tolerance,
            "feat_lo": rounded(self.feat_lo),
            "feat_hi": rounded(self.feat_hi),
            "layers": {k: rounded(np.asarray(v)) for k, v in sorted(self.layers.items())},
            "nn_threshold": self.nn_threshold,
            "latency_ms": [self.latency_lo, self.latency_hi],
        }

    @classmethod
    def from_dict(cls, d: dict, where: str) -> OODReference:
        lo = np.asarray(d["feat_lo"], dtype=float).reshape(-1)
        hi = np.asarray(d["feat_hi"], dtype=float).reshape(-1)
        layers = {str(k): [float(x) for x in v] for k, v in dict(d["layers"]).items()}
        lat = [float(v) for v in d["latency_ms"]]
        tol = float(d["tolerance"])
        if (
            lo.size != F.N_FEATURES
            or hi.size != F.N_FEATURES
            or any(len(v) != 2 * len(_SHAPES) for v in layers.values())
            or len(lat) != 2
            or not tol >= 0
        ):
            raise PredictorError("the out-of-distribution reference is inconsistent", where)
        return cls(tol, lo, hi, layers, float(d["nn_threshold"]), lat[0], lat[1])


def _layer_rows(graphs: list[LayerGraph]):
    """(layer type, shape values) of every distinct node row of ``graphs``."""
    ids = np.unique(np.concatenate([s.ids for s in F.summaries(graphs)])) if graphs else []
    for rid in ids:
        row = F.ROWS.row(int(rid))
        for t in layer_types(row):
            yield t, [row[c] for _, c in _SHAPES]


def _outward(v: float, up: bool) -> float:
    """``v`` rounded away from the inside of the range to 2 significant digits: the saved range is a bound, not a
    copy of a measured latency (predictor files must not carry measurements)."""
    if not np.isfinite(v) or v <= 0:
        return v
    step = 10.0 ** (np.floor(np.log10(v)) - 1)
    return round(float((np.ceil(v / step) if up else np.floor(v / step)) * step), 12)


__all__ = ["MAX_REASONS", "TOLERANCE", "OODReference", "layer_type", "layer_types"]
