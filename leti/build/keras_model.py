"""LayerGraph -> tf.keras functional model: the reference path to .tflite.

One graph node becomes one Keras layer (plus BatchNormalization / activation layers where the node folds them), so
the converter's output has one TFLite op per node after BN folding and activation fusion.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter is not for users

import keras  # noqa: E402

from leti.errors import GraphError  # noqa: E402
from leti.graph.layergraph import ACTS, OPS, LayerGraph  # noqa: E402
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


def activation_layer(fn: str, name: str):
    if fn == "relu":
        return keras.layers.ReLU(name=name)
    if fn == "relu6":
        return keras.layers.ReLU(max_value=6.0, name=name)
    keras_fn = {"hswish": "hard_swish", "sigmoid": "sigmoid", "hsigmoid": "hard_sigmoid", "swish": "silu",
                "tanh": "tanh"}[fn]  # fmt: skip
    return keras.layers.Activation(keras_fn, name=name)


def _pad(code: int) -> str:
    return "same" if code == PAD_SAME else "valid"


def build_keras(graph: LayerGraph, seed: int = 0, name: str = "leti") -> keras.Model:
    """A Keras model computing ``graph`` with seeded random weights (batch size 1)."""
    keras.utils.set_random_seed(seed)
    tensors: list = [None] * graph.n_nodes
    for i in range(graph.n_nodes):
        op = OPS[graph.op[i]]
        a = graph.attr[i]
        kh, kw, sh, sw, dil, groups, act, bn, bias, pad, extra = (int(v) for v in a)
        ins = [tensors[j] for j in graph.inputs_of(i)]
        x = ins[0] if ins else None
        nm = f"n{i}_{op}"
        if op == "input":
            h, w, c = (int(v) for v in graph.out_shape[i])
            y = keras.Input(shape=(h, w, c), batch_size=1, name="input")
        elif op == "conv":
            y = keras.layers.Conv2D(
                int(graph.out_shape[i][2]), (kh, kw), strides=(sh, sw), padding=_pad(pad),
                dilation_rate=dil, groups=groups, use_bias=bool(bias), name=nm,
            )(x)  # fmt: skip
        elif op == "dwconv":
            y = keras.layers.DepthwiseConv2D(
                (kh, kw), strides=(sh, sw), padding=_pad(pad), depth_multiplier=extra,
                dilation_rate=dil, use_bias=bool(bias), name=nm,
            )(x)  # fmt: skip
        elif op == "dense":
            y = keras.layers.Dense(int(graph.out_shape[i][2]), use_bias=bool(bias), name=nm)(x)
        elif op in ("maxpool", "avgpool"):
            cls = keras.layers.MaxPooling2D if op == "maxpool" else keras.layers.AveragePooling2D
            y = cls(pool_size=(kh, kw), strides=(sh, sw), padding=_pad(pad), name=nm)(x)
        elif op == "gap":
            y = keras.layers.GlobalAveragePooling2D(keepdims=bool(extra), name=nm)(x)
        elif op == "add":
            y = keras.layers.Add(name=nm)(ins)
        elif op == "concat":
            y = keras.layers.Concatenate(axis=-1, name=nm)(ins)
        elif op == "mul":
            y = keras.layers.Multiply(name=nm)(ins)
        elif op == "act":
            y = activation_layer(ACTS[act], nm)(x)
            act = 0  # already applied
        elif op == "bn":
            y = keras.layers.BatchNormalization(name=nm)(x)
            bn = 0
        elif op == "shuffle":
            y = ChannelShuffle(groups, name=nm)(x)
        elif op == "slice":
            y = ChannelSlice(extra, int(graph.out_shape[i][2]), name=nm)(x)
        elif op == "zero":
            y = Zero(name=nm)(x)
        else:  # pragma: no cover - OPS and this function change together
            raise GraphError(f"no Keras equivalent for op {op}", f"node {i}")
        if op in ("conv", "dwconv") and bn:
            y = keras.layers.BatchNormalization(name=nm + "_bn")(y)
        if op != "act" and act:
            y = activation_layer(ACTS[act], nm + "_act")(y)
        tensors[i] = y
    return keras.Model(tensors[0], tensors[-1], name=name)
