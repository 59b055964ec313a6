"""Reference Keras models for compression experiments: a ResNet-like and a MobileNetV2-like network.

Both are functional models with a fixed batch size of 1 (the TFLite converter needs fully known shapes), seeded
random weights, BatchNorm after every conv and a global-average-pool -> Dense(classes) classifier, so that
``keras_ir.keras_to_arch`` maps them exactly onto the IR. BatchNorm layers are set as training would leave them
(see :func:`randomize_batchnorm`).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from leti.errors import LetiError  # noqa: E402

__all__ = ["resnet_like", "mobilenetv2_like", "randomize_batchnorm"]


def _check_size(input_size: int | tuple[int, int]) -> tuple[int, int]:
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 8 for v in size):
        raise LetiError(f"must be an integer >= 8 or a pair of them, got {input_size!r}", "input_size")
    return size


def _conv_bn(x, filters: int, k: int, stride: int, name: str, act: str | None = "relu"):
    x = keras.layers.Conv2D(filters, k, strides=stride, padding="same", use_bias=False, name=name)(x)
    x = keras.layers.BatchNormalization(name=name + "_bn")(x)
    if act == "relu":
        x = keras.layers.ReLU(name=name + "_relu")(x)
    elif act == "relu6":
        x = keras.layers.ReLU(max_value=6.0, name=name + "_relu6")(x)
    return x


def _head(x, head_units: int, classes: int):
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    if head_units:
        # a hidden Dense gives the SVD candidates something to work on besides the classifier
        x = keras.layers.Dense(head_units, activation="relu", name="fc")(x)
    return keras.layers.Dense(classes, name="classifier")(x)


def randomize_batchnorm(model: keras.Model, seed: int = 0, n: int = 4) -> keras.Model:
    """Set every BatchNormalization as training would leave it, in place and seeded.

    Moving statistics are the per-channel mean and variance of the BN's input over ``n`` standard-normal images
    (layer by layer, so each BN sees already-normalised inputs); gamma ~ U(0.5, 1.5), beta ~ N(0, 0.1). Without
    this, random convs shrink the signal layer by layer and the outputs hardly depend on the input, which would
    hide every approximation error.
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    x = rng.standard_normal((n, *shape)).astype(np.float32)
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        a = np.asarray(keras.Model(model.inputs[0], layer.input)(x), dtype=np.float64)
        axes = tuple(range(a.ndim - 1))
        c = a.shape[-1]
        values = {
            "gamma": rng.uniform(0.5, 1.5, c),
            "beta": rng.normal(0.0, 0.1, c),
            "moving_mean": a.mean(axis=axes),
            "moving_variance": a.var(axis=axes) + 1e-6,
        }
        layer.set_weights([values[w.name].astype(np.float32) for w in layer.weights])
    return model


def resnet_like(
    input_size: int | tuple[int, int] = 32,
    widths: tuple[int, ...] = (16, 32, 64),
    blocks: tuple[int, ...] = (1, 1, 1),
    classes: int = 10,
    head_units: int = 0,
    seed: int = 0,
) -> keras.Model:
    """CIFAR-style ResNet: 3x3 stem, basic blocks (two 3x3 convs + identity or 1x1 projection shortcut).

    Stage ``i`` has ``blocks[i]`` blocks of ``widths[i]`` channels; every stage after the first halves the
    resolution in its first block.
    """
    h, w = _check_size(input_size)
    if len(widths) != len(blocks) or not widths:
        raise LetiError("widths and blocks must be non-empty and of the same length", "widths")
    keras.utils.set_random_seed(seed)
    inp = keras.Input((h, w, 3), batch_size=1, name="image")
    x = _conv_bn(inp, widths[0], 3, 1, "stem")
    for s, (width, n) in enumerate(zip(widths, blocks, strict=True)):
        for b in range(n):
            stride = 2 if s > 0 and b == 0 else 1
            name = f"s{s}b{b}"
            y = _conv_bn(x, width, 3, stride, name + "_conv1")
            y = _conv_bn(y, width, 3, 1, name + "_conv2", act=None)
            shortcut = x
            if stride != 1 or x.shape[-1] != width:
                shortcut = _conv_bn(x, width, 1, stride, name + "_proj", act=None)
            x = keras.layers.Add(name=name + "_add")([y, shortcut])
            x = keras.layers.ReLU(name=name + "_out")(x)
    model = keras.Model(inp, _head(x, head_units, classes), name="resnet_like")
    return randomize_batchnorm(model, seed)


def mobilenetv2_like(
    input_size: int | tuple[int, int] = 64,
    alpha: float = 0.5,
    blocks: tuple[tuple[int, int, int, int], ...] = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 2, 2),
        (6, 64, 2, 2),
    ),
    last_channels: int = 320,
    classes: int = 10,
    head_units: int = 0,
    seed: int = 0,
) -> keras.Model:
    """MobileNetV2-style network: 3x3 stride-2 stem, inverted residual blocks, 1x1 head conv.

    ``blocks`` holds ``(expansion t, channels c, repeats n, stride s)`` rows as in the MobileNetV2 paper; channel
    counts are scaled by ``alpha`` and rounded to multiples of 8.
    """
    h, w = _check_size(input_size)
    if not 0 < alpha <= 4:
        raise LetiError(f"must be in (0, 4], got {alpha!r}", "alpha")

    def width(c: float) -> int:
        return max(8, int(c * alpha + 4) // 8 * 8)

    keras.utils.set_random_seed(seed)
    inp = keras.Input((h, w, 3), batch_size=1, name="image")
    x = _conv_bn(inp, width(32), 3, 2, "stem", act="relu6")
    for i, (t, c, n, s) in enumerate(blocks):
        out = width(c)
        for j in range(n):
            name = f"b{i}_{j}"
            stride = s if j == 0 else 1
            cin = x.shape[-1]
            y = x
            if t != 1:
                y = _conv_bn(y, cin * t, 1, 1, name + "_expand", act="relu6")
            y = keras.layers.DepthwiseConv2D(
                3, strides=stride, padding="same", use_bias=False, name=name + "_dw"
            )(y)
            y = keras.layers.BatchNormalization(name=name + "_dw_bn")(y)
            y = keras.layers.ReLU(max_value=6.0, name=name + "_dw_relu6")(y)
            y = _conv_bn(y, out, 1, 1, name + "_project", act=None)
            x = keras.layers.Add(name=name + "_add")([x, y]) if stride == 1 and cin == out else y
    x = _conv_bn(x, width(last_channels), 1, 1, "head_conv", act="relu6")
    model = keras.Model(inp, _head(x, head_units, classes), name="mobilenetv2_like")
    return randomize_batchnorm(model, seed)
