"""Fusion rules: how a runtime turns a LayerGraph into the kernels it actually launches.

A *kernel* is the largest unit a runtime schedules: a conv with the activation, bias, BatchNorm and padding folded
into it, or on a GPU a conv with the chain of elementwise ops *linked* into its shader. nn-Meter (MobiSys'21) showed
that predicting kernels, each with its own shape configuration, is what carries over to unseen model families.

Rule sets, picked from the target (``ruleset_for_target``):

* ``cpu``   TFLite on the CPU through XNNPACK (the default delegate), with the TFLite converter's own fusions;
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
from leti.graph.layergraph import ACT_CODE, OP_CODE, OPS, A, LayerGraph

RULESETS: tuple[str, ...] = ("cpu", "gpu", "metal")
GPU_RULESETS = ("gpu", "metal")

_CLAMPS = (
    ACT_CODE["none"],
    ACT_CODE["relu"],
    ACT_CODE["relu6"],
)  # clip-style activations any kernel applies free
_CONV = (OP_CODE["conv"], OP_CODE["dwconv"])
_ELEMENTWISE = (OP_CODE["act"], OP_CODE["add"], OP_CODE["mul"], OP_CODE["bn"], OP_CODE["zero"])


@dataclass(frozen=True)
class View:
    """What a rule may look at: the graph, the candidate node ``j``, its producer ``i`` (the last node of the open
    kernel) and the kernel's first node ``head``."""

    g: LayerGraph
    i: int
    j: int
    head: int

    def op(self, n: int) -> int:
        return int(self.g.op[n])

    def attr(self, n: int, name: str) -> int:
        return int(self.g.attr[n, A[name]])


def implied_pad(g: LayerGraph, j: int, i: int) -> bool:
    """Node ``j`` reads an explicitly zero-padded copy of node ``i``'s output: a windowed op with VALID padding whose
    input is larger than what ``i`` produced (an op-list graph keeps the padded shape; see leti.importers.mlbench)."""
    if int(g.op[j]) not in (*_CONV, OP_CODE["maxpool"], OP_CODE["avgpool"]):
        return False
    if int(g.attr[j, A["pad"]]) != S.PAD_VALID or int(g.attr[j, A["kh"]]) <= 1:
        return False
    return int(g.in_shape[j, 0]) > int(g.out_shape[i, 0])


@dataclass(frozen=True)
class Rule:
    """One fusion rule: in ``rulesets``, node ``j`` joins the kernel of its producer when ``applies``."""

    name: str
    rulesets: tuple[str, ...]
    applies: Callable[[View], bool]
    why: str


def _clamp_into_producer(v: View) -> bool:
    has_clamp = (
        *_CONV,
        OP_CODE["dense"],
        OP_CODE["add"],
        OP_CODE["mul"],
        OP_CODE["maxpool"],
        OP_CODE["avgpool"],
    )
    return v.op(v.j) == OP_CODE["act"] and v.attr(v.j, "act") in _CLAMPS[1:] and v.op(v.i) in has_clamp


def _bn_into_conv(v: View) -> bool:
    return v.op(v.j) == OP_CODE["bn"] and v.op(v.i) in _CONV and v.i == v.head


def _link_elementwise(v: View) -> bool:
    same = tuple(v.g.out_shape[v.j]) == tuple(
        v.g.out_shape[v.i]
    )  # a broadcast (squeeze-excite) mul is not linked
    return v.op(v.j) in _ELEMENTWISE and same and v.op(v.head) != OP_CODE["gap"]


def _dw_plus_1x1(v: View) -> bool:
    g, i, j = v.g, v.i, v.j
    return (
        v.op(i) == OP_CODE["dwconv"]
        and v.i == v.head
        and v.attr(i, "kh") == 3
        and int(g.out_shape[i, 2]) <= 16
        and v.op(j) == OP_CODE["conv"]
        and v.attr(j, "kh") == 1
        and v.attr(j, "sh") == 1
        and v.attr(j, "groups") <= 1
        and int(g.out_shape[j, 2]) <= 32
    )


RULES: tuple[Rule, ...] = (
    Rule("bn->conv", RULESETS, _bn_into_conv,
         "The TFLite converter folds a BatchNorm that follows a conv into its weights (every runtime)."),
    Rule("clamp->producer", ("cpu",), _clamp_into_producer,
         "ReLU / ReLU6 become the fused activation of the conv, depthwise conv, fully connected, add, mul or pool "
         "before them (converter), and XNNPACK fuses any Clamp into its producer (xnn_subgraph_fusion)."),
    Rule("elementwise->kernel", GPU_RULESETS, _link_elementwise,
         "The GPU delegate links a chain of elementwise ops (activations, add, mul, BatchNorm) into the shader "
         "of the kernel before them: mobile-ml-benchmark's kernel names conv_linked_:_add_linked_:_relu, on all "
         "six phones. A broadcasting mul (squeeze-excite) and anything after a mean stay separate kernels."),
    Rule("dw3x3+conv1x1", ("metal",), _dw_plus_1x1,
         "TFLite Metal runs a 3x3 depthwise conv of at most 16 channels and the 1x1 conv (at most 32 outputs) after "
         "it as one kernel: depthwise_conv_plus_1x1_conv in mobile-ml-benchmark's iPhone 7 / XS columns (12 of "
         "the 18 such pairs there)."),
)  # fmt: skip

# Not fusions, but part of the same table of facts, used when a kernel's own cost is worked out:
PAD_RULES: dict[str, tuple[str, ...]] = {
    # where an explicit zero PAD in front of a windowed op costs nothing: ops it is merged into
    "cpu": (
        "conv",
        "dwconv",
    ),  # XNNPACK fuses a static constant pad into (depthwise) convolution, not pooling
    "gpu": ("conv", "dwconv", "maxpool", "avgpool"),  # the GPU delegate's merge_padding_with transformations
    "metal": ("conv", "dwconv", "maxpool", "avgpool"),
}
SEPARATE_ACTS: dict[str, bool] = {
    # whether an activation other than ReLU/ReLU6 set on a conv runs as its own kernel
    "cpu": True,  # hard-swish, sigmoid, swish... are their own XNNPACK operators
    "gpu": False,  # linked into the conv's shader
    "metal": False,
}


def rules_for(ruleset: str) -> tuple[Rule, ...]:
    check_ruleset(ruleset)
    return tuple(r for r in RULES if ruleset in r.rulesets)


def check_ruleset(ruleset: str) -> str:
    if ruleset not in RULESETS:
        raise PredictorError(f"unknown fusion rule set {ruleset!r} (known: {', '.join(RULESETS)})", "rules")
    return ruleset


def ruleset_for_target(target: str) -> str:
    """``cpu`` for CPU targets; ``metal`` for GPU targets of Apple devices; ``gpu`` for other GPU targets."""
    from leti.targets import parse_target

    spec = parse_target(target)
    if spec.unit == "gpu":
        return "metal" if spec.device.startswith(("iphone", "ipad")) else "gpu"
    return "cpu"


# ---- kernel types and their configurations -------------------------------------------------------------------
TYPES: tuple[str, ...] = (
    "conv1x1", "conv3x3", "convkxk", "gconv", "dwconv3x3", "dwconvkxk", "dense", "pool", "gap", "concat",
    "add", "mul", "bn", "act", "pad", "move",
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
    if op in ("dense", "gap", "concat", "add", "mul", "bn", "act"):
        return op
    return "move"  # shuffle, slice, zero


def _tile(c: int, t: int) -> int:
    return -(-c // t) * t


TILE = {"cpu": 8, "gpu": 4, "metal": 4}  # channel blocking of the conv microkernels / GPU slices


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


def _consumers(g: LayerGraph) -> np.ndarray:
    """Distinct consumer nodes per node (an add of x with itself reads x through one consumer)."""
    if not g.n_edges:
        return np.zeros(g.n_nodes, dtype=np.int64)
    pairs = np.unique(np.stack([g.src, g.dst]), axis=1)
    return np.bincount(pairs[0], minlength=g.n_nodes)


def _first_input(g: LayerGraph, j: int) -> int:
    ins = g.inputs_of(j)
    return ins[0] if ins else -1


def _row(g: LayerGraph, nodes: list[int], ruleset: str, pad_kernel: bool) -> np.ndarray:
    h = nodes[0]
    ih, iw, ic = (int(v) for v in g.in_shape[h])
    oh, ow, oc = (int(v) for v in g.out_shape[nodes[-1]])
    a = g.attr[h]
    k, s, groups = int(a[A["kh"]]), int(a[A["sh"]]), max(int(a[A["groups"]]), 1)
    op = OPS[int(g.op[h])]
    if op == "dwconv":
        groups = ic
    n_in = len(g.inputs_of(h)) if g.n_edges else 1
    in_elems = ih * iw * ic * max(n_in, 1) if op in ("add", "concat") else ih * iw * ic
    if op == "concat":
        in_elems = oh * ow * oc  # every output element is copied once
    linked = sum(int(g.out_elems[n]) for n in nodes[1:])
    macs = int(g.macs[h]) if not pad_kernel else 0
    tile_macs = macs
    if op == "conv":
        t = TILE[ruleset]
        tile_macs = (
            int(g.out_shape[h, 0] * g.out_shape[h, 1])
            * _tile(int(g.out_shape[h, 2]), t)
            * k
            * k
            * (_tile(ic // groups, t) if ruleset != "cpu" else ic // groups)
        )
    elif op == "dwconv":
        tile_macs = (
            int(g.out_shape[h, 0] * g.out_shape[h, 1]) * _tile(int(g.out_shape[h, 2]), TILE[ruleset]) * k * k
        )
    act = max(int(g.attr[n, A["act"]]) for n in nodes)
    return np.array(
        [ih, iw, ic, oh, ow, oc, k, s, groups, n_in, act, len(nodes), macs, in_elems, oh * ow * oc,
         int(sum(int(g.params[n]) for n in nodes)), linked, tile_macs],
        dtype=np.float64,
    )  # fmt: skip


def split(g: LayerGraph, ruleset: str) -> Kernels:
    """The kernels ``ruleset``'s runtime launches for ``g``, in launch order."""
    check_ruleset(ruleset)
    rules = rules_for(ruleset)
    cons = _consumers(g)
    kernels: list[list[int]] = []
    extra: list[tuple[str, list[int]]] = []  # kernels that are not a run of nodes: pads, separate activations
    owner = np.full(g.n_nodes, -1, dtype=np.int64)  # node -> index in kernels
    for j in range(g.n_nodes):
        op = int(g.op[j])
        if op == OP_CODE["input"]:
            continue
        i = _first_input(g, j)
        joined = False
        if i >= 0 and owner[i] >= 0 and cons[i] == 1 and kernels[owner[i]][-1] == i:
            v = View(g, i, j, kernels[owner[i]][0])
            if any(r.applies(v) for r in rules):
                kernels[owner[i]].append(j)
                owner[j] = owner[i]
                joined = True
        if joined:
            continue
        if i >= 0 and implied_pad(g, j, i) and OPS[op] not in PAD_RULES[ruleset]:
            extra.append(("pad", [j]))
        owner[j] = len(kernels)
        kernels.append([j])
    types, rows, nodes = [], [], []
    for ks in kernels:
        types.append(TYPE_CODE[_type_of(g, ks[0])])
        rows.append(_row(g, ks, ruleset, False))
        nodes.append(ks)
        if SEPARATE_ACTS[ruleset] and int(g.op[ks[0]]) in (*_CONV, OP_CODE["dense"]):
            act = int(g.attr[ks[0], A["act"]])
            if act not in _CLAMPS:  # hard-swish and friends: their own elementwise kernel after the conv
                types.append(TYPE_CODE["act"])
                r = _row(g, ks, ruleset, True)
                r[COL["in_elems"]] = r[COL["out_elems"]]
                rows.append(r)
                nodes.append([ks[0]])
    for kind, ks in extra:
        types.append(TYPE_CODE[kind])
        r = _row(g, ks, ruleset, True)
        r[COL["out_elems"]] = r[COL["in_elems"]]  # a pad writes the padded input
        r[COL["weights"]] = 0
        rows.append(r)
        nodes.append(ks)
    return Kernels(
        np.asarray(types, dtype=np.int64),
        np.asarray(rows, dtype=np.float64).reshape(-1, len(COLUMNS)),
        nodes,
        ruleset,
    )


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
