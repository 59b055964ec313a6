"""The ``lut`` family: a network's latency is the sum of its layers' latencies, looked up by layer signature.

A *signature* names one layer completely: op, every attribute, input and output shape and the number of inputs,
e.g. ``conv|k=3x3|s=1x1|d=1|g=1|act=none|bn=1|bias=0|pad=0|x=0|in=32x32x16|out=32x32x16|n=1``. The table can come
from three sources:

* measured single layers: ``LUTPredictor.from_table({signature: ms})`` (``signature_graph`` turns a signature into a
  one-layer LayerGraph that can be built and timed);
* per-op records, e.g. a profiler's per-node times: ``LUTPredictor.from_op_records([(signature, ms), ...])``;
* whole-model times only (the phone data): ``fit`` solves non-negative least squares over signature counts.

Dead nodes (their value never reaches the output) and constant nodes (they do not depend on the input) may or may
not run, depending on the converter and runtime. ``states`` says how to treat them: ``skip`` (they cost nothing),
``count`` (they cost like any layer) or ``separate`` (they get their own table entries, suffixed ``|state=dead``,
``|state=const`` or ``|state=dead_const``, which NNLS learns from data). On HW-NAS-Bench's Pixel 3 data, for
instance, NNLS finds that dead branches cost nothing while dead *constant* 3x3 convs cost a third of a live one:
keeping the states apart lifts the table's acc@10 there from 63% (``skip``) to 75% (docs/accuracy.md).

A layer missing from the table costs as much as the nearest entry of the same op (and state), scaled by work
(MACs, or output elements for ops without MACs); ``predict_details`` and ``last_missing_`` report how many layers
were missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from leti.errors import GraphError, PredictorError
from leti.graph.builder import GraphBuilder
from leti.graph.layergraph import (
    ACT_CODE,
    ACTS,
    COL_ATTR,
    COL_IN,
    COL_OP,
    COL_OUT,
    N_LAYER_COLS,
    OP_CODE,
    OPS,
    LayerGraph,
)
from leti.predictors import features as F
from leti.predictors.base import Predictor
from leti.predictors.registry import read_json_checked, write_json_checked

STATES = F.STATES  # live, dead, const, dead_const
STATE_MODES = ("skip", "count", "separate")
MODEL_FILE = "lut.json"
# Row layout of a node's signature: the IR's layer columns (layergraph.COL_OP .. COL_OUT: op, attributes, input and
# output shapes), then the number of inputs and the state
_S_NIN, _S_STATE = N_LAYER_COLS, N_LAYER_COLS + 1
N_ROW = _S_STATE + 1


# ---- signatures -----------------------------------------------------------------------------------------------
def signature_of_row(row: np.ndarray, mode: str) -> np.ndarray | None:
    """The signature row (``N_ROW`` ints) of a node row from ``features.node_rows`` under ``mode``; None when the
    node is not costed (the input node; dead and constant nodes under ``skip``)."""
    state = int(row[F.R_STATE])
    if row[COL_OP] == OP_CODE["input"] or (mode == "skip" and state != 0):
        return None
    sig = np.zeros(N_ROW, dtype=np.int64)
    sig[:N_LAYER_COLS] = row[:N_LAYER_COLS]  # op, attributes, input and output shapes
    if mode == "count":
        sig[_S_NIN] = row[F.R_NIN]
    else:
        # a live node counts its live, input-dependent inputs only: an add whose other operand is a pruned zero
        # branch is an identity to runtimes that drop such branches, not a two-input add
        sig[_S_NIN] = row[F.R_NEFF] if state == 0 else row[F.R_NIN]
        sig[_S_STATE] = state if mode == "separate" else 0
    return sig


class _Signatures:
    """Per state mode: the numbering of distinct signatures and the map from node-row ids (``features.ROWS``)."""

    def __init__(self):
        self.generation = 0  # bumped when the numbering starts over, after ``features.trim``
        self._reset()

    def _reset(self) -> None:
        self.ids = {m: {} for m in STATE_MODES}
        self.rows = {m: [] for m in STATE_MODES}
        self.of_row = {m: np.zeros(0, dtype=np.int64) for m in STATE_MODES}
        self._state = np.zeros(0, dtype=np.int64)
        self._rows_generation = F.ROWS.generation
        self.generation += 1

    def _current(self) -> None:
        if self._rows_generation != F.ROWS.generation:  # the node rows were renumbered
            self._reset()

    def states(self) -> np.ndarray:
        """node-row id -> node state (see ``features.node_states``)."""
        self._current()
        n = len(F.ROWS)
        if self._state.size < n:
            ext = [F.ROWS.row(r)[F.R_STATE] for r in range(self._state.size, n)]
            self._state = np.concatenate([self._state, np.array(ext, dtype=np.int64)])
        return self._state

    def row(self, mode: str, i: int) -> np.ndarray:
        return self.rows[mode][i]

    def mapping(self, mode: str) -> np.ndarray:
        """node-row id -> signature id (-1: not costed), extended to every node row seen so far."""
        self._current()
        m = self.of_row[mode]
        n = len(F.ROWS)
        if m.size < n:
            ext = np.empty(n - m.size, dtype=np.int64)
            for j, r in enumerate(range(m.size, n)):
                sig = signature_of_row(F.ROWS.row(r), mode)
                if sig is None:
                    ext[j] = -1
                    continue
                key = sig.tobytes()
                i = self.ids[mode].get(key)
                if i is None:
                    i = self.ids[mode][key] = len(self.rows[mode])
                    self.rows[mode].append(sig)
                ext[j] = i
            m = self.of_row[mode] = np.concatenate([m, ext])
        return m


SIGNATURES = _Signatures()


def design(graphs: list[LayerGraph], mode: str, fold_constant: bool = False):
    """(graph index, signature id, count) over the costed layers of ``graphs`` (a pair may repeat).

    ``fold_constant``: in a graph whose output does not depend on its input, only the layers that still depend on
    the input are costed: the rest is a constant the converter can compute ahead of time.
    """
    summ = F.summaries(graphs)
    if not summ:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)
    sizes = np.fromiter((s.ids.size for s in summ), dtype=np.int64, count=len(summ))
    gidx = np.repeat(np.arange(len(summ)), sizes)
    rows = np.concatenate([s.ids for s in summ])
    sig = SIGNATURES.mapping(mode)[rows]
    cnt = np.concatenate([s.counts for s in summ]).astype(np.float64)
    keep = sig >= 0
    if fold_constant:
        const_out = np.array([s.scalars[F.SCALARS.index("const_output")] > 0 for s in summ])
        keep &= ~const_out[gidx] | (SIGNATURES.states()[rows] == 0)
    return gidx[keep], sig[keep], cnt[keep]


def constant_output(graphs: list[LayerGraph]) -> np.ndarray:
    """True for graphs whose output does not depend on their input."""
    i = F.SCALARS.index("const_output")
    return np.array([s.scalars[i] > 0 for s in F.summaries(graphs)], dtype=bool)


def format_signature(row) -> str:
    r = [int(v) for v in row]
    kh, kw, sh, sw, dil, groups, act, bn, bias, pad, extra = r[COL_ATTR:COL_IN]
    ih, iw, ic = r[COL_IN:COL_OUT]
    oh, ow, oc = r[COL_OUT:N_LAYER_COLS]
    sig = (
        f"{OPS[r[COL_OP]]}|k={kh}x{kw}|s={sh}x{sw}|d={dil}|g={groups}|act={ACTS[act]}|bn={bn}|bias={bias}"
        f"|pad={pad}|x={extra}|in={ih}x{iw}x{ic}|out={oh}x{ow}x{oc}|n={r[_S_NIN]}"
    )
    return sig if r[_S_STATE] == 0 else f"{sig}|state={STATES[r[_S_STATE]]}"


def parse_signature(sig: str) -> np.ndarray:
    """The row of a signature string (inverse of ``format_signature``); LetiError on a malformed one."""
    try:
        parts = sig.split("|")
        kv = dict(p.split("=", 1) for p in parts[1:])
        row = np.zeros(N_ROW, dtype=np.int64)
        row[COL_OP] = OP_CODE[parts[0]]

        def pair(v):
            a, b = v.split("x")
            return int(a), int(b)

        row[COL_ATTR : COL_ATTR + 2] = pair(kv["k"])
        row[COL_ATTR + 2 : COL_ATTR + 4] = pair(kv["s"])
        row[COL_ATTR + 4] = int(kv["d"])
        row[COL_ATTR + 5] = int(kv["g"])
        row[COL_ATTR + 6] = ACT_CODE[kv["act"]]
        row[COL_ATTR + 7] = int(kv["bn"])
        row[COL_ATTR + 8] = int(kv["bias"])
        row[COL_ATTR + 9] = int(kv["pad"])
        row[COL_ATTR + 10] = int(kv["x"])
        row[COL_IN:COL_OUT] = [int(v) for v in kv["in"].split("x")]
        row[COL_OUT:N_LAYER_COLS] = [int(v) for v in kv["out"].split("x")]
        row[_S_NIN] = int(kv["n"])
        row[_S_STATE] = STATES.index(kv.get("state", "live"))
    except (KeyError, ValueError, IndexError) as e:
        raise PredictorError(
            f"malformed layer signature {sig!r} ({type(e).__name__}: {e})", "signature"
        ) from None
    return row


def layer_signatures(graph: LayerGraph, states: str = "count") -> list[str]:
    """The signature of every costed layer of ``graph`` in node order (the input node has none; under ``skip``
    neither have dead or constant nodes)."""
    _check_mode(states)
    rows = F.node_rows(F.batch([graph]))
    out = []
    for r in rows:
        sig = signature_of_row(r, states)
        if sig is not None:
            out.append(format_signature(sig))
    return out


def signature_counts(graph: LayerGraph, states: str = "count") -> dict[str, int]:
    out: dict[str, int] = {}
    for s in layer_signatures(graph, states):
        out[s] = out.get(s, 0) + 1
    return out


def signature_graph(sig: str) -> LayerGraph:
    """A LayerGraph of one layer (plus its input, and for ``mul`` the pooled scale it multiplies by) to measure."""
    row = parse_signature(sig)
    return _row_graph(tuple(int(v) for v in row[:_S_STATE]))


@lru_cache(maxsize=4096)
def _row_graph(row: tuple) -> LayerGraph:
    op = OPS[row[COL_OP]]
    kh, kw, sh, sw, dil, groups, act, bn, bias, pad, extra = row[COL_ATTR:COL_IN]
    in_shape, out_shape, n_in = tuple(row[COL_IN:COL_OUT]), tuple(row[COL_OUT:N_LAYER_COLS]), row[_S_NIN]
    act_name = ACTS[act]
    b = GraphBuilder(block=f"lut:{op}")
    x = b.input(in_shape)
    if op == "conv":
        y = b.conv(x, out_shape[2], kh, kw, sh, sw, groups=max(groups, 1), dil=max(dil, 1), act=act_name,
                   bn=bool(bn), bias=bool(bias), pad=pad)  # fmt: skip
    elif op == "dwconv":
        y = b.dwconv(x, kh, kw, sh, sw, mult=max(extra, 1), dil=max(dil, 1), act=act_name, bn=bool(bn),
                     bias=bool(bias), pad=pad)  # fmt: skip
    elif op == "dense":
        y = b.dense(x, out_shape[2], act=act_name, bias=bool(bias))
    elif op in ("maxpool", "avgpool"):
        y = b.pool(op, x, kh, sh, kw=kw, pad=pad)
    elif op == "gap":
        y = b.gap(x, keepdims=bool(extra))
    elif op == "add":
        y = b.add([x] * max(n_in, 2))
    elif op == "concat":
        y = b.concat([x] + _concat_partners(b, x, max(n_in, 2), in_shape[2], out_shape[2]))
    elif op == "mul":
        y = b.mul(x, b.gap(x, keepdims=True) if out_shape[:2] != (1, 1) else x)
    elif op == "act":
        y = b.act(x, act_name)
    elif op == "bn":
        y = b.bn(x)
    elif op == "shuffle":
        y = b.shuffle(x, max(groups, 1))
    elif op == "slice":
        y = b.slice(x, out_shape[2], extra)
    elif op == "zero":
        y = b.zero(x)
    else:
        raise GraphError(f"no single-layer graph for op {op!r}", SIG_FIELD)
    g = b.finish({"lut_signature": True})
    if tuple(int(v) for v in g.out_shape[y]) != out_shape:
        raise GraphError(f"the rebuilt layer gives shape {tuple(g.out_shape[y])}, not {out_shape}", SIG_FIELD)
    return g


SIG_FIELD = "signature"


def _concat_partners(b: GraphBuilder, x: int, k: int, c_first: int, c_out: int) -> list[int]:
    """The k-1 other inputs of a concat whose first input has ``c_first`` channels. A signature records only the
    first input's shape; the rest of ``c_out`` is split as evenly as possible (NB101's output concat has this
    form). Equal parts reuse ``x``; other widths are channel slices of it, whose time the measurement includes."""
    rest = c_out - c_first
    if k < 2 or rest < k - 1 or rest > (k - 1) * c_first:
        raise GraphError(f"cannot build a concat of {k} inputs, the first of {c_first} channels, giving {c_out}",
                         SIG_FIELD)  # fmt: skip
    widths = [rest // (k - 1) + (1 if i < rest % (k - 1) else 0) for i in range(k - 1)]
    return [x if w == c_first else b.slice(x, w, 0) for w in widths]


def _row_work(row: np.ndarray) -> float:
    """MACs of the layer a row describes (output elements for ops without MACs); at least 1."""
    try:
        g = _row_graph(tuple(int(v) for v in row[:_S_STATE]))
        macs = float(g.macs[-1])
    except (GraphError, Exception):  # unbuildable entries (odd concat splits) still need a size
        macs = 0.0
    if macs <= 0:
        macs = float(np.prod(row[COL_OUT:N_LAYER_COLS]))
    return max(macs, 1.0)


def _nnls(A: np.ndarray, y: np.ndarray, w: np.ndarray, robust: float, iters: int = 20) -> np.ndarray:
    """Weighted NNLS; with ``robust`` > 0, Huber-reweighted (threshold ``robust`` x the residuals' MAD), so a few
    badly measured models do not drag the per-layer times."""
    from scipy.optimize import nnls  # fitting only: loading and predicting must not pay for scipy

    scale = np.maximum(np.abs(A).max(axis=0), 1e-12)  # column scaling keeps NNLS well conditioned
    As = A / scale
    h = np.ones_like(y)
    coef = np.zeros(A.shape[1])
    for _ in range(iters if robust > 0 else 1):
        ww = w * np.sqrt(h)
        new, _ = nnls(As * ww[:, None], y * ww, maxiter=50 * A.shape[1])
        if robust <= 0 or np.allclose(new, coef, rtol=1e-6, atol=1e-12):
            coef = new
            break
        coef = new
        r = (As @ coef - y) * w
        mad = max(float(np.median(np.abs(r - np.median(r)))) * 1.4826, 1e-9)
        u = np.abs(r) / (robust * mad)
        h = np.where(u <= 1, 1.0, 1.0 / np.maximum(u, 1e-12))
    return coef / scale


def _check_mode(states: str) -> None:
    if states not in STATE_MODES:
        raise PredictorError(f"must be one of {', '.join(STATE_MODES)}, got {states!r}", "states")


# ---- the predictor --------------------------------------------------------------------------------------------
@dataclass
class LUTDetails:
    """What ``predict_details`` returns: per graph, the latency, the layers costed and those missing from the table."""

    latency_ms: np.ndarray
    n_layers: np.ndarray
    n_missing: np.ndarray
    missing: list[str]  # distinct missing signatures over the batch


class LUTPredictor(Predictor):
    """Sum of per-layer latencies by signature (see the module doc).

    ``states``: skip / count / separate treatment of dead and constant nodes. ``intercept``: learn a per-model
    overhead. ``relative``: NNLS minimises relative rather than absolute squared error (what acc@10 measures).
    ``robust``: Huber-reweighted NNLS (threshold in robust standard deviations; 0 = plain least squares).
    ``fold_constant``: a network whose output does not depend on its input is a constant a converter computes
    ahead of time: only its input-dependent layers are costed, and such networks stay out of the NNLS fit (they
    are a different kind of program; with few or none of them in the training data nothing could be learnt
    about them anyway).
    """

    family = "lut"

    param_ranges = {"robust": (0.0, 100.0)}

    def __init__(
        self,
        states: str = "separate",
        intercept: bool = True,
        relative: bool = True,
        robust: float = 0.0,
        fold_constant: bool = True,
    ):
        self.states = states
        self.intercept = intercept
        self.relative = relative
        self.robust = robust
        self.fold_constant = fold_constant

    # ---- building the table ---------------------------------------------------------------------------------
    @classmethod
    def from_table(cls, table: dict, states: str = "skip", overhead_ms: float = 0.0) -> LUTPredictor:
        """A predictor from measured per-layer times ``{signature: ms}``."""
        obj = cls(states=states, intercept=False)
        _check_mode(states)  # (folding constant networks applies as in fitted tables)
        obj._set_table(dict(table), float(overhead_ms))
        obj.n_train_ = 0
        return obj

    @classmethod
    def from_op_records(cls, records, states: str = "skip", overhead_ms: float = 0.0) -> LUTPredictor:
        """A predictor from per-op measurements ``[(signature, ms), ...]``; repeated signatures take the median."""
        times: dict[str, list[float]] = {}
        for sig, ms in records:
            times.setdefault(str(sig), []).append(float(ms))
        return cls.from_table({s: float(np.median(v)) for s, v in times.items()}, states, overhead_ms)

    def _set_table(self, table: dict, overhead: float) -> None:
        sigs = sorted(table)
        ms = np.array([table[s] for s in sigs], dtype=float)
        if ms.size and (not np.isfinite(ms).all() or (ms < 0).any()):
            raise PredictorError("layer times must be finite and non-negative", "table")
        if not np.isfinite(overhead) or overhead < 0:
            raise PredictorError("must be finite and non-negative", "overhead_ms")
        rows = np.array([parse_signature(s) for s in sigs], dtype=np.int64).reshape(-1, N_ROW)
        self.signatures_ = sigs
        self.times_ = ms
        self.overhead_ = overhead
        self.scale_ = 1.0
        self._rows = rows
        self._index = {s: i for i, s in enumerate(sigs)}
        self._work = np.array([_row_work(r) for r in rows])
        self._cost = np.zeros(0)  # per global signature id: its cost (NaN: not looked up yet)
        self._miss = np.zeros(0, dtype=bool)
        self._cost_generation = SIGNATURES.generation

    @property
    def table(self) -> dict[str, float]:
        return dict(zip(self.signatures_, self.times_.tolist(), strict=True))

    # ---- NNLS over whole-model times ------------------------------------------------------------------------
    def _fit(self, graphs, y):
        _check_mode(self.states)
        if self.fold_constant:
            regular = ~constant_output(graphs)
            if regular.any():  # (if every network is constant there is nothing else to learn from)
                graphs, y = [g for g, r in zip(graphs, regular, strict=True) if r], y[regular]
        gidx, ids, cnt = design(graphs, self.states, bool(self.fold_constant))
        used, local = np.unique(ids, return_inverse=True)
        n, u = len(graphs), used.size
        counts = np.bincount(gidx * u + local, weights=cnt, minlength=n * u).reshape(n, u)
        # identical count columns cannot be told apart: fit one weight per group, split it by work afterwards
        cols, group = np.unique(counts.T, axis=0, return_inverse=True)
        group = group.ravel()
        A = cols.T
        if self.intercept:
            A = np.hstack([A, np.ones((n, 1))])
        coef = _nnls(A, y, 1.0 / y if self.relative else np.ones_like(y), float(self.robust))
        overhead = float(coef[-1]) if self.intercept else 0.0
        rows = [SIGNATURES.row(self.states, int(i)) for i in used]
        work = np.array([_row_work(r) for r in rows])
        share = work / np.bincount(group, weights=work)[group]
        times = coef[: cols.shape[0]][group] * share
        self._set_table({format_signature(r): float(t) for r, t in zip(rows, times, strict=True)}, overhead)

    # ---- prediction -----------------------------------------------------------------------------------------
    def _costs(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cost and missing flag of each global signature id in ``ids`` (worked out once per id, then cached)."""
        if self._cost_generation != SIGNATURES.generation:  # signature ids were renumbered
            self._cost, self._miss = np.zeros(0), np.zeros(0, dtype=bool)
            self._cost_generation = SIGNATURES.generation
        need = ids[ids >= self._cost.size] if ids.size else ids
        if need.size:
            grow = int(need.max()) + 1 - self._cost.size
            self._cost = np.concatenate([self._cost, np.full(grow, np.nan)])
            self._miss = np.concatenate([self._miss, np.zeros(grow, dtype=bool)])
        todo = np.unique(ids[np.isnan(self._cost[ids])]) if ids.size else ids
        for i in todo:
            row = SIGNATURES.row(self.states, int(i))
            j = self._index.get(format_signature(row))
            if j is not None:
                self._cost[i], self._miss[i] = self.times_[j], False
            else:
                hit = self._nearest(row)
                self._cost[i], self._miss[i] = (0.0 if hit is None else hit[1]), True
        return self._cost[ids], self._miss[ids]

    def _nearest(self, row: np.ndarray) -> tuple[int, float] | None:
        """The nearest entry of the same op and state (kernel, stride, groups... first, then size) and its time
        scaled by the work ratio."""
        if not len(self.signatures_):
            return None
        r = self._rows
        same = (r[:, COL_OP] == row[COL_OP]) & (r[:, _S_STATE] == row[_S_STATE])
        if not same.any():
            return None
        cand = np.flatnonzero(same)
        work = _row_work(row)
        attrs = slice(COL_ATTR, COL_ATTR + 7)  # kernel, stride, dilation, groups, activation
        mismatch = (r[cand, attrs] != row[attrs]).sum(axis=1)
        dist = 10.0 * mismatch + np.abs(np.log(self._work[cand]) - np.log(work))
        j = int(cand[np.argmin(dist)])
        return j, float(self.times_[j] * work / self._work[j])

    def calibrate(self, graphs, latencies_ms) -> LUTPredictor:
        """Scale the table so that its median ratio to a few whole-model measurements is 1.

        Single-layer times need not add up exactly to a whole network's (a layer alone has its own input and
        output buffers and cache state); where the ratio is steady across networks, a handful of measured archs
        fixes the level while the table keeps the per-layer ranking.
        """
        y = np.asarray(latencies_ms, dtype=float)
        graphs = list(graphs)
        if y.shape != (len(graphs),) or y.size == 0 or not np.isfinite(y).all() or (y <= 0).any():
            raise PredictorError("give one positive latency per graph (at least one)", "latencies_ms")
        self.scale_ = 1.0
        self.scale_ = float(np.median(y / self.predict(graphs)))
        return self

    def predict_details(self, graphs) -> LUTDetails:
        """Latency, number of costed layers and of layers missing from the table per graph, and the missing
        signatures."""
        graphs = list(graphs)
        if not hasattr(self, "times_"):
            raise PredictorError(
                "this lut predictor has no table yet: fit it or build it from a table", "predictor"
            )
        n = len(graphs)
        gidx, ids, cnt = design(graphs, self.states, bool(self.fold_constant))
        cost, miss = self._costs(ids)
        # floored at a microsecond: a network that folds away entirely still costs an invocation
        lat = np.bincount(gidx, weights=cost * cnt, minlength=n) + self.overhead_
        lat = np.maximum(lat * self.scale_, 1e-3)
        n_layers = np.bincount(gidx, weights=cnt, minlength=n).astype(int)
        n_missing = np.bincount(gidx, weights=cnt * miss, minlength=n).astype(int)
        missing = sorted(
            {format_signature(SIGNATURES.row(self.states, int(i))) for i in np.unique(ids[miss])}
        )
        return LUTDetails(lat, n_layers, n_missing, missing)

    def _predict(self, graphs):
        d = self.predict_details(graphs)
        self.last_missing_ = d.n_missing
        return d.latency_ms

    # ---- persistence ----------------------------------------------------------------------------------------
    def _save(self, d: Path) -> None:
        write_json_checked(
            d / MODEL_FILE,
            {"overhead_ms": self.overhead_, "scale": self.scale_, "table": self.table, "states": self.states},
        )

    def _load(self, d: Path) -> None:
        _check_mode(self.states)
        data = read_json_checked(d / MODEL_FILE)
        if data.get("states", self.states) != self.states:
            raise PredictorError(
                f"the table was built for states={data.get('states')!r}", str(d / MODEL_FILE)
            )
        table = data["table"]
        if not isinstance(table, dict):
            raise PredictorError("the table is not a JSON object", str(d / MODEL_FILE))
        self._set_table({str(k): float(v) for k, v in table.items()}, float(data["overhead_ms"]))
        scale = float(data.get("scale", 1.0))
        if not np.isfinite(scale) or scale <= 0:
            raise PredictorError("the table's scale must be a positive number", str(d / MODEL_FILE))
        self.scale_ = scale


__all__ = [
    "LUTDetails",
    "LUTPredictor",
    "format_signature",
    "layer_signatures",
    "parse_signature",
    "signature_counts",
    "signature_graph",
]
