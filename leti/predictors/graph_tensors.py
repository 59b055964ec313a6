"""Node features and batched edge lists of LayerGraphs: the input of the ``gcn`` predictor.

Everything is vectorised numpy over the concatenation of many graphs, so one pass featurises a whole batch.
Per-graph results are memoised in a weak-keyed cache (graphs are immutable): a graph asked about twice is
featurised once, and its entry goes away with the graph.

A node is described by two categorical codes (op, fused activation) that the model embeds, and by
``CONTINUOUS`` numbers. Shapes, MACs and params span orders of magnitude, so they are on a log2 scale: a conv at
32x32 and one at 8x8 are a few units apart, not a factor of 16.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from leti.graph.layergraph import ACTS, OPS, A, LayerGraph

CONTINUOUS: tuple[str, ...] = (
    "kh",
    "kw",
    "sh",
    "sw",
    "dil",
    "log_groups",
    "bn",
    "bias",
    "log_pad",
    "log_extra",
    "log_in_h",
    "log_in_w",
    "log_in_c",
    "log_out_h",
    "log_out_w",
    "log_out_c",
    "log_macs",
    "log_params",
    "log_out_elems",
    "live",
    "log_depth",
    "rel_depth",
    "log_in_degree",
    "log_out_degree",
)
N_CONTINUOUS = len(CONTINUOUS)
N_OPS, N_ACTS = len(OPS), len(ACTS)
_COL = {name: i for i, name in enumerate(CONTINUOUS)}


@dataclass(frozen=True)
class GraphTensors:
    """One graph, or a block-diagonal batch of graphs, as arrays.

    ``op``/``act``: int8 (n,) codes into ``OPS``/``ACTS``; ``x``: float32 (n, N_CONTINUOUS); ``src``/``dst``:
    int64 edges sorted by ``dst``; ``ptr``: int64 (b + 1,) node offsets, graph k owns nodes ``ptr[k]:ptr[k+1]``.
    """

    op: np.ndarray
    act: np.ndarray
    x: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    ptr: np.ndarray

    @property
    def n_graphs(self) -> int:
        return int(self.ptr.size - 1)

    @property
    def n_nodes(self) -> int:
        return int(self.ptr[-1])


def _log2p(v: np.ndarray) -> np.ndarray:
    return np.log2(1.0 + np.maximum(v, 0, dtype=np.float32))


def _offsets(sizes: np.ndarray) -> np.ndarray:
    ptr = np.zeros(sizes.size + 1, dtype=np.int64)
    np.cumsum(sizes, out=ptr[1:])
    return ptr


def features_of(graphs: list[LayerGraph]) -> GraphTensors:
    """Node codes, continuous features and edges of ``graphs`` as one block-diagonal batch (one vectorised pass)."""
    sizes = np.fromiter((g.n_nodes for g in graphs), dtype=np.int64, count=len(graphs))
    ptr = _offsets(sizes)
    n = int(ptr[-1])
    attr = np.concatenate([g.attr for g in graphs]).T
    ins = np.concatenate([g.in_shape for g in graphs]).T
    outs = np.concatenate([g.out_shape for g in graphs]).T.astype(np.int64)
    depth = np.concatenate([g.depth for g in graphs]).astype(np.float32)
    e_sizes = np.fromiter((g.n_edges for g in graphs), dtype=np.int64, count=len(graphs))
    e_off = np.repeat(ptr[:-1], e_sizes)
    src = np.concatenate([g.src for g in graphs]).astype(np.int64) + e_off
    dst = np.concatenate([g.dst for g in graphs]).astype(np.int64) + e_off

    # filled feature by feature, so rows of the transposed matrix (contiguous writes)
    xt = np.empty((N_CONTINUOUS, n), dtype=np.float32)
    for k in ("kh", "kw", "sh", "sw", "dil", "bn", "bias"):
        xt[_COL[k]] = attr[A[k]]
    for k in ("groups", "pad", "extra"):
        xt[_COL[f"log_{k}"]] = _log2p(attr[A[k]])
    c = _COL["log_in_h"]
    xt[c : c + 3] = _log2p(ins)
    xt[c + 3 : c + 6] = _log2p(outs)
    xt[_COL["log_macs"]] = _log2p(np.concatenate([g.macs for g in graphs]))
    xt[_COL["log_params"]] = _log2p(np.concatenate([g.params for g in graphs]))
    xt[_COL["log_out_elems"]] = _log2p(outs[0] * outs[1] * outs[2])
    xt[_COL["live"]] = np.concatenate([g.live for g in graphs])
    xt[_COL["log_depth"]] = np.log2(1.0 + depth)
    # where a node sits in its network (0 at the input, 1 at the output), whatever the network's length
    nonempty = sizes > 0
    gmax = np.maximum.reduceat(depth, ptr[:-1][nonempty]) if n else depth
    xt[_COL["rel_depth"]] = depth / np.maximum(np.repeat(gmax, sizes[nonempty]), 1.0)
    xt[_COL["log_in_degree"]] = _log2p(np.bincount(dst, minlength=n))
    xt[_COL["log_out_degree"]] = _log2p(np.bincount(src, minlength=n))
    op = np.concatenate([g.op for g in graphs]).astype(np.int8)
    act = np.clip(attr[A["act"]], 0, N_ACTS - 1).astype(np.int8)
    return GraphTensors(op=op, act=act, x=np.ascontiguousarray(xt.T), src=src, dst=dst, ptr=ptr)


@dataclass(frozen=True)
class Entry:
    """What the cache keeps per graph: one float32 node matrix (op code, act code, features) and its edges."""

    nodes: np.ndarray  # float32 (n, 2 + N_CONTINUOUS); codes are small integers, exact in float32
    edges: np.ndarray  # int64 (2, m): src, dst with node ids local to the graph


def _entries(t: GraphTensors) -> list[Entry]:
    """Per-graph cache entries of a batch (copies: an entry must not keep the whole batch alive)."""
    nodes = np.empty((t.n_nodes, 2 + N_CONTINUOUS), dtype=np.float32)
    nodes[:, 0], nodes[:, 1], nodes[:, 2:] = t.op, t.act, t.x
    e_ptr = np.searchsorted(t.dst, t.ptr).tolist()
    ptr = t.ptr.tolist()
    local = np.stack([t.src, t.dst]) - np.repeat(t.ptr[:-1], np.diff(e_ptr))
    return [
        Entry(_frozen(nodes[ptr[k] : ptr[k + 1]]), _frozen(local[:, e_ptr[k] : e_ptr[k + 1]]))
        for k in range(t.n_graphs)
    ]


def _frozen(a: np.ndarray) -> np.ndarray:
    """A read-only copy: cached entries are shared by every later batch of the same graph."""
    a = a.copy()
    a.flags.writeable = False
    return a


def concat(entries: list[Entry]) -> GraphTensors:
    """The block-diagonal batch of cached graphs."""
    nodes = np.concatenate([e.nodes for e in entries])
    ptr = _offsets(np.fromiter((e.nodes.shape[0] for e in entries), dtype=np.int64, count=len(entries)))
    e_sizes = np.fromiter((e.edges.shape[1] for e in entries), dtype=np.int64, count=len(entries))
    edges = np.concatenate([e.edges for e in entries], axis=1) + np.repeat(ptr[:-1], e_sizes)
    return GraphTensors(
        op=nodes[:, 0].astype(np.int8),
        act=nodes[:, 1].astype(np.int8),
        x=nodes[:, 2:],
        src=edges[0],
        dst=edges[1],
        ptr=ptr,
    )


_CHUNK = 256


class FeatureCache:
    """Per-graph tensors memoised by graph identity, held weakly (an entry lives as long as its graph)."""

    def __init__(self) -> None:
        self._store: weakref.WeakKeyDictionary[LayerGraph, Entry] = weakref.WeakKeyDictionary()

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        self._store.clear()

    def entries(self, graphs: list[LayerGraph]) -> list[Entry]:
        """Cache entries of ``graphs`` (``concat`` batches them); only graphs not seen before are featurised."""
        store = self._store
        missing = list({id(g): g for g in graphs if g not in store}.values())
        # featurised in chunks: one vectorised pass each, with buffers small enough for the allocator to reuse
        # (fresh large arrays cost page faults that dominate at this size)
        for s in range(0, len(missing), _CHUNK):
            chunk = missing[s : s + _CHUNK]
            for g, e in zip(chunk, _entries(features_of(chunk)), strict=True):
                store[g] = e
        return [store[g] for g in graphs]

    def batch(self, graphs: list[LayerGraph]) -> GraphTensors:
        """The block-diagonal batch of ``graphs``, featurising only graphs not seen before."""
        return concat(self.entries(graphs))


# Process-wide like the graph memo itself: features depend only on the graph, never on a model or a target.
CACHE = FeatureCache()
