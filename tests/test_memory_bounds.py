"""What keeps a long-running process's memory bounded (issue 11): memos weighed by nodes + edges, the size of an
arch known before it is built, and the registry of distinct layers starting over past its budget without changing
a prediction."""

from __future__ import annotations

import numpy as np
import pytest

from leti.graph.memo import SizedLRU, graph_weight, memo
from leti.predictors import features as F
from leti.predictors import registry as R
from leti.space import sample
from leti.space.expand import expand, expanded_size


def test_sized_lru_keeps_within_its_budget():
    c = SizedLRU(100, weigh=len)
    for i in range(50):
        c.put(i, "x" * 9)
    assert c.weight <= 100 and len(c) == 11 and c.get(49) == "x" * 9 and c.get(0) is None
    c.put("heavy", "x" * 13)  # over 1/8 of the budget: never kept
    assert c.get("heavy") is None and c.weight <= 100
    c.get(40)  # recently used: survives the next insertions
    for i in range(50, 60):
        c.put(i, "x" * 9)
    assert c.get(40) is not None and c.get(41) is None
    c.clear()
    assert len(c) == 0 and c.weight == 0


def test_memo_decorator():
    calls = []

    @memo(10, weigh=lambda v: 1)
    def square(x):
        calls.append(x)
        return x * x

    assert [square(3), square(3), square(4)] == [9, 9, 16] and calls == [3, 4]
    square.cache_clear()
    assert square(3) == 9 and calls == [3, 4, 3]


@pytest.mark.parametrize("space", ["nb201", "fbnet", "nb101", "leti"])
def test_expanded_size_is_known_before_building(space):
    for arch, _ in sample(space, 5, seed=11):
        assert expanded_size(arch) == graph_weight(arch.to_graph())


def test_the_expand_memo_is_bounded_by_nodes_and_edges():
    expand.cache_clear()
    for arch, _ in sample("leti", 300, seed=5):
        arch.to_graph()
    assert 0 < expand.cache.weight <= expand.cache.budget


@pytest.mark.parametrize("family", ["lut", "lightgbm"])
def test_predictions_survive_the_layer_registry_starting_over(family):
    graphs = [a.to_graph() for a, _ in sample("leti", 120, seed=2)]
    y = np.array([0.2 + g.total_macs / 3e7 for g in graphs])
    params = {"n_estimators": 50} if family == "lightgbm" else {}
    pred = R.make(family, **params).fit(graphs[:90], y[:90])
    before = pred.predict(graphs[90:])
    assert F.trim(max_rows=0)  # as a server does past MAX_ROWS distinct layers
    assert len(F.ROWS) == 0
    others = [a.to_graph() for a, _ in sample("leti", 40, seed=99)]  # new layers, numbered from scratch
    pred.predict(others)
    assert np.allclose(pred.predict(graphs[90:]), before, rtol=1e-9, atol=0)
    assert not F.trim()  # under the budget: nothing happens
