"""Fusion rules: how a runtime turns a LayerGraph into the kernels it actually launches.

A *kernel* is the largest unit a runtime schedules: a conv with the activation, bias, BatchNorm and padding folded
into it, or on a GPU a conv with the chain of elementwise ops *linked* into its shader. nn-Meter (MobiSys'21) showed
that predicting kernels, each with its own shape configuration, is what carries over to unseen model families.

Rule sets, picked from the target (``ruleset_for_target``):

* ``cpu``   TFLite 2.x on a phone CPU through XNNPACK (the default delegate), with the converter's own fusions;
* ``litert`` LiteRT (ai-edge-litert 2.x) on this host's CPU through XNNPACK: ``cpu``, except that a ReLU after an
  add or mul is its own pass (measured: benchmarks/bench_kernels.py);
* ``gpu``   the TFLite GPU delegate on Android (OpenCL);
* ``metal`` the TFLite GPU delegate on iOS (Metal): ``gpu`` plus one merge of its own.

``RULES`` below is the one table of fusion rules. Each rule says which node joins which kernel, in which rule sets,
and why we believe it (the runtime's source, the measurements that show it). ``split`` applies the table; nothing
else in leti decides fusion. A node joins its producer's kernel only when the producer is that kernel's last node
and the producer's output has no other consumer: a fused intermediate tensor is never written out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from leti.errors import PredictorError
from leti.graph import shapes as S
from leti.graph.layergraph import ACT_CODE, OP_CODE, OPS, PAD_MODES, RESIZE_MODES, A, LayerGraph
from leti.targets import parse_target

RULESETS: tuple[str, ...] = ("cpu", "litert", "gpu", "metal")
CPU_RULESETS = ("cpu", "litert")
GPU_RULESETS = ("gpu", "metal")

_CLAMPS = (
    ACT_CODE["none"],
    ACT_CODE["relu"],
    ACT_CODE["relu6"],
)  # clip-style activations any kernel applies free
_CONV = (OP_CODE["conv"], OP_CODE["dwconv"])
_ELEMENTWISE = (OP_CODE["act"], OP_CODE["add"], OP_CODE["mul"], OP_CODE["bn"], OP_CODE["zero"])
_WINDOWED = (*_CONV, OP_CODE["maxpool"], OP_CODE["avgpool"])


class _Graph:
    """The columns of a graph that the rules read, as Python lists (indexing numpy scalars one by one is slow)."""

    def __init__(self, g: LayerGraph):
        self.g = g
        self.ops = g.op.tolist()
        self.attr = g.attr.tolist()
        self.in_shape = g.in_shape.tolist()
        self.out_shape = g.out_shape.tolist()
        ptr = np.searchsorted(g.dst, np.arange(g.n_nodes + 1)) if g.n_edges else np.zeros(g.n_nodes + 1, int)
        self.n_in = np.diff(ptr).tolist()
        first = np.full(g.n_nodes, -1, dtype=np.int64)
        has = ptr[:-1] < ptr[1:]
        first[has] = g.src[ptr[:-1][has]]
        self.first_in = first.tolist()
        if g.n_edges:
            pairs = np.unique(
                g.src.astype(np.int64) * g.n_nodes + g.dst
            )  # distinct consumers: x + x reads x once
            self.consumers = np.bincount(pairs // g.n_nodes, minlength=g.n_nodes).tolist()
            last = np.full(g.n_nodes, -1, dtype=np.int64)
            last[pairs // g.n_nodes] = pairs % g.n_nodes
            self.reader = last.tolist()  # a consumer of each node (the only one where consumers == 1)
        else:
            self.consumers = [0] * g.n_nodes
            self.reader = [-1] * g.n_nodes


class View:
    """What a rule may look at: the candidate node ``j``, its producer ``i`` (the last node of the open kernel) and
    the kernel's first node ``head``, in graph ``c`` (``View.of(graph, i, j, head)``)."""

    __slots__ = ("c", "head", "i", "j")

    def __init__(self, c: _Graph, i: int, j: int, head: int):
        self.c, self.i, self.j, self.head = c, i, j, head

    @classmethod
    def of(cls, g: LayerGraph, i: int, j: int, head: int) -> View:
        return cls(_Graph(g), i, j, head)

    def op(self, n: int) -> int:
        return self.c.ops[n]

    def attr(self, n: int, name: str) -> int:
        return self.c.attr[n][A[name]]

    def out(self, n: int) -> list[int]:
        return self.c.out_shape[n]


def _implied_pad(c: _Graph, j: int, i: int) -> bool:
    if c.ops[j] not in _WINDOWED:
        return False
    a = c.attr[j]
    if a[A["pad"]] != S.PAD_VALID or a[A["kh"]] <= 1:
        return False
    return c.in_shape[j][0] > c.out_shape[i][0]


def implied_pad(g: LayerGraph, j: int, i: int) -> bool:
    """Node ``j`` reads an explicitly zero-padded copy of node ``i``'s output: a windowed op with VALID padding whose
    input is larger than what ``i`` produced (an op-list graph keeps the padded shape; see leti.importers.mlbench)."""
    return _implied_pad(_Graph(g), j, i)


@dataclass(frozen=True)
class Rule:
    """One fusion rule: in ``rulesets``, node ``j`` joins the kernel of its producer ``i`` when ``applies``; a rule
    with ``joins="consumer"`` instead folds ``j`` into the kernel of its only consumer (then ``View.i`` is that
    consumer and ``View.head`` too)."""

    name: str
    rulesets: tuple[str, ...]
    applies: Callable[[View], bool]
    why: str
    joins: str = "producer"


_HAS_CLAMP = (*_WINDOWED, OP_CODE["dense"], OP_CODE["bn"])
_BINARY = (OP_CODE["add"], OP_CODE["mul"])


def _is_clamp(v: View) -> bool:
    return v.op(v.j) == OP_CODE["act"] and v.attr(v.j, "act") in _CLAMPS[1:]


def _clamp_into_producer(v: View) -> bool:
    return _is_clamp(v) and v.op(v.i) in _HAS_CLAMP


def _clamp_into_binary(v: View) -> bool:
    return _is_clamp(v) and v.op(v.i) in _BINARY


def _bn_into_conv(v: View) -> bool:
    return v.op(v.j) == OP_CODE["bn"] and v.op(v.i) in _CONV and v.i == v.head


def _link_elementwise(v: View) -> bool:
    same = v.out(v.j) == v.out(v.i)  # a broadcasting (squeeze-excite) mul is not linked
    return v.op(v.j) in _ELEMENTWISE and same and v.op(v.head) != OP_CODE["gap"]


def _dw_plus_1x1(v: View) -> bool:
    i, j = v.i, v.j
    return (
        v.op(i) == OP_CODE["dwconv"]
        and i == v.head
        and v.attr(i, "kh") == 3
        and v.out(i)[2] <= 16
        and v.op(j) == OP_CODE["conv"]
        and v.attr(j, "kh") == 1
        and v.attr(j, "sh") == 1
        and v.attr(j, "groups") <= 1
        and v.out(j)[2] <= 32
    )


def _zero_pad(v: View) -> bool:
    """An explicit constant (zero) pad that only grows the map: what a converter writes for asymmetric SAME
    padding or a framework's ZeroPadding2D."""
    if v.op(v.j) != OP_CODE["pad"] or v.attr(v.j, "extra") != PAD_MODES.index("constant"):
        return False
    return min(v.attr(v.j, "kh"), v.attr(v.j, "kw"), v.attr(v.j, "sh"), v.attr(v.j, "sw")) >= 0


def _pad_into(ops: tuple[str, ...]) -> Callable[[View], bool]:
    codes = tuple(OP_CODE[o] for o in ops)

    def applies(v: View) -> bool:
        return _zero_pad(v) and v.op(v.i) in codes

    return applies


RULES: tuple[Rule, ...] = (
    Rule("bn->conv", RULESETS, _bn_into_conv,
         "The TFLite converter folds a BatchNorm that follows a conv into its weights (every runtime)."),
    Rule("clamp->producer", CPU_RULESETS, _clamp_into_producer,
         "ReLU / ReLU6 become the fused activation of the conv, depthwise conv, fully connected, pool or BatchNorm "
         "shift before them (converter), and XNNPACK fuses a Clamp into its producer (xnn_subgraph_fusion). "
         "Measured on the host: conv, depthwise conv, dense and pools cost the same with and without it."),
    Rule("clamp->binary", ("cpu",), _clamp_into_binary,
         "ReLU after an add or mul: the converter makes it the add's fused activation, which TFLite 2.x's XNNPACK "
         "applied in the same pass (assumed for the phones, not measured there). LiteRT 2.3 on the host runs it "
         "as a second pass: add + ReLU costs add + ReLU alone (bench_kernels.py), so rule set litert leaves it "
         "out."),
    Rule("elementwise->kernel", GPU_RULESETS, _link_elementwise,
         "The GPU delegate links a chain of elementwise ops (activations, add, mul, BatchNorm) into the shader "
         "of the kernel before them: mobile-ml-benchmark's kernel names conv_linked_:_add_linked_:_relu, on all "
         "six phones. A broadcasting mul (squeeze-excite) and anything after a mean stay separate kernels."),
    Rule("dw3x3+conv1x1", ("metal",), _dw_plus_1x1,
         "TFLite Metal runs a 3x3 depthwise conv of at most 16 channels and the 1x1 conv (at most 32 outputs) after "
         "it as one kernel: depthwise_conv_plus_1x1_conv in mobile-ml-benchmark's iPhone 7 / XS columns (12 of "
         "the 18 such pairs there)."),
    Rule("pad->conv", RULESETS, _pad_into(("conv", "dwconv")),
         "An explicit zero PAD read only by a conv or depthwise conv becomes that conv's padding: XNNPACK fuses a "
         "static constant pad into (depthwise) convolution, the GPU delegate merges it (merge_padding_with). "
         "Measured on the host: pad + conv and pad + depthwise conv cost the conv alone (bench_kernels.py). A "
         "reflect or edge pad (MIRROR_PAD) is never folded: it is a pad kernel, and a slow one.", "consumer"),
    Rule("pad->pool", GPU_RULESETS, _pad_into(("maxpool", "avgpool")),
         "The GPU delegate also merges a zero pad into pooling (merge_padding_with); XNNPACK does not (measured "
         "on the host: pad + max / average pool costs the pad plus the pool), so on CPUs it stays a pad kernel.",
         "consumer"),
)  # fmt: skip

# Not fusions, but part of the same table of facts, used when a kernel's own cost is worked out:
PAD_RULES: dict[str, tuple[str, ...]] = {
    # where a zero pad in front of a windowed op costs nothing: ops it is merged into (the rules pad->conv and
    # pad->pool for an IR pad node; here for a pad an op-list graph only implies by its shapes)
    "cpu": (
        "conv",
        "dwconv",
    ),  # XNNPACK fuses a static constant pad into (depthwise) convolution, not pooling
    "litert": ("conv", "dwconv"),
    "gpu": ("conv", "dwconv", "maxpool", "avgpool"),  # the GPU delegate's merge_padding_with transformations
    "metal": ("conv", "dwconv", "maxpool", "avgpool"),
}
SPLIT_BN: dict[str, bool] = {
    # whether a standalone BatchNorm (not folded into a conv) runs as two kernels: a MUL by the scale, then an ADD
    # of the shift (that a following ReLU fuses into); the TFLite converter writes it so, XNNPACK runs them apart
    "cpu": True,
    "litert": True,
    "gpu": False,  # both linked into one shader
    "metal": False,
}
SEPARATE_ACTS: dict[str, bool] = {
    # whether an activation other than ReLU/ReLU6 set on a conv runs as its own kernel
    "cpu": True,  # hard-swish, sigmoid, swish... are their own XNNPACK operators
    "litert": True,
    "gpu": False,  # linked into the conv's shader
    "metal": False,
}


def rules_for(ruleset: str, joins: str = "producer") -> tuple[Rule, ...]:
    """The rules of ``ruleset`` that fold a node into its producer's kernel (``joins="producer"``) or into its
    consumer's (``"consumer"``)."""
    check_ruleset(ruleset)
    return tuple(r for r in RULES if ruleset in r.rulesets and r.joins == joins)


def check_ruleset(ruleset: str) -> str:
    if ruleset not in RULESETS:
        raise PredictorError(f"unknown fusion rule set {ruleset!r} (known: {', '.join(RULESETS)})", "rules")
    return ruleset


def ruleset_for_target(target: str) -> str:
    """``litert`` for LiteRT CPU targets (this host); ``cpu`` for other CPU targets; ``metal`` for GPU targets of
    Apple devices; ``gpu`` for other GPU targets."""
    spec = parse_target(target)
    if spec.unit == "gpu":
        return "metal" if spec.device.startswith(("iphone", "ipad")) else "gpu"
    return "litert" if spec.runtime == "litert" else "cpu"


# ---- kernel types and their configurations -------------------------------------------------------------------
TYPES: tuple[str, ...] = (
    "conv1x1", "conv3x3", "convkxk", "gconv", "dwconv3x3", "dwconvkxk", "dense", "pool", "gap", "concat",
    "add", "mul", "bn", "act", "pad", "move",
    "resize", "reshape",  # appended (codes are saved with kernel regressors: append only)
)  # fmt: skip
TYPE_CODE = {t: i for i, t in enumerate(TYPES)}

# one row per kernel: its configuration, then the work terms the regressors read
CONFIG = ("h_in", "w_in", "c_in", "h_out", "w_out", "c_out", "k", "stride", "groups", "n_in", "act", "n_ops")
WORK = ("macs", "in_elems", "out_elems", "weights", "linked_elems", "tile_macs")
COLUMNS = CONFIG + WORK
COL = {c: i for i, c in enumerate(COLUMNS)}


def _type_of(g: LayerGraph, n: int) -> str:
    op = OPS[int(g.op[n])]
    k = int(g.attr[n, A["kh"]])
    if op == "conv":
        groups = int(g.attr[n, A["groups"]])
        if groups > 1:
            return "gconv"
        return "conv1x1" if k == 1 else "conv3x3" if k == 3 else "convkxk"
    if op == "dwconv":
        return "dwconv3x3" if k == 3 else "dwconvkxk"
    if op in ("maxpool", "avgpool"):
        return "pool"
    if op in ("dense", "gap", "concat", "add", "mul", "bn", "act", "pad", "resize", "reshape"):
        return op  # a pad here is one no rule folded away: it copies the map into a larger one
    return "move"  # shuffle, slice, zero


TILE = {"cpu": 8, "litert": 8, "gpu": 4, "metal": 4}  # channel blocking of the conv microkernels / GPU slices


@dataclass
class Kernels:
    """The kernels of one graph under one rule set: ``types[k]`` (codes into TYPES), ``rows[k]`` (COLUMNS) and
    ``nodes[k]`` (the graph nodes it runs)."""

    types: np.ndarray
    rows: np.ndarray
    nodes: list[list[int]]
    ruleset: str

    def __len__(self) -> int:
        return int(self.types.size)

    def names(self) -> list[str]:
        return [TYPES[t] for t in self.types]


def _rows(g: LayerGraph, c: _Graph, kernels: list[list[int]], ruleset: str) -> np.ndarray:
    """The COLUMNS row of every kernel (a run of nodes), computed for all kernels at once."""
    H = np.array([ks[0] for ks in kernels], dtype=np.int64)
    L = np.array([ks[-1] for ks in kernels], dtype=np.int64)
    ins, outs, hout = g.in_shape[H].astype(float), g.out_shape[L].astype(float), g.out_shape[H].astype(float)
    a = g.attr[H]
    op = g.op[H]
    k, st = a[:, A["kh"]].astype(float), a[:, A["sh"]].astype(float)
    window = k * a[:, A["kw"]].astype(float)  # a CP factor's (k, 1) depthwise conv has k taps, not k * k
    moves = np.isin(op, (OP_CODE["pad"], OP_CODE["resize"], OP_CODE["reshape"]))
    k[moves] = st[moves] = 0.0  # a pad keeps its amounts in the window fields: no window
    rsz = op == OP_CODE["resize"]
    k[rsz] = np.where(a[rsz, A["extra"]] == RESIZE_MODES.index("bilinear"), 2.0, 1.0)  # taps per axis
    groups = np.maximum(a[:, A["groups"]], 1).astype(float)
    dw = op == OP_CODE["dwconv"]
    groups[dw] = ins[dw, 2]
    n_in = np.array([c.n_in[h] for h in H], dtype=float)
    in_elems = ins.prod(axis=1)
    add = op == OP_CODE["add"]
    in_elems[add] *= np.maximum(n_in[add], 1)
    cat = op == OP_CODE["concat"]
    in_elems[cat] = outs[cat].prod(axis=1)  # every output element is copied once
    out_elems = g.out_elems
    linked = np.array([sum(out_elems[n] for n in ks[1:]) for ks in kernels], dtype=float)
    weights = np.array([sum(g.params[n] for n in ks) for ks in kernels], dtype=float)
    act = np.array([max(c.attr[n][A["act"]] for n in ks) for ks in kernels], dtype=float)
    macs = g.macs[H].astype(float)
    t = TILE[ruleset]
    tile = macs.copy()
    conv = op == OP_CODE["conv"]
    cin_g = ins[:, 2] / groups
    red = np.where(
        ruleset in CPU_RULESETS, cin_g, np.ceil(cin_g / t) * t
    )  # GPUs pad the reduction to 4-channel slices
    spatial = hout[:, 0] * hout[:, 1] * np.ceil(hout[:, 2] / t) * t * window
    tile[conv] = (spatial * red)[conv]
    tile[dw] = spatial[dw]
    n_ops = np.array([len(ks) for ks in kernels], dtype=float)
    return np.column_stack([ins, outs, k, st, groups, n_in, act, n_ops, macs, in_elems, outs.prod(axis=1), weights,
                            linked, tile])  # fmt: skip


def split(g: LayerGraph, ruleset: str) -> Kernels:
    """The kernels ``ruleset``'s runtime launches for ``g``, in launch order (extra pad and activation kernels of
    the runtime come last, each naming the node it belongs to)."""
    check_ruleset(ruleset)
    rules, into_consumer = rules_for(ruleset), rules_for(ruleset, "consumer")
    c = _Graph(g)
    ops = c.ops
    kernels: list[list[int]] = []
    pads: list[int] = []  # nodes whose explicit pad runs as its own kernel
    folded: dict[int, list[int]] = {}  # consumer -> nodes folded into its kernel (a zero pad before a conv)
    owner = [-1] * g.n_nodes  # node -> index in kernels
    inp, pad_free = OP_CODE["input"], {OP_CODE[o] for o in PAD_RULES[ruleset]}
    for j in range(g.n_nodes):
        if ops[j] == inp:
            continue
        rd = c.reader[j]
        if into_consumer and c.consumers[j] == 1 and c.first_in[rd] == j:
            v = View(c, rd, j, rd)
            if any(rule.applies(v) for rule in into_consumer):
                folded.setdefault(rd, []).append(j)
                continue
        i = c.first_in[j]
        if i >= 0 and owner[i] >= 0 and c.consumers[i] == 1 and kernels[owner[i]][-1] == i:
            v = View(c, i, j, kernels[owner[i]][0])
            if any(r.applies(v) for r in rules):
                kernels[owner[i]].append(j)
                owner[j] = owner[i]
                continue
        if i >= 0 and ops[j] not in pad_free and _implied_pad(c, j, i):
            pads.append(j)
        owner[j] = len(kernels)
        kernels.append([j])
    if not kernels:
        return Kernels(np.zeros(0, dtype=np.int64), np.zeros((0, len(COLUMNS))), [], ruleset)
    rows = _rows(g, c, kernels, ruleset)
    types = [TYPE_CODE[_type_of(g, ks[0])] for ks in kernels]
    nodes = [list(ks) + folded.get(ks[0], []) for ks in kernels]  # the head stays first
    extra_rows, extra_types = [], []
    if SEPARATE_ACTS[ruleset]:
        lead = (*_CONV, OP_CODE["dense"])
        for ki, ks in enumerate(kernels):
            if ops[ks[0]] in lead and c.attr[ks[0]][A["act"]] not in _CLAMPS:
                r = _memory_row(rows[ki], rows[ki, COL["out_elems"]])  # hard-swish & co: their own kernel
                extra_rows.append(r)
                extra_types.append(TYPE_CODE["act"])
                nodes.append([ks[0]])
    if SPLIT_BN[ruleset]:
        bn = OP_CODE["bn"]
        for ki, ks in enumerate(kernels):
            if ops[ks[0]] == bn:  # the scale MUL; the kernel itself stands for the shift ADD
                extra_rows.append(_memory_row(rows[ki], rows[ki, COL["in_elems"]]))
                extra_types.append(TYPE_CODE["mul"])
                nodes.append([ks[0]])
    for j in pads:
        r = _memory_row(rows[owner[j]], rows[owner[j], COL["in_elems"]])  # a pad writes the padded input
        extra_rows.append(r)
        extra_types.append(TYPE_CODE["pad"])
        nodes.append([j])
    if extra_rows:
        rows = np.vstack([rows, np.array(extra_rows)])
        types += extra_types
    return Kernels(np.asarray(types, dtype=np.int64), rows, nodes, ruleset)


def _memory_row(row: np.ndarray, elems: float) -> np.ndarray:
    """A memory-bound kernel over ``elems`` elements with the shapes of ``row``: no MACs, no weights."""
    r = row.copy()
    r[COL["macs"]] = r[COL["tile_macs"]] = r[COL["weights"]] = r[COL["linked_elems"]] = 0.0
    r[COL["in_elems"]] = r[COL["out_elems"]] = elems
    r[COL["n_ops"]] = 1.0
    return r


__all__ = [
    "COLUMNS",
    "Kernels",
    "PAD_RULES",
    "RULES",
    "RULESETS",
    "Rule",
    "TYPES",
    "implied_pad",
    "ruleset_for_target",
    "rules_for",
    "split",
]
