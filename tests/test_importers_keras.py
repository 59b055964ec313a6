"""Keras model files (.keras, .h5) -> LayerGraph. Params must equal Keras' ``count_params()``; conv / dense MACs must
equal a count made here from the layers' configs and Keras' own output shapes; and the graph must agree with the
one the .tflite reader makes of the same model after the TFLite converter (two independent paths)."""

from __future__ import annotations

import numpy as np
import pytest

from leti.errors import LetiError, ModelFileError
from leti.importers.common import UnsupportedOpError
from leti.importers.keras_file import read_keras_model
from leti.importers.models import read_model
from leti.tflite.convert import keras_to_tflite, silenced
from leti.tflite.reader import read_tflite


def keras():
    with silenced():
        import keras as k
    return k


def weighted_macs(model) -> int:
    """MACs of the convs and dense layers from Keras' layer configs and output shapes (nested models included)."""
    k = keras()
    total = 0
    for layer in model.layers:
        if isinstance(layer, k.Model):
            total += weighted_macs(layer)
            continue
        if not isinstance(
            layer, k.layers.Conv2D | k.layers.DepthwiseConv2D | k.layers.SeparableConv2D | k.layers.Dense
        ):
            continue
        out = layer.output.shape[1:]
        cin = layer.input.shape[-1]
        spatial = int(np.prod(out[:-1])) if len(out) > 1 else 1
        if isinstance(layer, k.layers.Dense):
            total += spatial * cin * layer.units
        elif isinstance(layer, k.layers.SeparableConv2D):
            kh, kw = layer.kernel_size
            mid = cin * layer.depth_multiplier
            total += spatial * (mid * kh * kw + mid * layer.filters)
        elif isinstance(layer, k.layers.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            total += spatial * out[-1] * kh * kw
        else:
            kh, kw = layer.kernel_size
            total += spatial * out[-1] * kh * kw * cin // layer.groups
    return total


def graph_weighted(g) -> int:
    return sum(int(g.macs[i]) for i in range(g.n_nodes) if g.op_name(i) in ("conv", "dwconv", "dense"))


def hard_sigmoid(k, x):
    return k.layers.ReLU(6.0)(k.ops.add(x, 3.0)) * (1.0 / 6.0)  # as keras.applications' MobileNetV3 writes it


def small_functional(ops_hard_sigmoid: bool = True):
    """Most Keras layers of common CNNs in one small model (legacy .h5 files cannot hold keras.ops calls with
    constant arguments: ``ops_hard_sigmoid=False`` uses the Activation instead)."""
    k = keras()
    k.utils.set_random_seed(0)
    x = k.Input((24, 24, 3))
    y = k.layers.Rescaling(1 / 127.5, offset=-1)(x)
    y = k.layers.Normalization(mean=[0.5, 0.5, 0.5], variance=[0.25, 0.25, 0.25])(y)
    y = k.layers.ZeroPadding2D(((0, 1), (0, 1)))(y)
    y = k.layers.Conv2D(16, 3, strides=2, use_bias=False)(y)  # the pad makes it SAME: folded
    y = k.layers.BatchNormalization()(y)
    y = k.layers.ReLU(6.0)(y)
    s = k.layers.DepthwiseConv2D(3, padding="same", use_bias=False)(y)
    s = k.layers.BatchNormalization()(s)
    s = k.layers.Activation("hard_swish")(s)
    g = k.layers.GlobalAveragePooling2D()(s)
    g = k.layers.Reshape((1, 1, 16))(g)
    g = k.layers.Conv2D(4, 1, activation="relu")(g)
    g = k.layers.Conv2D(16, 1)(g)
    g = hard_sigmoid(k, g) if ops_hard_sigmoid else k.layers.Activation("hard_sigmoid")(g)
    y = k.layers.Add()([k.layers.Multiply()([s, g]), y])
    y = k.layers.SeparableConv2D(24, 3, padding="same")(y)
    y = k.layers.BatchNormalization()(y)
    y = k.layers.Activation("swish")(y)
    a = k.layers.MaxPooling2D(3, strides=2, padding="same")(y)
    b = k.layers.AveragePooling2D(2)(k.layers.ZeroPadding2D(1)(y))  # 14 -> 7, not SAME's 6: a pad node
    b = k.layers.Cropping2D(1)(k.layers.ZeroPadding2D(((0, 1), (1, 0)))(b))
    y = k.layers.Concatenate()([a, b])
    y = k.layers.Conv2D(32, 3, padding="same", groups=4, activation="gelu")(y)
    y = k.layers.LeakyReLU()(k.layers.BatchNormalization()(y))  # BN after an activation: standalone
    y = k.layers.UpSampling2D(2, interpolation="bilinear")(y)
    y = k.layers.Resizing(8, 8, interpolation="nearest")(y)
    y = k.layers.Dropout(0.2)(y)
    m = k.layers.GlobalMaxPooling2D()(y)
    y = k.layers.Dense(10, activation="softmax")(k.layers.Concatenate()([k.layers.Flatten()(y), m]))
    return k.Model(x, y)


@pytest.fixture(scope="module")
def model():
    return small_functional()


def test_counts_match_keras(model):
    g = read_keras_model(model)
    assert g.total_params == model.count_params()
    assert graph_weighted(g) == weighted_macs(model)
    assert g.op_counts() == {"input": 1, "bn": 3, "conv": 5, "dwconv": 2, "gap": 1, "mul": 1, "add": 1, "maxpool": 2,
                             "pad": 3, "avgpool": 1, "concat": 2, "act": 1, "resize": 2, "reshape": 1,
                             "dense": 1}  # fmt: skip
    acts = [n.attrs["act"] for n in g.nodes() if n.op in ("conv", "dwconv", "dense")]
    assert acts == ["relu6", "hswish", "relu", "hsigmoid", "none", "swish", "gelu", "softmax"]
    first = g.node(3)
    assert (first.op, first.attrs["pad"], first.attrs["bn"], first.out_shape) == (
        "conv",
        0,
        True,
        (12, 12, 16),
    )
    assert (g.node(1).op, g.node(2).op) == (
        "bn",
        "bn",
    )  # Rescaling, Normalization (its given mean and variance
    assert g.node(1).params == g.node(2).params == 0  # are constants, not weights: count_params() says 0)
    assert g.output_shape == (1, 1, 10)


def test_agrees_with_the_converter_and_the_tflite_reader(model):
    """The same model through the TFLite converter and the .tflite reader: the same ops and MACs, except that the
    converter writes the input's Rescaling and Normalization as three elementwise ops."""
    a, b = read_keras_model(model), read_tflite(keras_to_tflite(model))
    ca, cb = a.op_counts(), b.op_counts()
    assert (ca.pop("bn"), cb.pop("bn")) == (3, 4)
    assert ca == cb
    assert a.total_macs + 24 * 24 * 3 == b.total_macs

    def windows(
        g,
    ):  # conv / pool geometry and activation; BN and bias differ by convention (folded in .tflite)
        keep = ("kh", "kw", "sh", "sw", "dil", "groups", "act", "pad", "extra")
        rows = [
            (n.op, n.in_shape, n.out_shape, {k: v for k, v in n.attrs.items() if k in keep})
            for n in g.nodes()
        ]
        return sorted(repr(r) for r in rows if r[0] in ("conv", "dwconv", "maxpool", "avgpool", "dense"))

    assert windows(a) == windows(b)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_files(model, suffix, tmp_path):
    model = model if suffix == ".keras" else small_functional(ops_hard_sigmoid=False)
    p = tmp_path / f"m{suffix}"
    with silenced():
        model.save(p)
    g = read_model(p)
    assert g.meta["source"] == "keras" and g.meta["file"] == p.name
    assert g.to_dict()["op"] == read_keras_model(model).to_dict()["op"]
    assert g.total_params == model.count_params()
    assert graph_weighted(g) == weighted_macs(model)


def test_nested_and_sequential_models():
    k = keras()
    inner = k.Sequential(
        [k.Input((16, 16, 3)), k.layers.Conv2D(8, 3, activation="relu"), k.layers.MaxPooling2D()]
    )
    x = k.Input((16, 16, 3))
    y = k.layers.Dense(5)(k.layers.GlobalAveragePooling2D()(inner(x)))
    outer = k.Model(x, y)
    g = read_keras_model(outer)
    assert [n.op for n in g.nodes()] == ["input", "conv", "maxpool", "gap", "dense"]
    assert g.total_params == outer.count_params() and graph_weighted(g) == weighted_macs(outer)
    assert read_keras_model(inner).n_nodes == 3


def test_dynamic_input_needs_a_shape(tmp_path):
    k = keras()
    x = k.Input((None, None, 3))
    y = k.layers.GlobalAveragePooling2D()(k.layers.Conv2D(8, 3, strides=2, padding="same")(x))
    p = tmp_path / "dyn.keras"
    with silenced():
        k.Model(x, y).save(p)
    with pytest.raises(ModelFileError, match=r"--input-shape"):
        read_model(p)
    g = read_model(p, (32, 20, 3))
    assert g.node(1).out_shape == (16, 10, 8) and g.node(1).macs == 16 * 10 * 8 * 27
    with pytest.raises(LetiError, match="does not fit"):
        read_model(p, (32, 20, 1))


def test_unsupported_layers_are_named():
    k = keras()
    x = k.Input((8, 8, 3))
    y = k.layers.Conv2DTranspose(4, 3, name="up")(x)
    with pytest.raises(
        UnsupportedOpError, match=r"^node 'up' \(Conv2DTranspose\): has no LayerGraph equivalent$"
    ):
        read_keras_model(k.Model(x, y))
    y = k.layers.Lambda(lambda t: t * 2, name="double")(x)
    with pytest.raises(UnsupportedOpError, match=r"node 'double' \(Lambda\)"):
        read_keras_model(k.Model(x, y))
    y = k.layers.Activation("elu", name="elu")(x)
    with pytest.raises(UnsupportedOpError, match=r"node 'elu' \(Activation\): applies an activation"):
        read_keras_model(k.Model(x, y))


def test_lambda_files_are_not_deserialised(tmp_path):
    """safe_mode: a saved Lambda's Python code is never loaded."""
    k = keras()
    x = k.Input((8, 8, 3))
    p = tmp_path / "lambda.keras"
    with silenced():
        k.Model(x, k.layers.Lambda(lambda t: t * 2)(x)).save(p)
    with pytest.raises(ModelFileError, match="cannot load the Keras model") as e:
        read_model(p)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_garbage_and_truncated_files(suffix, tmp_path):
    good = tmp_path / f"good{suffix}"
    with silenced():
        small_functional(ops_hard_sigmoid=False).save(good)
    data = good.read_bytes()
    for name, content in [
        ("empty", b""),
        ("garbage", bytes(range(256)) * 8),
        ("truncated", data[: len(data) // 2]),
    ]:
        p = tmp_path / f"{name}{suffix}"
        p.write_bytes(content)
        with pytest.raises(ModelFileError) as e:
            read_model(p)
        assert "\n" not in str(e.value), name
