"""Features of LayerGraphs: stable names, deterministic values, agreement with the graph's own totals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leti.graph.builder import GraphBuilder
from leti.graph.layergraph import LayerGraph
from leti.predictors import features as F
from leti.space import nb201, parse_arch, sample

# The fingerprint of the column list. Changing features changes what saved predictors mean: bump
# base.FEATURE_VERSION, then update this value.
EXPECTED_FEATURES_ID = "d709d59f5d9d3669"  # pad, reshape, resize appended to OPS


@pytest.fixture(scope="module")
def graphs() -> list[LayerGraph]:
    return [a.to_graph() for a, _ in sample("nb201", 60, seed=3)]


def col(X: np.ndarray, name: str) -> np.ndarray:
    return X[:, F.feature_index(name)]


def test_names_are_stable_and_unique():
    names = F.feature_names()
    assert len(names) == F.N_FEATURES == len(set(names))
    assert F.FEATURES_ID == EXPECTED_FEATURES_ID, "feature columns changed: bump FEATURE_VERSION and this id"
    assert names[:3] == ("tot.nodes", "tot.edges", "tot.live_nodes")
    assert all(F.feature_index(n) == i for i, n in enumerate(names))


def test_deterministic_and_independent_of_batching(graphs):
    X = F.featurize(graphs)
    assert X.shape == (len(graphs), F.N_FEATURES) and X.dtype == np.float64
    assert np.isfinite(X).all()
    F.clear_memo()
    X2 = F.featurize(graphs[::-1])[::-1]  # other order, cold memo
    assert np.array_equal(X, X2)
    single = np.vstack([F.featurize([g], use_memo=False) for g in graphs[:5]])
    assert np.array_equal(single, X[:5])
    # duplicates in one batch and a warm memo give the same rows
    dup = F.featurize([graphs[0], graphs[1], graphs[0]])
    assert np.array_equal(dup[0], dup[2]) and np.array_equal(dup[0], X[0])


def test_memoised_rows_are_read_only_copies(graphs):
    X = F.featurize(graphs[:3])
    X[0, 0] = -1.0  # the caller's matrix is its own
    assert F.featurize(graphs[:3])[0, 0] == graphs[0].n_nodes


def test_totals_match_the_graph(graphs):
    X = F.featurize(graphs)
    for i, g in enumerate(graphs):
        t = g.totals()
        assert X[i, F.feature_index("tot.nodes")] == t["nodes"]
        assert X[i, F.feature_index("tot.edges")] == t["edges"]
        assert X[i, F.feature_index("tot.macs")] == t["macs"]
        assert X[i, F.feature_index("tot.params")] == t["params"]
        assert X[i, F.feature_index("tot.activation_bytes")] == t["activation_bytes"]
        assert X[i, F.feature_index("tot.peak_bytes")] == t["peak_bytes"]
        assert X[i, F.feature_index("tot.depth")] == t["depth"]
        assert X[i, F.feature_index("tot.live_nodes")] == int(g.live.sum())
        assert X[i, F.feature_index("tot.live_macs")] == int(g.macs[g.live].sum())
        assert X[i, F.feature_index("io.in_h")] == g.input_shape[0]
        assert X[i, F.feature_index("io.out_c")] == g.output_shape[2]


def test_per_kind_tables_add_up(graphs):
    X = F.featurize(graphs)
    names = F.feature_names()
    for stat, total in (("count", "tot.nodes"), ("macs", "tot.macs"), ("params", "tot.params")):
        cols = [i for i, n in enumerate(names) if n.startswith("kind.") and n.endswith(f".{stat}")]
        assert np.array_equal(X[:, cols].sum(axis=1), col(X, total))
    dead_cols = [i for i, n in enumerate(names) if n.startswith("kind.") and n.endswith(".dead.count")]
    assert np.array_equal(X[:, dead_cols].sum(axis=1), col(X, "tot.dead_nodes"))
    # per-level live counts cover every live node
    lvl = [
        i for i, n in enumerate(names) if n.startswith("lvl") and ".dead." not in n and n.endswith(".count")
    ]
    assert np.array_equal(X[:, lvl].sum(axis=1), col(X, "tot.live_nodes"))
    for i, g in enumerate(graphs):
        counts = g.op_counts()
        convs = sum(X[i, F.feature_index(f"kind.{k}.{s}.count")] for k in F.KINDS if k.startswith("conv")
                    for s in ("live", "dead"))  # fmt: skip
        assert convs == counts.get("conv", 0)
        assert X[i, F.feature_index("kind.zero.dead.count")] + X[
            i, F.feature_index("kind.zero.live.count")
        ] == (counts.get("zero", 0))


def test_constant_output_is_detected():
    # every edge into the cell output is 'none': the network's output no longer depends on its input
    const = parse_arch("nb201", "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|none~1|none~2|")
    live = parse_arch(
        "nb201", "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|"
    )
    g = const.to_graph()
    X = F.featurize([g, live.to_graph()])
    assert col(X, "const.dense.count")[0] == 1 and col(X, "const.dense.count")[1] == 0
    # only the stem still computes something from the input (whatever follows reads zeros)
    assert col(X, "tot.varying_live_macs")[0] == g.macs[1] < col(X, "tot.varying_live_macs")[1]
    assert col(X, "tot.const_output").tolist() == [1.0, 0.0]
    # constant nodes, live or dead: the second network's are its dead branches fed by zeros only
    assert col(X, "tot.const_nodes")[0] > col(X, "tot.const_nodes")[1] > 0
    assert col(X, "kind.dense.live.count")[0] == 1  # the head is live (it produces the output) yet constant


def test_kinds_split_kernel_and_stride():
    b = GraphBuilder()
    x = b.input((16, 16, 8))
    x = b.conv(x, 8, 1)
    x = b.conv(x, 8, 3, sh=2)
    x = b.dwconv(x, 5)
    x = b.pool("maxpool", x, 2, 2)
    g = b.finish()
    X = F.featurize([g])
    for name in ("conv_k1_s1", "conv_k3_s2", "dwconv_k5_s1", "maxpool_s2", "input"):
        assert X[0, F.feature_index(f"kind.{name}.live.count")] == 1, name
    # levels: the 3x3 stride-2 conv reads 16x16 (level 0); the depthwise conv reads 8x8 (level 1)
    assert X[0, F.feature_index("lvl0.conv_k3_s2.count")] == 1
    assert X[0, F.feature_index("lvl1.dwconv_k5_s1.count")] == 1


def test_graphs_from_dicts_match_builder_graphs(graphs):
    # a graph rebuilt from its dict holds separate arrays, not views of one table: the slow path must agree
    rebuilt = [LayerGraph.from_dict(g.to_dict()) for g in graphs[:8]]
    assert np.array_equal(F.featurize(rebuilt, use_memo=False), F.featurize(graphs[:8]))


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=0, max_value=15624))
def test_any_nb201_arch_is_consistent(i):
    g = nb201.from_string(nb201.all_strings()[i]).to_graph()
    x = F.featurize([g])[0]
    assert x[F.feature_index("tot.nodes")] == g.n_nodes
    assert x[F.feature_index("tot.peak_bytes")] == g.peak_bytes()
    assert x[F.feature_index("tot.live_macs")] + x[F.feature_index("tot.dead_macs")] == g.total_macs
    assert (x >= 0).all()
