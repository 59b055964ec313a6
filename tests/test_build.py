"""The reference path (Keras + TFLite converter), checked end to end with real conversions and real LiteRT runs.

``test_arch_end_to_end`` is the big one: 30 sampled archs of each space (``sample(space, 30, seed=SEED)``, at their
native input sizes). Each arch is converted once and that .tflite is used for three checks, so the expensive
conversion is not repeated per check:

1. it loads and runs in LiteRT with the expected output shape and finite outputs;
2. the fast path (``graph_to_tflite`` with the Keras model's weights) writes the same op graph
   (``diff_op_graphs``: op names and versions, options, tensor shapes and dtypes, and which op feeds each input
   slot; the converter lists independent ops in its own order, so the order is not compared) and the same numbers
   (max |difference| <= 1e-4 x max |output| on one seeded input);
3. ``read_tflite`` gives back the conv / dense MACs of the graph and the same multiset of (op, kernel, stride,
   in_shape, out_shape) for conv / dwconv / dense / pool nodes.

Biases and BN statistics are randomised first (``randomize_keras_model``): Keras initialises them to 0 / 1, which
would leave BN folding nearly untested. The test is one parametrised case per arch so that pytest-xdist spreads it
(``-n 2``); it is marked ``slow`` (deselect with ``-m "not slow"``).
"""

from __future__ import annotations

import functools
from collections import Counter

import numpy as np
import pytest

from leti.device_runner.local import run_model
from leti.errors import LetiError
from leti.graph.builder import GraphBuilder
from leti.graph.layergraph import OPS, LayerGraph
from leti.space import sample
from leti.tflite.convert import build_tflite, keras_to_tflite, silenced, to_tflite
from leti.tflite.flatbuffer import graph_to_tflite, keras_weights, randomize_keras_model
from leti.tflite.keras_model import build_keras
from leti.tflite.reader import diff_op_graphs, parse_tflite, read_tflite

SPACES = ("nasbench101", "nasbench201", "fbnet", "leti")
N_ARCHS = 30
SEED = 2024
WINDOW_OPS = ("conv", "dwconv", "dense", "maxpool", "avgpool")
WEIGHTLESS = {"maxpool", "avgpool", "gap", "add", "concat", "mul", "act", "shuffle", "slice", "zero"}


@functools.cache
def graphs(space: str) -> tuple[LayerGraph, ...]:
    return tuple(a.to_graph() for a, _ in sample(space, N_ARCHS, seed=SEED))


def needed_distinct_nodes(g: LayerGraph) -> list[int]:
    """Nodes the output depends on, with repeats of a weightless node on the same inputs dropped: the Keras model
    keeps only the former and the converter merges the latter (CSE), e.g. two NB101 max-pools of one tensor."""
    n = g.n_nodes
    need = np.zeros(n, dtype=bool)
    need[n - 1] = True
    for i in range(n - 1, -1, -1):
        if need[i]:
            need[list(g.inputs_of(i))] = True
    canon: dict[int, int] = {}
    first: dict[tuple, int] = {}
    out = []
    for i in np.flatnonzero(need):
        i = int(i)
        op = OPS[g.op[i]]
        key = (op, tuple(int(v) for v in g.attr[i]), tuple(canon[j] for j in g.inputs_of(i)))
        if op in WEIGHTLESS and key in first:
            canon[i] = first[key]
            continue
        first.setdefault(key, i)
        canon[i] = i
        out.append(i)
    return out


def window_multiset(g: LayerGraph, nodes) -> Counter:
    out = Counter()
    for i in nodes:
        op = OPS[g.op[i]]
        if op in WINDOW_OPS:
            kh, kw, sh, sw = (int(v) for v in g.attr[i][:4])
            out[(op, kh, kw, sh, sw, tuple(map(int, g.in_shape[i])), tuple(map(int, g.out_shape[i])))] += 1
    return out


def weighted_macs(g: LayerGraph, nodes) -> int:
    return sum(int(g.macs[i]) for i in nodes if OPS[g.op[i]] in ("conv", "dwconv", "dense"))


def seeded_input(g: LayerGraph, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, *g.input_shape)).astype(np.float32)


def assert_close(a: np.ndarray, b: np.ndarray, rel: float = 1e-4) -> None:
    scale = float(np.abs(a).max())
    assert np.isfinite(a).all() and np.isfinite(b).all() and scale > 0
    err = float(np.abs(a - b).max())
    assert err <= rel * scale, f"max |diff| {err:.3g} > {rel} x output scale {scale:.3g}"


def assert_reads_back(g: LayerGraph, data: bytes) -> None:
    r = read_tflite(data)
    nodes = needed_distinct_nodes(g)
    assert weighted_macs(r, range(r.n_nodes)) == weighted_macs(g, nodes)
    assert window_multiset(r, range(r.n_nodes)) == window_multiset(g, nodes)
    assert r.output_shape == g.output_shape and r.input_shape == g.input_shape


def reference(g: LayerGraph, seed: int):
    with silenced():
        model = build_keras(g, seed=seed)
    randomize_keras_model(model, seed)
    return model, keras_to_tflite(model)


@pytest.mark.slow
@pytest.mark.parametrize("space,k", [(s, k) for s in SPACES for k in range(N_ARCHS)], ids=lambda v: str(v))
def test_arch_end_to_end(space, k):
    g = graphs(space)[k]
    model, ref = reference(g, seed=k)
    assert model.count_params() == g.total_params  # whole-model count for archs 0..29 of test_params_keras
    x = seeded_input(g, k)
    (out,) = run_model(ref, [x])
    assert out.shape == (1, g.output_shape[2])
    assert np.isfinite(out).all()

    fast = graph_to_tflite(g, weights=keras_weights(model, g))
    assert diff_op_graphs(ref, fast) == []
    (out_fast,) = run_model(fast, [x])
    assert_close(out, out_fast)

    assert_reads_back(g, ref)


# ---- the public to_tflite, precisions, errors -----------------------------------------------------------------
@functools.cache
def smallest(space: str) -> LayerGraph:
    """The cheapest of the sampled archs: precision tests need a real arch, not a big one."""
    return min(graphs(space), key=lambda g: (g.n_nodes, g.total_macs))


@pytest.mark.parametrize("space", ["nasbench201", "fbnet"])
def test_to_tflite_as_initialised_matches_fast_path(space):
    """Plain ``to_tflite`` (Keras' 0/1 biases and BN statistics, so the converter drops zero dense biases and zero
    BN shifts) still equals the fast path given the same weights."""
    g = smallest(space)
    ref = to_tflite(g, seed=3)
    with silenced():
        model = build_keras(g, seed=3)
    fast = graph_to_tflite(g, weights=keras_weights(model, g))
    assert diff_op_graphs(ref, fast) == []
    x = seeded_input(g, 0)
    assert_close(run_model(ref, [x])[0], run_model(fast, [x])[0])


@pytest.mark.parametrize("space", SPACES)
def test_fp16_reference_and_fast_path(space):
    g = smallest(space)
    model, _ = reference(g, seed=1)
    ref = keras_to_tflite(model, "fp16")
    m = parse_tflite(ref)
    assert "DEQUANTIZE" in m.op_names()
    assert any(t.dtype == "float16" and t.is_const for t in m.tensors)
    assert m.tensors[m.inputs[0]].dtype == "float32"
    fast = graph_to_tflite(g, "fp16", weights=keras_weights(model, g))
    assert diff_op_graphs(ref, fast) == []
    x = seeded_input(g, 1)
    (out,) = run_model(ref, [x])
    assert out.shape == (1, g.output_shape[2])
    assert_close(out, run_model(fast, [x])[0], rel=1e-3)
    assert_reads_back(g, ref)


@pytest.mark.parametrize("space", SPACES)
def test_int8_full_integer(space):
    g = smallest(space)
    data = to_tflite(g, "int8", seed=2)
    m = parse_tflite(data)
    assert m.tensors[m.inputs[0]].dtype == "int8" and m.tensors[m.outputs[0]].dtype == "int8"
    assert "QUANTIZE" not in m.op_names() and "DEQUANTIZE" not in m.op_names()
    weights = [m.tensors[op.inputs[1]] for op in m.ops if op.name in ("CONV_2D", "FULLY_CONNECTED")]
    assert weights and all(t.dtype == "int8" and t.scale for t in weights)
    (out,) = run_model(data)
    assert out.dtype == np.int8 and out.shape == (1, g.output_shape[2])
    assert_reads_back(g, data)


def tiny_graph() -> LayerGraph:
    b = GraphBuilder()
    x = b.input((8, 8, 3))
    b.conv(x, 8, 3, bn=True, act="relu")
    return b.finish()


def test_bad_precision_names_the_field():
    for fn in (to_tflite, build_tflite):
        with pytest.raises(LetiError, match="^precision:"):
            fn(tiny_graph(), "fp8")


def test_conversion_is_quiet(capfd):
    data = to_tflite(tiny_graph())
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert parse_tflite(data).op_names() == ["CONV_2D"]


def test_keras_model_batch_becomes_one_and_unknown_sizes_are_refused():
    import keras

    x = keras.Input((4, 4, 3))  # batch size unknown: converted at batch 1
    data = keras_to_tflite(keras.Model(x, keras.layers.Conv2D(2, 1)(x)))
    m = parse_tflite(data)
    assert m.tensors[m.inputs[0]].shape == (1, 4, 4, 3)
    x = keras.Input((None, None, 3), batch_size=1)
    with pytest.raises(LetiError, match="^model:.*only the batch size"):
        keras_to_tflite(keras.Model(x, keras.layers.Conv2D(2, 1)(x)))


def test_build_tflite_takes_the_fast_path_when_it_can():
    g = tiny_graph()
    assert parse_tflite(build_tflite(g)).description == "leti fast path"
    assert parse_tflite(build_tflite(g, fast=False)).description != "leti fast path"
    int8 = parse_tflite(build_tflite(g, "int8"))  # int8 needs the converter's calibration
    assert int8.tensors[int8.inputs[0]].dtype == "int8"


def test_conversion_failure_is_one_line():
    with silenced():
        import keras
        import tensorflow as tf

    x = keras.Input((4, 4, 3), batch_size=1)
    y = keras.layers.Lambda(lambda t: tf.signal.fft2d(tf.cast(t, tf.complex64)))(x)
    with pytest.raises(LetiError, match=r"^model: TFLite conversion failed \(ConverterError") as e:
        keras_to_tflite(keras.Model(x, y))
    assert "\n" not in str(e.value)
