"""The fast path (FlatBuffer written directly) against the reference converter, op for op.

Small hand-built graphs cover every IR op, every activation (fused into a conv and standalone) and every converter
rewrite the fast path mirrors; each is converted by the real TFLite converter (biases and BN statistics
randomised) and compared with ``diff_op_graphs`` (same op graph up to the listing order of independent ops: op
names, versions, options, tensor shapes / dtypes, and which op output feeds each input slot) and numerically in
LiteRT. Sampled archs of every space are compared in tests/test_build.py (30 per space).
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from leti.device_runner.local import run_model
from leti.graph.builder import GraphBuilder
from leti.graph.layergraph import LayerGraph
from leti.graph.shapes import PAD_VALID
from leti.space import sample
from leti.tflite.convert import build_tflite, keras_to_tflite, silenced, to_tflite
from leti.tflite.flatbuffer import (
    FastPathUnsupported,
    LayerWeights,
    graph_to_tflite,
    keras_weights,
    random_weights,
    randomize_keras_model,
    unsupported_reason,
)
from leti.tflite.keras_model import build_keras
from leti.tflite.reader import diff_op_graphs, parse_tflite

FAST_PATH_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN",
                 "ADD", "MUL", "CONCATENATION", "RESHAPE", "TRANSPOSE", "STRIDED_SLICE", "RELU", "RELU6",
                 "HARD_SWISH", "LOGISTIC", "TANH", "DEQUANTIZE", "PAD", "MIRROR_PAD", "RESIZE_BILINEAR",
                 "RESIZE_NEAREST_NEIGHBOR", "GELU", "LEAKY_RELU", "SOFTMAX"}  # fmt: skip
ACTS = ("relu", "relu6", "hswish", "sigmoid", "tanh", "swish", "hsigmoid")


def conv_variants() -> LayerGraph:
    b = GraphBuilder()
    x = b.input((12, 12, 4))
    y = b.conv(x, 8, 3, sh=2, bn=True, act="relu")
    y = b.conv(y, 8, 3, groups=2, dil=2, bn=True)
    y = b.dwconv(y, 3, mult=2, bn=True, act="relu6")
    y = b.dwconv(y, 3, 1, sh=2, sw=1, bias=False)  # CP-style asymmetric kernel and stride
    y = b.dwconv(y, 3, dil=2, bias=True)
    y = b.conv(y, 8, 3, pad=PAD_VALID, bias=True)
    y = b.conv(y, 8, 1, bias=False)
    return b.finish()


def acts_in_convs() -> LayerGraph:
    b = GraphBuilder()
    y = b.input((8, 8, 4))
    for fn in ACTS:
        y = b.conv(y, 8, 3, bn=True, act=fn)
    return b.finish()


def standalone_acts() -> LayerGraph:
    b = GraphBuilder()
    x = b.input((8, 8, 4))
    y = x
    for fn in ACTS:
        y = b.act(b.add((y, x)), fn)
    return b.finish()


def structure_ops() -> LayerGraph:
    b = GraphBuilder()
    x = b.input((10, 10, 6))
    a = b.pool("maxpool", x, 2, 2, pad=PAD_VALID)
    c = b.pool("avgpool", x, 3, 2)
    y = b.concat((a, c, a))
    y = b.slice(y, 8, 4)
    y = b.shuffle(y, 2)
    y = b.add((y, y, b.zero(y)))
    y = b.bn(y)
    s = b.gap(y, keepdims=True)
    y = b.mul(y, s)
    y = b.dense(y, 6)  # dense on a spatial tensor: FULLY_CONNECTED with keep_num_dims
    y = b.gap(y)
    y = b.dense(y, 5, act="relu")
    return b.finish()


def rewrites() -> LayerGraph:
    b = GraphBuilder()
    x = b.input((8, 8, 4))
    y = b.zero(b.conv(x, 8, 3, bn=True))  # MUL by 0 folds into the conv
    y = b.bn(b.conv(y, 8, 3, bias=True))  # standalone BN folds into the conv before it
    y = b.act(b.act(b.conv(y, 8, 1, act="relu"), "relu"), "relu")  # RELU(RELU(x)) is RELU(x)
    y = b.act(b.conv(y, 8, 1, act="relu6"), "relu")  # RELU(RELU6(x)) stays
    r1, r2 = b.act(y, "relu6"), b.act(y, "relu6")  # the same RELU6 twice: merged
    y = b.add((r1, r2))
    y = b.conv(b.act(y, "hsigmoid"), 8, 3)  # hard_sigmoid's / 6 folds into the next conv
    z = b.zero(b.conv(y, 8, 1, act="relu"))  # no fold through an activation
    b.add((z, y))
    return b.finish()


def se_block() -> LayerGraph:
    """MobileNetV3-style squeeze-excite (hsigmoid gate) on a depthwise conv, with a residual add."""
    b = GraphBuilder()
    x = b.input((8, 8, 8))
    y = b.conv(x, 16, 1, bn=True, act="hswish")
    y = b.dwconv(y, 5, bn=True, act="hswish")
    s = b.gap(y, keepdims=True)
    s = b.conv(s, 4, 1, act="relu")
    s = b.conv(s, 16, 1, act="hsigmoid")
    y = b.mul(y, s)
    y = b.conv(y, 8, 1, bn=True)
    return b.finish()


def bn_patterns() -> LayerGraph:
    """Standalone BN next to other constant ops: ADD + ADD merge, MUL + MUL stay, nothing folds into a conv after."""
    b = GraphBuilder()
    x = b.input((8, 8, 4))
    y = b.bn(b.act(b.add((x, x)), "hsigmoid"))
    y = b.act(b.bn(b.add((y, x))), "hsigmoid")
    y = b.bn(b.bn(b.add((y, x))))
    y = b.conv(b.bn(y), 4, 3)
    y = b.dwconv(b.bn(y), 3, pad=PAD_VALID)
    return b.finish()


def real_model_ops() -> LayerGraph:
    """Ops added for real models: pad / crop, reshape and flatten, resize, GELU / leaky ReLU / softmax, and a
    global pool without keepdims read by a conv (EfficientNet's squeeze-excite)."""
    b = GraphBuilder()
    x = b.input((8, 8, 4))
    y = b.pad(x, 1, 0, 2, 1)
    y = b.pad(y, -1, 0, 0, -2)  # a crop: STRIDED_SLICE
    y = b.pad(y, 1, -1, 1, 2)  # pad then crop
    y = b.act(b.conv(y, 8, 3, act="gelu"), "leaky_relu")
    y = b.pad(y, 1, 1, 0, 0, mode="reflect")
    y = b.resize(y, 6, 7, "bilinear")
    y = b.resize(y, 12, 14, "nearest")
    s = b.conv(b.gap(y), 8, 1, act="sigmoid")
    y = b.mul(y, s)
    y = b.reshape(y, (6, 28, 8))
    y = b.act(b.conv(y, 4, 3, sh=2, act="leaky_relu"), "softmax")
    y = b.reshape(y, (1, 1, 3 * 14 * 4), flat=True)
    y = b.dense(b.act(y, "gelu"), 5, act="softmax")
    return b.finish()


def shared_pads() -> LayerGraph:
    """NASNet's PAD read by two VALID pools, and a PAD in front of a VALID conv that SAME could not express."""
    b = GraphBuilder()
    x = b.input((11, 11, 4))
    p = b.pad(x, 1, 1, 1, 1)
    y = b.add((b.pool("maxpool", p, 3, 2, pad=PAD_VALID), b.pool("avgpool", p, 3, 2, pad=PAD_VALID)))
    b.conv(b.pad(y, 2, 0, 2, 0), 4, 3, pad=PAD_VALID)
    return b.finish()


CASES = {
    "conv_variants": conv_variants,
    "acts_in_convs": acts_in_convs,
    "standalone_acts": standalone_acts,
    "structure_ops": structure_ops,
    "rewrites": rewrites,
    "se_block": se_block,
    "bn_patterns": bn_patterns,
    "real_model_ops": real_model_ops,
    "shared_pads": shared_pads,
}


def reference_pair(g: LayerGraph, seed: int = 0) -> tuple[bytes, bytes]:
    with silenced():
        model = build_keras(g, seed=seed)
    randomize_keras_model(model, seed)
    return keras_to_tflite(model), graph_to_tflite(g, weights=keras_weights(model, g))


def assert_same_outputs(ref: bytes, fast: bytes, g: LayerGraph) -> None:
    x = np.random.default_rng(0).standard_normal((1, *g.input_shape)).astype(np.float32)
    (a,), (b,) = run_model(ref, [x]), run_model(fast, [x])
    scale = float(np.abs(a).max())
    assert a.shape == b.shape and scale > 0
    assert float(np.abs(a - b).max()) <= 1e-4 * scale


@pytest.mark.parametrize("name", list(CASES))
def test_matches_converter(name):
    g = CASES[name]()
    assert unsupported_reason(g) is None
    ref, fast = reference_pair(g)
    assert diff_op_graphs(ref, fast) == []
    assert set(parse_tflite(fast).op_names()) <= FAST_PATH_OPS
    assert_same_outputs(ref, fast, g)


def test_rewrites_do_what_the_converter_does():
    """Pins the op list of the rewrites case, so that a rewrite lost by both paths would still be caught."""
    _, fast = reference_pair(rewrites())
    m = parse_tflite(fast)
    acts = [op.options.get("fusedActivationFunction") for op in m.ops]
    assert m.op_names() == ["CONV_2D", "CONV_2D", "CONV_2D", "CONV_2D", "RELU", "RELU6", "ADD", "ADD", "CONV_2D",
                            "CONV_2D", "MUL", "ADD"]  # fmt: skip
    assert acts == [
        0,
        0,
        1,
        3,
        None,
        None,
        0,
        3,
        0,
        1,
        0,
        0,
    ]  # RELU / RELU6 fused where the converter fuses them


def test_diff_detects_a_changed_op():
    def two_convs(stride: int) -> LayerGraph:
        b = GraphBuilder()
        x = b.input((12, 12, 4))
        b.conv(b.conv(x, 8, 3, sh=stride, act="relu"), 8, 3)
        return b.finish()

    a = graph_to_tflite(two_convs(2))
    assert diff_op_graphs(a, graph_to_tflite(two_convs(2), seed=5)) == []  # weights are not structure
    assert diff_op_graphs(a, graph_to_tflite(two_convs(1)))


def test_diff_ignores_the_order_of_independent_ops():
    def branches(first: str) -> LayerGraph:
        b = GraphBuilder()
        x = b.input((8, 8, 4))
        if first == "pool":
            p = b.pool("maxpool", x, 3, 1)
            c = b.conv(x, 4, 3)
        else:
            c = b.conv(x, 4, 3)
            p = b.pool("maxpool", x, 3, 1)
        b.add((c, p))
        return b.finish()

    a, c = graph_to_tflite(branches("pool")), graph_to_tflite(branches("conv"))
    assert parse_tflite(a).op_names() != parse_tflite(c).op_names()
    assert diff_op_graphs(a, c) == []


# ---- what falls back, and why ----------------------------------------------------------------------------------
def dense_then_bn() -> LayerGraph:
    b = GraphBuilder()
    x = b.input((4, 4, 3))
    y = b.dense(b.gap(x), 6)
    b.bn(y)
    return b.finish()


def hsigmoid_then_dense() -> LayerGraph:
    b = GraphBuilder()
    x = b.input((4, 4, 3))
    b.dense(b.act(b.gap(x), "hsigmoid"), 4)
    return b.finish()


def pad_as_same() -> LayerGraph:
    b = GraphBuilder()
    b.dwconv(b.pad(b.input((8, 8, 3)), 0, 0, 1, 1), 3, sh=2, pad=PAD_VALID)
    return b.finish()


def conv_on_flat() -> LayerGraph:
    b = GraphBuilder()
    x = b.input((4, 4, 3))
    b.pool("maxpool", b.act(b.gap(x), "sigmoid"), 1, 1)  # a pool straight after the global pool is fine
    return b.finish()


@pytest.mark.parametrize(
    "make,reason",
    [
        (dense_then_bn, "a constant MUL after a fully connected layer"),
        (hsigmoid_then_dense, "a constant MUL in front of a fully connected layer"),
        (conv_on_flat, "maxpool on a flattened"),
        (pad_as_same, "a PAD that makes the VALID window after it SAME"),
    ],
)
def test_unmirrored_patterns_are_refused(make, reason):
    g = make()
    assert reason in (unsupported_reason(g) or "")
    with pytest.raises(FastPathUnsupported):
        graph_to_tflite(g)


def test_refusal_can_depend_on_the_weights():
    """A BN with a zero shift is a bare per-channel MUL, which the converter may fold into the conv after it."""
    b = GraphBuilder()
    x = b.input((6, 6, 4))
    b.conv(b.bn(b.add((x, x))), 4, 3)
    g = b.finish()
    assert unsupported_reason(g) is None  # seeded random weights: the shift is not zero
    w = random_weights(g, seed=0)
    bn = next(i for i in range(g.n_nodes) if g.op_name(i) == "bn")
    gamma, _, _, var = w[bn].bn
    w[bn] = LayerWeights(bn=(gamma, np.zeros(4, np.float32), np.zeros(4, np.float32), var))
    with pytest.raises(FastPathUnsupported, match="per-channel constant MUL in front of CONV_2D"):
        graph_to_tflite(g, weights=w)


def test_build_tflite_falls_back_to_the_converter():
    g = dense_then_bn()
    data = build_tflite(g, seed=1)
    assert parse_tflite(data).description != "leti fast path"
    assert diff_op_graphs(data, to_tflite(g, seed=1)) == []
    (out,) = run_model(data)
    assert out.shape == (1, 6)


def test_int8_is_not_written_directly():
    with pytest.raises(FastPathUnsupported, match="^precision:"):
        graph_to_tflite(conv_variants(), "int8")


# ---- weights, determinism, speed, imports ---------------------------------------------------------------------
def test_random_weights_are_seeded_and_runnable():
    g = sample("fbnet", 1, seed=4)[0][0].to_graph()
    a, b, c = graph_to_tflite(g, seed=1), graph_to_tflite(g, seed=1), graph_to_tflite(g, seed=2)
    assert a == b and a != c
    assert diff_op_graphs(a, c) == []
    (out,) = run_model(a)
    assert out.shape == (1, 1000) and np.isfinite(out).all() and np.abs(out).max() > 0
    w = random_weights(g, seed=1)
    assert all(np.isfinite(lw.kernel).all() for lw in w.values() if lw.kernel is not None)


def test_fast_path_is_much_faster_than_the_converter():
    g = sample("nasbench201", 1, seed=9)[0][0].to_graph()
    to_tflite(tiny())  # TensorFlow's import is not the converter's cost
    t = time.perf_counter()
    to_tflite(g)
    slow = time.perf_counter() - t
    fast = min(_timed(lambda: graph_to_tflite(g)) for _ in range(3))
    assert fast * 5 < slow, f"fast path {fast:.3f}s vs converter {slow:.3f}s"


def tiny() -> LayerGraph:
    b = GraphBuilder()
    b.conv(b.input((4, 4, 3)), 4, 3)
    return b.finish()


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def test_fast_path_does_not_import_tensorflow():
    code = (
        "import sys\n"
        "from leti.space import sample\n"
        "from leti.tflite import graph_to_tflite, read_tflite\n"
        "g = sample('leti', 1, seed=0)[0][0].to_graph()\n"
        "read_tflite(graph_to_tflite(g))\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'imported TF'\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
