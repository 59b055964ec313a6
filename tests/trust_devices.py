"""Synthetic devices for the trust tests: a store CSV with two NB201 source targets (300 archs), a new target
(the first 60 of them) and a target measured in FBNet only."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from leti.predictors import features as F
from leti.space import sample

ARCHS_SEED = 8  # `leti space sample --space nb201 -n 300 --seed 8` lists the same archs, in the same order


def latency(graphs, conv: float, add: float, seed: int) -> np.ndarray:
    X = F.featurize(graphs)
    ms = (
        0.3
        + conv * X[:, F.feature_index("tot.live_macs")] / 1e8
        + add * X[:, F.feature_index("kind.add.live.count")]
    )
    return ms * np.exp(np.random.default_rng(seed).normal(0, 0.02, len(graphs)))


def write_csv(path: Path, new_conv: float = 8.0, new_add: float = 0.02) -> list:
    """The measurement CSV at ``path``; returns the NB201 (arch, text) pairs (the new target measured the first 60)."""
    archs = sample("nb201", 300, seed=ARCHS_SEED)
    graphs = [a.to_graph() for a, _ in archs]
    rows = []
    for target, conv, add, seed, n in (("srca-cpu", 4.0, 0.01, 0, 300), ("srcb-gpu", 1.0, 0.05, 1, 300),
                                       ("newc-cpu", new_conv, new_add, 2, 60)):  # fmt: skip
        y = latency(graphs[:n], conv, add, seed)
        rows += [
            ["nasbench201", t, target, f"{ms:.6f}", "synthetic"]
            for (_, t), ms in zip(archs[:n], y, strict=True)
        ]
    rows += [["fbnet", t, "fbx-cpu", "5.0", "synthetic"] for _, t in sample("fbnet", 3, seed=0)]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["space", "arch", "target", "latency_ms", "source"])
        w.writerows(rows)
    return archs
