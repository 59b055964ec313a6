"""Arch -> LayerGraph: expand the cell x stacks x config into primitive layers with shapes.

A cell is built once per (cell, input shape, channels) as a graph fragment and spliced ``cells_per_stack`` times,
and whole graphs are memoised per arch: NAS loops ask about the same archs again and again.
"""

from __future__ import annotations

import json
from functools import lru_cache

from leti.errors import GraphError
from leti.graph.builder import GraphBuilder, Piece, assemble
from leti.graph.layergraph import LayerGraph
from leti.graph.memo import graph_weight, memo
from leti.space.config import stack_channels


def _mbconv(b: GraphBuilder, L: dict, x: int, ch: int) -> int:
    cin = b.shape(x)[2]
    g, act, stride = L["groups"], L["act"], L["stride"]
    y = x
    if L["expand"]:
        mid = max(1, int(round(cin * L["e"])))
        mid = -(-mid // g) * g  # grouped 1x1 convs need a multiple of the groups
        y = b.conv(y, mid, 1, groups=g, bn=True, act=act)
        if g > 1:
            y = b.shuffle(y, g)  # FBNet/ShuffleNet: mix the groups before the depthwise conv
    else:
        mid = cin
    y = b.dwconv(y, L["k"], sh=stride, bn=True, act=act)
    if L["se"] > 0:
        s = b.gap(y, keepdims=True)
        s = b.conv(s, max(1, int(mid * L["se"])), 1, act="relu", bn=False, bias=True)
        s = b.conv(s, mid, 1, act="hsigmoid", bn=False, bias=True)
        y = b.mul(y, s)
    y = b.conv(y, ch, 1, groups=g, bn=True, act="none")
    if L["residual"] and stride == 1 and cin == ch:
        y = b.add((x, y))
    return y


def apply_layer(b: GraphBuilder, L: dict, x: int, channels: int) -> int:
    """Append the primitives of one arch layer to ``b``; ``channels`` is the default output width."""
    op = L["op"]
    ch = L.get("channels") or channels
    if op == "conv":
        if L["pre_act"] != "none":
            x = b.act(x, L["pre_act"])
        return b.conv(
            x,
            ch,
            L["k"],
            sh=L["stride"],
            groups=L["groups"],
            dil=L["dilation"],
            act=L["act"],
            bn=L["bn"],
            bias=L["bias"],
        )
    if op == "dwconv":
        return b.dwconv(
            x,
            L["k"],
            sh=L["stride"],
            mult=L["multiplier"],
            dil=L["dilation"],
            act=L["act"],
            bn=L["bn"],
            bias=L["bias"],
        )
    if op == "sepconv":
        y = b.dwconv(x, L["k"], sh=L["stride"], bn=True, act=L["act"])
        return b.conv(y, ch, 1, bn=True, act=L["act"])
    if op == "mbconv":
        return _mbconv(b, L, x, ch)
    if op == "tucker2":
        y = b.conv(x, L["rin"], 1, bias=False)
        y = b.conv(y, L["rout"], L["k"], sh=L["stride"], dil=L["dilation"], bias=False)
        return b.conv(y, ch, 1, act=L["act"], bn=L["bn"], bias=L["bias"])
    if op == "cp":
        r, k, s = L["rank"], L["k"], L["stride"]
        y = b.conv(x, r, 1, bias=False)
        y = b.dwconv(y, k, 1, sh=s, sw=1, bias=False)
        y = b.dwconv(y, 1, k, sh=1, sw=s, bias=False)
        return b.conv(y, ch, 1, act=L["act"], bn=L["bn"], bias=L["bias"])
    if op == "dense":
        return b.dense(x, L["units"] or channels, act=L["act"], bias=L["bias"])
    if op == "svd_dense":
        y = b.dense(x, L["rank"], bias=False)
        return b.dense(y, L["units"] or channels, act=L["act"], bias=L["bias"])
    if op in ("maxpool", "avgpool"):
        return b.pool(op, x, L["k"], L["stride"])
    if op == "gap":
        return b.gap(x, keepdims=True)
    if op == "identity":
        cin = b.shape(x)[2]
        cout = L["channels"] or cin
        if L["stride"] != 1 or cout != cin:  # FBNet's skip becomes a 1x1 conv where the shape changes
            return b.conv(x, cout, 1, sh=L["stride"], bn=True, act="relu")
        return x
    if op == "zero":
        return b.zero(x)
    if op == "bn":
        return b.bn(x)
    if op == "act":
        return b.act(x, L["fn"])
    if op == "shuffle":
        return b.shuffle(x, L["groups"])
    if op in ("add", "concat", "output"):
        return x
    raise GraphError(f"op {op} cannot be used here", b.block or "layer")


@memo(100_000, weigh=lambda f: len(f[0]))
def _layer_nodes(layer, in_shape: tuple, channels: int) -> tuple:
    b = GraphBuilder(ext_shape=in_shape)
    return b.frozen(apply_layer(b, layer, -1, channels))


def apply_layer_cached(b: GraphBuilder, L: dict, x: int, channels: int) -> int:
    """``apply_layer`` through a memo of the nodes each (layer, input shape, channels) produces."""
    return b.splice_frozen(_layer_nodes(L, b.shape(x), channels), x)


def nb101_vertex_channels(in_channels: int, out_channels: int, adjacency) -> list[int]:
    """NAS-Bench-101's channel split: the output's width is shared by the vertices that feed it."""
    n = len(adjacency)
    vc = [0] * n
    vc[0], vc[n - 1] = in_channels, out_channels
    if n == 2:
        return vc
    fan_in = sum(adjacency[v][n - 1] for v in range(1, n - 1))
    interior, correction = divmod(out_channels, max(fan_in, 1))
    for v in range(1, n - 1):
        if adjacency[v][n - 1]:
            vc[v] = interior + (1 if correction > 0 else 0)
            correction -= 1
    for v in range(n - 3, 0, -1):
        if not adjacency[v][n - 1]:
            for dst in range(v + 1, n - 1):
                if adjacency[v][dst]:
                    vc[v] = max(vc[v], vc[dst])
    return vc


def _cell_nb101(b: GraphBuilder, arch, live: list[bool], channels: int) -> int:
    adj, layers = arch.adjacency, arch.layers
    n = len(layers)
    vc = nb101_vertex_channels(b.shape(-1)[2], channels, adj)
    tensors = [-1] + [0] * (n - 1)

    def projection(c):
        return b.conv(-1, c, 1, bn=True, act="relu")

    for t in range(1, n - 1):
        b.block, b.live = f"n{t}:{layers[t]['op']}", live[t]
        if vc[t] < 1:
            raise GraphError("vertex gets no channels", f"layers[{t}]")
        srcs = [src for src in range(1, t) if adj[src][t]]
        concat = layers[t]["op"] == "concat"
        # a concat vertex (DenseNet-style) shares its channels among its inputs, so it still has vc[t] of them
        n_in = len(srcs) + adj[0][t]
        widths = [vc[t] // n_in + (k < vc[t] % n_in) for k in range(n_in)] if concat else [vc[t]] * n_in
        if min(widths, default=1) < 1:
            raise GraphError(f"{vc[t]} channels cannot be shared among {n_in} inputs", f"layers[{t}]")
        ins = []
        for src, width in zip(srcs, widths, strict=False):
            have = b.shape(tensors[src])[2]
            if have < width:
                raise GraphError(
                    f"input from node {src} has {have} channels, fewer than {width}", f"layers[{t}]"
                )
            ins.append(b.slice(tensors[src], width))
        if adj[0][t]:
            ins.append(projection(widths[-1]))
        if layers[t]["op"] == "mul":
            raise GraphError("a mul vertex needs merge 'sum'", f"layers[{t}]")
        x = b.concat(ins) if concat else b.add(ins)
        tensors[t] = apply_layer_cached(b, layers[t], x, vc[t])
    b.block, b.live = f"n{n - 1}:output", True
    final = [tensors[t] for t in range(1, n - 1) if adj[t][n - 1]]
    if not final:
        return projection(channels)
    out = b.concat(final)
    if adj[0][n - 1]:
        out = b.add((out, projection(channels)))
    return out


def _gate(b: GraphBuilder, ins: list[int]) -> int:
    """A mul vertex: the larger input scaled by the other (a (1, 1, C) gate, or a map of the same shape)."""
    if len(ins) != 2:
        raise GraphError(f"a mul vertex multiplies two inputs, got {len(ins)}", b.block or "mul")
    x, gate = sorted(ins, key=lambda t: -b.shape(t)[0] * b.shape(t)[1])
    return b.mul(x, gate)


def _cell_sum(b: GraphBuilder, arch, live: list[bool], channels: int) -> int:
    layers, preds, names = arch.layers, arch.preds, arch.vertex_names
    n = len(layers)
    tensors = [-1] + [0] * (n - 1)
    for v in range(1, n):
        L = layers[v]
        op = L["op"]
        b.block, b.live = names[v], live[v]
        ins = [tensors[u] for u in preds[v]]
        if op == "mul":
            tensors[v] = _gate(b, ins)
            continue
        x = ins[0] if len(ins) == 1 else b.concat(ins) if op == "concat" else b.add(ins)
        tensors[v] = x if op in ("add", "concat", "output") else apply_layer_cached(b, L, x, channels)
    return tensors[n - 1]


@memo(100_000, weigh=lambda p: p.n + len(p.edges))
def _cell_piece(arch, in_shape: tuple, channels: int) -> Piece:
    b = GraphBuilder(ext_shape=in_shape)
    live = arch._live
    cell = _cell_nb101 if arch.config["merge"] == "nb101" else _cell_sum
    try:
        out = cell(b, arch, live, channels)
    except GraphError as e:
        where = f"cell at input {list(in_shape)}, {b.block}"
        raise GraphError(e.reason, f"{e.field} ({where})" if e.field else where) from None
    return b.piece(out)


def _downsample(b: GraphBuilder, style: str, x: int, c: int) -> int:
    if style == "maxpool":
        return b.pool("maxpool", x, 2, 2)
    if style == "avgpool":
        return b.pool("avgpool", x, 2, 2)
    if style == "conv":
        return b.conv(x, c, 3, sh=2, bn=True, act="relu")
    if style == "resblock":  # NAS-Bench-201's ResNet basic block with stride 2
        a = b.conv(b.act(x, "relu"), c, 3, sh=2, bn=True)
        a = b.conv(b.act(a, "relu"), c, 3, bn=True)
        s = b.conv(b.pool("avgpool", x, 2, 2), c, 1, bias=False)
        return b.add((a, s))
    return x


def _sequence(b: GraphBuilder, layers, x: int, channels: int, prefix: str, field: str) -> int:
    for i, L in enumerate(layers):
        b.block = f"{prefix}.{i}:{L['op']}"
        try:
            x = apply_layer(b, L, x, channels)
        except GraphError as e:
            raise GraphError(e.reason, f"{field}[{i}]") from None
    return x


# Stem, downsampling and head depend on the config only: memoise them on its canonical text
@lru_cache(maxsize=256)
def _stem_piece(config_key: str) -> Piece:
    cfg = json.loads(config_key)
    h, w = cfg["input_size"]
    b = GraphBuilder(block="input")
    x = b.input((h, w, cfg["input_channels"]))
    return b.piece(_sequence(b, cfg["stem"], x, cfg["channels"], "stem", "config.stem"))


@lru_cache(maxsize=1024)
def _down_piece(style: str, in_shape: tuple, channels: int) -> Piece:
    b = GraphBuilder(ext_shape=in_shape, block="down")
    return b.piece(_downsample(b, style, -1, channels))


@lru_cache(maxsize=1024)
def _head_piece(config_key: str, in_shape: tuple) -> Piece:
    cfg = json.loads(config_key)
    b = GraphBuilder(ext_shape=in_shape)
    x = _sequence(b, cfg["head"], -1, stack_channels(cfg, cfg["stacks"] - 1), "head", "config.head")
    if cfg["classes"] == 0:  # a feature extractor, or a model whose classifier is written out in the head
        return b.piece(x)
    b.block = "classifier"
    return b.piece(b.dense(b.gap(x), cfg["classes"]))


def _parts(arch) -> list[tuple]:
    """The pieces ``expand`` chains, each with its copies (see ``graph.builder.assemble``)."""
    cfg = arch.config
    stem = _stem_piece(arch.config_key)
    parts: list[tuple] = [(stem, "")]
    shape = stem.out_shape(())
    for s in range(cfg["stacks"]):
        c = stack_channels(cfg, s)
        if s > 0:
            down = _down_piece(cfg["downsample"], shape, c)
            parts.append((down, f"s{s}."))
            shape = down.out_shape(shape)
        k = 0
        while k < cfg["cells_per_stack"]:
            cell = _cell_piece(arch, shape, c)
            out = cell.out_shape(shape)
            left = cfg["cells_per_stack"] - k
            if out == shape and left > 1:  # the remaining cells are identical: chain copies of one piece
                parts.append((cell, f"s{s}.", left, k))
                break
            parts.append((cell, f"s{s}.c{k}."))
            shape = out
            k += 1
    parts.append((_head_piece(arch.config_key, shape), ""))
    return parts


def expanded_size(arch) -> int:
    """Nodes + edges of ``expand(arch)``, from its pieces alone: a server checks this before building a network
    that would not fit its memory (the pieces are small and memoised; the copies are what grows)."""
    return sum((part[2] if len(part) > 2 else 1) * (part[0].n + len(part[0].edges)) for part in _parts(arch))


# Memos are bounded by nodes + edges, not by a count: one entry may be a million-layer network (leti.graph.memo).
# 200k weight holds ~560 NB201 networks (~32 MB).
@memo(200_000, weigh=graph_weight)
def expand(arch) -> LayerGraph:
    cfg = arch.config
    h, w = cfg["input_size"]
    return assemble(_parts(arch), {"space": arch.space, "input_size": [h, w], "classes": cfg["classes"]})


def clear_caches() -> None:
    """Forget every memoised expansion (benchmarks measure cold paths this way)."""
    for fn in (expand, _cell_piece, _layer_nodes, _stem_piece, _down_piece, _head_piece):
        fn.cache_clear()
