""".tflite files as a user's plain export writes them (``TFLiteConverter.from_keras_model``, batch size left open):
the SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE chains of a dynamic batch, standalone PADs, crops, resizes. Each file is
read and compared with the Keras importer's graph of the same model (two independent paths), and one Keras
application (MobileNetV3Small) is read end to end."""

from __future__ import annotations

import pytest

from leti.errors import LetiError, ModelFileError
from leti.importers.keras_file import read_keras_model
from leti.importers.models import read_model
from leti.tflite.convert import silenced
from leti.tflite.reader import parse_tflite, read_tflite


def plain_export(model) -> bytes:
    """What a user writes: the converter straight from the Keras model, batch size unknown."""
    with silenced():
        import tensorflow as tf

        return bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())


def keras():
    with silenced():
        import keras as k
    return k


def ops_model():
    k = keras()
    k.utils.set_random_seed(0)
    x = k.Input((16, 16, 3))
    y = k.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    p = k.layers.ZeroPadding2D(1)(y)  # read by two pools: a PAD of its own
    y = k.layers.Add()([k.layers.MaxPooling2D(3, 2)(p), k.layers.AveragePooling2D(3, 2)(p)])
    s = k.layers.GlobalAveragePooling2D()(y)  # EfficientNet's squeeze-excite: a Reshape of a dynamic batch
    s = k.layers.Conv2D(8, 1, activation="sigmoid")(k.layers.Reshape((1, 1, 8))(s))
    y = k.layers.Multiply()([y, s])
    y = k.layers.UpSampling2D(2)(y)  # nearest: RESHAPE / TILE chains
    y = k.layers.Resizing(12, 12)(y)  # bilinear
    y = k.layers.Cropping2D(((1, 2), (0, 3)))(y)
    y = k.ops.pad(y, ((0, 0), (1, 1), (2, 0), (0, 0)), mode="reflect")
    y = k.layers.Dense(4, activation="softmax")(k.layers.Flatten()(y))
    return k.Model(x, y)


def test_plain_export_reads_like_the_keras_model():
    model = ops_model()
    data = plain_export(model)
    names = parse_tflite(data).op_names()
    assert {"SHAPE", "STRIDED_SLICE", "PACK", "PAD", "TILE", "MIRROR_PAD"} <= set(names)
    t, kg = read_tflite(data), read_keras_model(model)
    assert t.op_counts() == kg.op_counts() == {"input": 1, "conv": 2, "pad": 3, "maxpool": 1, "avgpool": 1, "add": 1,
                                               "gap": 1, "mul": 1, "resize": 2, "reshape": 1, "dense": 1}  # fmt: skip
    assert t.total_macs == kg.total_macs
    pads = [n.attrs for n in t.nodes() if n.op == "pad"]
    assert [(p["top"], p["left"], p["bottom"], p["right"], p["mode"]) for p in pads] == [
        (1, 1, 1, 1, "constant"),
        (-1, 0, -2, -3, "constant"),
        (1, 2, 1, 0, "reflect"),
    ]
    assert [n.attrs["mode"] for n in t.nodes() if n.op == "resize"] == ["nearest", "bilinear"]
    assert t.output_shape == (1, 1, 4)


def test_dynamic_height_and_width_are_refused(tmp_path):
    k = keras()
    x = k.Input((None, None, 3))
    data = plain_export(k.Model(x, k.layers.GlobalAveragePooling2D()(k.layers.Conv2D(4, 3)(x))))
    with pytest.raises(ModelFileError, match="fixed only at run time") as e:
        read_tflite(data)
    assert "\n" not in str(e.value)


def test_input_shape_must_fit_a_tflite_file(tmp_path):
    k = keras()
    x = k.Input((8, 8, 3))
    p = tmp_path / "m.tflite"
    p.write_bytes(plain_export(k.Model(x, k.layers.Conv2D(4, 3)(x))))
    assert read_model(p, (8, 8, 3)).input_shape == (8, 8, 3)
    with pytest.raises(LetiError, match="fixed input"):
        read_model(p, (16, 16, 3))


def test_keras_application_mobilenet_v3_small(tmp_path):
    """A plain export of keras.applications' MobileNetV3Small: SHAPE chains, hard-sigmoid squeeze-excite."""
    k = keras()
    with silenced():
        model = k.applications.MobileNetV3Small(input_shape=(96, 96, 3), alpha=0.75, weights=None, classes=10)
        model.save(tmp_path / "m.keras")
    (tmp_path / "m.tflite").write_bytes(plain_export(model))
    kg, t = read_model(tmp_path / "m.keras"), read_model(tmp_path / "m.tflite")
    assert kg.total_params == model.count_params()
    assert kg.op_counts() == t.op_counts()
    assert kg.total_macs == t.total_macs
    convs = [layer for layer in model.layers if isinstance(layer, k.layers.Conv2D | k.layers.DepthwiseConv2D)]
    assert kg.op_counts()["conv"] + kg.op_counts()["dwconv"] == len(convs)
    acts = {n.attrs["act"] for n in kg.nodes() if n.op in ("conv", "dwconv")}
    assert acts == {"none", "relu", "hswish", "hsigmoid"}
    assert kg.op_counts()["mul"] == 9  # the squeeze-excite gates
