"""Feature vectors of LayerGraphs for the tabular predictors: pure functions of the IR, vectorised, memoised.

How it stays fast: every node of a batch of graphs becomes a *row* (op, attributes, shapes, fan-in, state,
resolution level, MACs, params) in one vectorised pass over all the graphs laid end to end. Rows repeat a lot (a
network is a few distinct layers used many times, and different networks share layers), so each graph is summarised
once as (distinct row ids, counts) plus a few scalars that are not sums over nodes (depth, peak memory, input
shape). Features are then a sparse product of those counts with per-row contributions worked out once per
distinct row, and the lookup-table predictor (``lut``) prices the same summaries. Graphs are immutable, so the
summaries and feature rows are memoised for as long as a graph lives.

The columns (``feature_names()``, stable order; ``FEATURES_ID`` fingerprints them):

* ``tot.*``   totals: nodes, edges, MACs, params, activation and peak bytes, depth, split by node state;
* ``kind.*``  per node kind (op refined by kernel size, stride and groups) and state (live / dead): count, MACs,
  params, output elements;
* ``lvl*``    per resolution level (log2 of the input size over the node's input size): count and MACs of each live
  kind, and of dead nodes by coarse op group;
* ``const.*`` count and MACs per kind of nodes that do not depend on the input, live or dead (``node_states``);
* ``io.*``    input shape and output width.

``design(graphs, topology)`` adds the ``topo.*`` columns of ``topology`` (where the layers sit: paths, what feeds
what, parallel branches, live memory) after these, for the models that ask for them; they are memoised apart, so
a model that does not read them does not pay for them.

A node is *dead* when its value never reaches the output (``LayerGraph.live``) and *constant* when it does not
depend on the input (everything it reads comes through zero ops). Runtimes may fold constants away, skip
dead nodes, or run both (NAS-Bench-201 exports differ here), so they are kept apart and the models learn which cost
time.
"""

from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass
from functools import cache, cached_property

import numpy as np

from leti.errors import PredictorError
from leti.graph.layergraph import (
    COL_ATTR,
    COL_IN,
    COL_LIVE,
    COL_MACS,
    COL_OP,
    COL_OUT,
    N_COLS,
    N_LAYER_COLS,
    OP_CODE,
    OPS,
    A,
    LayerGraph,
    node_table,
    table_columns,
)
from leti.predictors import topology

# ---- node kinds: the op, refined where kernel size and stride change the cost a lot ----------------------------
_WINDOWED = ("conv", "dwconv", "maxpool", "avgpool")
_KERNELS = ("k1", "k3", "k5")  # k5 = 5 and larger
KINDS: tuple[str, ...] = (
    *(f"conv_{k}_s{s}" for k in _KERNELS for s in (1, 2)),
    "gconv",
    *(f"dwconv_{k}_s{s}" for k in ("k3", "k5") for s in (1, 2)),
    *(f"{p}_s{s}" for p in ("maxpool", "avgpool") for s in (1, 2)),
    *(o for o in OPS if o not in _WINDOWED),
)
KIND_CODE = {k: i for i, k in enumerate(KINDS)}
N_KINDS = len(KINDS)
# node states: live or dead (reaches the output or not) x input-dependent or constant
STATES = ("live", "dead", "const", "dead_const")
N_LEVELS = 6  # resolution levels 0 (input size) .. 5 (1/32 and smaller, dense heads)
GROUPS = ("conv", "pool", "elementwise", "move", "other")  # coarse op groups for the dead-per-level table
_OP_GROUP = {"conv": "conv", "dwconv": "conv", "dense": "conv", "maxpool": "pool", "avgpool": "pool",
             "gap": "pool", "add": "elementwise", "mul": "elementwise", "act": "elementwise", "bn": "elementwise",
             "zero": "elementwise", "concat": "move", "shuffle": "move", "slice": "move", "input": "other",
             "pad": "move", "reshape": "move", "resize": "move"}  # fmt: skip
_GROUP_OF_OP = np.array([GROUPS.index(_OP_GROUP[o]) for o in OPS], dtype=np.int64)
_BASE_KIND = np.array([KIND_CODE.get(o, -1) for o in OPS], dtype=np.int64)  # -1: windowed ops, refined below

TOTALS = ("nodes", "edges", "live_nodes", "dead_nodes", "const_nodes", "macs", "live_macs", "dead_macs",
          "const_macs", "varying_live_macs", "params", "live_params", "activation_bytes", "live_activation_bytes",
          "peak_bytes", "depth", "levels", "add_fan_in", "live_edges", "const_output")  # fmt: skip
IO = ("in_h", "in_w", "in_c", "out_c")


@cache
def feature_names() -> tuple[str, ...]:
    names = [f"tot.{t}" for t in TOTALS]
    for stat in ("count", "macs", "params", "elems"):
        names += [f"kind.{k}.{s}.{stat}" for k in KINDS for s in ("live", "dead")]
    for stat in ("count", "macs"):
        names += [f"lvl{lv}.{k}.{stat}" for lv in range(N_LEVELS) for k in KINDS]
    for stat in ("count", "macs"):
        names += [f"lvl{lv}.dead.{g}.{stat}" for lv in range(N_LEVELS) for g in GROUPS]
    for stat in ("count", "macs"):
        names += [f"const.{k}.{stat}" for k in KINDS]
    names += [f"io.{k}" for k in IO]
    return tuple(names)


N_FEATURES = len(feature_names())
FEATURES_ID = hashlib.sha256("\n".join(feature_names()).encode()).hexdigest()[:16]
_INDEX = {n: i for i, n in enumerate(feature_names())}


def feature_index(name: str) -> int:
    return _INDEX[name]


# ---- a batch of graphs laid end to end ------------------------------------------------------------------------
@dataclass(frozen=True)
class Batch:
    """Node and edge arrays of several graphs concatenated; ``gid`` says which graph a node belongs to."""

    n_graphs: int
    table: np.ndarray  # (n, N_COLS) int64, see layergraph.COL_*: the node columns below are views of it
    starts: np.ndarray  # first global node id of each graph
    counts: np.ndarray  # nodes per graph
    gid: np.ndarray
    op: np.ndarray
    attr: np.ndarray
    in_shape: np.ndarray
    out_shape: np.ndarray
    macs: np.ndarray
    params: np.ndarray
    live: np.ndarray
    depth: np.ndarray
    block: np.ndarray
    src: np.ndarray  # global ids, sorted by destination
    dst: np.ndarray
    egid: np.ndarray  # graph of each edge

    @property
    def n_nodes(self) -> int:
        return int(self.op.size)

    @cached_property
    def out_elems(self) -> np.ndarray:
        s = self.out_shape
        return s[:, 0] * s[:, 1] * s[:, 2]


def batch(graphs: list[LayerGraph]) -> Batch:
    b = len(graphs)
    counts = np.fromiter((g.n_nodes for g in graphs), dtype=np.int64, count=b)
    ecounts = np.fromiter((g.n_edges for g in graphs), dtype=np.int64, count=b)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    table = np.concatenate([node_table(g) for g in graphs]) if b else np.zeros((0, N_COLS), dtype=np.int64)
    eoff = np.repeat(starts, ecounts)
    src = (
        np.concatenate([g.src for g in graphs]).astype(np.int64) + eoff if b else np.zeros(0, dtype=np.int64)
    )
    dst = (
        np.concatenate([g.dst for g in graphs]).astype(np.int64) + eoff if b else np.zeros(0, dtype=np.int64)
    )
    return Batch(
        n_graphs=b,
        table=table,
        starts=starts,
        counts=counts,
        gid=np.repeat(np.arange(b), counts),
        **table_columns(table),
        src=src,
        dst=dst,
        egid=np.repeat(np.arange(b), ecounts),
    )


# ---- per-node analyses ----------------------------------------------------------------------------------------
def node_kinds(op: np.ndarray, attr: np.ndarray) -> np.ndarray:
    """The KINDS code of each node: the op, refined by kernel size, stride and groups for windowed ops."""
    op = np.asarray(op, dtype=np.int64)
    kind = _BASE_KIND[op]
    k = np.maximum(attr[:, A["kh"]], attr[:, A["kw"]])
    s2 = np.maximum(attr[:, A["sh"]], attr[:, A["sw"]]) >= 2
    kidx = np.where(k <= 1, 0, np.where(k <= 4, 1, 2))
    conv = op == OP_CODE["conv"]
    kind = np.where(conv, kidx * 2 + s2, kind)  # conv_k1_s1 .. conv_k5_s2 are the first six kinds
    kind = np.where(conv & (attr[:, A["groups"]] > 1), KIND_CODE["gconv"], kind)
    dw = op == OP_CODE["dwconv"]
    kind = np.where(dw, KIND_CODE["dwconv_k3_s1"] + 2 * (kidx == 2) + s2, kind)
    for p in ("maxpool", "avgpool"):
        kind = np.where(op == OP_CODE[p], KIND_CODE[f"{p}_s1"] + s2, kind)
    return kind


def resolution_levels(bt: Batch) -> np.ndarray:
    """log2(input height / node input height), rounded and clipped to [0, N_LEVELS)."""
    h0 = bt.out_shape[bt.starts, 0].astype(np.float64)[bt.gid]
    h = np.maximum(bt.in_shape[:, 0], 1).astype(np.float64)
    return np.clip(np.rint(np.log2(np.maximum(h0, 1) / h)), 0, N_LEVELS - 1).astype(np.int64)


def _level_order(levels: np.ndarray) -> np.ndarray:
    """A stable argsort of small non-negative ints (a radix sort when they fit in 16 bits)."""
    small = levels.astype(np.int16) if levels.size and levels.max() < 32767 else levels
    return np.argsort(small, kind="stable")


def varying_mask(bt: Batch) -> np.ndarray:
    """True where a node's value depends on the network input (False downstream of zero ops only).

    Inputs are always on a shorter path than their consumer, so one pass over depth levels settles every node.
    """
    var = bt.op == OP_CODE["input"]
    if bt.src.size == 0:
        return var
    nonzero = bt.op != OP_CODE["zero"]
    ddepth = bt.depth[bt.dst]
    order = _level_order(ddepth)
    s, d = bt.src[order], bt.dst[order]
    top = int(ddepth.max())
    bounds = np.searchsorted(ddepth[order], np.arange(top + 2))
    for lvl in range(2, top + 1):
        a, b = bounds[lvl], bounds[lvl + 1]
        if a == b:
            continue
        tgt = d[a:b][var[s[a:b]]]
        var[tgt] = nonzero[tgt]
    return var


def node_states(bt: Batch) -> np.ndarray:
    """0 live and input-dependent, 1 dead (never reaches the output) but input-dependent, 2 live and constant
    (independent of the input), 3 dead and constant."""
    return np.where(bt.live, 0, 1) + np.where(varying_mask(bt), 0, 2)


def peak_elems(bt: Batch) -> np.ndarray:
    """Per graph: peak live activation elements when nodes run in id order (as ``LayerGraph.peak_bytes``)."""
    n = bt.n_nodes
    if n == 0:
        return np.zeros(bt.n_graphs)
    last = np.arange(n)
    if bt.src.size:
        np.maximum.at(last, bt.src, bt.dst)  # each tensor's last reader
    ends = bt.starts + bt.counts
    elems = bt.out_elems.astype(np.float64)
    # a tensor read last at t is freed at t+1; the graph's final output never is
    free_at = last + 1
    keep = free_at < ends[bt.gid]
    freed = np.bincount(free_at[keep], weights=elems[keep], minlength=n + 1)[:n]
    running = np.cumsum(elems - freed)
    before = np.where(bt.starts > 0, running[np.maximum(bt.starts - 1, 0)], 0.0)
    return np.maximum.reduceat(running, bt.starts) - before


# ---- node rows and per-graph summaries ------------------------------------------------------------------------
# A node's row: everything per-node features and layer signatures need. It starts with the IR's layer columns
# (layergraph.COL_OP .. COL_OUT: op, attributes, shapes), then the columns derived here (fan-in, live fan-in, state,
# resolution level), then MACs and params
R_NIN, R_NEFF, R_STATE, R_LEVEL, R_MACS, R_PARAMS = range(N_LAYER_COLS, N_LAYER_COLS + 6)
N_ROW = R_PARAMS + 1
SCALARS = ("depth", "peak_elems", "in_h", "in_w", "in_c", "out_c", "const_output")


@dataclass(frozen=True)
class Summary:
    """One graph as counts of distinct node rows (ids into ``ROWS``) plus its non-additive scalars."""

    ids: np.ndarray  # int64, ascending
    counts: np.ndarray  # int64
    scalars: np.ndarray  # float64, see SCALARS


def node_columns(bt: Batch) -> tuple[np.ndarray, list[np.ndarray]]:
    """(the batch's node table, the derived columns fan-in, live fan-in, state, level) of every node's row."""
    state = node_states(bt)
    n = bt.n_nodes
    n_in = np.bincount(bt.dst, minlength=n)
    # inputs that are live and input-dependent: an add whose other operand is a pruned zero branch is an identity
    # to runtimes that drop such branches
    n_eff = np.bincount(bt.dst, weights=(state[bt.src] == 0), minlength=n).astype(np.int64)
    return bt.table, [n_in, n_eff, state, resolution_levels(bt)]


def _row_of(table: np.ndarray, derived: list[np.ndarray], idx) -> np.ndarray:
    """Rows (see ``R_*``) of nodes ``idx``."""
    t = table[idx]
    extra = np.stack([d[idx] for d in derived], axis=-1)
    return np.concatenate([t[..., COL_OP:N_LAYER_COLS], extra, t[..., COL_MACS:COL_LIVE]], axis=-1).astype(
        np.int64
    )


def node_rows(bt: Batch) -> np.ndarray:
    """One int64 row per node (see ``R_*``)."""
    table, derived = node_columns(bt)
    return _row_of(table, derived, slice(None))


def _table_mix(k: int) -> np.ndarray:
    """Hash multipliers for the node table's columns: the row's columns get one, the others (live, depth, block)
    none: they are not part of a row (state replaces live)."""
    m = np.zeros(N_COLS, dtype=np.int64)
    m[COL_OP:N_LAYER_COLS] = _MIX[k, : N_LAYER_COLS - COL_OP]
    m[COL_MACS:COL_LIVE] = _MIX[k, COL_MACS - COL_OP : COL_LIVE - COL_OP]
    return m


# Graphs are processed in chunks: arrays stay under the allocator's mmap threshold, so their memory is reused
# instead of being mapped (and page-faulted) afresh, which costs more than the arithmetic on large batches
CHUNK = 512

_MIX = np.random.default_rng(20240601).integers(1, 2**62, size=(2, N_ROW), dtype=np.int64) | 1


def _hash(table: np.ndarray, derived: list[np.ndarray], k: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        key = table @ _table_mix(k)  # int64 arithmetic wraps: a hash, not a sum
        for j, d in enumerate(derived):
            key += d.astype(np.int64, copy=False) * _MIX[k, -1 - j]
    return key


def factorize(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes, uniques) with the uniques in order of first appearance, as ``pandas.factorize`` gives them (numpy
    only: the prediction path must not import pandas)."""
    uniq, first, inv = np.unique(a, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[np.asarray(inv).ravel()], uniq[order]


def unique_rows(table: np.ndarray, derived: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(unique rows (u, N_ROW), inverse) of the nodes' rows, through one 64-bit hash per row (one 1-D sort rather
    than ``np.unique(axis=0)``'s row sort). A second independent 64-bit hash guards the first against collisions,
    with an exact ``np.unique`` as the fallback."""
    n = table.shape[0]
    if n == 0:
        return np.zeros((0, N_ROW), dtype=np.int64), np.zeros(0, dtype=np.int64)
    codes, uniq_keys = factorize(_hash(table, derived, 0))
    first = np.empty(uniq_keys.size, dtype=np.int64)
    first[codes[::-1]] = np.arange(n)[::-1]
    check = _hash(table, derived, 1)
    if not np.array_equal(check[first][codes], check):
        rows = _row_of(table, derived, slice(None))
        uniq, inv = np.unique(rows, axis=0, return_inverse=True)
        return uniq, np.asarray(inv, dtype=np.int64).ravel()
    return _row_of(table, derived, first), np.asarray(codes, dtype=np.int64)


def memoised(graphs: list[LayerGraph], memo, compute_chunk) -> list:
    """Per-graph values from ``memo``, computing the missing ones ``CHUNK`` graphs at a time with
    ``compute_chunk(graphs) -> one value per graph``; the same graph twice in a batch is computed once."""
    out = [memo.get(g) for g in graphs]
    todo = [i for i, v in enumerate(out) if v is None]
    if todo:
        first: dict[int, int] = {}
        for i in todo:
            first.setdefault(id(graphs[i]), i)
        idx = list(first.values())
        for a in range(0, len(idx), CHUNK):
            part = idx[a : a + CHUNK]
            for i, v in zip(part, compute_chunk([graphs[i] for i in part]), strict=True):
                memo[graphs[i]] = v
        for i in todo:
            out[i] = memo[graphs[i]]
    return out


class RowRegistry:
    """Process-wide numbering of distinct node rows, their feature contributions, and the memo of summaries."""

    def __init__(self):
        self.generation = -1  # bumped by ``reset``: ids of an older generation mean nothing
        self.reset()

    def reset(self) -> None:
        """Forget every row: ids start over, and the summaries that hold old ids go too."""
        self._ids: dict[bytes, int] = {}
        self._rows: list[np.ndarray] = []
        self._contrib: list[tuple[np.ndarray, np.ndarray]] = []
        self._matrix = None  # CSR (n_rows, N_FEATURES) of contributions, rebuilt when rows were added
        self.memo: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.generation += 1

    def __len__(self) -> int:
        return len(self._rows)

    def id_of(self, row: np.ndarray) -> int:
        key = row.tobytes()
        i = self._ids.get(key)
        if i is None:
            i = self._ids[key] = len(self._rows)
            self._rows.append(row.copy())
            self._contrib.append(_contributions(row))
        return i

    def row(self, i: int) -> np.ndarray:
        return self._rows[i]

    def contributions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The rows' feature contributions in CSR form: (indptr, columns, values), rebuilt when rows were added."""
        m = self._matrix
        if m is None or m[0].size != len(self._rows) + 1:
            cols = [c for c, _ in self._contrib]
            vals = [v for _, v in self._contrib]
            indptr = np.concatenate(([0], np.cumsum([c.size for c in cols]))).astype(np.int64)
            m = (indptr, np.concatenate(cols) if cols else np.zeros(0, np.int64),
                 np.concatenate(vals) if vals else np.zeros(0))  # fmt: skip
            self._matrix = m
        return m

    def summaries(self, graphs: list[LayerGraph]) -> list[Summary]:
        return memoised(graphs, self.memo, self._compute)

    def _compute(self, graphs: list[LayerGraph]) -> list[Summary]:
        bt = batch(graphs)
        table, derived = node_columns(bt)
        uniq, inv = unique_rows(table, derived)
        gmap = np.array([self.id_of(r) for r in uniq], dtype=np.int64)
        k = len(self._rows) + 1
        pairs, counts = np.unique(
            bt.gid * k + gmap[inv], return_counts=True
        )  # (graph, row id) pairs, how often
        g_of, r_of = pairs // k, pairs % k
        bounds = np.searchsorted(g_of, np.arange(len(graphs) + 1))
        first, last = bt.starts, bt.starts + bt.counts - 1
        scal = np.empty((len(graphs), len(SCALARS)))
        scal[:, 0] = np.maximum.reduceat(bt.depth, bt.starts) if bt.n_nodes else 0
        scal[:, 1] = peak_elems(bt)
        scal[:, 2:5] = bt.out_shape[first]
        scal[:, 5] = bt.out_shape[last, 2]
        scal[:, 6] = derived[2][last] >= 2  # the output does not depend on the input
        for a in (r_of, counts, scal):
            a.setflags(write=False)
        return [
            Summary(r_of[bounds[j] : bounds[j + 1]], counts[bounds[j] : bounds[j + 1]], scal[j])
            for j in range(len(graphs))
        ]


ROWS = RowRegistry()
# A long-running server meets ever more distinct layers (each row costs a few KB with what hangs off it: ~45 MB for
# 1,000 random leti archs), so it calls ``trim`` between requests to start the numbering over past this many rows.
MAX_ROWS = 10_000


def trim(max_rows: int = MAX_ROWS) -> bool:
    """Reset ``ROWS`` when it holds more than ``max_rows`` rows; whatever is numbered by row ids (the LUT's
    signatures) starts over at its next use. Only between predictions: ids taken before a reset are void."""
    if len(ROWS) <= max_rows:
        return False
    ROWS.reset()
    return True


def summaries(graphs) -> list[Summary]:
    return ROWS.summaries(list(graphs))


def _contributions(row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (feature columns, values) one node with this row adds to its graph's feature vector."""
    op, state, level = int(row[COL_OP]), int(row[R_STATE]), int(row[R_LEVEL])
    kind = int(node_kinds(np.array([op]), row[None, COL_ATTR:COL_IN])[0])
    macs, params = float(row[R_MACS]), float(row[R_PARAMS])
    elems = float(row[COL_OUT] * row[COL_OUT + 1] * row[COL_OUT + 2])
    dead, const = state in (1, 3), state in (2, 3)
    live = not dead
    k, s = KINDS[kind], "dead" if dead else "live"
    c: dict[str, float] = {
        "tot.nodes": 1.0,
        "tot.edges": float(row[R_NIN]),
        "tot.live_nodes": float(live),
        "tot.dead_nodes": float(dead),
        "tot.const_nodes": float(const),
        "tot.macs": macs,
        "tot.live_macs": macs * live,
        "tot.dead_macs": macs * dead,
        "tot.const_macs": macs * const,
        "tot.varying_live_macs": macs * (state == 0),
        "tot.params": params,
        "tot.live_params": params * live,
        "tot.activation_bytes": 4.0 * elems,
        "tot.live_activation_bytes": 4.0 * elems * live,
        "tot.add_fan_in": float(row[R_NIN]) * (op == OP_CODE["add"]),
        "tot.live_edges": float(row[R_NEFF]) * (state == 0),
        f"kind.{k}.{s}.count": 1.0,
        f"kind.{k}.{s}.macs": macs,
        f"kind.{k}.{s}.params": params,
        f"kind.{k}.{s}.elems": elems,
    }
    if live:
        c[f"lvl{level}.{k}.count"] = 1.0
        c[f"lvl{level}.{k}.macs"] = macs
    else:
        g = GROUPS[int(_GROUP_OF_OP[op])]
        c[f"lvl{level}.dead.{g}.count"] = 1.0
        c[f"lvl{level}.dead.{g}.macs"] = macs
    if const:
        c[f"const.{k}.count"] = 1.0
        c[f"const.{k}.macs"] = macs
    items = sorted((_INDEX[n], v) for n, v in c.items() if v != 0)
    return np.array([i for i, _ in items], dtype=np.int64), np.array([v for _, v in items], dtype=np.float64)


# ---- the feature matrix ---------------------------------------------------------------------------------------
def compute(graphs: list[LayerGraph]) -> np.ndarray:
    """The feature matrix of ``graphs`` without the row memo: shape (len(graphs), N_FEATURES), float64."""
    graphs = list(graphs)
    n = len(graphs)
    if n == 0:
        return np.zeros((0, N_FEATURES))
    summ = ROWS.summaries(graphs)
    X = np.zeros((n, N_FEATURES))
    indptr, cols, vals = ROWS.contributions()
    for start in range(0, n, 1024):  # bounds the expanded (graph, row, feature) triples held at once
        part = summ[start : start + 1024]
        sizes = np.fromiter((s.ids.size for s in part), dtype=np.int64, count=len(part))
        g = np.repeat(np.arange(len(part)), sizes)
        ids = np.concatenate([s.ids for s in part])
        cnt = np.concatenate([s.counts for s in part]).astype(np.float64)
        # every (graph, row) pair adds count x the row's contributions: expand the pairs over their rows' entries
        nnz = indptr[ids + 1] - indptr[ids]
        pair = np.repeat(np.arange(ids.size), nnz)
        pos = indptr[ids][pair] + np.arange(pair.size) - np.repeat(np.cumsum(nnz) - nnz, nnz)
        flat = g[pair] * N_FEATURES + cols[pos]
        X[start : start + len(part)] = np.bincount(flat, weights=cnt[pair] * vals[pos],
                                                   minlength=len(part) * N_FEATURES).reshape(len(part), N_FEATURES)  # fmt: skip
    scal = np.stack([s.scalars for s in summ])
    X[:, _INDEX["tot.depth"]] = scal[:, 0]
    X[:, _INDEX["tot.peak_bytes"]] = 4.0 * scal[:, 1]
    X[:, _INDEX["tot.const_output"]] = scal[:, 6]
    for j, name in enumerate(IO):
        X[:, _INDEX[f"io.{name}"]] = scal[:, 2 + j]
    # levels present among live nodes
    lv = np.zeros((n, N_LEVELS), dtype=bool)
    for lvl in range(N_LEVELS):
        cols = [_INDEX[f"lvl{lvl}.{k}.count"] for k in KINDS]
        lv[:, lvl] = X[:, cols].sum(axis=1) > 0
    X[:, _INDEX["tot.levels"]] = lv.sum(axis=1)
    return X


_MEMO: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def featurize(graphs, use_memo: bool = True) -> np.ndarray:
    """Feature matrix (len(graphs), N_FEATURES) float64, columns named by ``feature_names()``."""
    graphs = list(graphs)
    if not use_memo:
        return compute(graphs)
    if not graphs:
        return np.zeros((0, N_FEATURES))

    def rows(chunk: list[LayerGraph]) -> np.ndarray:
        X = compute(chunk)
        X.setflags(write=False)  # each memo entry is a read-only view of its chunk's matrix
        return X

    return np.stack(memoised(graphs, _MEMO, rows))


# ---- topology columns and the full design ---------------------------------------------------------------------
TOPOLOGY_ID = hashlib.sha256("\n".join(topology.topology_names()).encode()).hexdigest()[:16]
_TOPO_MEMO: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def design_names() -> tuple[str, ...]:
    """Names of the columns of ``design``: the features, then every topology column."""
    return feature_names() + topology.topology_names()


def topology_features(graphs) -> np.ndarray:
    """The topology columns (``topology.topology_names()``) of ``graphs``, memoised per graph."""
    graphs = list(graphs)
    if not graphs:
        return np.zeros((0, topology.N_TOPO))

    def rows(chunk: list[LayerGraph]) -> np.ndarray:
        bt = batch(chunk)
        X = topology.compute(bt, node_states(bt), resolution_levels(bt))
        X.setflags(write=False)
        return X

    return np.stack(memoised(graphs, _TOPO_MEMO, rows))


def design(graphs, topology_groups: str = "none") -> np.ndarray:
    """The features, followed by all topology columns unless ``topology_groups`` is ``none`` (index it with
    ``design_columns``)."""
    graphs = list(graphs)
    X = featurize(graphs)
    if topology_groups == "none":
        return X
    return np.hstack([X, topology_features(graphs)])


@cache
def design_columns(topology_groups: str = "none") -> np.ndarray:
    """Indices into ``design`` of the columns a model reads: the features, plus the topology groups named (``all``,
    ``none``, or names of ``topology.GROUPS`` joined by '+', e.g. ``path+big``: ablations use it)."""
    keep = {"all": list(topology.GROUPS), "none": []}.get(topology_groups)
    if keep is None:
        keep = str(topology_groups).split("+")
        unknown = [g for g in keep if g not in topology.GROUPS]
        if unknown:
            raise PredictorError(
                f"unknown topology group {unknown[0]!r} (known: all, none, {', '.join(topology.GROUPS)})",
                "topology",
            )
    index = {n: i for i, n in enumerate(design_names())}
    extra = sorted(index[n] for g in keep for n in topology.GROUPS[g])
    out = np.concatenate([np.arange(N_FEATURES), np.array(extra, dtype=np.int64)])
    out.setflags(write=False)
    return out


@cache
def monotone_signs() -> np.ndarray:
    """Per ``design`` column: +1 where the column measures work (counts, MACs, params, bytes, live memory), since
    more work never makes a network faster; 0 for the rest (shapes, flags, shares and pairs may go either way)."""
    work = ("tot.", "kind.", "lvl", "const.", "topo.mem.")
    out = np.array([1 if n.startswith(work) else 0 for n in design_names()], dtype=np.int64)
    out[_INDEX["tot.const_output"]] = 0  # a constant output is folded away: far faster
    out.setflags(write=False)
    return out


def clear_memo() -> None:
    """Forget memoised feature rows, topology rows and graph summaries (benchmarks use it to time cold starts)."""
    _MEMO.clear()
    _TOPO_MEMO.clear()
    ROWS.memo.clear()


__all__ = [
    "FEATURES_ID",
    "TOPOLOGY_ID",
    "KINDS",
    "N_FEATURES",
    "ROWS",
    "Batch",
    "Summary",
    "batch",
    "clear_memo",
    "trim",
    "compute",
    "design",
    "design_columns",
    "design_names",
    "feature_index",
    "feature_names",
    "featurize",
    "monotone_signs",
    "node_kinds",
    "node_states",
    "summaries",
    "topology_features",
    "varying_mask",
]
