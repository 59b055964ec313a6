"""The few-shot family's data from a store: which archs of the new target train it, the source targets'
measurements, and which archs to measure first on a new target (``suggest_archs``)."""

from __future__ import annotations

import numpy as np

from leti.datasets.archs import TargetData, target_data
from leti.datasets.split import one_per_hash
from leti.datasets.store import Store
from leti.errors import LetiError
from leti.predictors.fewshot import FewShotPredictor, suggest
from leti.space import Arch, canonical_space, sample

DEFAULT_POOL = 2000


def fewshot_rows(data: TargetData, train_size, seed: int, train_archs) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) rows of the new target: the ``train_archs`` (``[(Arch, where), ...]``, each measured there),
    else ``train_size`` distinct networks (all of them: nothing is left to test). Test rows share no hash with
    the training rows."""
    n = len(data)
    if train_archs is not None:
        index = {a: i for i, a in enumerate(data.arch_ids)}
        by_hash = {h: i for i, h in enumerate(data.hashes)}
        rows = []
        for i, item in enumerate(train_archs):
            arch, where = item if isinstance(item, tuple) else (item, f"train_archs[{i}]")
            j = index.get(arch.full_hash, by_hash.get(arch.hash))
            if j is None:
                raise LetiError(f"this arch ({arch.hash[:12]}) was not measured on {data.target}", where)
            rows.append(j)
        if not rows:
            raise LetiError("holds no archs", "train_archs")
        tr = np.unique(rows)
    else:
        if isinstance(train_size, bool) or not isinstance(train_size, int | np.integer) or train_size < 1:
            raise LetiError(f"must be a positive integer, got {train_size!r}", "train_size")
        if train_size > n:
            raise LetiError(
                f"{train_size} is more than the {n} archs measured on {data.target}", "train_size"
            )
        tr = np.arange(n) if train_size == n else one_per_hash(data.hashes, int(train_size), int(seed))
    seen = set(data.hashes[tr].tolist())
    te = np.flatnonzero([h not in seen for h in data.hashes])
    return tr, te


def fewshot_sources(store: Store, target: str, spaces: list[str], sources=None) -> tuple[dict, list[dict]]:
    """``{source: (graphs, latencies_ms)}`` on ``spaces`` and a record of them. ``sources`` None: every other
    target measured in those spaces."""
    per = store.stats().get("per_target_space", {})
    if sources is None:
        sources = sorted(t for t, by in per.items() if t != target and any(by.get(s) for s in spaces))
        if not sources:
            raise LetiError(
                f"no other target has measurements in {', '.join(spaces)} to learn from", "sources"
            )
    if isinstance(sources, str) or not list(sources):
        raise LetiError("give one or more source targets", "sources")
    out, meta = {}, []
    for s in sources:
        if not isinstance(s, str) or not s:
            raise LetiError(f"must name targets, got {s!r}", "sources")
        if s == target:
            raise LetiError(f"cannot include the target itself ({target})", "sources")
        if s not in per:
            known = ", ".join(sorted(t for t in per if t != target)) or "none"
            raise LetiError(f"unknown target {s!r} (measured targets: {known})", "sources")
        if not any(per[s].get(sp) for sp in spaces):
            raise LetiError(f"{s} has no measurements in {', '.join(spaces)}", "sources")
        if s in out:
            raise LetiError(f"{s} is named twice", "sources")
        parts = [target_data(store, s, sp) for sp in spaces if per[s].get(sp)]
        out[s] = ([g for d in parts for g in d.graphs()], np.concatenate([d.latency_ms for d in parts]))
        meta.append({"target": s, "n_archs": int(out[s][1].size)})
    return out, meta


def suggest_archs(store: Store, target: str, space: str, k: int, sources=None, pool: int = DEFAULT_POOL,
                  seed: int = 0, source_family: str = "lut") -> list[tuple[Arch, str]]:  # fmt: skip
    """The ``k`` archs of ``space`` to measure first on ``target`` for the few-shot predictor: from a seeded sample
    of ``pool`` archs (less those already measured on ``target``), spread over the sources' predicted latency
    (``fewshot.suggest``)."""
    space = canonical_space(space)
    if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
        raise LetiError(f"must be a positive integer, got {pool!r}", "pool")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise LetiError(f"must be a positive integer, got {k!r}", "n")
    source_data, _ = fewshot_sources(store, target, [space], sources)
    few = FewShotPredictor(source_family=source_family, seed=seed).fit_sources(source_data)
    measured = set(store.measurements(target=target, space=space)["hash"]) if _has(store, target) else set()
    cands = [(a, t) for a, t in sample(space, max(pool, k), seed) if a.hash not in measured]
    if k > len(cands):
        raise LetiError(f"{k} archs asked for, only {len(cands)} unmeasured ones in the pool of {pool}", "n")
    idx = suggest([a.to_graph() for a, _ in cands], few.source_models_, few.source_scales_, k)
    return [cands[i] for i in idx]


def _has(store: Store, target: str) -> bool:
    return bool(store.stats().get("per_target", {}).get(target))


__all__ = ["fewshot_rows", "fewshot_sources", "suggest_archs"]
