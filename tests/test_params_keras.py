"""Params from the LayerGraph equal Keras' count_params() of the equivalent tf.keras model, for 200 archs per space.

A Keras model's count_params() is the sum of its layers' count_params(). Building 800 whole Keras models costs
~15 CPU-minutes (TensorFlow variable creation), so this test builds every *distinct* layer of the equivalent model
once, standalone, with Keras itself (``build_keras`` and this test share ``node_layers``, the one mapping from IR
nodes to Keras layers), and sums. Whole models are counted too: here for a few archs per space, and in
tests/test_build.py for archs 0..29 of the same sample, whose Keras models that test builds anyway.
"""

from __future__ import annotations

import json

import pytest

from leti.space import sample

N_PER_SPACE = 200
SEED = 2024
SPACES = ("nasbench101", "nasbench201", "fbnet", "leti")


@pytest.fixture(scope="module")
def keras_params():
    from leti.tflite.keras_model import node_layers

    cache: dict[tuple, int] = {}

    def layer_params(layer, shapes) -> int:
        cfg = {k: v for k, v in layer.get_config().items() if k != "name"}
        key = (type(layer).__name__, json.dumps(cfg, sort_keys=True, default=str), shapes)
        if key not in cache:
            fresh = type(layer).from_config(layer.get_config())
            fresh.build([(None, *s) for s in shapes] if len(shapes) > 1 else (None, *shapes[0]))
            cache[key] = fresh.count_params()
        return cache[key]

    node_cache: dict[tuple, int] = {}

    def node_params(graph, i: int) -> int:
        shapes = tuple(tuple(int(v) for v in graph.out_shape[j]) for j in graph.inputs_of(i))
        out = tuple(int(v) for v in graph.out_shape[i])
        # node_layers depends on nothing else, so equal keys mean equal Keras layers
        key = (int(graph.op[i]), tuple(int(v) for v in graph.attr[i]), shapes, out)
        if key not in node_cache:
            layers = node_layers(graph, i)
            n = layer_params(layers[0], shapes) if layers else 0
            for layer in layers[1:]:  # BatchNormalization / activation after a conv read its output
                n += layer_params(layer, (out,))
            node_cache[key] = n
        return node_cache[key]

    def count(graph) -> int:
        return sum(node_params(graph, i) for i in range(graph.n_nodes))

    return count


@pytest.mark.parametrize("space", SPACES)
def test_params_equal_keras_layer_by_layer(space, keras_params):
    for arch, text in sample(space, N_PER_SPACE, seed=SEED):
        g = arch.to_graph()
        assert keras_params(g) == g.total_params, f"{space}: {text[:120]}"


@pytest.mark.parametrize("space", SPACES)
def test_params_equal_whole_keras_model(space, keras_params):
    from leti.tflite.keras_model import build_keras

    for arch, _ in sample(space, N_PER_SPACE, seed=SEED)[-3:]:
        g = arch.to_graph()
        model = build_keras(g)
        assert model.count_params() == g.total_params == keras_params(g)
        assert tuple(model.output.shape[1:]) == (g.output_shape[2],)
