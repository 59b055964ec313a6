"""LayerGraph arithmetic: MACs and params against hand-computed values, shapes, peak memory, serialisation."""

from __future__ import annotations

import numpy as np
import pytest

from leti.errors import GraphError
from leti.graph.builder import GraphBuilder
from leti.graph.layergraph import LayerGraph
from leti.space import Arch, nb201, sample
from leti.space.expand import apply_layer
from leti.space.layers import normalize_layer


def single(spec, in_shape=(32, 32, 16), channels=32) -> LayerGraph:
    b = GraphBuilder()
    x = b.input(in_shape)
    apply_layer(b, normalize_layer(spec), x, channels)
    return b.finish()


# (spec, input shape, default channels, MACs by hand, output shape)
MAC_CASES = [
    ({"op": "conv", "k": 3}, (32, 32, 16), 32, 32 * 32 * 32 * 9 * 16, (32, 32, 32)),
    ({"op": "conv", "k": 3, "stride": 2}, (32, 32, 16), 32, 16 * 16 * 32 * 9 * 16, (16, 16, 32)),
    ({"op": "conv", "k": 1, "stride": 2}, (15, 15, 16), 32, 8 * 8 * 32 * 16, (8, 8, 32)),
    ({"op": "conv", "k": 3, "groups": 4}, (32, 32, 16), 32, 32 * 32 * 32 * 9 * 4, (32, 32, 32)),
    ({"op": "conv", "k": 5, "dilation": 2}, (32, 32, 16), 32, 32 * 32 * 32 * 25 * 16, (32, 32, 32)),
    ({"op": "dwconv", "k": 3}, (32, 32, 16), 32, 32 * 32 * 16 * 9, (32, 32, 16)),
    ({"op": "dwconv", "k": 5, "stride": 2}, (32, 32, 16), 32, 16 * 16 * 16 * 25, (16, 16, 16)),
    ({"op": "dwconv", "k": 3, "multiplier": 2}, (8, 8, 16), 32, 8 * 8 * 32 * 9, (8, 8, 32)),
    ({"op": "dense", "units": 10}, (1, 1, 64), 32, 64 * 10, (1, 1, 10)),
    ({"op": "dense", "units": 10}, (4, 4, 64), 32, 16 * 64 * 10, (4, 4, 10)),
    # Tucker-2: 1x1 16->4, 3x3 4->8, 1x1 8->32
    (
        {"op": "tucker2", "k": 3, "rin": 4, "rout": 8},
        (32, 32, 16),
        32,
        32 * 32 * 4 * 16 + 32 * 32 * 8 * 9 * 4 + 32 * 32 * 32 * 8,
        (32, 32, 32),
    ),  # fmt: skip
    # CP rank 8: 1x1 16->8, 3x1 depthwise, 1x3 depthwise, 1x1 8->32
    (
        {"op": "cp", "k": 3, "rank": 8},
        (32, 32, 16),
        32,
        32 * 32 * 8 * 16 + 2 * (32 * 32 * 8 * 3) + 32 * 32 * 32 * 8,
        (32, 32, 32),
    ),  # fmt: skip
    # CP with stride 2: the 3x1 strides rows, the 1x3 strides columns
    (
        {"op": "cp", "k": 3, "rank": 8, "stride": 2},
        (32, 32, 16),
        32,
        32 * 32 * 8 * 16 + 16 * 32 * 8 * 3 + 16 * 16 * 8 * 3 + 16 * 16 * 32 * 8,
        (16, 16, 32),
    ),  # fmt: skip
    # SVD dense rank 4: 64->4->10
    ({"op": "svd_dense", "rank": 4, "units": 10}, (1, 1, 64), 32, 64 * 4 + 4 * 10, (1, 1, 10)),
    ({"op": "sepconv", "k": 3}, (32, 32, 16), 32, 32 * 32 * 16 * 9 + 32 * 32 * 32 * 16, (32, 32, 32)),
]


@pytest.mark.parametrize("spec,shape,ch,macs,out", MAC_CASES, ids=[str(c[0]) for c in MAC_CASES])
def test_macs_match_hand_computed(spec, shape, ch, macs, out):
    g = single(spec, shape, ch)
    conv_dense = np.isin(g.op, [1, 2, 3])  # conv, dwconv, dense
    assert int(g.macs[conv_dense].sum()) == macs
    assert g.output_shape == out


PARAM_CASES = [
    ({"op": "conv", "k": 3}, 9 * 16 * 32 + 4 * 32),  # kernel + BN (gamma, beta, mean, var)
    ({"op": "conv", "k": 3, "bn": False}, 9 * 16 * 32 + 32),  # kernel + bias
    ({"op": "conv", "k": 3, "groups": 4}, 9 * 4 * 32 + 4 * 32),
    ({"op": "dwconv", "k": 3}, 9 * 16 + 4 * 16),
    ({"op": "tucker2", "k": 3, "rin": 4, "rout": 8}, 16 * 4 + 9 * 4 * 8 + 8 * 32 + 4 * 32),
    ({"op": "cp", "k": 3, "rank": 8}, 16 * 8 + 3 * 8 + 3 * 8 + 8 * 32 + 4 * 32),
    ({"op": "mbconv", "k": 3, "e": 2, "channels": 16}, 16 * 32 + 4 * 32 + 9 * 32 + 4 * 32 + 32 * 16 + 4 * 16),
]


@pytest.mark.parametrize("spec,params", PARAM_CASES, ids=[str(c[0]) for c in PARAM_CASES])
def test_params_match_hand_computed(spec, params):
    assert single(spec).total_params == params


def test_mbconv_residual_se_and_shuffle():
    g = single({"op": "mbconv", "k": 5, "e": 3, "groups": 2, "se": 0.25, "channels": 16, "expand": True})
    ops = g.op_counts()
    assert ops["shuffle"] == 1 and ops["mul"] == 1 and ops["add"] == 1 and ops["gap"] == 1
    no_res = single({"op": "mbconv", "k": 3, "e": 3, "stride": 2, "channels": 16})
    assert "add" not in no_res.op_counts()


def test_shape_mismatch_is_a_graph_error():
    # sum merge of a 16-channel pool and a 32-channel conv
    a = Arch([[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0]], ["input", "maxpool3x3", "conv", "output"],
             {"merge": "sum", "channels": 32, "stem": [{"op": "conv", "channels": 16}]})  # fmt: skip
    with pytest.raises(GraphError, match="different shapes"):
        a.to_graph()
    with pytest.raises(GraphError, match="groups=3"):
        single({"op": "conv", "k": 3, "groups": 3})


def test_totals_and_peak_memory_on_a_chain():
    # input 8x8x3 -> conv 8 ch -> gap -> dense 10: peak is while the conv runs (input + output live)
    b = GraphBuilder()
    x = b.input((8, 8, 3))
    y = b.conv(x, 8, 3, bn=True, act="relu")
    b.dense(b.gap(y), 10)
    g = b.finish()
    assert g.peak_bytes() == 4 * (8 * 8 * 3 + 8 * 8 * 8)
    assert g.activation_bytes() == 4 * (8 * 8 * 3 + 8 * 8 * 8 + 8 + 10)
    assert g.totals()["depth"] == 4 and g.max_depth == 4


def test_peak_memory_counts_long_lived_skip_tensors():
    b = GraphBuilder()
    x = b.input((4, 4, 2))
    a = b.conv(x, 2, 1)
    c = b.conv(a, 2, 1)
    b.add((x, c))  # x stays alive across both convs
    g = b.finish()
    elems = 4 * 4 * 2
    assert g.peak_bytes() == 4 * 3 * elems


def test_graph_dict_round_trip_and_immutability():
    g = nb201.from_string(
        "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|none~1|nor_conv_1x1~2|"
    ).to_graph()
    back = LayerGraph.from_dict(g.to_dict())
    assert back.totals() == g.totals() and back.blocks == g.blocks
    assert np.array_equal(back.src, g.src) and np.array_equal(back.live, g.live)
    with pytest.raises(ValueError):
        g.macs[0] = 1


def test_expansion_is_memoised_and_consistent():
    for arch, _ in sample("nb101", 10, seed=4):
        g1 = arch.to_graph()
        assert arch.to_graph() is g1
        assert (g1.src < g1.dst).all()
        assert len(g1.blocks) > 0 and all(isinstance(b, str) for b in g1.blocks)
        assert all(g1.inputs_of(i) == tuple(g1.src[g1.dst == i]) for i in range(g1.n_nodes))


def test_nb201_network_shape_and_known_size():
    g = nb201.from_string(
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    ).to_graph()
    assert g.input_shape == (32, 32, 3) and g.output_shape == (1, 1, 10)
    stages = {tuple(s) for s, o in zip(g.out_shape.tolist(), g.op.tolist(), strict=True) if o == 1}
    assert {(32, 32, 16), (16, 16, 32), (8, 8, 64)} <= stages


def test_classes_zero_ends_the_network_after_the_head():
    a = Arch([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "conv", "output"],
             {"classes": 0, "stacks": 1, "cells_per_stack": 1, "head": [{"op": "gap"}, {"op": "dense", "units": 7}]})  # fmt: skip
    g = a.to_graph()
    assert g.output_shape == (1, 1, 7) and g.op_counts()["dense"] == 1 and g.op_counts()["gap"] == 1
    with_classifier = a.with_config(classes=5).to_graph()
    assert with_classifier.output_shape == (1, 1, 5) and with_classifier.op_counts()["dense"] == 2
