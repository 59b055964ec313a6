"""Keras model (``.keras`` / ``.h5`` file or an in-memory model) -> LayerGraph, layer by layer.

Files are loaded with ``keras.saving.load_model(compile=False, safe_mode=True)``, which refuses Lambda layers'
serialised Python code. Nested models and Sequential models are inlined. Shapes come from the IR's own shape
arithmetic starting at the input (so ``input_shape`` can fix a model built for any size) and are checked against
Keras' shapes where Keras knows them. Mapping rules (Keras layer -> IR):

* Conv2D -> conv (``groups`` kept); DepthwiseConv2D -> dwconv; SeparableConv2D -> dwconv then a 1x1 conv; Dense ->
  dense over the last axis. A BatchNormalization (with center and scale) that only the conv reads folds into it
  (``bn=True``: params count its four vectors, as ``count_params()`` does), then an activation that only it reads.
* Activations: ReLU (max 6 -> relu6, a negative slope -> leaky_relu), LeakyReLU, Softmax, and Activation / keras.ops
  functions relu, relu6, hard_swish / hard_silu, silu / swish, sigmoid, hard_sigmoid, tanh, gelu, leaky_relu,
  softmax. ``relu6(x + 3) / 6`` written with keras.ops (MobileNetV3) -> hsigmoid; ``x * sigmoid(x)`` -> swish;
  ``x * hard_sigmoid(x)`` -> hswish.
* Add / Subtract -> add; Multiply of two tensors -> mul; keras.ops add / subtract / multiply / divide by a constant,
  Rescaling and Normalization -> bn (params as the layer stores them); Concatenate over channels -> concat.
* Max / AveragePooling2D -> pools; GlobalAveragePooling2D -> gap; GlobalMaxPooling2D -> a max pool over the map.
* ZeroPadding2D folds into the VALID conv / pool that alone reads it when that gives SAME's output size, else a pad
  node; Cropping2D -> pad by negative amounts. Reshape / Flatten -> reshape where the (H, W, C) shape changes.
  UpSampling2D / Resizing (nearest, bilinear) -> resize. Dropout-like layers and Identity are dropped.
* leti's own layers (ChannelShuffle, ChannelSlice, Zero, SpatialPad) -> shuffle, slice, zero, pad.
* Anything else (Lambda, recurrent, attention, 1-D / 3-D layers, ...) raises an UnsupportedOpError naming the layer.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leti.errors import GraphError, LetiError, ModelFileError
from leti.graph import shapes as S
from leti.graph.builder import GraphBuilder
from leti.graph.layergraph import LayerGraph
from leti.importers.common import check_input_shape, dynamic_input_error, finish_graph, unsupported

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"  # at offset 0, or after a user block of 512, 1024 or 2048 bytes
# Keras activation function names -> IR activations ("none": the identity)
KERAS_ACTS = {"linear": "none", "relu": "relu", "relu6": "relu6", "hard_swish": "hswish", "hard_silu": "hswish",
              "silu": "swish", "swish": "swish", "sigmoid": "sigmoid", "hard_sigmoid": "hsigmoid", "tanh": "tanh",
              "gelu": "gelu", "leaky_relu": "leaky_relu", "softmax": "softmax"}  # fmt: skip
_OPS_ACTS = {"Relu": "relu", "Relu6": "relu6", "Sigmoid": "sigmoid", "HardSigmoid": "hsigmoid", "Silu": "swish",
             "HardSilu": "hswish", "Gelu": "gelu", "Softmax": "softmax", "Tanh": "tanh",
             "LeakyRelu": "leaky_relu"}  # fmt: skip
_PASS = {"Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
         "ActivityRegularization", "Identity"}  # fmt: skip
_WINDOWED = {"Conv2D", "DepthwiseConv2D", "SeparableConv2D", "MaxPooling2D", "AveragePooling2D"}
_BINARY_OPS = {"Add": "add", "Subtract": "sub", "Multiply": "mul", "Divide": "div", "TrueDivide": "div"}


def keras_fn_act(fn) -> str | None:
    """The IR activation of a Keras activation (a name or a function); None when the IR has none."""
    name = fn if isinstance(fn, str) else getattr(fn, "__name__", str(fn))
    return KERAS_ACTS.get(name)


def keras_layer_act(layer) -> str | None:
    """The IR activation an activation layer (ReLU, LeakyReLU, Softmax, Activation) computes; None otherwise."""
    cls = type(layer).__name__
    if cls == "ReLU":
        cfg = layer.get_config()
        if cfg.get("threshold"):
            return None
        if cfg.get("negative_slope"):
            return "leaky_relu" if cfg.get("max_value") is None else None
        mv = cfg.get("max_value")
        return "relu" if mv is None else "relu6"  # a clamp at another bound costs what relu6 does
    if cls == "LeakyReLU":
        return "leaky_relu"
    if cls == "Softmax":
        axis = layer.get_config().get("axis", -1)
        return "softmax" if axis in (-1, 3, [-1], [3]) else None
    if cls == "Activation":
        return keras_fn_act(layer.get_config()["activation"])
    return None


@dataclass
class _Call:
    """One call of a layer or keras.ops operation, with canonical tensor ids."""

    op: object
    inputs: list[int]
    outputs: list[int]
    args: list  # positional arguments: ("T", tensor id) for tensors, plain values otherwise
    shapes: list  # Keras' output shapes (batch dropped)

    @property
    def kind(self) -> str:
        return type(self.op).__name__

    @property
    def name(self) -> str:
        return getattr(self.op, "name", self.kind)


def _load(path: Path):
    """A Keras model from a .keras / .h5 file; ModelFileError for anything Keras cannot load safely."""
    if not path.is_file():
        raise ModelFileError("no such file", str(path))
    if path.stat().st_size == 0:
        raise ModelFileError("the model file is empty", "model")
    if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
        raise ModelFileError(
            "not a .keras file (a .keras file is a zip archive; this one is corrupt or cut)", "model"
        )
    if path.suffix.lower() != ".keras":
        with open(path, "rb") as f:
            head = f.read(2056)
        if not any(head[k : k + 8] == _HDF5_SIGNATURE for k in (0, 512, 1024, 2048)):
            raise ModelFileError("not an HDF5 file (no HDF5 signature)", "model")
    from leti.tflite.convert import silenced  # deferred with keras below: loads LiteRT

    with silenced():
        import keras

        import leti.tflite.keras_model  # noqa: F401 - registers leti's own layers for deserialisation
    err = None
    with silenced() as out:
        try:
            model = keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as e:  # noqa: BLE001 - Keras raises many types for bad files
            err = e
    if err is not None:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        detail = (lines[0] if lines else out.last_line() or type(err).__name__)[:200]
        raise ModelFileError(f"cannot load the Keras model ({type(err).__name__}: {detail})", "model")
    return model


class _Flattener:
    """The calls of a functional model with nested models inlined, in a topological order."""

    def __init__(self):
        self.calls: list[_Call] = []
        self.alias: dict[int, int] = {}
        self.seen: set[int] = set()

    def canon(self, t) -> int:
        i = id(t)
        while i in self.alias:
            i = self.alias[i]
        return i

    def walk(self, model) -> None:
        import keras

        for depth in sorted(model._nodes_by_depth, reverse=True):
            for nd in model._nodes_by_depth[depth]:
                op = nd.operation
                if isinstance(op, keras.layers.InputLayer):
                    continue
                if isinstance(op, keras.Model):
                    inner = _functional(op)
                    if id(inner) in self.seen:
                        raise ModelFileError(f"the nested model {op.name!r} is called twice", "model")
                    self.seen.add(id(inner))
                    for a, b in zip(inner.inputs, nd.input_tensors, strict=True):
                        self.alias[id(a)] = self.canon(b)
                    self.walk(inner)
                    for a, b in zip(nd.output_tensors, inner.outputs, strict=True):
                        self.alias[id(a)] = self.canon(b)
                    continue
                args = [
                    ("T", self.canon(a)) if isinstance(a, keras.KerasTensor) else a for a in nd.arguments.args
                ]
                shapes = [tuple(t.shape[1:]) for t in nd.output_tensors]
                self.calls.append(
                    _Call(
                        op,
                        [self.canon(t) for t in nd.input_tensors],
                        [id(t) for t in nd.output_tensors],
                        args,
                        shapes,
                    )  # fmt: skip
                )


def _functional(model):
    """The functional graph of a Functional or (built) Sequential model."""
    import keras

    if isinstance(model, keras.Sequential):
        fn = getattr(model, "_functional", None)
        if fn is None:
            raise ModelFileError(
                f"the Sequential model {model.name!r} has no input shape; build it first", "model"
            )
        return fn
    if not hasattr(model, "_nodes_by_depth"):
        raise ModelFileError(f"{type(model).__name__} {model.name!r} is a subclassed model; leti reads functional "
                             "and Sequential models", "model")  # fmt: skip
    return model


class _Reader:
    def __init__(self, model, input_shape):
        fn = _functional(model)
        if len(fn.inputs) != 1 or len(fn.outputs) != 1:
            raise ModelFileError(f"has {len(fn.inputs)} inputs and {len(fn.outputs)} outputs; a LayerGraph has one "
                                 "of each", "model")  # fmt: skip
        flat = _Flattener()
        flat.walk(fn)
        self.calls = flat.calls
        self.input_id = id(fn.inputs[0])
        self.output_id = flat.canon(fn.outputs[0])
        self.in_shape = self._input_shape(tuple(fn.inputs[0].shape), input_shape)
        self.check_keras = check_input_shape(input_shape) is None  # Keras' shapes hold for this input size
        self.readers: dict[int, list[_Call]] = {}
        for c in self.calls:
            for t in c.inputs:
                self.readers.setdefault(t, []).append(c)
        self.readers.setdefault(self.output_id, []).append(None)
        self.b = GraphBuilder(cse=True)  # the TFLite converter merges duplicated weightless ops
        self.node: dict[int, int] = {}
        self.done: set[int] = set()  # id() of calls consumed by a pattern that started earlier
        self.pad_of: dict[int, tuple] = {}  # id(window call) -> (input tensor, top, left, bottom, right)

    @staticmethod
    def _input_shape(keras_shape: tuple, input_shape) -> tuple[int, int, int]:
        if len(keras_shape) != 4:
            raise ModelFileError(f"input shape {keras_shape} is not (batch, H, W, C)", "model")
        want = check_input_shape(input_shape)
        dims = keras_shape[1:]
        if want is None:
            if any(d is None for d in dims):
                raise dynamic_input_error(["N", *dims])
            return tuple(int(d) for d in dims)
        for d, v in zip(dims, want, strict=True):
            if d is not None and d != v:
                raise LetiError(f"(H, W, C) = {want} does not fit the model's input {list(keras_shape)}",
                                "input_shape")  # fmt: skip
        return want

    # ---- helpers -----------------------------------------------------------------------------------------------
    def err(self, c: _Call, reason: str = "has no LayerGraph equivalent") -> ModelFileError:
        return unsupported(c.kind, c.name, reason)

    def x(self, c: _Call, k: int = 0) -> int:
        t = c.inputs[k]
        if t not in self.node:
            raise self.err(c, f"input {k} is not computed from the network input")
        return self.node[t]

    def cfg(self, c: _Call) -> dict:
        return c.op.get_config()

    def bind(self, c: _Call, node: int, k: int = 0) -> None:
        want = c.shapes[k] if k < len(c.shapes) else None
        if self.check_keras and want is not None and None not in want:
            ir = tuple(self.b.shape(node))
            kshape = _ir_shape(want)
            if kshape is not None and ir != kshape:
                raise ModelFileError(f"computes {ir} where Keras says {want}", f"node {c.name!r} ({c.kind})")
        self.node[c.outputs[k]] = node

    def guard(self, c: _Call, fn, *args, **kw) -> int:
        try:
            return fn(*args, **kw)
        except GraphError as e:
            raise ModelFileError(e.reason, f"node {c.name!r} ({c.kind})") from None

    def single_reader(self, t: int) -> _Call | None:
        r = self.readers.get(t, [])
        return r[0] if len(r) == 1 and r[0] is not None else None

    def finish(self, c: _Call, node: int, extra: list) -> None:
        self.bind(c, node)
        for e in extra:
            self.done.add(id(e))
            self.bind(e, node)

    def const_arg(self, c: _Call):
        """(tensor input, constant) of a keras.ops binary op with one constant operand, else None."""
        tens = [a for a in c.args if isinstance(a, tuple) and len(a) == 2 and a[0] == "T"]
        consts = [a for a in c.args if not (isinstance(a, tuple) and len(a) == 2 and a[0] == "T")]
        if len(tens) == 1 and len(consts) == 1:
            return tens[0][1], np.asarray(consts[0], dtype=np.float64)
        return None

    # ---- activations -------------------------------------------------------------------------------------------
    def act_of(self, c: _Call) -> tuple[str, list[_Call]] | None:
        """(IR activation, calls it spans) when ``c`` starts an activation of its first input, else None."""
        kind = c.kind
        if kind in ("ReLU", "LeakyReLU", "Softmax", "Activation"):
            act = keras_layer_act(c.op)
        elif kind in _OPS_ACTS and _is_op(c.op):
            act = _OPS_ACTS[kind]
        elif kind == "Add" and _is_op(c.op):
            return self.hard_sigmoid(c)
        else:
            return None
        if act in ("sigmoid", "hsigmoid"):  # x * gate(x): swish / hard swish
            mul = self.single_reader(c.outputs[0])
            if (
                mul is not None
                and mul.kind == "Multiply"
                and sorted(mul.inputs) == sorted((c.inputs[0], c.outputs[0]))
            ):
                return ("swish" if act == "sigmoid" else "hswish"), [c, mul]
        return (act, [c]) if act is not None else None

    def hard_sigmoid(self, add: _Call) -> tuple[str, list[_Call]] | None:
        """keras.ops: relu6(x + 3) * (1 / 6), and x * that (hard swish)."""
        k = self.const_arg(add)
        if k is None or k[1].size != 1 or abs(float(k[1]) - 3.0) > 1e-6:
            return None
        relu = self.single_reader(add.outputs[0])
        if relu is None or (relu.kind != "ReLU" and not (relu.kind == "Relu6" and _is_op(relu.op))):
            return None
        if relu.kind == "ReLU" and keras_layer_act(relu.op) != "relu6":
            return None
        mul = self.single_reader(relu.outputs[0])
        km = self.const_arg(mul) if mul is not None and mul.kind == "Multiply" else None
        if km is None or km[1].size != 1 or abs(float(km[1]) - 1 / 6) > 1e-6:
            return None
        chain = [add, relu, mul]
        gate = self.single_reader(mul.outputs[0])
        if (
            gate is not None
            and gate.kind == "Multiply"
            and sorted(gate.inputs) == sorted((add.inputs[0], mul.outputs[0]))
        ):
            return "hswish", [*chain, gate]
        return "hsigmoid", chain

    def follow_act(self, t: int) -> tuple[str, list[_Call]]:
        """An activation only ``t`` feeds (or x * gate(x) on ``t``), to fold into the layer producing ``t``."""
        nxt = self.single_reader(t)
        if nxt is not None and nxt.inputs and nxt.inputs[0] == t:
            found = self.act_of(nxt)
            if found is not None:
                return found
        readers = self.readers.get(t, [])
        if len(readers) > 1 and None not in readers:  # the same activation read twice: one after the merge
            found = [self.act_of(r) if r.inputs == [t] else None for r in readers]
            if all(f is not None and len(f[1]) == 1 for f in found) and len({f[0] for f in found}) == 1:
                return found[0][0], [f[1][0] for f in found]
        if len(readers) == 2 and None not in readers:
            for r in readers:
                found = self.act_of(r) if r.inputs and r.inputs[0] == t else None
                gate = found is not None and len(found[1]) >= 2 and found[0] in ("swish", "hswish")
                if gate and all(x in found[1] for x in readers):
                    return found
        return "none", []

    # ---- layers --------------------------------------------------------------------------------------------------
    def window_input(self, c: _Call, kh: int, kw: int, sh: int, sw: int, dil: int) -> tuple[int, int]:
        """(input node, IR padding); a ZeroPadding2D folded in by ``pad`` turns a VALID window into SAME."""
        folded = self.pad_of.get(id(c))
        if folded is not None:
            return self.node[folded[0]], S.PAD_SAME
        return self.x(c), S.PAD_SAME if self.cfg(c).get("padding", "valid") == "same" else S.PAD_VALID

    def conv_like(self, c: _Call) -> None:
        cfg, kind = self.cfg(c), c.kind
        _channels_last(self, c)
        kh, kw = cfg["kernel_size"]
        sh, sw = cfg["strides"]
        dh, dw = cfg.get("dilation_rate", (1, 1))
        if dh != dw:
            raise self.err(c, f"has dilation {dh}x{dw}; the IR has one dilation")
        x, pad = self.window_input(c, kh, kw, sh, sw, dh)
        act = keras_fn_act(cfg.get("activation", "linear"))
        if act is None:
            raise self.err(c, f"has activation {cfg.get('activation')!r}, which the IR cannot represent")
        t, extra, bn = c.outputs[0], [], False
        if act == "none":
            nxt = self.single_reader(t)
            if nxt is not None and nxt.kind == "BatchNormalization" and _plain_bn(nxt):
                extra, bn, t = [nxt], True, nxt.outputs[0]
            act, more = self.follow_act(t)
            extra += more
        bias = bool(cfg.get("use_bias", True))
        if kind == "Conv2D":
            y = self.guard(c, self.b.conv, x, cfg["filters"], kh, kw, sh, sw, groups=cfg.get("groups", 1), dil=dh,
                           act=act, bn=bn, bias=bias, pad=pad)  # fmt: skip
        elif kind == "DepthwiseConv2D":
            y = self.guard(c, self.b.dwconv, x, kh, kw, sh, sw, mult=cfg.get("depth_multiplier", 1), dil=dh, act=act,
                           bn=bn, bias=bias, pad=pad)  # fmt: skip
        else:  # SeparableConv2D: depthwise (no bias) then pointwise
            d = self.guard(c, self.b.dwconv, x, kh, kw, sh, sw, mult=cfg.get("depth_multiplier", 1), dil=dh,
                           bias=False, pad=pad)  # fmt: skip
            y = self.guard(c, self.b.conv, d, cfg["filters"], 1, act=act, bn=bn, bias=bias, pad=S.PAD_VALID)
        self.finish(c, y, extra)

    def dense(self, c: _Call) -> None:
        cfg = self.cfg(c)
        act = keras_fn_act(cfg.get("activation", "linear"))
        if act is None:
            raise self.err(c, f"has activation {cfg.get('activation')!r}, which the IR cannot represent")
        extra = []
        if act == "none":
            act, extra = self.follow_act(c.outputs[0])
        y = self.guard(
            c, self.b.dense, self.x(c), cfg["units"], act=act, bias=bool(cfg.get("use_bias", True))
        )
        self.finish(c, y, extra)

    def pool(self, c: _Call) -> None:
        cfg = self.cfg(c)
        _channels_last(self, c)
        kh, kw = cfg["pool_size"]
        sh, sw = cfg["strides"] or cfg["pool_size"]
        x, pad = self.window_input(c, kh, kw, sh, sw, 1)
        kind = "maxpool" if c.kind == "MaxPooling2D" else "avgpool"
        self.bind(c, self.guard(c, self.b.pool, kind, x, kh, sh, kw=kw, pad=pad, sw=sw))

    def global_pool(self, c: _Call) -> None:
        _channels_last(self, c)
        x = self.x(c)
        if c.kind == "GlobalAveragePooling2D":
            self.bind(c, self.b.gap(x, keepdims=bool(self.cfg(c).get("keepdims", False))))
        else:
            h, w, _ = self.b.shape(x)
            self.bind(c, self.b.pool("maxpool", x, h, 1, kw=w, pad=S.PAD_VALID))

    def zero_padding(self, c: _Call) -> None:
        _channels_last(self, c)
        (t, bot), (lf, r) = self.cfg(c)["padding"]
        x = self.x(c)
        nxt = self.single_reader(c.outputs[0])
        if (
            nxt is not None
            and nxt.kind in _WINDOWED
            and self.same_after_pad(nxt, self.b.shape(x), t, lf, bot, r)
        ):
            self.pad_of[id(nxt)] = (c.inputs[0], t, lf, bot, r)
            self.node[c.outputs[0]] = x  # only the window reads it, and it reads the unpadded input
            return
        self.bind(c, self.guard(c, self.b.pad, x, t, lf, bot, r))

    def same_after_pad(self, c: _Call, shape, t: int, lf: int, bot: int, r: int) -> bool:
        cfg = self.cfg(c)
        if cfg.get("padding") != "valid":
            return False
        kh, kw = cfg.get("kernel_size") or cfg.get("pool_size")
        sh, sw = cfg.get("strides") or cfg.get("pool_size")
        dil = (cfg.get("dilation_rate") or (1, 1))[0]
        padded = S.padded_shape(shape, t, lf, bot, r)
        valid = S.window_out_shape(padded, kh, kw, sh, sw, 1, dil, S.PAD_VALID)
        same = S.window_out_shape(shape, kh, kw, sh, sw, 1, dil, S.PAD_SAME)
        return valid[:2] == same[:2]

    def cropping(self, c: _Call) -> None:
        _channels_last(self, c)
        (t, bot), (lf, r) = self.cfg(c)["cropping"]
        self.bind(c, self.guard(c, self.b.pad, self.x(c), -t, -lf, -bot, -r))

    def reshape(self, c: _Call) -> None:
        x = self.x(c)
        shp = self.b.shape(x)
        if c.kind == "Flatten":
            target = (1, 1, S.elems(shp))
            flat = True
        else:
            ts = self.cfg(c)["target_shape"] if c.kind == "Reshape" else _op_shape(c)
            ts = [int(v) for v in ts]
            if ts.count(-1) == 1:
                ts[ts.index(-1)] = S.elems(shp) // max(1, -int(np.prod(ts)))
            if len(ts) == 3:
                target, flat = tuple(ts), False
            elif len(ts) == 1:
                target, flat = (1, 1, ts[0]), True
            else:
                raise self.err(c, f"reshapes to {tuple(ts)}; only (H, W, C) and flat shapes map to the IR")
        self.bind(c, self.guard(c, self.b.reshape, x, target, flat=flat and shp[:2] != (1, 1)))

    def resize(self, c: _Call) -> None:
        cfg = self.cfg(c)
        x = self.x(c)
        h, w, _ = self.b.shape(x)
        mode = cfg.get("interpolation", "nearest")
        if mode not in ("nearest", "bilinear"):
            raise self.err(c, f"resizes with {mode!r} interpolation; the IR has nearest and bilinear")
        if c.kind == "UpSampling2D":
            a, b2 = cfg["size"]
            oh, ow = h * a, w * b2
        else:
            if cfg.get("crop_to_aspect_ratio") or cfg.get("pad_to_aspect_ratio"):
                raise self.err(c, "crops or pads to an aspect ratio")
            oh, ow = cfg["height"], cfg["width"]
        self.bind(c, self.guard(c, self.b.resize, x, oh, ow, mode))

    def merge(self, c: _Call) -> None:
        kind = c.kind
        xs = [self.x(c, k) for k in range(len(c.inputs))]
        if kind in ("Add", "Subtract"):
            y = self.guard(c, self.b.add, xs)
        elif kind == "Multiply":
            if len(xs) != 2:
                raise self.err(c, f"multiplies {len(xs)} tensors; the IR's mul takes two")
            a, s = xs
            if self.b.shape(a)[:2] == (1, 1) and self.b.shape(s)[:2] != (1, 1):
                a, s = s, a  # the broadcast (squeeze-excite) scale goes second
            y = self.guard(c, self.b.mul, a, s)
        else:  # Concatenate
            if self.cfg(c).get("axis", -1) not in (-1, 3) and not (
                self.cfg(c).get("axis") == 1 and self.b.shape(xs[0])[:2] == (1, 1)
            ):
                raise self.err(c, "concatenates along an axis other than channels")
            y = self.guard(c, self.b.concat, xs)
        self.bind(c, y)

    def binary_op(self, c: _Call) -> None:
        """keras.ops add / subtract / multiply / divide: of two tensors, or of a tensor and a constant."""
        k = self.const_arg(c)
        kind = _BINARY_OPS[c.kind]
        if k is None:
            if len(c.inputs) != 2 or kind == "div":
                raise self.err(c, "has no IR equivalent for these operands")
            if kind == "mul":
                self.merge(c)
            else:
                self.bind(c, self.guard(c, self.b.add, [self.x(c, 0), self.x(c, 1)]))
            return
        t, val = k
        x = self.node.get(t)
        if x is None:
            raise self.err(c, "reads a tensor that is not computed from the network input")
        if kind == "mul" and not np.any(val):
            self.bind(c, self.b.zero(x))
            return
        self.bind(c, self.b.bn(x, params=int(val.size) if val.size > 1 else 0))

    def ops_pad(self, c: _Call) -> None:
        """keras.ops.pad of H and W (constant, reflect, symmetric or edge)."""
        widths = [tuple(int(v) for v in w) for w in c.op.pad_width]
        if len(widths) != 4 or any(widths[k] != (0, 0) for k in (0, 3)):
            raise self.err(c, f"pads {widths}; the IR pads H and W of 4-D tensors")
        (t, bot), (lf, r) = widths[1], widths[2]
        self.bind(c, self.guard(c, self.b.pad, self.x(c), t, lf, bot, r, c.op.mode))

    def batchnorm(self, c: _Call) -> None:
        if self.cfg(c).get("axis") not in (-1, 3, [-1], [3]):
            raise self.err(c, "normalises an axis other than channels")
        self.bind(c, self.b.bn(self.x(c), params=int(c.op.count_params())))

    def activation(self, c: _Call) -> None:
        found = self.act_of(c)
        if found is None:
            raise self.err(c, "applies an activation the IR cannot represent")
        act, calls = found
        if act == "none":
            self.node[c.outputs[0]] = self.x(c)
            return
        self.finish(calls[0], self.b.act(self.x(c), act), calls[1:])

    def mean(self, c: _Call) -> None:
        axis = c.args[1] if len(c.args) > 1 else c.op.axis if hasattr(c.op, "axis") else None
        axes = sorted(int(a) % 4 for a in np.atleast_1d(axis)) if axis is not None else []
        if axes != [1, 2]:
            raise self.err(c, "reduces over axes other than H and W")
        self.bind(c, self.b.gap(self.x(c), keepdims=bool(getattr(c.op, "keepdims", False))))

    # ---- driver ----------------------------------------------------------------------------------------------------
    def run(self) -> LayerGraph:
        self.b.block = "input"
        self.node[self.input_id] = self.b.input(self.in_shape)
        for c in self.calls:
            if id(c) in self.done:
                continue
            self.b.block = f"{c.name}:{c.kind}"
            self.dispatch(c)
        return finish_graph(
            self.b, self.node.get(self.output_id), {"source": "keras", "layers": len(self.calls)}
        )

    def leti_layer(self, c: _Call) -> None:
        """leti's own layers (``leti.tflite.keras_model``)."""
        op, x = c.op, self.x(c)
        if c.kind == "ChannelShuffle":
            y = self.guard(c, self.b.shuffle, x, op.groups)
        elif c.kind == "ChannelSlice":
            y = self.guard(c, self.b.slice, x, op.size, op.start)
        elif c.kind == "Zero":
            y = self.b.zero(x)
        else:
            y = self.guard(c, self.b.pad, x, op.top, op.left, op.bottom, op.right, op.mode)
        self.bind(c, y)

    def stored_affine(self, c: _Call) -> None:
        """Rescaling / Normalization: one affine op with the weights the layer stores."""
        self.bind(c, self.b.bn(self.x(c), params=int(c.op.count_params())))

    def passthrough(self, c: _Call) -> None:
        self.node[c.outputs[0]] = self.x(c)

    def dispatch(self, c: _Call) -> None:
        kind = c.kind
        if not _is_op(c.op):
            handler = _LAYER_HANDLERS.get(kind)
            if handler is None or (handler == "conv_like" and len(self.cfg(c)["kernel_size"]) != 2):
                raise self.err(c)
            getattr(self, handler)(c)
            return
        # keras.ops functions called on symbolic tensors
        found = self.act_of(c) if kind in _OPS_ACTS or kind == "Add" else None
        if found is not None:
            self.activation(c)
        elif kind in _BINARY_OPS:
            self.binary_op(c)
        elif kind == "Reshape":
            self.reshape(c)
        elif kind == "Mean":
            self.mean(c)
        elif kind == "Pad":
            self.ops_pad(c)
        else:
            raise self.err(c)


# Keras layer class -> _Reader method
_LAYER_HANDLERS = {
    **dict.fromkeys(("Conv2D", "DepthwiseConv2D", "SeparableConv2D"), "conv_like"),
    "Dense": "dense",
    **dict.fromkeys(("MaxPooling2D", "AveragePooling2D"), "pool"),
    **dict.fromkeys(("GlobalAveragePooling2D", "GlobalMaxPooling2D"), "global_pool"),
    "BatchNormalization": "batchnorm",
    **dict.fromkeys(("ReLU", "LeakyReLU", "Softmax", "Activation"), "activation"),
    **dict.fromkeys(("Add", "Subtract", "Multiply", "Concatenate"), "merge"),
    "ZeroPadding2D": "zero_padding",
    "Cropping2D": "cropping",
    **dict.fromkeys(("Reshape", "Flatten"), "reshape"),
    **dict.fromkeys(("UpSampling2D", "Resizing"), "resize"),
    **dict.fromkeys(("Rescaling", "Normalization"), "stored_affine"),
    **dict.fromkeys(_PASS, "passthrough"),
    **dict.fromkeys(("ChannelShuffle", "ChannelSlice", "Zero", "SpatialPad"), "leti_layer"),
}


def _is_op(op) -> bool:
    """A keras.ops operation (not a layer): the same class names mean other things there."""
    import keras

    return not isinstance(op, keras.layers.Layer)


def _op_shape(c: _Call) -> tuple:
    shape = getattr(c.op, "newshape", None) or getattr(c.op, "new_shape", None)
    if shape is None and len(c.args) > 1:
        shape = c.args[1]
    if shape is None:
        raise unsupported(c.kind, c.name, "has no target shape")
    shape = tuple(shape)
    return shape[1:] if len(shape) in (2, 4) else shape  # drop the batch dimension


def _plain_bn(c: _Call) -> bool:
    """A BatchNormalization over channels with center and scale: the four vectors the IR's ``bn`` counts."""
    cfg = c.op.get_config()
    return cfg.get("axis") in (-1, 3, [-1], [3]) and cfg.get("center", True) and cfg.get("scale", True)


def _channels_last(r: _Reader, c: _Call) -> None:
    if r.cfg(c).get("data_format", "channels_last") not in (None, "channels_last"):
        raise r.err(c, "is channels_first; leti reads channels_last models")


def _ir_shape(shape: tuple) -> tuple[int, int, int] | None:
    if len(shape) == 3:
        return tuple(int(d) for d in shape)
    if len(shape) == 1:
        return (1, 1, int(shape[0]))
    return None


def read_keras_model(model, input_shape=None) -> LayerGraph:
    """The LayerGraph of an in-memory Keras functional or Sequential model; ``input_shape`` = (H, W, C) fixes an
    input whose size Keras leaves open."""
    try:
        return _Reader(model, input_shape).run()
    except LetiError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        raise ModelFileError(f"unexpected structure ({type(e).__name__}: {e})", "model") from None


def read_keras(path, input_shape=None) -> LayerGraph:
    """The LayerGraph of a ``.keras`` / ``.h5`` file."""
    p = Path(os.fspath(path))
    g = read_keras_model(_load(p), input_shape)
    g.meta["file"] = p.name
    return g


__all__ = [
    "KERAS_ACTS",
    "KERAS_SUFFIXES",
    "keras_fn_act",
    "keras_layer_act",
    "read_keras",
    "read_keras_model",
]
