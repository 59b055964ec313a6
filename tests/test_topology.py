"""Topology features: they see where layers sit, from the IR alone, exactly and batch-independently."""

from __future__ import annotations

import numpy as np
import pytest

from leti.errors import PredictorError
from leti.graph.builder import GraphBuilder
from leti.predictors import features as F
from leti.predictors import topology as T
from leti.space import parse_arch

NAMES = F.design_names()


def col(X: np.ndarray, name: str) -> np.ndarray:
    return X[:, NAMES.index(name)]


def design(graphs) -> np.ndarray:
    return F.design(graphs, "all")


def _two_wirings():
    """The same layers (a 3x3 conv, a 1x1 conv, a two-input add) wired as a chain with a skip, and side by side."""
    b = GraphBuilder()
    x = b.input((8, 8, 4))
    a = b.conv(x, 4, 3)
    c = b.conv(a, 4, 1)
    b.add([c, x])
    chain = b.finish()
    b = GraphBuilder()
    x = b.input((8, 8, 4))
    a = b.conv(x, 4, 3)
    c = b.conv(x, 4, 1)
    b.add([a, c])
    side = b.finish()
    return chain, side


def test_same_layers_wired_differently_differ_only_in_topology():
    chain, side = _two_wirings()
    X = design([chain, side])
    kinds = [NAMES.index(n) for n in F.feature_names() if n.startswith(("kind.", "lvl", "const."))]
    assert np.array_equal(X[0, kinds], X[1, kinds])  # the bag of layers is the same
    m3, m1, madd = chain.macs[1], chain.macs[2], chain.macs[3]
    # two input-to-output paths each; on the chain one of them carries both convs, side by side one conv each
    assert col(X, "topo.path.log2n").tolist() == [1.0, 1.0]
    assert col(X, "topo.path.macs")[0] == pytest.approx((m3 + m1) / 2 + madd)
    assert col(X, "topo.path.macs")[1] == pytest.approx((m3 + m1) / 2 + madd)
    assert col(X, "topo.path.nodes").tolist() == [
        (4 + 2) / 2,
        3.0,
    ]  # input, convs, add; input, add on the skip
    assert col(X, "topo.ptok.convk").tolist() == [0.5, 0.5]
    # what feeds what: only the chain has a conv feeding a conv; only the side-by-side one has two convs at a depth
    assert col(X, "topo.big.convk>conv1").tolist() == [1, 0]
    assert col(X, "topo.big.input>conv1").tolist() == [0, 1]
    assert col(X, "topo.pbig.convk>conv1").tolist() == [0.5, 0.0]
    assert col(X, "topo.width.lvl0.max").tolist() == [1, 2]
    assert col(X, "topo.width.lvl0.shared").tolist() == [0, 2]
    assert col(X, "topo.fanout.input").tolist() == [1, 1]


def test_nb201_cells_with_the_same_ops_on_other_edges():
    # one 3x3 conv, one 1x1 conv, four skips: first in series (0->1->3), then in parallel (0->3 and 0->1)
    a = parse_arch(
        "nb201",
        "|nor_conv_3x3~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|nor_conv_1x1~1|skip_connect~2|",
    )
    b = parse_arch(
        "nb201",
        "|nor_conv_1x1~0|+|skip_connect~0|skip_connect~1|+|nor_conv_3x3~0|skip_connect~1|skip_connect~2|",
    )
    X = design([a.to_graph(), b.to_graph()])
    topo = [NAMES.index(n) for n in T.topology_names()]
    assert not np.array_equal(X[0, topo], X[1, topo])
    assert col(X, "topo.path.macs")[0] != col(X, "topo.path.macs")[1]


def test_a_constant_output_has_no_paths():
    const = parse_arch("nb201", "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|none~1|none~2|")
    X = design([const.to_graph()])
    for name in ("topo.path.log2n", "topo.path.nodes", "topo.path.macs"):
        assert col(X, name)[0] == 0, name
    assert np.isfinite(X).all()


def test_live_memory_counts_only_what_runs():
    b = GraphBuilder()
    x = b.input((8, 8, 4))
    b.live = False  # a pruned branch: the output reads it only through a zero, so a runtime may drop it
    z = b.zero(b.conv(x, 8, 3))
    b.live = True
    b.add([b.conv(x, 8, 1), z])
    X = design([b.finish()])
    # input (256 elements) until the 1x1 conv has read it; then the conv's output (512) and the add's (512)
    assert col(X, "topo.mem.peak")[0] == 4 * (512 + 512)
    assert (
        col(X, "tot.peak_bytes")[0] > col(X, "topo.mem.peak")[0]
    )  # every node running in id order needs more


def test_batches_of_many_graphs_match_one_at_a_time():
    texts = [
        "|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|none~2|",
        "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_3x3~0|none~1|skip_connect~2|",
        "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|",
    ]
    graphs = [parse_arch("nb201", t).to_graph() for t in texts]
    both = design(graphs)
    for i, g in enumerate(graphs):
        F.clear_memo()
        assert np.array_equal(design([g])[0], both[i])
    # only models that ask for topology columns get (and pay for) them
    assert F.design(graphs, "none").shape == (3, F.N_FEATURES) and both.shape == (3, len(NAMES))
    assert F.design_columns("path+big").size == F.N_FEATURES + len(T.GROUPS["path"]) + len(T.GROUPS["big"])


def test_tokens_come_from_op_names_and_survive_new_ops():
    table = T.token_table(("input", "conv", "add", "some_future_op"))
    assert [T.TOKENS[t] if t >= 0 else "conv" for t in table] == ["input", "conv", "add", "other"]
    assert set(T.topology_names()) == {n for g in T.GROUPS.values() for n in g}
    with pytest.raises(PredictorError, match="unknown topology group"):
        F.design_columns("cp")
