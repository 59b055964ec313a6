"""Topology features of LayerGraphs: where the layers sit, not only which layers there are.

The sums in ``features`` see a network as a bag of layers. Two networks with the same layers wired differently
(the same cell ops on different edges) have the same bag but are different programs: another critical path, other
branches that can run side by side, other fusion chances (what feeds what), other live memory. These columns read
that from the IR alone; nothing here knows a search space. All of them are over the nodes a pruning runtime runs:
live and input-dependent (state 0 in ``features.node_states``); a network whose output is a constant has none.

* ``topo.path.*``    input-to-output paths (as BANANAS encodes a cell by its paths, but counted, not listed, so it
                     works for any size): log2 of their number, and the expected node count, MACs and bytes on a
                     path drawn uniformly from them;
* ``topo.ptok.*``    the expected number of each token (a coarse op class) on such a path;
* ``topo.big.*``     edges by (producer token, consumer token): what feeds what, e.g. conv->add, a fusion chance;
* ``topo.pbig.*``    the same pairs, weighted by the share of input-to-output paths that use the edge;
* ``topo.width.*``   per resolution level: the most nodes at one depth, and how many share a depth with another
                     (parallel branches); ``topo.fanout.*`` nodes per token read by two or more others;
* ``topo.mem.*``     live activation bytes when only these nodes run in id order: the peak and the mean.

Also tried, and left out because grouped CV on the six public devices showed no gain (docs/accuracy.md): the
critical path's MACs, bytes and node count, and node counts and MACs by quarter of the network's depth.

Tokens are derived from ``OPS`` by name; an op not named here (appended later) is ``other``.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from leti.graph.layergraph import OP_CODE, OPS, A

_TOKEN_OF = {"input": "input", "conv": "conv", "dense": "conv1", "dwconv": "dwconv", "maxpool": "pool",
             "avgpool": "pool", "gap": "pool", "add": "add", "concat": "concat", "mul": "mul", "act": "unary",
             "bn": "unary", "shuffle": "move", "slice": "move"}  # fmt: skip
# conv is split by kernel (1x1 against larger: a 1x1 conv is a matrix product, the others im2col or winograd)
TOKENS: tuple[str, ...] = ("input", "conv1", "convk", "dwconv", "pool", "add", "concat", "mul", "unary", "move",
                           "other")  # fmt: skip
N_TOK = len(TOKENS)


def token_table(ops) -> np.ndarray:
    """Token code per op name (-1 for conv, which ``tokens`` splits by kernel); unknown names are ``other``."""
    return np.array(
        [-1 if _TOKEN_OF.get(o) == "conv" else TOKENS.index(_TOKEN_OF.get(o, "other")) for o in ops],
        dtype=np.int64,
    )


_TOK_OF_OP = token_table(OPS)
N_LEVELS = 6  # as features.N_LEVELS (kept here: features imports this module, not the other way round)

GROUPS: dict[str, tuple[str, ...]] = {}  # ablation group -> its column names


@cache
def topology_names() -> tuple[str, ...]:
    groups = {
        "path": [f"topo.path.{k}" for k in ("log2n", "nodes", "macs", "bytes")]
        + [f"topo.ptok.{t}" for t in TOKENS],
        "big": [f"topo.big.{a}>{b}" for a in TOKENS for b in TOKENS],
        "pbig": [f"topo.pbig.{a}>{b}" for a in TOKENS for b in TOKENS],
        "width": [f"topo.width.lvl{lv}.{k}" for lv in range(N_LEVELS) for k in ("max", "shared")]
        + [f"topo.fanout.{t}" for t in TOKENS],
        "mem": ["topo.mem.peak", "topo.mem.mean"],
    }
    GROUPS.update({g: tuple(v) for g, v in groups.items()})
    return tuple(n for v in groups.values() for n in v)


N_TOPO = len(topology_names())
_IX = {n: i for i, n in enumerate(topology_names())}


def tokens(op: np.ndarray, attr: np.ndarray) -> np.ndarray:
    """The TOKENS code of each node."""
    tok = _TOK_OF_OP[np.asarray(op, dtype=np.int64)]
    k = np.maximum(attr[:, A["kh"]], attr[:, A["kw"]])
    return np.where(tok >= 0, tok, np.where(k <= 1, TOKENS.index("conv1"), TOKENS.index("convk")))


def _sweep(other: np.ndarray, node: np.ndarray, level: np.ndarray, forward: bool):
    """Edges grouped by the depth of their ``node`` end (ascending or descending), then by that node: per level,
    (the ``other`` ends, start of each node's run of edges, the nodes). A node's value depends only on nodes at
    other depths, so updating one level at a time, with a segmented reduction per node, is a dynamic programme
    over the DAG in about max-depth vectorised steps."""
    if node.size == 0:
        return
    lv64 = level.astype(np.int64)
    order = np.argsort(lv64 * (int(node.max()) + 1) + node)
    o, nd, lv = other[order], node[order], lv64[order]
    change = np.flatnonzero(np.r_[True, nd[1:] != nd[:-1]])
    top = int(lv[-1])
    bounds = np.searchsorted(lv, np.arange(top + 2))
    cuts = np.searchsorted(change, bounds)
    local = change - bounds[lv[change]]  # each run's start within its level's slice
    heads = nd[change]
    levels = range(top + 1)
    for lvl in levels if forward else reversed(levels):
        lo, hi = bounds[lvl], bounds[lvl + 1]
        if lo < hi:
            c0, c1 = cuts[lvl], cuts[lvl + 1]
            yield o[lo:hi], local[c0:c1], heads[c0:c1]


def compute(bt, state: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Topology columns (``topology_names()``) of every graph of a ``features.Batch``; ``state`` and ``level``
    are the nodes' ``features.node_states`` and resolution levels."""
    n, b = bt.n_nodes, bt.n_graphs
    out = np.zeros((b, N_TOPO))
    if n == 0:
        return out
    run = state == 0
    tok = tokens(bt.op, bt.attr)
    macs = bt.macs.astype(np.float64)
    nbytes = 4.0 * bt.out_elems.astype(np.float64)
    ekeep = run[bt.src] & run[bt.dst]
    src, dst = bt.src[ekeep], bt.dst[ekeep]
    is_input = np.zeros(n, dtype=bool)
    is_input[bt.starts] = bt.op[bt.starts] == OP_CODE["input"]
    lin, lout = _paths(bt, run, is_input, src, dst, out)
    _path_shares(bt, run, tok, lin, lout, src, dst, macs, nbytes, out)
    _width(bt, run & ~is_input, level, out)
    fan = np.bincount(src, minlength=n) >= 2
    c0 = _IX[f"topo.fanout.{TOKENS[0]}"]
    out[:, c0 : c0 + N_TOK] = _per_graph(bt.gid * N_TOK + tok, fan, b, N_TOK)
    _memory(bt, run, src, dst, nbytes, out)
    return out


def _per_graph(key: np.ndarray, weights, b: int, k: int) -> np.ndarray:
    return np.bincount(key, weights=weights, minlength=b * k).reshape(b, k)


def _paths(bt, run, is_input, src, dst, out) -> tuple[np.ndarray, np.ndarray]:
    """log #paths from the input to each node and from each node to the output (-inf: none)."""
    with np.errstate(over="ignore", invalid="ignore"):
        fwd, bwd = _counts(bt, run, is_input, src, dst, np.add.reduceat, 1.0, 0.0)
        if np.isfinite(fwd).all() and np.isfinite(bwd).all():
            with np.errstate(divide="ignore"):
                lin, lout = np.log(fwd), np.log(bwd)
        else:  # more paths than a float holds (huge, densely wired graphs): count in log space
            lin, lout = _counts(bt, run, is_input, src, dst, np.logaddexp.reduceat, 0.0, -np.inf)
    ltot = lin[bt.starts + bt.counts - 1]
    out[:, _IX["topo.path.log2n"]] = np.where(np.isfinite(ltot), ltot / np.log(2.0), 0.0)
    return lin, lout


def _counts(bt, run, is_input, src, dst, reduce, one: float, zero: float) -> tuple[np.ndarray, np.ndarray]:
    """Path counts from the input and to the output by a dynamic programme over depth levels, in linear space
    (``reduce`` = add) or log space (logaddexp)."""
    n = bt.n_nodes
    last = bt.starts + bt.counts - 1
    fwd = np.where(is_input & run, one, zero)
    for ss, seg, ud in _sweep(src, dst, bt.depth[dst], forward=True):
        fwd[ud] = reduce(fwd[ss], seg)
    bwd = np.full(n, zero)
    bwd[last[run[last]]] = one
    for dd, seg, us in _sweep(dst, src, bt.depth[src], forward=False):
        bwd[us] = reduce(bwd[dd], seg)
    return fwd, bwd


def _path_shares(bt, run, tok, lin, lout, src, dst, macs, nbytes, out) -> None:
    """Expected counts along a uniformly drawn input-to-output path, and token pairs along edges."""
    b, gid = bt.n_graphs, bt.gid
    ltot = lin[bt.starts + bt.counts - 1]  # log #input-to-output paths per graph (-inf: none)
    ok = np.isfinite(ltot)
    lt = np.where(ok, ltot, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        frac = np.exp(lin + lout - lt[gid])  # share of paths through each node
    frac = np.where(np.isfinite(frac) & run & ok[gid], frac, 0.0)
    out[:, _IX["topo.path.nodes"]] = np.bincount(gid, weights=frac, minlength=b)
    out[:, _IX["topo.path.macs"]] = np.bincount(gid, weights=frac * macs, minlength=b)
    out[:, _IX["topo.path.bytes"]] = np.bincount(gid, weights=frac * nbytes, minlength=b)
    c0 = _IX[f"topo.ptok.{TOKENS[0]}"]
    out[:, c0 : c0 + N_TOK] = _per_graph(gid * N_TOK + tok, frac, b, N_TOK)
    if not src.size:
        return
    egid = gid[src]
    key = egid * N_TOK * N_TOK + tok[src] * N_TOK + tok[dst]
    c0 = _IX[f"topo.big.{TOKENS[0]}>{TOKENS[0]}"]
    out[:, c0 : c0 + N_TOK * N_TOK] = _per_graph(key, None, b, N_TOK * N_TOK)
    with np.errstate(invalid="ignore", over="ignore"):
        ef = np.exp(lin[src] + lout[dst] - lt[egid])
    ef = np.where(np.isfinite(ef) & ok[egid], ef, 0.0)
    c0 = _IX[f"topo.pbig.{TOKENS[0]}>{TOKENS[0]}"]
    out[:, c0 : c0 + N_TOK * N_TOK] = _per_graph(key, ef, b, N_TOK * N_TOK)


def _width(bt, mask: np.ndarray, level: np.ndarray, out: np.ndarray) -> None:
    """Per (graph, level): the most nodes at one depth, and the nodes that share their depth with another."""
    b = bt.n_graphs
    if not mask.any():
        return
    dp = bt.depth[mask].astype(np.int64)
    dp = dp - dp.min()
    span = int(dp.max()) + 1
    cnt = np.bincount((bt.gid[mask] * N_LEVELS + level[mask]) * span + dp, minlength=b * N_LEVELS * span)
    cnt = cnt.reshape(b, N_LEVELS, span)
    widest = cnt.max(axis=2)
    shared = np.where(cnt >= 2, cnt, 0).sum(axis=2)
    for lvl in range(N_LEVELS):
        out[:, _IX[f"topo.width.lvl{lvl}.max"]] = widest[:, lvl]
        out[:, _IX[f"topo.width.lvl{lvl}.shared"]] = shared[:, lvl]


def _memory(bt, run, src, dst, nbytes, out) -> None:
    """Peak and mean live bytes when only the running nodes run, in id order, each freed after its last reader."""
    n = bt.n_nodes
    last = np.arange(n)
    if src.size:
        np.maximum.at(last, src, dst)
    ends = bt.starts + bt.counts
    size = np.where(run, nbytes, 0.0)
    free_at = last + 1
    keep = free_at < ends[bt.gid]
    freed = np.bincount(free_at[keep], weights=size[keep], minlength=n + 1)[:n]
    running = np.cumsum(size - freed)
    before = np.where(bt.starts > 0, running[np.maximum(bt.starts - 1, 0)], 0.0)
    out[:, _IX["topo.mem.peak"]] = np.maximum.reduceat(running, bt.starts) - before
    # mean over the running nodes' steps
    level = running - before[bt.gid]
    steps = np.bincount(bt.gid, weights=run, minlength=bt.n_graphs)
    total = np.bincount(bt.gid, weights=level * run, minlength=bt.n_graphs)
    out[:, _IX["topo.mem.mean"]] = np.where(steps > 0, total / np.maximum(steps, 1), 0.0)


__all__ = ["GROUPS", "N_TOPO", "TOKENS", "compute", "token_table", "tokens", "topology_names"]
