"""The canonical hash: invariant to relabelling, exact on non-isomorphic graphs."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leti.space import Arch, nb101, nb201
from leti.space.hashing import canonical_form
from leti.space.layers import layer_key

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LABELS = ["a", "b", "c"]


@st.composite
def labelled_digraph_and_permutation(draw):
    n = draw(st.integers(1, 9))
    labels = [draw(st.sampled_from(LABELS)) for _ in range(n)]
    edges = [(i, j) for i in range(n) for j in range(n) if i != j and draw(st.booleans())]
    perm = draw(st.permutations(range(n)))
    return labels, edges, perm


@given(labelled_digraph_and_permutation())
@settings(max_examples=300, deadline=None)
def test_canonical_form_is_invariant_under_relabelling(case):
    labels, edges, perm = case
    relabelled = [None] * len(labels)
    for old, new in enumerate(perm):
        relabelled[new] = labels[old]
    moved = [(perm[i], perm[j]) for i, j in edges]
    assert canonical_form(labels, edges) == canonical_form(relabelled, moved)


@st.composite
def arch_and_topological_relabelling(draw):
    n = draw(st.integers(3, 8))
    ops = ["conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3"]
    m = np.zeros((n, n), dtype=int)
    for i in range(n):
        for j in range(i + 1, n):
            m[i, j] = draw(st.booleans())
    for v in range(1, n - 1):  # keep every node connected
        m[v - 1, v] = 1 if not m[:v, v].any() else m[v - 1, v]
        m[v, n - 1] = 1 if not m[v, v + 1 :].any() else m[v, n - 1]
    m[0, 1] = 1
    layers = ["input"] + [draw(st.sampled_from(ops)) for _ in range(n - 2)] + ["output"]
    # a random topological order of the interior nodes
    order, placed = [0], {0}
    while len(order) < n - 1:
        ready = [
            v
            for v in range(1, n - 1)
            if v not in placed and all(m[u, v] == 0 or u in placed for u in range(n))
        ]
        v = draw(st.sampled_from(sorted(ready)))
        order.append(v)
        placed.add(v)
    order.append(n - 1)
    return m, layers, order


@given(arch_and_topological_relabelling())
@settings(max_examples=200, deadline=None)
def test_arch_hash_invariant_under_node_relabelling(case):
    m, layers, order = case
    a = Arch(m.tolist(), layers)
    b = Arch(m[np.ix_(order, order)].tolist(), [layers[i] for i in order])
    assert a.full_hash == b.full_hash and a.hash == b.hash


def _nx(arch: Arch) -> nx.DiGraph:
    g = nx.DiGraph()
    for i, layer in enumerate(arch.layers):
        g.add_node(i, label=layer_key(layer))
    g.add_edges_from(arch.edges)
    return g


def _count_isomorphism_classes(graphs: list[nx.DiGraph]) -> int:
    """Exact count: bucket by WL hash (isomorphic graphs share it), then pairwise isomorphism inside buckets."""
    buckets: dict[str, list[nx.DiGraph]] = {}
    for g in graphs:
        buckets.setdefault(nx.weisfeiler_lehman_graph_hash(g, node_attr="label"), []).append(g)
    match = nx.algorithms.isomorphism.categorical_node_match("label", None)
    classes = 0
    for members in buckets.values():
        reps: list[nx.DiGraph] = []
        for g in members:
            if not any(nx.is_isomorphic(g, r, node_match=match) for r in reps):
                reps.append(g)
        classes += len(reps)
    return classes


def _assert_hash_is_exact(archs: list[Arch]) -> None:
    by_hash: dict[str, list[Arch]] = {}
    for a in archs:
        by_hash.setdefault(a.full_hash, []).append(a)
    match = nx.algorithms.isomorphism.categorical_node_match("label", None)
    for group in by_hash.values():  # equal hash -> isomorphic (no collision)
        first = _nx(group[0])
        for other in group[1:]:
            assert nx.is_isomorphic(first, _nx(other), node_match=match)
    # different hash -> not isomorphic: the number of classes equals the number of hashes
    assert _count_isomorphism_classes([_nx(g[0]) for g in by_hash.values()]) == len(by_hash)


def test_no_collisions_among_10000_nb101_cells():
    rng = np.random.default_rng(0)
    cells: dict[tuple, Arch] = {}
    while len(cells) < 10000:
        m, ops = nb101.random_spec(rng)
        try:
            a = nb101.from_spec(m, ops)
        except Exception:
            continue
        cells.setdefault((a.adjacency, tuple(layer_key(x) for x in a.layers)), a)
    archs = list(cells.values())
    _assert_hash_is_exact(archs)
    assert len({a.full_hash for a in archs}) < len(archs)  # relabelled duplicates exist and were merged


def test_nb201_distinct_hashes_equal_distinct_pruned_graphs():
    pruned = [nb201.from_string(s).prune() for s in nb201.all_strings()]
    _assert_hash_is_exact(pruned)
    assert len({p.full_hash for p in pruned}) == len({nb201.from_string(s).hash for s in nb201.all_strings()})


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data (real measurements) is not present")
def test_all_nb201_strings_in_the_shared_data_import():
    import csv

    for f in sorted(DATA.glob("nasbench201__*.csv")):
        with f.open() as fh:
            rows = list(csv.DictReader(fh))
        archs = [nb201.from_string(r["arch"]) for r in rows]
        assert len(archs) == len(rows)
        assert all(nb201.to_string(a) == r["arch"] for a, r in zip(archs, rows, strict=True))
