"""LayerGraph -> tf.keras functional model: the reference path to .tflite.

One graph node becomes one Keras layer (plus BatchNormalization / activation layers where the node folds them), so
the converter's output has one TFLite op per node after BN folding and activation fusion.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter is not for users

import keras  # noqa: E402

from leti.errors import GraphError  # noqa: E402
from leti.graph.layergraph import ACTS, OPS, PAD_MODES, RESIZE_MODES, LayerGraph  # noqa: E402
from leti.graph.shapes import PAD_SAME  # noqa: E402


@keras.saving.register_keras_serializable(package="leti")
class ChannelShuffle(keras.layers.Layer):
    def __init__(self, groups: int, **kwargs):
        super().__init__(**kwargs)
        self.groups = groups

    def call(self, x):
        h, w, c = x.shape[1], x.shape[2], x.shape[3]
        y = keras.ops.reshape(x, (-1, h, w, self.groups, c // self.groups))
        y = keras.ops.transpose(y, (0, 1, 2, 4, 3))
        return keras.ops.reshape(y, (-1, h, w, c))

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


@keras.saving.register_keras_serializable(package="leti")
class ChannelSlice(keras.layers.Layer):
    def __init__(self, start: int, size: int, **kwargs):
        super().__init__(**kwargs)
        self.start, self.size = start, size

    def call(self, x):
        return x[..., self.start : self.start + self.size]

    def get_config(self):
        return {**super().get_config(), "start": self.start, "size": self.size}


@keras.saving.register_keras_serializable(package="leti")
class Zero(keras.layers.Layer):
    """x * 0: NAS-Bench-201's ``none`` edge, kept as a real op like its PyTorch code does."""

    def call(self, x):
        return x * 0.0


@keras.saving.register_keras_serializable(package="leti")
class SpatialPad(keras.layers.Layer):
    """Pads H and W by the given amounts (``mode`` as in ``keras.ops.pad``); negative amounts crop."""

    def __init__(self, top: int, left: int, bottom: int, right: int, mode: str = "constant", **kwargs):
        super().__init__(**kwargs)
        self.top, self.left, self.bottom, self.right, self.mode = top, left, bottom, right, mode

    def call(self, x):
        t, lf, b, r = self.top, self.left, self.bottom, self.right
        if max(t, lf, b, r) > 0:
            pads = ((0, 0), (max(t, 0), max(b, 0)), (max(lf, 0), max(r, 0)), (0, 0))
            x = keras.ops.pad(x, pads, mode=self.mode)
        if min(t, lf, b, r) < 0:
            h, w = x.shape[1], x.shape[2]
            x = x[:, max(-t, 0) : h - max(-b, 0), max(-lf, 0) : w - max(-r, 0), :]
        return x

    def get_config(self):
        return {**super().get_config(), "top": self.top, "left": self.left, "bottom": self.bottom,
                "right": self.right, "mode": self.mode}  # fmt: skip


def activation_layer(fn: str, name: str):
    if fn == "relu":
        return keras.layers.ReLU(name=name)
    if fn == "relu6":
        return keras.layers.ReLU(max_value=6.0, name=name)
    if fn == "softmax":
        return keras.layers.Softmax(name=name)
    keras_fn = {"hswish": "hard_swish", "sigmoid": "sigmoid", "hsigmoid": "hard_sigmoid", "swish": "silu",
                "tanh": "tanh", "gelu": "gelu", "leaky_relu": "leaky_relu"}[fn]  # fmt: skip
    return keras.layers.Activation(keras_fn, name=name)


def _pad(code: int) -> str:
    return "same" if code == PAD_SAME else "valid"


def node_layers(graph: LayerGraph, i: int) -> list:
    """The Keras layers that compute node ``i``, in order: the first reads the node's inputs, the rest chain
    (e.g. Conv2D -> BatchNormalization -> ReLU). ``input`` nodes have none."""
    op = OPS[graph.op[i]]
    kh, kw, sh, sw, dil, groups, act, bn, bias, pad, extra = (int(v) for v in graph.attr[i])
    cout = int(graph.out_shape[i][2])
    nm = f"n{i}_{op}"
    if op == "input":
        return []
    if op == "conv":
        first = keras.layers.Conv2D(cout, (kh, kw), strides=(sh, sw), padding=_pad(pad), dilation_rate=dil,
                                    groups=groups, use_bias=bool(bias), name=nm)  # fmt: skip
    elif op == "dwconv":
        first = keras.layers.DepthwiseConv2D((kh, kw), strides=(sh, sw), padding=_pad(pad), depth_multiplier=extra,
                                             dilation_rate=dil, use_bias=bool(bias), name=nm)  # fmt: skip
    elif op == "dense":
        first = keras.layers.Dense(cout, use_bias=bool(bias), name=nm)
    elif op in ("maxpool", "avgpool"):
        cls = keras.layers.MaxPooling2D if op == "maxpool" else keras.layers.AveragePooling2D
        first = cls(pool_size=(kh, kw), strides=(sh, sw), padding=_pad(pad), name=nm)
    elif op == "gap":
        first = keras.layers.GlobalAveragePooling2D(keepdims=bool(extra), name=nm)
    elif op == "add":
        first = keras.layers.Add(name=nm)
    elif op == "concat":
        first = keras.layers.Concatenate(axis=-1, name=nm)
    elif op == "mul":
        first = keras.layers.Multiply(name=nm)
    elif op == "act":
        return [activation_layer(ACTS[act], nm)]
    elif op == "bn":
        return [keras.layers.BatchNormalization(name=nm)]
    elif op == "shuffle":
        first = ChannelShuffle(groups, name=nm)
    elif op == "slice":
        first = ChannelSlice(extra, cout, name=nm)
    elif op == "zero":
        first = Zero(name=nm)
    elif op == "pad":
        first = SpatialPad(kh, kw, sh, sw, PAD_MODES[extra], name=nm)
    elif op == "reshape":
        h, w = int(graph.out_shape[i][0]), int(graph.out_shape[i][1])
        first = keras.layers.Flatten(name=nm) if extra else keras.layers.Reshape((h, w, cout), name=nm)
    elif op == "resize":
        h, w = int(graph.out_shape[i][0]), int(graph.out_shape[i][1])
        first = keras.layers.Resizing(h, w, interpolation=RESIZE_MODES[extra], name=nm)
    else:  # pragma: no cover - OPS and this function change together
        raise GraphError(f"no Keras equivalent for op {op}", f"node {i}")
    layers = [first]
    if op in ("conv", "dwconv") and bn:
        layers.append(keras.layers.BatchNormalization(name=nm + "_bn"))
    if act:
        layers.append(activation_layer(ACTS[act], nm + "_act"))
    return layers


_VECTOR_OPS = ("dense", "act", "add", "mul", "bn", "zero", "concat", "reshape")  # fine on a (1, C) vector


def build_keras(graph: LayerGraph, seed: int = 0, name: str = "leti") -> keras.Model:
    """A Keras model computing ``graph`` with seeded random weights (batch size 1)."""
    keras.utils.set_random_seed(seed)
    tensors: list = [None] * graph.n_nodes
    for i in range(graph.n_nodes):
        if graph.op[i] == 0:  # input
            h, w, c = (int(v) for v in graph.out_shape[i])
            tensors[i] = keras.Input(shape=(h, w, c), batch_size=1, name="input")
            continue
        ins = [tensors[j] for j in graph.inputs_of(i)]
        if OPS[graph.op[i]] not in _VECTOR_OPS:  # a (1, C) vector read as a map is a (1, 1, C) one
            ins = [keras.layers.Reshape((1, 1, t.shape[-1]))(t) if len(t.shape) == 2 else t for t in ins]
        layers = node_layers(graph, i)
        y = layers[0](ins if len(ins) > 1 else ins[0])
        for layer in layers[1:]:
            y = layer(y)
        tensors[i] = y
    return keras.Model(tensors[0], tensors[-1], name=name)
