"""GraphBuilder: appends primitive nodes with inferred shapes, MACs and params; Pieces and ``assemble`` chain them.

A builder may read an *external input* (id -1) and freeze into a Piece: a run of nodes as numpy columns. A cell is
built once per input shape as a Piece, repeated with numpy for every cell of a stack, and the pieces of a network
(stem, stacks, downsampling, head) are concatenated: that is what makes expansion fast.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from leti.errors import GraphError
from leti.graph import shapes as S
from leti.graph.layergraph import (
    COL_BLOCK,
    COL_DEPTH,
    COL_LIVE,
    N_COLS,
    NO_ATTRS,
    OP_CODE,
    PAD_MODES,
    RESIZE_MODES,
    LayerGraph,
    make_attrs,
    table_columns,
)

_WEIGHTED = ("conv", "dwconv", "dense", "bn")  # nodes with weights of their own are never merged


class GraphBuilder:
    """Appends nodes column by column (plain lists: cheap to extend, converted to numpy once per piece)."""

    def __init__(
        self, ext_shape: S.Shape | None = None, block: str = "", live: bool = True, cse: bool = False
    ):
        # per node: its columns before COL_LIVE (op, attrs, shapes, macs, params)
        self.static: list[tuple] = []
        self.shapes: list[S.Shape] = []
        self.inputs: list[tuple] = []
        self.depths: list[int] = []
        self.lives: list[bool] = []
        self.blocks: list[int] = []
        self._names: dict[str, int] = {}
        self.ext_shapes = (tuple(ext_shape),) if ext_shape is not None else ()
        self.block = block
        self.live = live
        # merge weightless nodes that compute the same thing from the same inputs, as the TFLite converter does
        # (importers of real models turn it on; generated archs keep every node they describe)
        self._cse: dict | None = {} if cse else None

    @property
    def block(self) -> str:
        return self._block

    @block.setter
    def block(self, name: str) -> None:
        self._block = name
        self._bid = self._names.setdefault(name, len(self._names))

    # ---- bookkeeping -------------------------------------------------------------------------------------------
    def shape(self, t: int) -> S.Shape:
        return self.ext_shapes[-1 - t] if t < 0 else self.shapes[t]

    def _depth(self, t: int) -> int:
        return 0 if t < 0 else self.depths[t]

    def __len__(self) -> int:
        return len(self.shapes)

    def _add(self, op: str, attrs: tuple, inputs: tuple, out_shape: S.Shape, macs: int, params: int) -> int:
        if min(out_shape) < 1:
            raise GraphError(f"{op} would produce an empty tensor {out_shape}", self.block or "graph")
        if self._cse is not None and inputs and params == 0 and op not in _WEIGHTED:
            key = (op, attrs, inputs, out_shape)
            if key in self._cse:
                return self._cse[key]
            self._cse[key] = len(self.shapes)
        in_shape = self.shape(inputs[0]) if inputs else out_shape
        self.static.append((OP_CODE[op], *attrs, *in_shape, *out_shape, macs, params))
        self.shapes.append(out_shape)
        self.inputs.append(inputs)
        depth = 0
        for t in inputs:
            if t >= 0 and self.depths[t] > depth:
                depth = self.depths[t]
        self.depths.append(depth + 1)
        self.lives.append(self.live)
        self.blocks.append(self._bid)
        return len(self.shapes) - 1

    # ---- primitives --------------------------------------------------------------------------------------------
    def input(self, shape: S.Shape) -> int:
        return self._add("input", NO_ATTRS, (), tuple(shape), 0, 0)

    def conv(
        self,
        x: int,
        cout: int,
        kh: int,
        kw: int | None = None,
        sh: int = 1,
        sw: int | None = None,
        groups: int = 1,
        dil: int = 1,
        act: str = "none",
        bn: bool = False,
        bias: bool | None = None,
        pad: int = S.PAD_SAME,
    ) -> int:
        kw, sw, bias = _window_defaults(kh, kw, sh, sw, bn, bias)
        cin = self.shape(x)[2]
        if cin % groups or cout % groups:
            raise GraphError(
                f"groups={groups} must divide input channels {cin} and output channels {cout}",
                self.block or "conv",
            )
        out = S.window_out_shape(self.shape(x), kh, kw, sh, sw, cout, dil, pad)
        attrs = make_attrs(kh, kw, sh, sw, dil, groups, act, bn, bias, pad)
        return self._add(
            "conv",
            attrs,
            (x,),
            out,
            S.conv_macs(out, kh, kw, cin, groups),
            S.conv_params(kh, kw, cin, cout, groups, bias, bn),
        )

    def dwconv(
        self,
        x: int,
        kh: int,
        kw: int | None = None,
        sh: int = 1,
        sw: int | None = None,
        mult: int = 1,
        dil: int = 1,
        act: str = "none",
        bn: bool = False,
        bias: bool | None = None,
        pad: int = S.PAD_SAME,
    ) -> int:
        kw, sw, bias = _window_defaults(kh, kw, sh, sw, bn, bias)
        cout = self.shape(x)[2] * mult
        out = S.window_out_shape(self.shape(x), kh, kw, sh, sw, cout, dil, pad)
        attrs = make_attrs(kh, kw, sh, sw, dil, 0, act, bn, bias, pad, mult)
        return self._add(
            "dwconv", attrs, (x,), out, S.dwconv_macs(out, kh, kw), S.dwconv_params(kh, kw, cout, bias, bn)
        )

    def dense(self, x: int, units: int, act: str = "none", bias: bool = True) -> int:
        shp = self.shape(x)
        out = (shp[0], shp[1], units)
        attrs = make_attrs(act=act, bias=bias)
        return self._add(
            "dense", attrs, (x,), out, S.dense_macs(shp, units), S.dense_params(shp[2], units, bias)
        )

    def pool(
        self,
        kind: str,
        x: int,
        k: int,
        stride: int,
        kw: int | None = None,
        pad: int = S.PAD_SAME,
        sw: int | None = None,
    ) -> int:
        kw = k if kw is None else kw
        sw = stride if sw is None else sw
        shp = self.shape(x)
        out = S.window_out_shape(shp, k, kw, stride, sw, shp[2], 1, pad)
        return self._add(kind, make_attrs(k, kw, stride, sw, pad=pad), (x,), out, S.pool_macs(out, k, kw), 0)

    def gap(self, x: int, keepdims: bool = False) -> int:
        shp = self.shape(x)
        return self._add("gap", make_attrs(extra=int(keepdims)), (x,), (1, 1, shp[2]), S.elems(shp), 0)

    def _same_shapes(self, op: str, xs: tuple) -> S.Shape:
        first = self.shape(xs[0])
        for t in xs[1:]:
            if self.shape(t) != first:
                raise GraphError(
                    f"{op} of tensors with different shapes {first} and {self.shape(t)}", self.block or op
                )
        return first

    def add(self, xs) -> int:
        xs = tuple(xs)
        if len(xs) == 1:
            return xs[0]
        out = self._same_shapes("add", xs)
        return self._add("add", NO_ATTRS, xs, out, (len(xs) - 1) * S.elems(out), 0)

    def concat(self, xs) -> int:
        xs = tuple(xs)
        if len(xs) == 1:
            return xs[0]
        h, w, _ = self.shape(xs[0])
        for t in xs[1:]:
            if self.shape(t)[:2] != (h, w):
                raise GraphError(
                    f"concat of tensors with different spatial sizes {self.shape(xs[0])} and {self.shape(t)}",
                    self.block or "concat",
                )
        out = (h, w, sum(self.shape(t)[2] for t in xs))
        return self._add("concat", NO_ATTRS, xs, out, 0, 0)

    def mul(self, x: int, scale: int) -> int:
        """x * scale, where scale is x-shaped or a (1, 1, C) vector broadcast over H and W."""
        shp, sc = self.shape(x), self.shape(scale)
        if sc[2] != shp[2] or (sc[:2] != (1, 1) and sc != shp):
            raise GraphError(f"mul of {shp} by {sc} cannot broadcast", self.block or "mul")
        return self._add("mul", NO_ATTRS, (x, scale), shp, S.elems(shp), 0)

    def act(self, x: int, fn: str) -> int:
        if fn == "none":
            return x
        shp = self.shape(x)
        return self._add("act", make_attrs(act=fn), (x,), shp, S.elems(shp), 0)

    def bn(self, x: int, params: int | None = None) -> int:
        """A per-channel affine op; ``params`` defaults to a BatchNorm's four vectors (a fixed rescale stores
        fewer, e.g. Keras' Rescaling none)."""
        shp = self.shape(x)
        params = 4 * shp[2] if params is None else params
        return self._add("bn", make_attrs(bn=True), (x,), shp, S.elems(shp), params)

    def shuffle(self, x: int, groups: int) -> int:
        shp = self.shape(x)
        if shp[2] % groups:
            raise GraphError(
                f"shuffle groups={groups} must divide channels {shp[2]}", self.block or "shuffle"
            )
        return self._add("shuffle", make_attrs(groups=groups), (x,), shp, 0, 0)

    def slice(self, x: int, channels: int, start: int = 0) -> int:
        shp = self.shape(x)
        if start + channels > shp[2] or channels < 1:
            raise GraphError(
                f"cannot take channels [{start}, {start + channels}) of {shp}", self.block or "slice"
            )
        if start == 0 and channels == shp[2]:
            return x
        return self._add("slice", make_attrs(extra=start), (x,), (shp[0], shp[1], channels), 0, 0)

    def pad(self, x: int, top: int, left: int, bottom: int, right: int, mode: str = "constant") -> int:
        """Spatial padding by the given amounts (negative amounts crop); a no-op pad returns ``x``."""
        if not (top or left or bottom or right):
            return x
        if mode not in PAD_MODES:
            raise GraphError(f"pad mode {mode!r} is not one of {', '.join(PAD_MODES)}", self.block or "pad")
        out = S.padded_shape(self.shape(x), top, left, bottom, right)
        attrs = make_attrs(top, left, bottom, right, extra=PAD_MODES.index(mode))
        return self._add("pad", attrs, (x,), out, 0, 0)

    def reshape(self, x: int, shape: S.Shape, flat: bool = False) -> int:
        """The same values in another (H, W, C) shape; ``flat``: a (1, C) vector, as Flatten makes it."""
        shp, shape = self.shape(x), tuple(int(v) for v in shape)
        if S.elems(shp) != S.elems(shape) or len(shape) != 3:
            raise GraphError(f"cannot reshape {shp} to {shape}", self.block or "reshape")
        if flat and shape[:2] != (1, 1):
            raise GraphError(f"a flat vector is (1, 1, C), not {shape}", self.block or "reshape")
        if shape == shp:  # a change of rank only: the IR has none
            return x
        return self._add("reshape", make_attrs(extra=int(flat)), (x,), shape, 0, 0)

    def resize(self, x: int, h: int, w: int, mode: str = "nearest") -> int:
        if mode not in RESIZE_MODES:
            raise GraphError(
                f"resize mode {mode!r} is not one of {', '.join(RESIZE_MODES)}", self.block or "resize"
            )
        out = (int(h), int(w), self.shape(x)[2])
        attrs = make_attrs(extra=RESIZE_MODES.index(mode))
        return self._add("resize", attrs, (x,), out, S.resize_macs(out, mode == "bilinear"), 0)

    def zero(self, x: int) -> int:
        shp = self.shape(x)
        return self._add("zero", NO_ATTRS, (x,), shp, S.elems(shp), 0)

    def frozen(self, out: int) -> tuple:
        """The nodes as plain tuples, to splice elsewhere with ``splice_frozen`` (memoised layer expansions)."""
        return (tuple(self.static), tuple(self.shapes), tuple(self.inputs), tuple(self.depths), out)

    def splice_frozen(self, frozen: tuple, x: int) -> int:
        """Append frozen nodes built against an external input (-1), reading ``x`` instead; returns the output."""
        static, shapes, inputs, depths, out = frozen
        base = len(self.shapes)
        dx = self._depth(x)
        k = len(static)
        self.static.extend(static)
        self.shapes.extend(shapes)
        self.inputs.extend([tuple(x if t < 0 else t + base for t in ins) for ins in inputs])
        self.depths.extend([d + dx for d in depths])
        self.lives.extend([self.live] * k)
        self.blocks.extend([self._bid] * k)
        return x if out < 0 else base + out

    # ---- freeze ------------------------------------------------------------------------------------------------
    def piece(self, out: int) -> Piece:
        """Freeze the nodes as a Piece whose output is node ``out`` (-1: the external input itself)."""
        n = len(self.shapes)
        table = np.empty((n, N_COLS), dtype=np.int64)
        if n:
            table[:, :COL_LIVE] = self.static
            table[:, COL_LIVE] = self.lives
            table[:, COL_DEPTH] = self.depths
            table[:, COL_BLOCK] = self.blocks
        src = [t for ins in self.inputs for t in ins]
        dst = [i for i, ins in enumerate(self.inputs) for _ in ins]
        out = out if n else -1
        peak, act = self._memory(out)
        return Piece(
            table,
            np.array((src, dst), dtype=np.int64).T.reshape(-1, 2),
            tuple(self._names),
            out,
            self.shapes[out] if out >= 0 else None,
            self.depths[out] if out >= 0 else 0,
            peak,
            act,
        )

    def _memory(self, out: int) -> tuple[int, int]:
        """(peak live elements, external input included; sum of output elements) of these nodes run in order.

        Pieces are chained through one tensor, so a graph's peak is the max over its pieces and ``assemble`` needs
        no pass over the whole graph. Plain Python: pieces are small and this runs once per new piece.
        """
        n = len(self.shapes)
        elems = [h * w * c for h, w, c in self.shapes]
        last = list(range(n))
        ext_last = -1
        for i, ins in enumerate(self.inputs):
            for t in ins:
                if t < 0:
                    ext_last = i
                else:
                    last[t] = i  # ids grow, so the final assignment is the last use
        if out >= 0:
            last[out] = n - 1  # the next piece reads it
        else:
            ext_last = n - 1
        ext = self.ext_shapes[0][0] * self.ext_shapes[0][1] * self.ext_shapes[0][2] if self.ext_shapes else 0
        freed = [0] * (n + 1)
        for i in range(n):
            freed[last[i] + 1] += elems[i]
        live = peak = 0
        for t in range(n):
            live += elems[t] - freed[t]
            cur = live + ext if t <= ext_last else live
            if cur > peak:
                peak = cur
        return peak, sum(elems)

    def finish(self, meta: dict | None = None) -> LayerGraph:
        if not self.shapes:
            raise GraphError("the graph has no nodes", "graph")
        if self.ext_shapes:
            raise GraphError("a builder with external inputs makes pieces, not graphs", "graph")
        return assemble([(self.piece(len(self.shapes) - 1), "")], meta)


@dataclass(frozen=True, eq=False)
class Piece:
    """A frozen run of nodes whose single external input is id -1 (see ``assemble``).

    All node columns live in one int64 table (``layergraph.COL_*``) so that chaining pieces into a graph is a few
    numpy calls.
    """

    table: np.ndarray  # (n, N_COLS); depth counted from the external input, block indexes ``names``
    edges: np.ndarray  # (m, 2) src, dst; src -1 = the external input
    names: tuple
    out: int  # local id of the output node; -1 when the piece passes its input through
    out_shape_: tuple | None = None  # the output's shape (None: the external input's)
    out_depth: int = 0  # the output's depth, counted from the external input
    peak_elems: int = 0  # peak live elements while it runs, its external input included
    act_elems: int = 0  # sum of its nodes' output elements

    @property
    def n(self) -> int:
        return int(self.table.shape[0])

    def out_shape(self, in_shape: tuple) -> tuple:
        return in_shape if self.out < 0 else self.out_shape_


class _CopyNames:
    """Block names of k copies, spelled out only when someone reads them (features never do)."""

    def __init__(self, names, k: int, start: int):
        self.names, self.k, self.start = names, k, start

    def __len__(self) -> int:
        return len(self.names) * self.k

    def __iter__(self):
        return (f"c{self.start + j}.{name}" for j in range(self.k) for name in self.names)


class _BlockNames:
    """The block-name table of an assembled graph, built lazily from its parts."""

    def __init__(self, parts):
        self.parts = parts  # (prefix, names)

    def materialize(self) -> tuple[str, ...]:
        return tuple(prefix + nm for prefix, names in self.parts for nm in names)


def _window_defaults(kh: int, kw: int | None, sh: int, sw: int | None, bn: bool, bias: bool | None):
    """Square kernels and strides unless given; a bias only where no BatchNorm follows (it would be folded away)."""
    return (kh if kw is None else kw), (sh if sw is None else sw), ((not bn) if bias is None else bias)


def assemble(parts, meta: dict | None = None) -> LayerGraph:
    """Chain pieces into a LayerGraph: each piece's external input is the previous piece's output.

    ``parts`` holds ``(piece, prefix)`` or ``(piece, prefix, copies, start)``: a piece repeated ``copies`` times in a
    chain (cells ``c{start}``, ``c{start+1}``, … of a stack). Offsets are worked out per copy in Python and applied
    with one numpy call per column, so the cost barely grows with the number of cells.
    """
    tables, edges, names = [], [], []
    n_nodes, n_edges, depth_off, name_off, edge_base, edge_ext = [], [], [], [], [], []
    base, prev_out, prev_depth, n_names = 0, -1, 0, 0
    peak, act = 0, 0
    for part in parts:
        piece, prefix = part[0], part[1]
        copies, start = (part[2], part[3]) if len(part) > 2 else (1, 0)
        n, m, out = piece.table.shape[0], piece.edges.shape[0], piece.out
        if n == 0:
            continue
        k_names = len(piece.names)
        peak = max(peak, piece.peak_elems)
        act += copies * piece.act_elems
        names.append((prefix, piece.names if copies == 1 else _CopyNames(piece.names, copies, start)))
        tables += [piece.table] * copies
        edges += [piece.edges] * copies
        n_nodes += [n] * copies
        n_edges += [m] * copies
        step = piece.out_depth if out >= 0 else 0
        for _ in range(copies):
            depth_off.append(prev_depth)
            name_off.append(n_names)
            edge_base.append(base)
            edge_ext.append(prev_out)
            n_names += k_names
            if out >= 0:
                prev_out = base + out
                prev_depth += step
            base += n
    if not tables:
        raise GraphError("the graph has no nodes", "graph")
    table = np.concatenate(tables)
    table[:, COL_DEPTH] += np.repeat(depth_off, n_nodes)
    table[:, COL_BLOCK] += np.repeat(name_off, n_nodes)
    e = np.concatenate(edges)
    ext = e[:, 0] < 0
    e[:, 0] += np.repeat(edge_base, n_edges)
    e[:, 1] += np.repeat(edge_base, n_edges)
    bound = np.repeat(edge_ext, n_edges)[ext]
    if bound.size and bound.min() < 0:
        raise GraphError("a piece reads an input that no earlier piece produces", "graph")
    e[ext, 0] = bound
    table.setflags(write=False)  # graphs are memoised and shared: keep them immutable
    e.setflags(write=False)
    graph = LayerGraph(
        **table_columns(table),
        block_table=_BlockNames(names),
        src=e[:, 0],
        dst=e[:, 1],
        meta=dict(meta or {}),
    )
    graph.__dict__["_peak_elems"] = peak  # fill the cached totals: no pass over the whole graph
    graph.__dict__["_act_elems"] = act
    return graph


__all__ = ["GraphBuilder", "Piece", "assemble"]
