"""The LayerGraph IR: a network as a DAG of primitive layers with shapes, MACs and parameters.

Every source of architectures (sampled cells, NAS-Bench specs, FBNet chains, .tflite files, compressed models) is
turned into a LayerGraph; the builder, features and predictors read only this.

Primitive ops are close to TFLite ops after conversion (BatchNorm folded into conv, activations fused), so one node
is roughly one kernel launch on a device. The graph is stored as parallel numpy arrays (one row per node, node ids in
topological order, every edge goes from a lower to a higher id) so that features and GCN inputs are vectorised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from leti.errors import GraphError

OPS: tuple[str, ...] = (
    "input",  # the network input
    "conv",  # Conv2D (groups >= 1) with optional folded BN, bias and fused activation
    "dwconv",  # DepthwiseConv2D (extra = depth multiplier)
    "dense",  # fully connected over the last axis
    "maxpool",
    "avgpool",
    "gap",  # global average pooling (extra = keepdims)
    "add",  # n-ary elementwise sum
    "concat",  # channel concatenation
    "mul",  # elementwise product with broadcasting (squeeze-excite)
    "act",  # standalone activation (act = function)
    "bn",  # standalone BatchNorm (scale + shift)
    "shuffle",  # channel shuffle (groups)
    "slice",  # keep channels [extra, extra + C_out)
    "zero",  # multiply by zero: NAS-Bench-201's 'none' edge, kept because some exporters still run it
    # appended for real models (codes are stored: append only, never reorder)
    "pad",  # spatial padding; kh/kw/sh/sw = top/left/bottom/right (negative = crop), extra = PAD_MODES code
    "reshape",  # data kept, shape changed: out_shape is the new (H, W, C); extra = 1 for a flat (1, C) vector
    "resize",  # spatial resize to out_shape; extra = RESIZE_MODES code
)
OP_CODE: dict[str, int] = {name: i for i, name in enumerate(OPS)}

ACTS: tuple[str, ...] = (
    "none",
    "relu",
    "relu6",
    "hswish",
    "sigmoid",
    "hsigmoid",
    "swish",
    "tanh",
    # appended for real models (codes are stored: append only, never reorder)
    "gelu",  # exact (erf) or tanh-approximated GELU
    "leaky_relu",  # max(x, a*x) with a small fixed slope (the slope is not stored: it does not change the cost)
    "softmax",  # over channels
)
ACT_CODE: dict[str, int] = {name: i for i, name in enumerate(ACTS)}

PAD_MODES: tuple[str, ...] = ("constant", "reflect", "edge", "symmetric")
RESIZE_MODES: tuple[str, ...] = ("nearest", "bilinear")

ATTRS: tuple[str, ...] = ("kh", "kw", "sh", "sw", "dil", "groups", "act", "bn", "bias", "pad", "extra")
N_ATTRS = len(ATTRS)
A = {name: i for i, name in enumerate(ATTRS)}
NO_ATTRS: tuple[int, ...] = (0,) * N_ATTRS

# ---- the node-column layout ----------------------------------------------------------------------------------------
# Every per-node value as one int64 row: the builder keeps its nodes in such a table (a graph it assembles holds
# views of the columns) and features stack graphs into one. Node rows derived from it (features' distinct-layer rows,
# the LUT's signatures) start with the layer columns COL_OP .. COL_OUT + 2 and append their own after N_LAYER_COLS.
COL_OP = 0  # op code (OPS)
COL_ATTR = 1  # N_ATTRS attribute columns, in ATTRS order
COL_IN = COL_ATTR + N_ATTRS  # input shape (H, W, C): 3 columns
COL_OUT = COL_IN + 3  # output shape (H, W, C): 3 columns
N_LAYER_COLS = COL_OUT + 3  # op, attributes and shapes: what names a layer
COL_MACS = N_LAYER_COLS
COL_PARAMS = COL_MACS + 1
COL_LIVE = COL_PARAMS + 1  # 1 live, 0 dead
COL_DEPTH = COL_LIVE + 1
COL_BLOCK = COL_DEPTH + 1  # index into the block-name table
N_COLS = COL_BLOCK + 1


def make_attrs(
    kh: int = 0,
    kw: int = 0,
    sh: int = 0,
    sw: int = 0,
    dil: int = 0,
    groups: int = 0,
    act: str = "none",
    bn: bool = False,
    bias: bool = False,
    pad: int = 0,
    extra: int = 0,
) -> tuple[int, ...]:
    return (kh, kw, sh, sw, dil, groups, ACT_CODE[act], int(bn), int(bias), pad, extra)


@dataclass(frozen=True)
class Node:
    """A readable view of one row of a LayerGraph."""

    id: int
    op: str
    attrs: dict
    inputs: tuple[int, ...]
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    macs: int
    params: int
    live: bool
    block: str

    @property
    def out_bytes(self) -> int:
        return 4 * self.out_shape[0] * self.out_shape[1] * self.out_shape[2]


def _attrs_view(op: str, row: np.ndarray) -> dict:
    """Only the attributes that mean something for this op."""
    a = {name: int(row[i]) for i, name in enumerate(ATTRS)}
    a["act"] = ACTS[a["act"]]
    if op in ("conv", "dwconv"):
        keys = ["kh", "kw", "sh", "sw", "dil", "groups", "act", "bn", "bias", "pad"]
        if op == "dwconv":
            keys.remove("groups")
            keys.append("extra")
    elif op in ("maxpool", "avgpool"):
        keys = ["kh", "kw", "sh", "sw", "pad"]
    elif op == "dense":
        keys = ["act", "bias"]
    elif op == "act":
        keys = ["act"]
    elif op == "shuffle":
        keys = ["groups"]
    elif op in ("gap", "slice"):
        keys = ["extra"]
    elif op == "pad":
        return {
            "top": a["kh"],
            "left": a["kw"],
            "bottom": a["sh"],
            "right": a["sw"],
            "mode": PAD_MODES[a["extra"]],
        }
    elif op == "reshape":
        return {"flat": bool(a["extra"])}
    elif op == "resize":
        return {"mode": RESIZE_MODES[a["extra"]]}
    else:
        keys = []
    out = {k: a[k] for k in keys}
    for k in ("bn", "bias"):
        if k in out:
            out[k] = bool(out[k])
    return out


@dataclass(frozen=True, eq=False)
class LayerGraph:
    """A network as parallel arrays over its nodes plus an edge list (``src[i] -> dst[i]``).

    Edges are sorted by destination and, for one destination, by input position (concat order matters).
    ``live`` is False for nodes that only compute dead values (branches pruned away by ``Arch.prune``).

    Integer widths depend on where a graph comes from, so read values, not dtypes. A graph the builder assembles
    (spaces, the .tflite/ONNX/Keras readers) holds int64 views of one node table (``node_table``, ``COL_*``) and
    int64 edges. ``from_dict`` and op lists (``oplist_graph``: per-op records) hold an int8 ``op``, int32
    ``attr``, shapes, ``depth``, ``block`` and edges, and int64 ``macs`` and ``params``. ``live`` is bool in both.
    """

    op: np.ndarray  # (n,) codes into OPS
    attr: np.ndarray  # (n, N_ATTRS)
    in_shape: np.ndarray  # (n, 3): shape of the first input (H, W, C)
    out_shape: np.ndarray  # (n, 3)
    macs: np.ndarray  # int64 (n,)
    params: np.ndarray  # int64 (n,)
    live: np.ndarray  # bool (n,)
    depth: np.ndarray  # (n,): nodes on the longest path from the input, this one included
    block: np.ndarray  # (n,) index into ``blocks``
    block_table: object  # tuple of names, or a lazy table with ``materialize()``
    src: np.ndarray  # (m,)
    dst: np.ndarray  # (m,)
    meta: dict = field(default_factory=dict)

    @cached_property
    def blocks(self) -> tuple[str, ...]:
        """Where each node came from, e.g. ``s1.c2.n3:conv`` (stack 1, cell 2, cell node 3)."""
        t = self.block_table
        return tuple(t) if isinstance(t, tuple | list) else t.materialize()

    # ---- sizes and totals ------------------------------------------------------------------------------------
    @property
    def n_nodes(self) -> int:
        return int(self.op.shape[0])

    @property
    def n_edges(self) -> int:
        return int(self.src.shape[0])

    @cached_property
    def out_elems(self) -> np.ndarray:
        s = self.out_shape.astype(np.int64)
        return s[:, 0] * s[:, 1] * s[:, 2]

    @property
    def total_macs(self) -> int:
        return int(self.macs.sum())

    @property
    def total_params(self) -> int:
        return int(self.params.sum())

    def activation_bytes(self, bytes_per_elem: int = 4) -> int:
        """Sum of every node's output size: what a runtime without buffer reuse would allocate."""
        return self._act_elems * bytes_per_elem

    @cached_property
    def _act_elems(self) -> int:
        return int(self.out_elems.sum())

    def peak_bytes(self, bytes_per_elem: int = 4) -> int:
        """Peak live activation memory when nodes run in id order and each output is freed after its last use."""
        return int(self._peak_elems) * bytes_per_elem

    @cached_property
    def _peak_elems(self) -> int:
        n = self.n_nodes
        last = np.arange(n)
        if self.n_edges:
            order = np.argsort(self.src, kind="stable")
            s = self.src[order]
            starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
            last[s[starts]] = np.maximum.reduceat(self.dst[order], starts)
        last[n - 1] = n - 1  # the network output stays alive to the end
        elems = self.out_elems
        # live tensors at step t: produced at or before t, last read at or after t
        freed = np.bincount(last + 1, weights=elems, minlength=n + 1)[:n]
        return int((np.cumsum(elems) - np.cumsum(freed)).max())

    @property
    def max_depth(self) -> int:
        return int(self.depth.max()) if self.n_nodes else 0

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.out_shape[0])

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.out_shape[-1])

    def totals(self, bytes_per_elem: int = 4) -> dict:
        return {
            "nodes": self.n_nodes,
            "edges": self.n_edges,
            "macs": self.total_macs,
            "params": self.total_params,
            "activation_bytes": self.activation_bytes(bytes_per_elem),
            "peak_bytes": self.peak_bytes(bytes_per_elem),
            "depth": self.max_depth,
        }

    # ---- structure ---------------------------------------------------------------------------------------------
    @cached_property
    def _in_ptr(self) -> np.ndarray:
        return np.searchsorted(self.dst, np.arange(self.n_nodes + 1))

    def inputs_of(self, i: int) -> tuple[int, ...]:
        p = self._in_ptr
        return tuple(int(v) for v in self.src[p[i] : p[i + 1]])

    def op_name(self, i: int) -> str:
        return OPS[self.op[i]]

    def node(self, i: int) -> Node:
        if not 0 <= i < self.n_nodes:
            raise GraphError(f"no node {i} in a graph of {self.n_nodes} nodes", "node")
        op = OPS[self.op[i]]
        return Node(
            id=i,
            op=op,
            attrs=_attrs_view(op, self.attr[i]),
            inputs=self.inputs_of(i),
            in_shape=tuple(int(v) for v in self.in_shape[i]),
            out_shape=tuple(int(v) for v in self.out_shape[i]),
            macs=int(self.macs[i]),
            params=int(self.params[i]),
            live=bool(self.live[i]),
            block=self.blocks[self.block[i]],
        )

    def nodes(self) -> list[Node]:
        return [self.node(i) for i in range(self.n_nodes)]

    def op_counts(self) -> dict[str, int]:
        counts = np.bincount(self.op, minlength=len(OPS))
        return {OPS[i]: int(c) for i, c in enumerate(counts) if c}

    # ---- serialisation -----------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "op": [OPS[c] for c in self.op],
            "attr": self.attr.tolist(),
            "in_shape": self.in_shape.tolist(),
            "out_shape": self.out_shape.tolist(),
            "macs": self.macs.tolist(),
            "params": self.params.tolist(),
            "live": self.live.tolist(),
            "depth": self.depth.tolist(),
            "block": self.block.tolist(),
            "blocks": list(self.blocks),
            "src": self.src.tolist(),
            "dst": self.dst.tolist(),
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict) -> LayerGraph:
        try:
            op = np.array([OP_CODE[o] for o in d["op"]], dtype=np.int8)
            return cls(
                op=op,
                attr=np.asarray(d["attr"], dtype=np.int32).reshape(len(op), N_ATTRS),
                in_shape=np.asarray(d["in_shape"], dtype=np.int32).reshape(len(op), 3),
                out_shape=np.asarray(d["out_shape"], dtype=np.int32).reshape(len(op), 3),
                macs=np.asarray(d["macs"], dtype=np.int64),
                params=np.asarray(d["params"], dtype=np.int64),
                live=np.asarray(d["live"], dtype=bool),
                depth=np.asarray(d["depth"], dtype=np.int32),
                block=np.asarray(d["block"], dtype=np.int32),
                block_table=tuple(d["blocks"]),
                src=np.asarray(d["src"], dtype=np.int32),
                dst=np.asarray(d["dst"], dtype=np.int32),
                meta=dict(d.get("meta", {})),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise GraphError(f"malformed LayerGraph dict ({e})", "graph") from None

    def table(self, limit: int | None = None) -> list[dict]:
        """One row per node for display: id, op, block, inputs, shapes, MACs, params (the first ``limit`` nodes)."""
        rows = []
        n = self.n_nodes if limit is None else min(limit, self.n_nodes)
        for nd in (self.node(i) for i in range(n)):
            rows.append(
                {
                    "id": nd.id,
                    "op": nd.op,
                    "attrs": nd.attrs,
                    "block": nd.block,
                    "inputs": list(nd.inputs),
                    "in_shape": list(nd.in_shape),
                    "out_shape": list(nd.out_shape),
                    "macs": nd.macs,
                    "params": nd.params,
                    "live": nd.live,
                }
            )
        return rows


def table_columns(table: np.ndarray) -> dict[str, np.ndarray]:
    """The per-node arrays of a LayerGraph read from a node table (see ``COL_*``): views, ``live`` excepted."""
    return {
        "op": table[:, COL_OP],
        "attr": table[:, COL_ATTR:COL_IN],
        "in_shape": table[:, COL_IN:COL_OUT],
        "out_shape": table[:, COL_OUT:COL_MACS],
        "macs": table[:, COL_MACS],
        "params": table[:, COL_PARAMS],
        "live": table[:, COL_LIVE] != 0,
        "depth": table[:, COL_DEPTH],
        "block": table[:, COL_BLOCK],
    }


def node_table(g: LayerGraph) -> np.ndarray:
    """The graph's per-node arrays as one int64 (n, N_COLS) table: graphs the builder assembled already hold exactly
    that (their arrays are views of it), others are stacked here."""
    t = g.op.base
    n = g.n_nodes
    if (
        isinstance(t, np.ndarray)
        and t.shape == (n, N_COLS)
        and t.dtype == np.int64
        and g.macs.base is t
        and g.depth.base is t
        and n > 0
        # spot checks that the columns sit where the layout says
        and t[-1, COL_OP] == g.op[-1]
        and t[-1, COL_MACS] == g.macs[-1]
        and t[-1, COL_DEPTH] == g.depth[-1]
        and t[-1, COL_OUT + 2] == g.out_shape[-1, 2]
        and t[-1, COL_PARAMS] == g.params[-1]
    ):
        return t
    t = np.zeros((n, N_COLS), dtype=np.int64)
    t[:, COL_OP] = g.op
    t[:, COL_ATTR:COL_IN] = g.attr
    t[:, COL_IN:COL_OUT] = g.in_shape
    t[:, COL_OUT:COL_MACS] = g.out_shape
    t[:, COL_MACS] = g.macs
    t[:, COL_PARAMS] = g.params
    t[:, COL_LIVE] = g.live
    t[:, COL_DEPTH] = g.depth
    t[:, COL_BLOCK] = g.block
    return t
