"""Op-list graphs: a network known only as the list of its ops in execution order, each with its own shapes.

Per-op records (a profiler's op table, mobile-ml-benchmark's per-op file) give every op's input and output shape but
not which op feeds which. Such a network becomes a *chain*: node ``i`` reads node ``i - 1`` (a concat of ``n``
inputs reads it ``n`` times). Each node keeps the input shape it really read, which need not be its predecessor's
output shape where the real network branches (a residual shortcut conv reads the block's input). MACs, params and
shapes follow ``leti.graph.shapes`` like every other graph; the builder's shape checks are skipped on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from leti.errors import GraphError
from leti.graph import shapes as S
from leti.graph.layergraph import ACT_CODE, N_ATTRS, OP_CODE, LayerGraph, make_attrs

MAX_OPS = 20_000  # bounds a malformed file's damage


@dataclass(frozen=True)
class OpSpec:
    """One op of an op list: IR op name, attributes (``make_attrs`` keywords), input and output shapes (H, W, C).

    ``n_inputs`` is how many tensors it reads (add, concat); ``block`` names it for display."""

    op: str
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    attrs: dict
    n_inputs: int = 1
    block: str = ""


def _macs_params(s: OpSpec, a: tuple) -> tuple[int, int]:
    kh, kw, _, _, _, groups, _, bn, bias, _, _ = a
    cin, out = s.in_shape[2], s.out_shape
    if s.op == "conv":
        return S.conv_macs(out, kh, kw, cin, max(groups, 1)), S.conv_params(
            kh, kw, cin, out[2], max(groups, 1), bool(bias), bool(bn)
        )
    if s.op == "dwconv":
        return S.dwconv_macs(out, kh, kw), S.dwconv_params(kh, kw, out[2], bool(bias), bool(bn))
    if s.op == "dense":
        return S.dense_macs(s.in_shape, out[2]), S.dense_params(cin, out[2], bool(bias))
    if s.op in ("maxpool", "avgpool"):
        return S.pool_macs(out, kh, kw), 0
    if s.op == "gap":
        return S.elems(s.in_shape), 0
    if s.op == "add":
        return (max(s.n_inputs, 2) - 1) * S.elems(out), 0
    if s.op == "bn":
        return S.elems(out), 4 * out[2]
    if s.op in ("mul", "act", "zero"):
        return S.elems(out), 0
    return 0, 0


def oplist_graph(
    specs: list[OpSpec], input_shape: tuple[int, int, int], meta: dict | None = None
) -> LayerGraph:
    """A chain LayerGraph: an input node of ``input_shape``, then one node per spec in order."""
    if not specs:
        raise GraphError("an op list needs at least one op", "ops")
    if len(specs) > MAX_OPS:
        raise GraphError(f"{len(specs)} ops is more than the {MAX_OPS} an op list may hold", "ops")
    n = len(specs) + 1
    op = np.empty(n, dtype=np.int8)
    attr = np.zeros((n, N_ATTRS), dtype=np.int32)
    ins = np.empty((n, 3), dtype=np.int32)
    outs = np.empty((n, 3), dtype=np.int32)
    macs = np.zeros(n, dtype=np.int64)
    params = np.zeros(n, dtype=np.int64)
    op[0] = OP_CODE["input"]
    ins[0] = outs[0] = input_shape
    names = ["input"]
    src: list[int] = []
    dst: list[int] = []
    for i, s in enumerate(specs, start=1):
        where = s.block or f"ops[{i - 1}]"
        if s.op not in OP_CODE or s.op == "input":
            raise GraphError(f"unknown op {s.op!r}", where)
        if min(s.in_shape) < 1 or min(s.out_shape) < 1:
            raise GraphError(f"empty tensor shape {s.in_shape} -> {s.out_shape}", where)
        kw = dict(s.attrs)
        if kw.get("act", "none") not in ACT_CODE:
            raise GraphError(f"unknown activation {kw.get('act')!r}", where)
        try:
            a = make_attrs(**kw)
        except TypeError as e:
            raise GraphError(f"bad attributes ({e})", where) from None
        op[i] = OP_CODE[s.op]
        attr[i] = a
        ins[i] = s.in_shape
        outs[i] = s.out_shape
        macs[i], params[i] = _macs_params(s, a)
        names.append(where)
        for _ in range(max(s.n_inputs, 1)):
            src.append(i - 1)
            dst.append(i)
    return LayerGraph(
        op=op,
        attr=attr,
        in_shape=ins,
        out_shape=outs,
        macs=macs,
        params=params,
        live=np.ones(n, dtype=bool),
        depth=np.arange(1, n + 1, dtype=np.int32),
        block=np.arange(n, dtype=np.int32),
        block_table=tuple(names),
        src=np.asarray(src, dtype=np.int32),
        dst=np.asarray(dst, dtype=np.int32),
        meta={"oplist": True, **(meta or {})},
    )


__all__ = ["MAX_OPS", "OpSpec", "oplist_graph"]
