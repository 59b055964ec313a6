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
    else:  # pragma: no cover - OPS and this function change together
        raise GraphError(f"no Keras equivalent for op {op}", f"node {i}")
    layers = [first]
    if op in ("conv", "dwconv") and bn:
        layers.append(keras.layers.BatchNormalization(name=nm + "_bn"))
    if act:
        layers.append(activation_layer(ACTS[act], nm + "_act"))
    return layers


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
        layers = node_layers(graph, i)
        y = layers[0](ins if len(ins) > 1 else ins[0])
        for layer in layers[1:]:
            y = layer(y)
        tensors[i] = y
    return keras.Model(tensors[0], tensors[-1], name=name)
