"""LayerGraph -> .tflite by writing the FlatBuffer directly: the fast path (no TensorFlow import, no tracing).

The reference path (``leti.tflite.convert``) builds a Keras model and runs the TFLite converter, which costs seconds
per model. This module writes the same model in milliseconds. It works in two steps:

1. *Lowering*: every IR node becomes the TFLite ops its Keras layers turn into before optimisation (a conv with its
   bias, BatchNorm as MUL + ADD by per-channel constants, ``hsigmoid`` as ADD 3 / RELU6 / MUL 1/6, ``swish`` as
   LOGISTIC + MUL, ``zero`` as MUL by a scalar 0, a channel shuffle as RESHAPE / TRANSPOSE / RESHAPE, ...).
2. *Rewrites* that mirror the converter's own (measured on TF 2.21, see tests/test_flatbuffer.py): a MUL or ADD by
   a constant folds into the conv / depthwise conv that produces its input (BN folding, ``zero`` after a conv); a
   scalar MUL folds into the conv / depthwise conv that consumes it; two constant ADDs in a row become one; RELU
   and RELU6 fuse into a producing conv, depthwise conv, fully connected, add, mul or pool; RELU of RELU and RELU6
   of RELU6 drop the second; ``x + 0`` drops the ADD (a BN with a zero shift) and a dense bias of zeros is left out;
   identical weightless ops on the same inputs are merged (CSE); identical constants are stored once. Folds and
   fusions need the intermediate tensor to have a single consumer, as in the converter.

Where the converter is known to rewrite in a way this module does not copy (a constant MUL / ADD next to a fully
connected layer, a per-channel constant MUL straight in front of a conv, spatial ops on a flattened tensor),
``unsupported_reason`` names it and ``build_tflite`` falls back to the reference path. int8 always goes through
the reference path: it needs the converter's calibration. The converter lists independent ops in its own order
(from TensorFlow's graph import); this module lists them in IR order, so the two files hold the same op graph but
not always the same op sequence.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as fb

from leti.errors import LetiError
from leti.graph.layergraph import ACTS, OP_CODE, OPS, PAD_MODES, RESIZE_MODES, LayerGraph
from leti.graph.shapes import PAD_SAME, out_size

BN_EPS = 1e-3  # Keras' BatchNormalization default, which build_keras uses


class FastPathUnsupported(LetiError):
    """The fast path does not mirror the converter for this graph; use the reference path."""


@dataclass
class LayerWeights:
    """Weights of one IR node in Keras layouts: conv (kh, kw, cin/g, cout), depthwise (kh, kw, cin, mult),
    dense (cin, units); ``bn`` = (gamma, beta, moving_mean, moving_variance) of a folded or standalone BN."""

    kernel: np.ndarray | None = None
    bias: np.ndarray | None = None
    bn: tuple | None = None
    eps: float = BN_EPS


# ---- weights ----------------------------------------------------------------------------------------------------
def random_weights(graph: LayerGraph, seed: int = 0) -> dict[int, LayerWeights]:
    """Seeded He-uniform kernels and small biases (BN already folded): latency does not depend on the values,
    but finite, well-scaled outputs keep the models usable for checks.

    For speed, kernels are scaled windows of one seeded random pool (the size of the largest kernel), each at its
    own offset so that no two layers share values."""
    rng = np.random.default_rng(seed)
    specs = []
    out: dict[int, LayerWeights] = {}
    for i in _needed_nodes(graph):
        op = OPS[graph.op[i]]
        kh, kw, _, _, _, groups, _, _, _, _, mult = (int(v) for v in graph.attr[i])
        cin, cout = int(graph.in_shape[i][2]), int(graph.out_shape[i][2])
        # drawn in the TFLite layout and handed over as a Keras-layout view, so lowering copies nothing
        if op == "conv":
            specs.append((i, (cout, kh, kw, cin // groups), (1, 2, 3, 0), kh * kw * (cin // groups), cout))
        elif op == "dwconv":
            specs.append((i, (kh, kw, cin, mult), (0, 1, 2, 3), kh * kw, cout))
        elif op == "dense":
            specs.append((i, (cout, cin), (1, 0), cin, cout))
        elif op == "bn":
            out[i] = LayerWeights(bn=(_uniform(rng, cout, 0.5, 1.5), _uniform(rng, cout, -0.1, 0.1),
                                      _uniform(rng, cout, -0.1, 0.1), _uniform(rng, cout, 0.5, 1.5)))  # fmt: skip
    if not specs:
        return out
    sizes = [int(np.prod(shape)) for _, shape, _, _, _ in specs]
    slack = max(1024, len(specs))
    pool = rng.random(max(sizes) + slack, dtype=np.float32)
    pool -= np.float32(0.5)
    offsets = rng.choice(slack, size=len(specs), replace=False)
    for (i, shape, to_keras, fan_in, cout), n, off in zip(specs, sizes, offsets, strict=True):
        lim = np.float32(2.0 * np.sqrt(6.0 / max(fan_in, 1)))  # pool values are in [-0.5, 0.5)
        kernel = (pool[off : off + n] * lim).reshape(shape)
        out[i] = LayerWeights(kernel=kernel.transpose(to_keras), bias=_uniform(rng, cout, -0.05, 0.05))
    return out


def _uniform(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    return (lo + (hi - lo) * rng.random(n, dtype=np.float32)).astype(np.float32)


def keras_weights(model, graph: LayerGraph) -> dict[int, LayerWeights]:
    """The weights of a model made by ``build_keras(graph)``, per node (layers are named ``n{i}_{op}``)."""
    out: dict[int, LayerWeights] = {}
    names = {layer.name: layer for layer in model.layers}
    for i in _needed_nodes(graph):
        op = OPS[graph.op[i]]
        if op not in ("conv", "dwconv", "dense", "bn"):
            continue
        layer = names.get(f"n{i}_{op}")
        if layer is None:
            raise LetiError(f"the Keras model has no layer n{i}_{op}", "model")
        w = [np.asarray(a, dtype=np.float32) for a in layer.get_weights()]
        if op == "bn":
            out[i] = LayerWeights(bn=tuple(w), eps=float(layer.epsilon))
            continue
        lw = LayerWeights(kernel=w[0], bias=w[1] if len(w) > 1 else None)
        bn_layer = names.get(f"n{i}_{op}_bn")
        if bn_layer is not None:
            lw.bn = tuple(np.asarray(a, dtype=np.float32) for a in bn_layer.get_weights())
            lw.eps = float(bn_layer.epsilon)
        out[i] = lw
    return out


def randomize_keras_model(model, seed: int = 0) -> None:
    """Give a Keras model's biases and BatchNorm statistics seeded non-trivial values, in place.

    Keras starts them at 0 and 1, and the converter drops what that makes trivial (zero biases of dense layers,
    BN shifts of zero) while a near-identity BN hides mistakes in BN folding. Verifying the fast path against
    the converter on such a model checks the folding arithmetic for real.
    """
    rng = np.random.default_rng(seed)
    for v in model.weights:
        path = v.path
        if "gamma" in path or "moving_variance" in path:
            vals = rng.uniform(0.5, 1.5, v.shape)
        elif "beta" in path or "moving_mean" in path or path.endswith("bias"):
            vals = rng.normal(0.0, 0.1, v.shape)
        else:
            continue
        v.assign(vals.astype(np.float32))


def _needed_nodes(graph: LayerGraph) -> list[int]:
    """Nodes the output depends on, in id order: what a Keras functional model (and so the converter) keeps."""
    n = graph.n_nodes
    keep = np.zeros(n, dtype=bool)
    keep[n - 1] = True
    # edges are sorted by destination, so one backward sweep over destinations marks every ancestor
    ptr = np.searchsorted(graph.dst, np.arange(n + 1))
    src = graph.src
    for i in range(n - 1, -1, -1):
        if keep[i]:
            keep[src[ptr[i] : ptr[i + 1]]] = True
    return [int(i) for i in np.flatnonzero(keep)]


# ---- the op list -----------------------------------------------------------------------------------------------
_F32, _I32, _F16 = fb.TensorType.FLOAT32, fb.TensorType.INT32, fb.TensorType.FLOAT16
_FUSED = {"NONE": 0, "RELU": 1, "RELU6": 3}
_ACT_FUSABLE = {
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED",
    "ADD",
    "MUL",
    "MAX_POOL_2D",
    "AVERAGE_POOL_2D",
}
_AFFINE = {"CONV_2D", "DEPTHWISE_CONV_2D"}
_WINDOWED = {"CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D"}
_VECTOR_OPS = ("dense", "act", "add", "mul", "bn", "zero", "concat", "reshape")  # fine on a (1, C) vector


@dataclass
class _Tensor:
    shape: tuple
    dtype: int = _F32
    data: np.ndarray | None = None
    name: str = ""


@dataclass
class _Op:
    code: str
    inputs: list
    outputs: list
    opts: dict = field(default_factory=dict)
    act: str = "NONE"
    dead: bool = False


class _Net:
    """Tensors and ops under construction; ops stay in creation order (a topological order)."""

    def __init__(self):
        self.tensors: list[_Tensor] = []
        self.ops: list[_Op] = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []

    def tensor(self, shape, name: str, data: np.ndarray | None = None, dtype: int = _F32) -> int:
        self.tensors.append(_Tensor(tuple(int(s) for s in shape), dtype, data, name))
        return len(self.tensors) - 1

    def const(self, arr: np.ndarray, name: str) -> int:
        if arr.dtype != np.int32:
            arr = arr.astype(np.float32, copy=False)
        dtype = _I32 if arr.dtype == np.int32 else _F32
        return self.tensor(arr.shape, name, np.ascontiguousarray(arr), dtype)

    def scalar(self, v: float, name: str) -> int:
        return self.const(np.array(v, dtype=np.float32), name)

    def op(self, code: str, inputs: list, shape, name: str, **opts) -> int:
        out = self.tensor(shape, name)
        self.ops.append(_Op(code, list(inputs), [out], opts))
        return out

    def is_const(self, t: int) -> bool:
        return t >= 0 and self.tensors[t].data is not None


# ---- lowering -----------------------------------------------------------------------------------------------
def _act_ops(net: _Net, x: int, fn: str, shape, name: str) -> int:
    """The ops Keras' activation layers become before the converter's rewrites."""
    if fn == "none":
        return x
    if fn == "relu":
        return net.op("RELU", [x], shape, name)
    if fn == "relu6":
        return net.op("RELU6", [x], shape, name)
    if fn == "hswish":
        return net.op("HARD_SWISH", [x], shape, name)
    if fn == "sigmoid":
        return net.op("LOGISTIC", [x], shape, name)
    if fn == "tanh":
        return net.op("TANH", [x], shape, name)
    if fn == "gelu":
        return net.op("GELU", [x], shape, name)
    if fn == "leaky_relu":  # keras' leaky_relu activation: slope 0.2
        return net.op("LEAKY_RELU", [x], shape, name, alpha=0.2)
    if fn == "softmax":
        return net.op("SOFTMAX", [x], shape, name, beta=1.0)
    if fn == "swish":  # keras silu = x * sigmoid(x)
        s = net.op("LOGISTIC", [x], shape, name + "/sigmoid")
        return net.op("MUL", [x, s], shape, name)
    if fn == "hsigmoid":  # keras hard_sigmoid = relu6(x + 3) / 6
        y = net.op("ADD", [x, net.scalar(3.0, name + "/3")], shape, name + "/add")
        y = net.op("RELU6", [y], shape, name + "/relu6")
        return net.op("MUL", [y, net.scalar(1.0 / 6.0, name + "/sixth")], shape, name)
    raise FastPathUnsupported(f"no lowering for activation {fn}", "graph")


def _pad_ops(net: _Net, x: int, amounts: tuple, mode: str, shape, name: str) -> int:
    """PAD / MIRROR_PAD for the positive amounts, then a STRIDED_SLICE for the negative ones (a crop), as the
    converter writes leti's SpatialPad layer (``keras_model.py``)."""
    t, lf, b, r = amounts
    _, h, w, c = shape
    if max(amounts) > 0:
        pads = np.array([[0, 0], [max(t, 0), max(b, 0)], [max(lf, 0), max(r, 0)], [0, 0]], dtype=np.int32)
        ph, pw = h - min(t, 0) - min(b, 0), w - min(lf, 0) - min(r, 0)
        if mode == "constant":
            x = net.op("PAD", [x, net.const(pads, name + "/pads")], (1, ph, pw, c), name + "/pad")
        elif mode in ("reflect", "symmetric"):
            x = net.op("MIRROR_PAD", [x, net.const(pads, name + "/pads")], (1, ph, pw, c), name + "/pad",
                       mode=int(mode == "symmetric"))  # fmt: skip
        else:
            raise FastPathUnsupported(f"no TFLite op pads in mode {mode!r}", name)
    if min(amounts) < 0:  # leti's SpatialPad layer crops with x[:, t:h-b, l:w-r, :]
        ph, pw = net.tensors[x].shape[1:3]
        begin = net.const(np.array([0, max(-t, 0), max(-lf, 0), 0], dtype=np.int32), name + "/begin")
        end = net.const(np.array([0, ph - max(-b, 0), pw - max(-r, 0), 0], dtype=np.int32), name + "/end")
        strides = net.const(np.ones(4, dtype=np.int32), name + "/strides")
        x = net.op("STRIDED_SLICE", [x, begin, end, strides], shape, name + "/crop", beginMask=9, endMask=9)
    net.tensors[x].name = name
    return x


def _bn_ops(net: _Net, x: int, lw: LayerWeights, shape, name: str) -> int:
    gamma, beta, mean, var = lw.bn
    scale = (gamma / np.sqrt(var + np.float32(lw.eps))).astype(np.float32)
    shift = (beta - mean * scale).astype(np.float32)
    y = net.op("MUL", [x, net.const(scale, name + "/scale")], shape, name + "/mul")
    return net.op("ADD", [y, net.const(shift, name + "/shift")], shape, name)


def _lower(graph: LayerGraph, weights: dict[int, LayerWeights]) -> _Net:
    net = _Net()
    tens: dict[int, int] = {}
    rank2: set[int] = set()  # IR nodes whose tensor is (1, C): after a global pool without keepdims
    for i in _needed_nodes(graph):
        op = OPS[graph.op[i]]
        kh, kw, sh, sw, dil, groups, act, bn, _bias, pad, extra = (int(v) for v in graph.attr[i])
        ins = graph.inputs_of(i)
        xs = [tens[j] for j in ins]
        x = xs[0] if xs else -1
        flat = bool(ins) and ins[0] in rank2
        h, w, c = (int(v) for v in graph.out_shape[i])
        shape = (1, c) if flat else (1, h, w, c)
        nm = f"n{i}_{op}"
        if flat and op not in _VECTOR_OPS:
            if not (graph.op[ins[0]] == OP_CODE["gap"] and len(ins) == 1):
                raise FastPathUnsupported(f"{op} on a flattened (1, C) tensor", f"node {i}")
            # what Keras' Reshape((1, 1, C)) becomes; the converter then keeps the MEAN's dims (see _rewrite)
            cin = int(graph.in_shape[i][2])
            s4 = net.const(np.array([1, 1, 1, cin], dtype=np.int32), nm + "/shape4")
            x = net.op("RESHAPE", [x, s4], (1, 1, 1, cin), nm + "/reshape4")
            xs, flat, shape = [x], False, (1, h, w, c)
        if op == "input":
            y = net.tensor(shape, "input")
            net.inputs.append(y)
        elif op in ("conv", "dwconv"):
            lw = weights[i]
            cin = int(graph.in_shape[i][2])
            if op == "conv":
                filt = lw.kernel.transpose(3, 0, 1, 2)  # HWIO -> OHWI
                version = 6 if groups > 1 else 1
                opts = dict(padding=pad, strideH=sh, strideW=sw, dilationHFactor=dil, dilationWFactor=dil)
            else:
                filt = lw.kernel.reshape(1, kh, kw, cin * extra)  # output channel c*mult + m, as TF orders it
                version = 2 if dil > 1 else 1
                opts = dict(padding=pad, strideH=sh, strideW=sw, depthMultiplier=extra, dilationHFactor=dil,
                            dilationWFactor=dil)  # fmt: skip
            bias = lw.bias if lw.bias is not None else np.zeros(c, np.float32)
            y = net.op("CONV_2D" if op == "conv" else "DEPTHWISE_CONV_2D",
                       [x, net.const(filt, nm + "/filter"), net.const(bias, nm + "/bias")], shape, nm,
                       _version=version, **opts)  # fmt: skip
            if bn and lw.bn is not None:  # random weights come with BN already folded
                y = _bn_ops(net, y, lw, shape, nm + "_bn")
            y = _act_ops(net, y, ACTS[act], shape, nm + "_act")
        elif op == "dense":
            lw = weights[i]
            keep = not flat
            b = lw.bias
            bias_t = -1 if b is None or not b.any() else net.const(b, nm + "/bias")
            y = net.op("FULLY_CONNECTED", [x, net.const(lw.kernel.T, nm + "/weights"), bias_t],
                       shape, nm, keepNumDims=keep, _version=5 if keep else 1)  # fmt: skip
            y = _act_ops(net, y, ACTS[act], shape, nm + "_act")
        elif op in ("maxpool", "avgpool"):
            code = "MAX_POOL_2D" if op == "maxpool" else "AVERAGE_POOL_2D"
            y = net.op(
                code, [x], shape, nm, padding=pad, strideH=sh, strideW=sw, filterHeight=kh, filterWidth=kw
            )
        elif op == "gap":
            axes = net.const(np.array([1, 2], dtype=np.int32), nm + "/axes")
            if not extra:
                shape = (1, c)
                rank2.add(i)
            y = net.op("MEAN", [x, axes], shape, nm, keepDims=bool(extra))
        elif op == "add":  # Keras' Add sums left to right
            y = xs[0]
            for k, t in enumerate(xs[1:]):
                y = net.op("ADD", [y, t], shape, nm if k == len(xs) - 2 else f"{nm}/{k}")
        elif op == "concat":
            y = net.op("CONCATENATION", xs, shape, nm, axis=-1)
        elif op == "mul":
            y = net.op("MUL", xs, shape, nm)
        elif op == "act":
            y = _act_ops(net, x, ACTS[act], shape, nm)
        elif op == "bn":
            y = _bn_ops(net, x, weights[i], shape, nm)
        elif op == "zero":
            y = net.op("MUL", [x, net.scalar(0.0, nm + "/zero")], shape, nm)
        elif op == "shuffle":
            g = groups
            s5 = net.const(np.array([1, h, w, g, c // g], dtype=np.int32), nm + "/shape5")
            y = net.op("RESHAPE", [x, s5], (1, h, w, g, c // g), nm + "/reshape")
            perm = net.const(np.array([0, 1, 2, 4, 3], dtype=np.int32), nm + "/perm")
            y = net.op("TRANSPOSE", [y, perm], (1, h, w, c // g, g), nm + "/transpose", _version=4)
            s4 = net.const(np.array([1, h, w, c], dtype=np.int32), nm + "/shape4")
            y = net.op("RESHAPE", [y, s4], shape, nm)
        elif op == "pad":
            y = _pad_ops(net, x, (kh, kw, sh, sw), PAD_MODES[extra], (1, h, w, c), nm)
        elif op == "reshape":
            shape = (1, c) if extra else (1, h, w, c)
            flat = bool(extra)
            y = net.op("RESHAPE", [x, net.const(np.array(shape, dtype=np.int32), nm + "/shape")], shape, nm)
        elif op == "resize":
            code = "RESIZE_BILINEAR" if RESIZE_MODES[extra] == "bilinear" else "RESIZE_NEAREST_NEIGHBOR"
            size = net.const(np.array([h, w], dtype=np.int32), nm + "/size")
            y = net.op(code, [x, size], shape, nm, halfPixelCenters=True, _version=3)
        elif op == "slice":
            begin = net.const(np.array([0, 0, 0, extra], dtype=np.int32), nm + "/begin")
            end = net.const(np.array([0, 0, 0, extra + c], dtype=np.int32), nm + "/end")
            strides = net.const(np.array([1, 1, 1, 1], dtype=np.int32), nm + "/strides")
            y = net.op("STRIDED_SLICE", [x, begin, end, strides], shape, nm, beginMask=7, endMask=7)
        else:  # pragma: no cover - OPS and this function change together
            raise FastPathUnsupported(f"no lowering for op {op}", f"node {i}")
        tens[i] = y
        if flat:  # elementwise ops and dense keep a (1, C) vector flat
            rank2.add(i)
    net.outputs.append(tens[graph.n_nodes - 1])
    return net


# ---- rewrites (mirroring the converter) ---------------------------------------------------------------------
def _const_operand(net: _Net, op: _Op) -> tuple[int, int] | None:
    """(data input, const input) of a binary op with exactly one constant operand."""
    if op.code not in ("ADD", "MUL") or len(op.inputs) != 2:
        return None
    a, b = op.inputs
    ca, cb = net.is_const(a), net.is_const(b)
    if ca == cb:
        return None
    return (b, a) if ca else (a, b)


def _rewrite(net: _Net) -> None:
    changed = True
    while changed:
        changed = _fold_and_fuse(net) | _cse(net)
    net.ops = [op for op in net.ops if not op.dead]


def _uses(net: _Net) -> tuple[dict, dict]:
    producer, consumers = {}, {}
    for op in net.ops:
        if op.dead:
            continue
        for t in op.outputs:
            producer[t] = op
        for t in op.inputs:
            if t >= 0 and not net.is_const(t):
                consumers.setdefault(t, []).append(op)
    for t in net.outputs:
        consumers.setdefault(t, []).append(None)  # the graph output counts as a use
    return producer, consumers


def _fold_and_fuse(net: _Net) -> bool:
    producer, consumers = _uses(net)
    changed = False
    for op in net.ops:
        if op.dead:
            continue
        # RELU of a RELU (fused or not), RELU6 of a RELU6: the second one goes, whoever else reads the first
        if op.code in ("RELU", "RELU6"):
            p = producer.get(op.inputs[0])
            if p is not None and (p.act == op.code or (p.code == op.code and p.act == "NONE")):
                return _bypass(net, op, op.inputs[0])
        pair = _const_operand(net, op)
        # x + 0 is x (a BN whose shift is zero, as Keras initialises it, keeps only its MUL)
        if pair is not None and op.code == "ADD" and op.act == "NONE" and not net.tensors[pair[1]].data.any():
            return _bypass(net, op, pair[0])
        # ADD of a constant to an ADD of a constant: one ADD of the summed constants (BN shift + hard_sigmoid's 3)
        if pair is not None and op.code == "ADD":
            p = producer.get(pair[0])
            pp = _const_operand(net, p) if p is not None else None
            if (
                pp is not None
                and p.code == "ADD"
                and p.act == "NONE"
                and len(consumers.get(pair[0], ())) == 1
            ):
                total = (net.tensors[pp[1]].data + net.tensors[pair[1]].data).astype(np.float32)
                op.inputs = [pp[0], net.const(total, net.tensors[pair[1]].name)]
                p.dead = True
                return True
        # a MUL / ADD by a constant after a conv folds into the conv's filter and bias
        if pair is not None:
            x, k = pair
            p = producer.get(x)
            kd = net.tensors[k].data
            cout = net.tensors[x].shape[-1]
            if (
                p is not None
                and p.code in _AFFINE
                and p.act == "NONE"
                and len(consumers.get(x, ())) == 1
                and kd.size in (1, cout)
                and kd.ndim <= 1
            ):
                _fold_into_producer(net, p, op.code, kd)
                p.outputs = op.outputs
                op.dead = True
                producer[op.outputs[0]] = p
                changed = True
                continue
        # MEAN without keepDims then a RESHAPE to (1, 1, 1, C): one MEAN that keeps its dims
        if op.code == "RESHAPE" and len(net.tensors[op.outputs[0]].shape) == 4:
            x = op.inputs[0]
            p = producer.get(x)
            if (
                p is not None
                and p.code == "MEAN"
                and not p.opts["keepDims"]
                and len(consumers.get(x, ())) == 1
            ):
                p.opts["keepDims"] = True
                p.outputs = op.outputs
                op.dead = True
                producer[op.outputs[0]] = p
                changed = True
                continue
        # RELU / RELU6 fuse into the op that produces their input
        if op.code in ("RELU", "RELU6"):
            x = op.inputs[0]
            p = producer.get(x)
            if (
                p is not None
                and p.code in _ACT_FUSABLE
                and p.act == "NONE"
                and len(consumers.get(x, ())) == 1
            ):
                p.act = op.code
                p.outputs = op.outputs
                op.dead = True
                producer[op.outputs[0]] = p
                changed = True
                continue
        # a scalar MUL in front of a conv folds into the conv's filter (hard_sigmoid's / 6)
        if op.code in _AFFINE:
            x = op.inputs[0]
            p = producer.get(x)
            pp = _const_operand(net, p) if p is not None else None
            if (
                pp is not None
                and p.code == "MUL"
                and p.act == "NONE"
                and net.tensors[pp[1]].data.size == 1
                and len(consumers.get(x, ())) == 1
            ):
                f = op.inputs[1]
                net.tensors[f].data = (net.tensors[f].data * net.tensors[pp[1]].data.reshape(())).astype(
                    np.float32
                )
                op.inputs[0] = pp[0]
                p.dead = True
                consumers.setdefault(pp[0], []).append(op)
                changed = True
    return changed


def _bypass(net: _Net, op: _Op, src: int) -> bool:
    """Drop ``op``, whose output equals its input ``src``; its readers read ``src`` (use counts change, so the
    caller rescans)."""
    out = op.outputs[0]
    op.dead = True
    for other in net.ops:
        other.inputs = [src if t == out else t for t in other.inputs]
    net.outputs = [src if t == out else t for t in net.outputs]
    return True


def _fold_into_producer(net: _Net, conv: _Op, code: str, k: np.ndarray) -> None:
    f, b = conv.inputs[1], conv.inputs[2]
    kv = k.reshape(-1).astype(np.float32)
    bias = net.tensors[b].data
    if code == "MUL":
        filt = net.tensors[f].data
        # the output channel is axis 0 of a conv filter (OHWI) and the last axis of a depthwise one (1HWC)
        scale = kv.reshape(-1, 1, 1, 1) if conv.code == "CONV_2D" else kv
        net.tensors[f].data = (filt * scale).astype(np.float32)
        net.tensors[b].data = (bias * kv).astype(np.float32)
    else:
        net.tensors[b].data = (bias + kv).astype(np.float32)


def _cse(net: _Net) -> bool:
    """Merge weightless ops that compute the same thing from the same tensors (the converter's CSE)."""
    seen: dict = {}
    replace: dict[int, int] = {}
    changed = False
    for op in net.ops:
        if op.dead:
            continue
        op.inputs = [replace.get(t, t) for t in op.inputs]
        key_inputs = []
        weighted = False
        for t in op.inputs:
            if net.is_const(t):
                d = net.tensors[t].data
                if d.size > 16:
                    weighted = True
                    break
                key_inputs.append(("c", d.dtype.str, d.shape, d.tobytes()))
            else:
                key_inputs.append(t)
        if weighted:
            continue
        key = (op.code, op.act, tuple(sorted(op.opts.items())), tuple(key_inputs))
        other = seen.get(key)
        if other is None:
            seen[key] = op
            continue
        replace[op.outputs[0]] = other.outputs[0]
        op.dead = True
        changed = True
    net.outputs = [replace.get(t, t) for t in net.outputs]
    return changed


def _pad_may_fold(net: _Net, pad: _Op, users) -> bool:
    """Whether ``pad`` alone feeds a VALID conv / pool whose output has SAME's size on the unpadded input: the
    converter turns such pairs into one SAME op (importers fold them the same way, so IR graphs rarely hold one)."""
    if len(users) != 1 or users[0] is None or users[0].code not in _WINDOWED or users[0].opts["padding"] != 1:
        return False
    u = users[0]
    _, h, w, _ = net.tensors[pad.inputs[0]].shape
    if u.code in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        kh, kw = net.tensors[u.inputs[1]].shape[1:3]
        dil = u.opts["dilationHFactor"]
    else:
        kh, kw, dil = u.opts["filterHeight"], u.opts["filterWidth"], 1
    same = (
        out_size(h, kh, u.opts["strideH"], dil, PAD_SAME),
        out_size(w, kw, u.opts["strideW"], dil, PAD_SAME),
    )
    return tuple(net.tensors[u.outputs[0]].shape[1:3]) == same


def _check_mirrored(net: _Net) -> None:
    """Refuse patterns where the converter rewrites in ways this module does not copy (measured: a constant
    MUL / ADD next to a fully connected layer is folded into it in ways that depend on the values; a per-channel
    constant MUL in front of a conv may be folded into its filter)."""
    producer, consumers = _uses(net)
    for op in net.ops:
        if op.code == "PAD" and _pad_may_fold(net, op, consumers.get(op.outputs[0], ())):
            raise FastPathUnsupported("a PAD that makes the VALID window after it SAME (the converter may fold it)",
                                      "graph")  # fmt: skip
        pair = _const_operand(net, op)
        if pair is None:
            continue
        p = producer.get(pair[0])
        if p is not None and p.code == "FULLY_CONNECTED" and len(consumers.get(pair[0], ())) == 1:
            raise FastPathUnsupported(f"a constant {op.code} after a fully connected layer", "graph")
        users = consumers.get(op.outputs[0], ())
        if len(users) != 1 or users[0] is None or op.act != "NONE":
            continue
        if users[0].code == "FULLY_CONNECTED":
            raise FastPathUnsupported(f"a constant {op.code} in front of a fully connected layer", "graph")
        if users[0].code in _AFFINE and op.code == "MUL":
            raise FastPathUnsupported(f"a per-channel constant MUL in front of {users[0].code}", "graph")


# ---- serialisation -----------------------------------------------------------------------------------------
class _AlignedBuffer(fb.BufferT):
    """A buffer whose bytes start on a 16-byte boundary, like the converter writes them."""

    def Pack(self, builder):
        data = None
        if self.data is not None:
            raw = self.data.reshape(-1).view(np.uint8)  # a view of the contiguous array: no copy
            n = raw.size
            builder.StartVector(1, n, 16)
            builder.head = builder.head - n
            builder.Bytes[builder.head : builder.head + n] = memoryview(raw)
            data = builder.EndVector(n)
        fb.BufferStart(builder)
        if data is not None:
            fb.BufferAddData(builder, data)
        return fb.BufferEnd(builder)


# ops whose options are copied field by field from ``_Op.opts`` (the converter writes GELU's as exact: the default)
_PLAIN_OPTIONS = {
    "RESIZE_BILINEAR": ("ResizeBilinearOptions", ("halfPixelCenters",)),
    "RESIZE_NEAREST_NEIGHBOR": ("ResizeNearestNeighborOptions", ("halfPixelCenters",)),
    "GELU": ("GeluOptions", ()),
    "LEAKY_RELU": ("LeakyReluOptions", ("alpha",)),
    "SOFTMAX": ("SoftmaxOptions", ("beta",)),
    "MIRROR_PAD": ("MirrorPadOptions", ("mode",)),
}


def _options(op: _Op):
    o, fused = op.opts, _FUSED[op.act]
    if op.code == "CONV_2D":
        t = fb.Conv2DOptionsT()
        t.padding, t.strideW, t.strideH = o["padding"], o["strideW"], o["strideH"]
        t.dilationWFactor, t.dilationHFactor, t.fusedActivationFunction = (
            o["dilationWFactor"],
            o["dilationHFactor"],
            fused,
        )
        return fb.BuiltinOptions.Conv2DOptions, t
    if op.code == "DEPTHWISE_CONV_2D":
        t = fb.DepthwiseConv2DOptionsT()
        t.padding, t.strideW, t.strideH, t.depthMultiplier = (
            o["padding"],
            o["strideW"],
            o["strideH"],
            o["depthMultiplier"],
        )
        t.dilationWFactor, t.dilationHFactor, t.fusedActivationFunction = (
            o["dilationWFactor"],
            o["dilationHFactor"],
            fused,
        )
        return fb.BuiltinOptions.DepthwiseConv2DOptions, t
    if op.code == "FULLY_CONNECTED":
        t = fb.FullyConnectedOptionsT()
        t.fusedActivationFunction, t.keepNumDims = fused, o["keepNumDims"]
        return fb.BuiltinOptions.FullyConnectedOptions, t
    if op.code in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        t = fb.Pool2DOptionsT()
        t.padding, t.strideW, t.strideH = o["padding"], o["strideW"], o["strideH"]
        t.filterWidth, t.filterHeight, t.fusedActivationFunction = o["filterWidth"], o["filterHeight"], fused
        return fb.BuiltinOptions.Pool2DOptions, t
    if op.code == "MEAN":
        t = fb.ReducerOptionsT()
        t.keepDims = o["keepDims"]
        return fb.BuiltinOptions.ReducerOptions, t
    if op.code == "ADD":
        t = fb.AddOptionsT()
        t.fusedActivationFunction = fused
        return fb.BuiltinOptions.AddOptions, t
    if op.code == "MUL":
        t = fb.MulOptionsT()
        t.fusedActivationFunction = fused
        return fb.BuiltinOptions.MulOptions, t
    if op.code == "CONCATENATION":
        t = fb.ConcatenationOptionsT()
        t.axis, t.fusedActivationFunction = o["axis"], fused
        return fb.BuiltinOptions.ConcatenationOptions, t
    if op.code in _PLAIN_OPTIONS:
        name, fields = _PLAIN_OPTIONS[op.code]
        t = getattr(fb, name + "T")()
        for f in fields:
            setattr(t, f, o[f])
        return getattr(fb.BuiltinOptions, name), t
    if op.code == "STRIDED_SLICE":
        t = fb.StridedSliceOptionsT()
        t.beginMask, t.endMask = o["beginMask"], o["endMask"]
        return fb.BuiltinOptions.StridedSliceOptions, t
    return fb.BuiltinOptions.NONE, None


def _dedupe_consts(net: _Net) -> None:
    """One tensor per distinct constant, as the converter writes them (e.g. NB201's many ``* 0`` scalars, or the
    all-zero filters of convs that a ``zero`` folded into): fp16 models get one DEQUANTIZE per distinct constant."""
    groups: dict[tuple, list[int]] = {}
    for op in net.ops:
        for t in op.inputs:
            if net.is_const(t):
                d = net.tensors[t].data
                # shape and first bytes: random weights never collide, so their contents are never hashed
                groups.setdefault((net.tensors[t].dtype, d.shape, d.reshape(-1)[:16].tobytes()), []).append(t)
    remap: dict[int, int] = {}
    for ids in groups.values():
        if len(set(ids)) < 2:
            continue  # contents are hashed only where shape and first bytes collide
        seen: dict[bytes, int] = {}
        for t in dict.fromkeys(ids):
            key = hashlib.sha1(net.tensors[t].data.tobytes()).digest()
            remap[t] = seen.setdefault(key, t)
    if remap:
        for op in net.ops:
            op.inputs = [remap.get(t, t) for t in op.inputs]


def _to_fp16(net: _Net) -> None:
    """Float16 weights with a DEQUANTIZE op in front of each use, as the converter's fp16 mode writes them."""
    deq_ops: list[_Op] = []  # the converter puts every DEQUANTIZE first
    new_ops: list[_Op] = []
    made: dict[int, int] = {}
    for op in net.ops:
        for k, t in enumerate(op.inputs):
            if not net.is_const(t) or net.tensors[t].dtype != _F32:
                continue
            if t not in made:
                src = net.tensors[t]
                half = net.tensor(src.shape, src.name + "/fp16", src.data.astype(np.float16), _F16)
                deq = net.tensor(src.shape, src.name)
                deq_ops.append(_Op("DEQUANTIZE", [half], [deq], {"_version": 3}))
                made[t] = deq
            op.inputs[k] = made[t]
        new_ops.append(op)
    net.ops = deq_ops + new_ops


def _serialize(net: _Net) -> bytes:
    codes: dict[str, int] = {}
    versions: dict[str, int] = {}
    for op in net.ops:
        codes.setdefault(op.code, len(codes))
        versions[op.code] = max(versions.get(op.code, 1), op.opts.get("_version", 1))
    model = fb.ModelT()
    model.version = 3
    model.description = "leti fast path"
    model.operatorCodes = []
    for code in codes:
        oc = fb.OperatorCodeT()
        oc.builtinCode = getattr(fb.BuiltinOperator, code)
        oc.deprecatedBuiltinCode = min(oc.builtinCode, 127)  # the old int8 field saturates at 127
        oc.version = versions[code]
        model.operatorCodes.append(oc)
    used = (
        {t for op in net.ops for t in op.inputs + op.outputs if t >= 0} | set(net.inputs) | set(net.outputs)
    )
    order = sorted(used)
    index = {t: k for k, t in enumerate(order)}
    buffers = [fb.BufferT()]  # buffer 0 is the empty sentinel that every activation tensor points to
    tensors = []
    total = 0
    for t in order:
        src = net.tensors[t]
        tt = fb.TensorT()
        tt.shape = list(src.shape)
        tt.type = src.dtype
        tt.name = src.name
        if src.data is not None:
            buf = _AlignedBuffer()
            buf.data = src.data
            total += src.data.nbytes
            tt.buffer = len(buffers)
            buffers.append(buf)
        else:
            tt.buffer = 0
        tensors.append(tt)
    ops = []
    for op in net.ops:
        ot = fb.OperatorT()
        ot.opcodeIndex = codes[op.code]
        ot.inputs = [index[t] if t >= 0 else -1 for t in op.inputs]
        ot.outputs = [index[t] for t in op.outputs]
        ot.builtinOptionsType, ot.builtinOptions = _options(op)
        ops.append(ot)
    sg = fb.SubGraphT()
    sg.tensors, sg.operators, sg.name = tensors, ops, "main"
    sg.inputs = [index[t] for t in net.inputs]
    sg.outputs = [index[t] for t in net.outputs]
    model.subgraphs = [sg]
    model.buffers = buffers
    # room for everything up front: growing copies the whole buffer
    builder = flatbuffers.Builder(total + 16 * len(buffers) + 256 * (len(tensors) + len(ops)) + 65536)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(memoryview(builder.Bytes)[builder.Head() :])


# ---- public API ----------------------------------------------------------------------------------------------
def _prepared(graph: LayerGraph, weights: dict[int, LayerWeights] | None, seed: int) -> _Net:
    net = _lower(graph, weights if weights is not None else random_weights(graph, seed))
    _rewrite(net)
    _check_mirrored(net)
    _dedupe_consts(net)
    return net


def unsupported_reason(graph: LayerGraph) -> str | None:
    """Why the fast path cannot mirror the converter for ``graph``, or None when it can."""
    try:
        _prepared(graph, None, 0)
    except FastPathUnsupported as e:
        return str(e)
    return None


def graph_to_tflite(
    graph: LayerGraph, precision: str = "fp32", seed: int = 0, weights: dict[int, LayerWeights] | None = None
) -> bytes:
    """.tflite bytes for ``graph`` written directly (fp32, or fp16 weights); raises FastPathUnsupported.

    ``weights`` (e.g. ``keras_weights(build_keras(graph))``) gives the same numbers as the reference path;
    by default the weights are seeded random.
    """
    if precision not in ("fp32", "fp16"):
        raise FastPathUnsupported(f"the fast path writes fp32 and fp16, not {precision!r}", "precision")
    net = _prepared(graph, weights, seed)
    if precision == "fp16":
        _to_fp16(net)
    return _serialize(net)


__all__ = [
    "FastPathUnsupported",
    "LayerWeights",
    "graph_to_tflite",
    "keras_weights",
    "random_weights",
    "randomize_keras_model",
    "unsupported_reason",
]
