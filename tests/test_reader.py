""".tflite -> LayerGraph. Converter outputs of sampled archs are read back in tests/test_build.py (30 per space);
here: a model leti did not make (Keras' MobileNetV2), the mapping rules, hand-written files, and corrupt input."""

from __future__ import annotations

import numpy as np
import pytest

from leti.device_runner.local import run_model
from leti.errors import ModelFileError
from leti.graph.builder import GraphBuilder
from leti.graph.layergraph import ACTS, OPS, LayerGraph
from leti.graph.shapes import PAD_VALID
from leti.tflite.convert import keras_to_tflite, silenced
from leti.tflite.flatbuffer import _Net, _serialize, graph_to_tflite
from leti.tflite.reader import diff_op_graphs, parse_tflite, read_tflite


def weighted(g: LayerGraph) -> list[int]:
    return [i for i in range(g.n_nodes) if OPS[g.op[i]] in ("conv", "dwconv", "dense")]


def keras():
    with silenced():
        import keras as k
    return k


# ---- models leti did not write ----------------------------------------------------------------------------------
def test_reads_keras_mobilenet_v2():
    k = keras()
    with silenced():
        model = k.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=10)
    g = read_tflite(keras_to_tflite(model))
    # MACs and layer counts worked out from the Keras layers, independently of the reader
    macs, n_conv, n_dw, n_dense = 0, 0, 0, 0
    for layer in model.layers:
        if isinstance(layer, k.layers.DepthwiseConv2D):
            o, kern = layer.output.shape, layer.kernel.shape
            macs += o[1] * o[2] * o[3] * kern[0] * kern[1]
            n_dw += 1
        elif isinstance(layer, k.layers.Conv2D):
            o, kern = layer.output.shape, layer.kernel.shape
            macs += o[1] * o[2] * o[3] * kern[0] * kern[1] * kern[2]
            n_conv += 1
        elif isinstance(layer, k.layers.Dense):
            macs += layer.kernel.shape[0] * layer.kernel.shape[1]
            n_dense += 1
    counts = g.op_counts()
    assert (counts["conv"], counts["dwconv"], counts["dense"]) == (n_conv, n_dw, n_dense)
    assert sum(int(g.macs[i]) for i in weighted(g)) == macs
    assert g.input_shape == (96, 96, 3) and g.output_shape == (1, 1, 10)
    # every conv read back with folded BN and the bias the converter stores
    assert all(g.node(i).attrs.get("bn") is False for i in weighted(g) if OPS[g.op[i]] != "dense")
    assert {g.node(i).attrs["act"] for i in weighted(g)} <= {"relu6", "none", "softmax"}


def test_split_softmax_and_explicit_same_padding():
    k = keras()
    x = k.Input((8, 8, 4), batch_size=1)
    y = k.layers.ZeroPadding2D(((0, 1), (0, 1)))(x)
    y = k.layers.DepthwiseConv2D(3, strides=2)(y)  # TF's SAME for stride 2: the converter folds the pad
    a, b = k.ops.split(y, 2, axis=-1)
    y = k.layers.Add()([k.layers.Conv2D(2, 1)(a), b])
    y = k.layers.Dense(3, activation="softmax")(k.layers.GlobalAveragePooling2D()(y))
    data = keras_to_tflite(k.Model(x, y))
    assert "SPLIT" in parse_tflite(data).op_names() and "SOFTMAX" in parse_tflite(data).op_names()
    g = read_tflite(data)
    assert g.op_counts() == {"input": 1, "dwconv": 1, "slice": 2, "conv": 1, "add": 1, "gap": 1, "dense": 1}
    dw = g.node(1)
    assert dw.op == "dwconv" and dw.out_shape == (4, 4, 4) and dw.attrs["pad"] == 0
    slices = [g.node(i) for i in range(g.n_nodes) if g.op_name(i) == "slice"]
    assert sorted(s.attrs["extra"] for s in slices) == [0, 2]
    assert g.node(g.n_nodes - 1).attrs["act"] == "softmax"  # the SOFTMAX op folds into the dense


@pytest.mark.parametrize(
    "make,message",
    [
        (
            lambda k, x: k.layers.Reshape((64, 4))(x),
            r"operator 0 \(RESHAPE\): reshapes \[1, 8, 8, 4\] to \[1, 64, 4\]",
        ),
        (
            lambda k, x: k.layers.Conv2DTranspose(4, 3, strides=2)(x),
            r"operator \d+ \(TRANSPOSE_CONV\): has no LayerGraph equivalent",
        ),
        (lambda k, x: k.ops.max(x, axis=-1, keepdims=True), "reduces over axes other than H and W"),
    ],
    ids=["reshape_3d", "transpose_conv", "channel_max"],
)
def test_ops_without_an_ir_equivalent_are_named(make, message):
    k = keras()
    x = k.Input((8, 8, 4), batch_size=1)
    data = keras_to_tflite(k.Model(x, make(k, x)))
    with pytest.raises(ModelFileError, match=message):
        read_tflite(data)


# ---- mapping rules on graphs with a known answer -------------------------------------------------------------
def se_block() -> LayerGraph:
    b = GraphBuilder()
    x = b.input((8, 8, 8))
    y = b.conv(x, 16, 1, bn=True, act="swish")
    y = b.dwconv(y, 5, bn=True, act="hswish")
    s = b.gap(y, keepdims=True)
    s = b.conv(s, 4, 1, act="relu")
    s = b.conv(s, 16, 1, act="hsigmoid")
    y = b.mul(y, s)
    y = b.conv(y, 8, 1, bn=True, groups=2)
    y = b.shuffle(y, 2)
    y = b.add((y, x, b.zero(b.act(x, "tanh"))))
    y = b.concat((b.slice(y, 4, 2), b.pool("avgpool", y, 3, 1)))
    y = b.bn(b.act(y, "hsigmoid"))
    b.dense(b.gap(y), 5)
    return b.finish()


def test_round_trip_of_every_op_and_activation():
    g = se_block()
    r = read_tflite(graph_to_tflite(g))
    assert r.op_counts() == g.op_counts()
    assert r.total_macs == g.total_macs
    for i in range(g.n_nodes):  # the fast path keeps node order here, so nodes line up one to one
        a, b = g.node(i), r.node(i)
        assert (a.op, a.inputs, a.in_shape, a.out_shape) == (b.op, b.inputs, b.in_shape, b.out_shape)
        if a.op in ("conv", "dwconv"):
            assert (a.attrs["act"], a.attrs["groups"] if a.op == "conv" else 1) == (
                b.attrs["act"],
                b.attrs["groups"] if b.op == "conv" else 1,
            )
            assert b.attrs["bn"] is False and b.attrs["bias"] is True
        elif a.op in ("act", "shuffle", "slice", "gap"):
            assert a.attrs == b.attrs
    assert sorted(ACTS[v] for v in r.attr[:, 6]) == sorted(ACTS[v] for v in g.attr[:, 6])


def real_model_ops() -> LayerGraph:
    b = GraphBuilder()
    x = b.input((8, 8, 4))
    y = b.pad(x, 1, 0, 2, 1)
    y = b.pad(y, -1, 0, 0, -2)  # a crop
    y = b.act(b.conv(y, 8, 3, act="gelu"), "leaky_relu")
    y = b.pad(y, 1, 1, 0, 0, mode="reflect")
    y = b.resize(y, 6, 7, "bilinear")
    y = b.resize(y, 12, 14, "nearest")
    y = b.mul(y, b.conv(b.gap(y), 8, 1, act="sigmoid"))
    y = b.reshape(y, (6, 28, 8))
    y = b.act(b.conv(y, 4, 3, sh=2, act="relu"), "softmax")
    y = b.reshape(y, (1, 1, 3 * 14 * 4), flat=True)
    b.dense(b.act(y, "gelu"), 5, act="softmax")
    return b.finish()


def test_round_trip_of_the_ops_for_real_models():
    g = real_model_ops()
    r = read_tflite(graph_to_tflite(g))
    assert r.op_counts() == g.op_counts() and r.total_macs == g.total_macs
    assert [
        (n.op, n.attrs, n.out_shape) for n in r.nodes() if n.op in ("pad", "resize", "reshape", "act")
    ] == [(n.op, n.attrs, n.out_shape) for n in g.nodes() if n.op in ("pad", "resize", "reshape", "act")]


def test_bytes_and_path_read_the_same(tmp_path):
    data = graph_to_tflite(se_block())
    p = tmp_path / "m.tflite"
    p.write_bytes(data)
    a, b = read_tflite(data), read_tflite(p)
    assert a.to_dict() == b.to_dict()
    assert a.meta["source"] == "tflite"


def test_parse_tflite_records():
    m = parse_tflite(graph_to_tflite(se_block()))
    assert m.description == "leti fast path" and m.n_subgraphs == 1
    assert m.versions["CONV_2D"] == 6  # a grouped conv raises the op version, as the converter writes it
    assert m.versions["TRANSPOSE"] == 4  # 5-D transpose of the channel shuffle
    conv = next(op for op in m.ops if op.name == "CONV_2D")
    filt = m.tensors[conv.inputs[1]]
    assert filt.is_const and filt.data.shape == filt.shape and filt.data.dtype == np.float32


def handmade_pad_conv(pads) -> bytes:
    """input -> PAD -> VALID conv, a pattern PyTorch exports produce and the TF converter never writes."""
    net = _Net()
    x = net.tensor((1, 8, 8, 4), "input")
    net.inputs.append(x)
    (t, bot), (left, right) = pads
    p = net.op("PAD", [x, net.const(np.array([[0, 0], [t, bot], [left, right], [0, 0]], np.int32), "pads")],
               (1, 8 + t + bot, 8 + left + right, 4), "pad")  # fmt: skip
    w = net.const(np.ones((8, 3, 3, 4), np.float32), "w")
    oh, ow = (8 + t + bot - 3) // 2 + 1, (8 + left + right - 3) // 2 + 1
    y = net.op("CONV_2D", [p, w, net.const(np.zeros(8, np.float32), "b")], (1, oh, ow, 8), "conv",
               padding=PAD_VALID, strideH=2, strideW=2, dilationHFactor=1, dilationWFactor=1)  # fmt: skip
    net.outputs.append(y)
    return _serialize(net)


def test_pad_folds_into_a_valid_conv_when_it_is_same_padding():
    data = handmade_pad_conv(((0, 1), (0, 1)))
    (out,) = run_model(data, [np.ones((1, 8, 8, 4), np.float32)])  # LiteRT accepts the file
    assert out.shape == (1, 4, 4, 8)
    g = read_tflite(data)
    b = GraphBuilder()
    b.conv(b.input((8, 8, 4)), 8, 3, sh=2, bias=True)
    same = b.finish()
    assert g.op_counts() == {"input": 1, "conv": 1}
    assert g.node(1).attrs["pad"] == 0 and g.total_macs == same.total_macs
    other = read_tflite(handmade_pad_conv(((2, 2), (0, 0))))  # not SAME: a pad node, then the VALID conv
    assert [other.op_name(i) for i in range(other.n_nodes)] == ["input", "pad", "conv"]
    assert other.node(1).attrs == {"top": 2, "left": 0, "bottom": 2, "right": 0, "mode": "constant"}
    assert other.node(2).attrs["pad"] == PAD_VALID and other.node(2).out_shape == (5, 3, 8)


# ---- bad input ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_model() -> bytes:
    return graph_to_tflite(se_block())


def test_corrupt_and_missing_files(small_model, tmp_path):
    cases = [b"", b"hello", small_model[:16], small_model[:200], b"\x1c\x00\x00\x00TFL3" + b"\xff" * 64]
    for data in cases:
        with pytest.raises(ModelFileError) as e:
            read_tflite(data)
        assert str(e.value).startswith("model:") and "\n" not in str(e.value)
    with pytest.raises(ModelFileError, match="cannot read"):
        read_tflite(tmp_path / "missing.tflite")
    with pytest.raises(ModelFileError, match="expected .tflite bytes"):
        read_tflite(42)


def test_mutated_files_never_escape_as_other_errors(small_model):
    """Flipped bytes and truncations anywhere give a LayerGraph or a ModelFileError, never another exception."""
    rng = np.random.default_rng(0)
    n = len(small_model)
    outcomes = {"graph": 0, "error": 0}
    for _ in range(300):
        data = bytearray(small_model)
        if rng.random() < 0.2:
            data = data[: int(rng.integers(0, n))]
        else:
            for pos in rng.integers(0, min(n, 4096), size=int(rng.integers(1, 4))):
                data[pos] = int(rng.integers(0, 256))
        try:
            read_tflite(bytes(data))
            outcomes["graph"] += 1
        except ModelFileError:
            outcomes["error"] += 1
    assert outcomes["error"] > 0 and sum(outcomes.values()) == 300


def test_diff_op_graphs_reads_bytes_and_paths(small_model, tmp_path):
    p = tmp_path / "m.tflite"
    p.write_bytes(small_model)
    assert diff_op_graphs(small_model, p) == []
    assert diff_op_graphs(small_model, graph_to_tflite(se_block(), seed=3)) == []
