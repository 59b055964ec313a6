"""Keras functional model -> Arch (and so LayerGraph), with factorized layers as the IR's factorized types.

The whole model becomes one cell (``stacks=1, cells_per_stack=1, merge="sum"``, empty stem and head). One Arch node
stands for one *unit*: a Conv2D / DepthwiseConv2D / Dense with the BatchNormalization and activation it fuses (as the
TFLite converter folds and fuses them), a factor group written by :mod:`leti.compression.keras_surgery`
(``<name>__tucker2_0..2`` -> ``tucker2``, ``<name>__cp_0..3`` -> ``cp``, ``<name>__svd_0..1`` -> ``svd_dense``), or
one pool / add / concat / activation / BN layer. Dropout and Flatten of a vector pass through.

Expansion always appends global-average-pool + Dense(classes), so the model must end in
``GlobalAveragePooling2D -> [Dense ...] -> Dense(classes)``: the final Dense becomes that classifier. When hidden
Dense layers sit between the pool and the classifier they stay in the cell, and the expansion's pool then runs over a
1x1 map: one extra ``gap`` node of ``units`` element ops (:attr:`KerasArch.extra_macs`), no extra parameters.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter is not for users

import keras  # noqa: E402
import numpy as np  # noqa: E402

from leti.errors import LetiError  # noqa: E402
from leti.graph import shapes as S  # noqa: E402
from leti.importers.keras_file import keras_fn_act as _fn_name  # noqa: E402 - one Keras -> IR activation table
from leti.importers.keras_file import keras_layer_act as _act_name  # noqa: E402
from leti.space.arch import Arch  # noqa: E402

__all__ = [
    "FACTOR_METHODS",
    "KNode",
    "KerasArch",
    "ArchCheck",
    "factor_name",
    "functional_nodes",
    "keras_to_arch",
    "keras_macs",
    "check_arch",
]

# layers per factor group, in order; names are ``<unit>__<method>_<i>``
FACTOR_METHODS = {"tucker2": 3, "cp": 4, "svd": 2}
FACTOR_RE = re.compile(r"^(?P<unit>.+)__(?P<method>tucker2|cp|svd)_(?P<i>\d)$")
_PASS = ("Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "Identity")


def factor_name(unit: str, method: str, i: int) -> str:
    return f"{unit}__{method}_{i}"


@dataclass(frozen=True)
class KNode:
    """One layer of a functional model: its inbound layers, its readers and output shape (batch dropped)."""

    name: str
    layer: keras.layers.Layer
    inputs: tuple[str, ...]
    consumers: tuple[str, ...]
    shape: tuple[int, ...]

    @property
    def kind(self) -> str:
        return type(self.layer).__name__


def functional_nodes(model) -> dict[str, KNode]:
    """The layers of a single-input, single-output functional model in topological order."""
    if (
        not isinstance(model, keras.Model)
        or not hasattr(model, "_nodes")
        or isinstance(model, keras.Sequential)
    ):
        if isinstance(model, keras.Sequential):
            raise LetiError(
                "convert a Sequential model to a functional one (keras.Model(inputs, outputs))", "model"
            )
        raise LetiError(f"must be a Keras functional model, got {type(model).__name__}", "model")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise LetiError(
            f"must have one input and one output, got {len(model.inputs)} and {len(model.outputs)}", "model"
        )
    inputs: dict[str, tuple[str, ...]] = {}
    layers: dict[str, keras.layers.Layer] = {}
    calls: dict[int, list] = {}  # id(layer) -> its call nodes inside this model
    for depth_nodes in model._nodes_by_depth.values():
        for nd in depth_nodes:
            calls.setdefault(id(nd.operation), []).append(nd)
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            inputs[layer.name], layers[layer.name] = (), layer
            continue
        own = calls.get(id(layer), [])
        if len(own) != 1:
            raise LetiError(
                f"layer {layer.name} is called {len(own)} times; shared layers are not supported", "model"
            )
        if isinstance(layer, keras.Model):
            raise LetiError(f"layer {layer.name} is a nested model; flatten it first", "model")
        if len(layer.output.shape) and layer.output.shape[0] not in (1, None):
            raise LetiError(f"layer {layer.name} has batch size {layer.output.shape[0]}", "model")
        if any(d is None for d in layer.output.shape[1:]):
            raise LetiError(f"layer {layer.name} has an unknown output shape {layer.output.shape}", "model")
        inputs[layer.name] = tuple(t._keras_history.operation.name for t in own[0].input_tensors)
        layers[layer.name] = layer
    readers: dict[str, list[str]] = {name: [] for name in layers}
    for name, ins in inputs.items():
        for src in ins:
            readers[src].append(name)
    return {
        name: KNode(
            name,
            layers[name],
            inputs[name],
            tuple(readers[name]),
            tuple(int(d) for d in layers[name].output.shape[1:]),
        )
        for name in layers
    }


@dataclass(frozen=True)
class KerasArch:
    """An Arch for a Keras model plus where each Keras layer went.

    ``node_layers[i]``: the Keras layers folded into Arch node ``i``; ``units``: unit name (a layer name, or the
    ``<unit>`` of a factor group) -> Arch node; ``classifier``: the final Dense, expressed by the config's classes;
    ``extra_macs``: element ops of the expansion's pool over a 1x1 map when hidden Dense layers precede the
    classifier (0 for a plain pool -> classifier head).
    """

    arch: Arch
    node_layers: tuple[tuple[str, ...], ...]
    units: dict[str, int]
    classifier: str
    extra_macs: int

    def graph(self):
        return self.arch.to_graph()


def _fail(node: KNode, reason: str) -> LetiError:
    return LetiError(f"{node.kind} {node.name!r}: {reason}", "model")


def _square(node: KNode, key: str, value) -> int:
    a, b = (value, value) if isinstance(value, int) else tuple(value)
    if a != b:
        raise _fail(node, f"{key} {tuple(value)} is not square; the IR describes square kernels and strides")
    return int(a)


def _check_same(node: KNode, in_shape, k: int, stride: int, dil: int = 1) -> None:
    """The IR pads 'same'; a 'valid' layer is fine only where it gives the same output size."""
    want = (
        S.out_size(in_shape[0], k, stride, dil, S.PAD_SAME),
        S.out_size(in_shape[1], k, stride, dil, S.PAD_SAME),
    )
    if tuple(node.shape[:2]) != want:
        raise _fail(
            node, f"padding {node.layer.padding!r} gives {node.shape[:2]}, the IR's 'same' gives {want}"
        )


class _Reader:
    """Groups the layers of a functional model into Arch nodes."""

    def __init__(self, model):
        self.nodes = functional_nodes(model)
        self.node_of: dict[str, int] = {}  # Keras layer -> Arch node holding its output
        self.specs: list[dict] = []
        self.preds: list[list[int]] = []
        self.members: list[tuple[str, ...]] = []
        self.units: dict[str, int] = {}

    def shape_in(self, node: KNode) -> tuple[int, ...]:
        return self.nodes[node.inputs[0]].shape

    def add(self, spec: dict, layers: list[str], inputs: tuple[str, ...], unit: str | None = None) -> None:
        idx = len(self.specs)
        self.specs.append(spec)
        self.preds.append(sorted({self.node_of[i] for i in inputs}))
        self.members.append(tuple(layers))
        for name in layers:
            self.node_of[name] = idx
        if unit is not None:
            self.units[unit] = idx

    def only_reader(self, name: str, kinds: tuple[str, ...]) -> KNode | None:
        readers = self.nodes[name].consumers
        if len(readers) == 1 and self.nodes[readers[0]].kind in kinds:
            return self.nodes[readers[0]]
        return None

    def fuse_bn_act(self, last: KNode, own_act: str, allow_bn: bool) -> tuple[list[str], bool, str]:
        """Trailing BN / activation layers a conv-like unit absorbs: (layer names, bn, act)."""
        names, bn, act = [], False, own_act
        cur = last
        if allow_bn and act == "none":
            nxt = self.only_reader(cur.name, ("BatchNormalization",))
            if nxt is not None:
                _check_bn(nxt)
                names.append(nxt.name)
                bn, cur = True, nxt
        if act == "none":
            nxt = self.only_reader(cur.name, ("ReLU", "Activation"))
            if nxt is not None and _act_name(nxt.layer) not in (None, "none"):
                names.append(nxt.name)
                act = _act_name(nxt.layer)
        return names, bn, act


def _check_bn(node: KNode) -> None:
    cfg = node.layer.get_config()
    if not (cfg.get("center", True) and cfg.get("scale", True)) or cfg.get("axis") not in (-1, 3, [-1], [3]):
        raise _fail(node, "only channel-axis BatchNormalization with center and scale maps onto the IR")


def _own_act(node: KNode) -> str:
    fn = node.layer.get_config().get("activation", "linear")
    act = _fn_name(fn)
    if act is None:
        raise _fail(node, f"activation {fn!r} has no IR equivalent")
    return act


def _group(r: _Reader, first: KNode) -> tuple[str, str, list[KNode]] | None:
    """The factor group starting at ``first`` (unit, method, layers), or None when ``first`` starts none."""
    m = FACTOR_RE.match(first.name)
    if not m or m["i"] != "0":
        return None
    unit, method = m["unit"], m["method"]
    chain = [first]
    for i in range(1, FACTOR_METHODS[method]):
        readers = chain[-1].consumers
        want = factor_name(unit, method, i)
        if len(readers) != 1 or readers[0] != want:
            raise _fail(
                chain[-1], f"factor group {unit!r} is broken: expected its only reader to be {want!r}"
            )
        chain.append(r.nodes[want])
    return unit, method, chain


def _unit_spec(r: _Reader, method: str, chain: list[KNode]) -> tuple[dict, KNode]:
    """IR spec of a factor group (without bn / act) and its last layer."""
    for n in chain[:-1]:
        if n.layer.get_config().get("use_bias") or _own_act(n) != "none":
            raise _fail(n, "inner factor layers must have no bias and no activation")
    last = chain[-1]
    if method == "svd":
        return {"op": "svd_dense", "rank": chain[0].layer.units, "units": last.layer.units,
                "bias": bool(last.layer.use_bias)}, last  # fmt: skip
    if method == "tucker2":
        first, core = chain[0], chain[1]
        k = _square(core, "kernel_size", core.layer.kernel_size)
        s = _square(core, "strides", core.layer.strides)
        d = _square(core, "dilation_rate", core.layer.dilation_rate)
        _check_same(core, r.shape_in(core), k, s, d)
        spec = {"op": "tucker2", "k": k, "stride": s, "dilation": d, "rin": first.layer.filters,
                "rout": core.layer.filters, "channels": last.layer.filters, "bias": bool(last.layer.use_bias)}  # fmt: skip
        return spec, last
    first, vert, horiz = chain[0], chain[1], chain[2]
    k = int(vert.layer.kernel_size[0])
    s = int(vert.layer.strides[0])
    if tuple(vert.layer.kernel_size) != (k, 1) or tuple(horiz.layer.kernel_size) != (1, k):
        raise _fail(vert, "CP factor group needs a (k, 1) then a (1, k) depthwise conv")
    if tuple(vert.layer.strides) != (s, 1) or tuple(horiz.layer.strides) != (1, s):
        raise _fail(vert, "CP factor group needs strides (s, 1) then (1, s)")
    if tuple(vert.layer.dilation_rate) != (1, 1) or tuple(horiz.layer.dilation_rate) != (1, 1):
        raise _fail(vert, "the IR's cp layer has no dilation")
    _check_same(horiz, r.shape_in(vert), k, s)
    spec = {"op": "cp", "k": k, "stride": s, "rank": first.layer.filters, "channels": last.layer.filters,
            "bias": bool(last.layer.use_bias)}  # fmt: skip
    return spec, last


def _plain_spec(r: _Reader, node: KNode) -> dict | None:
    """IR spec of a single layer (conv-like ones without bn / act); None for pass-through layers."""
    layer, kind = node.layer, node.kind
    if kind == "Conv2D":
        k = _square(node, "kernel_size", layer.kernel_size)
        s = _square(node, "strides", layer.strides)
        d = _square(node, "dilation_rate", layer.dilation_rate)
        _check_same(node, r.shape_in(node), k, s, d)
        return {"op": "conv", "k": k, "stride": s, "dilation": d, "groups": layer.groups,
                "channels": layer.filters, "bias": bool(layer.use_bias)}  # fmt: skip
    if kind == "DepthwiseConv2D":
        k = _square(node, "kernel_size", layer.kernel_size)
        s = _square(node, "strides", layer.strides)
        d = _square(node, "dilation_rate", layer.dilation_rate)
        _check_same(node, r.shape_in(node), k, s, d)
        return {"op": "dwconv", "k": k, "stride": s, "dilation": d, "multiplier": layer.depth_multiplier,
                "bias": bool(layer.use_bias)}  # fmt: skip
    if kind == "Dense":
        return {"op": "dense", "units": layer.units, "bias": bool(layer.use_bias)}
    if kind in ("MaxPooling2D", "AveragePooling2D"):
        k = _square(node, "pool_size", layer.pool_size)
        s = _square(node, "strides", layer.strides)
        _check_same(node, r.shape_in(node), k, s)
        return {"op": "maxpool" if kind == "MaxPooling2D" else "avgpool", "k": k, "stride": s}
    if kind == "GlobalAveragePooling2D":
        return {"op": "gap"}
    if kind == "Add":
        return {"op": "add"}
    if kind == "Concatenate":
        if layer.axis not in (-1, 3):
            raise _fail(node, "only channel concatenation maps onto the IR")
        return {"op": "concat"}
    if kind == "BatchNormalization":
        _check_bn(node)
        return {"op": "bn"}
    if kind in ("ReLU", "Activation"):
        act = _act_name(layer)
        if act is None:
            raise _fail(node, "activation has no IR equivalent")
        return None if act == "none" else {"op": "act", "fn": act}
    if kind == "ChannelShuffle":
        return {"op": "shuffle", "groups": layer.groups}
    if kind in _PASS:
        return None
    if kind == "Flatten":
        if math.prod(r.shape_in(node)) != r.shape_in(node)[-1]:
            raise _fail(node, "flattening a spatial map has no IR equivalent (use global pooling)")
        return None
    raise _fail(node, "has no IR equivalent")


def _split_head(r: _Reader, output: str) -> tuple[KNode, KNode, list[str]]:
    """(classifier Dense, GlobalAveragePooling2D, layers after the pool that stay in the cell)."""
    nodes = r.nodes
    node = nodes[output]
    if node.kind == "Softmax" or (
        node.kind == "Activation" and node.layer.get_config()["activation"] == "softmax"
    ):
        node = nodes[node.inputs[0]]  # a trailing softmax costs next to nothing and has no IR op
    if node.kind != "Dense" or FACTOR_RE.match(node.name):
        raise _fail(node, "the model must end in GlobalAveragePooling2D -> ... -> Dense(classes)")
    cls = node
    if not cls.layer.use_bias or cls.layer.get_config()["activation"] not in ("linear", "softmax"):
        raise _fail(cls, "the classifier must be a Dense with bias and a linear or softmax activation")
    body = []
    cur = nodes[cls.inputs[0]]
    while cur.kind != "GlobalAveragePooling2D":
        if len(cur.inputs) != 1 or cur.kind not in (
            "Dense",
            "ReLU",
            "Activation",
            "Flatten",
            "BatchNormalization",
            *_PASS,
        ):
            raise _fail(cls, "the model must end in GlobalAveragePooling2D -> ... -> Dense(classes)")
        body.append(cur.name)
        cur = nodes[cur.inputs[0]]
    return cls, cur, body[::-1]


def keras_to_arch(model) -> KerasArch:
    """The Arch of a Keras functional model (see the module docstring for what maps onto what)."""
    r = _Reader(model)
    nodes = r.nodes
    out_name = model.outputs[0]._keras_history.operation.name
    cls, gap, after_gap = _split_head(r, out_name)
    head_names = set()
    cur = nodes[out_name]
    while cur.name != cls.name:
        head_names.add(cur.name)
        cur = nodes[cur.inputs[0]]
    head_names.add(cls.name)
    inp = next(n for n in nodes.values() if n.kind == "InputLayer")
    if len(inp.shape) != 3:
        raise _fail(inp, f"input shape {inp.shape} is not (height, width, channels)")
    r.specs.append({"op": "input"})
    r.preds.append([])
    r.members.append((inp.name,))
    r.node_of[inp.name] = 0
    done = {inp.name} | head_names
    # the cell ends at the global pool unless hidden Dense layers follow it
    cell_end = after_gap[-1] if after_gap else gap.inputs[0]
    if not after_gap:
        done.add(gap.name)
    for name, node in nodes.items():
        if name in done:
            continue
        group = _group(r, node) if node.kind in ("Conv2D", "Dense") else None
        if group is not None:
            unit, method, chain = group
            spec, last = _unit_spec(r, method, chain)
            fused, bn, act = r.fuse_bn_act(last, _own_act(last), allow_bn=method != "svd")
            layers = [n.name for n in chain] + fused
        elif node.kind in ("Conv2D", "DepthwiseConv2D", "Dense"):
            spec = _plain_spec(r, node)
            own = _own_act(node)
            fused, bn, act = r.fuse_bn_act(node, own, allow_bn=node.kind != "Dense")
            layers, unit = [name, *fused], name
        else:
            spec = _plain_spec(r, node)
            if spec is None:  # pass-through: readers see the input's Arch node
                r.node_of[name] = r.node_of[node.inputs[0]]
                done.add(name)
                continue
            layers, unit, fused, bn, act = [name], None, [], False, None
        if spec["op"] in ("conv", "dwconv", "tucker2", "cp"):
            spec.update(bn=bn, act=act)
        elif spec["op"] in ("dense", "svd_dense"):
            if bn:  # pragma: no cover - allow_bn is False for Dense
                raise _fail(node, "BatchNorm after Dense")
            spec["act"] = act
        if group is not None:
            unit = group[0]
        r.add(spec, layers, node.inputs, unit if spec["op"] not in ("act", "bn", "add", "concat") else None)
        done.update(layers)
    if cell_end not in r.node_of:
        raise _fail(nodes[cell_end], "is not part of the cell")  # pragma: no cover - defensive
    r.specs.append({"op": "output"})
    r.preds.append([r.node_of[cell_end]])
    r.members.append(())
    n = len(r.specs)
    adjacency = [[0] * n for _ in range(n)]
    for v, ps in enumerate(r.preds):
        for u in ps:
            adjacency[u][v] = 1
    h, w, c = inp.shape
    config = {"input_size": [h, w], "input_channels": c, "channels": max(1, min(4096, c)), "stem": [], "head": [],
              "stacks": 1, "cells_per_stack": 1, "merge": "sum", "downsample": "none", "classes": cls.layer.units}  # fmt: skip
    try:
        arch = Arch(adjacency, r.specs, config)
    except LetiError as e:
        raise LetiError(f"the model maps onto an invalid Arch ({e})", "model") from None
    extra = nodes[after_gap[-1]].shape[-1] if after_gap else 0
    return KerasArch(arch, tuple(r.members), dict(r.units), cls.name, int(extra))


# ---- an independent count on the Keras side ----------------------------------------------------------------------
def _fused_act(nodes: dict[str, KNode], node: KNode) -> bool:
    """Whether an activation layer is fused into the conv / dense before it (as the IR and the converter do)."""
    src = nodes[node.inputs[0]]
    if src.kind == "BatchNormalization" and src.consumers == (node.name,):
        node, src = src, nodes[src.inputs[0]]
    return (
        src.kind in ("Conv2D", "DepthwiseConv2D", "Dense")
        and src.consumers == (node.name,)
        and _fn_name(src.layer.get_config().get("activation", "linear")) == "none"
    )


def keras_macs(model) -> int:
    """MACs of a Keras model by the IR's counting rules (``leti.graph.shapes``), read off the Keras layers.

    BatchNorm after a conv and an activation after a conv / dense (BN in between allowed) are folded, as the
    converter does; a standalone BN or activation costs one op per element.
    """
    nodes = functional_nodes(model)
    total = 0
    for node in nodes.values():
        layer, kind = node.layer, node.kind
        out = _hwc(node.shape)
        ins = [_hwc(nodes[i].shape) for i in node.inputs]
        if kind == "Conv2D":
            kh, kw = layer.kernel_size
            total += S.conv_macs(out, kh, kw, ins[0][2], layer.groups)
        elif kind == "DepthwiseConv2D":
            kh, kw = layer.kernel_size
            total += S.dwconv_macs(out, kh, kw)
        elif kind == "Dense":
            total += S.dense_macs(ins[0], layer.units)
        elif kind in ("MaxPooling2D", "AveragePooling2D"):
            total += S.pool_macs(out, *layer.pool_size)
        elif kind == "GlobalAveragePooling2D":
            total += S.elems(ins[0])
        elif kind == "Add":
            total += (len(ins) - 1) * S.elems(out)
        elif kind == "BatchNormalization":
            src = nodes[node.inputs[0]]
            folded = src.kind in ("Conv2D", "DepthwiseConv2D") and len(src.consumers) == 1
            folded = folded and _fn_name(src.layer.get_config().get("activation", "linear")) == "none"
            total += 0 if folded else S.elems(out)
        elif kind in ("ReLU", "Activation") and _act_name(layer) not in (None, "none"):
            total += 0 if _fused_act(nodes, node) else S.elems(out)
    return int(total)


def _hwc(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) == 3:
        return shape  # type: ignore[return-value]
    return (1, 1, int(np.prod(shape))) if len(shape) != 1 else (1, 1, int(shape[0]))


@dataclass(frozen=True)
class ArchCheck:
    """Totals of a Keras model next to those of its Arch's graph; ``ok`` when they agree.

    MACs agree up to ``extra_macs`` (the expansion's pool over a 1x1 map, see :class:`KerasArch`).
    """

    keras_macs: int
    graph_macs: int
    keras_params: int
    graph_params: int
    keras_output: tuple[int, ...]
    graph_output: tuple[int, ...]
    extra_macs: int

    @property
    def ok(self) -> bool:
        return (
            self.graph_macs - self.keras_macs == self.extra_macs
            and self.keras_params == self.graph_params
            and self.keras_output[-1] == self.graph_output[-1]
        )


def check_arch(model, ka: KerasArch | None = None) -> ArchCheck:
    """Compare MACs, params and output size of ``model`` with its Arch's expanded graph."""
    ka = keras_to_arch(model) if ka is None else ka
    g = ka.graph()
    return ArchCheck(
        keras_macs=keras_macs(model),
        graph_macs=g.total_macs,
        keras_params=int(model.count_params()),
        graph_params=g.total_params,
        keras_output=tuple(int(d) for d in model.outputs[0].shape[1:]),
        graph_output=g.output_shape,
        extra_macs=ka.extra_macs,
    )
