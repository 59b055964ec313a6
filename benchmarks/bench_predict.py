"""Prediction throughput per family on 10,000 NB201 archs, from cell strings to milliseconds.

Each family is trained on 900 other NB201 archs with a synthetic latency (the speed of prediction does not depend on
where the labels came from). Then, for the 10,000 archs:

* cold: every memo cleared (graphs, feature rows, layer signatures), as when a NAS loop meets new archs. The time is
  split into graph building (string -> LayerGraph), features (``featurize``), layer signatures (the LUT's and the
  boosting families' LUT base) and the model itself;
* warm: the same LayerGraph objects again (memoised feature rows and layer summaries): what repeated queries cost
  when the caller keeps its graphs (the graph memo itself holds the last 4,096 archs).

Goal: >= 50,000 predictions/s for the boosting families.

Trust (``--trust``, on by default): the same predictions with their 90% intervals and out-of-distribution flags
(``TrustModel.assess``, calibrated by 3-fold CV on the 900 training archs), cold and warm, as the extra share of
time over the prediction alone. Goal: <= 30% (issue 14).

    .venv/bin/python benchmarks/bench_predict.py [--n 10000] [--families lut,flops,xgboost,lightgbm,catboost]
        [--topology]   # also: cold features with and without the topology columns models may ask for
        [--no-trust]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from leti.predictors import features as F
from leti.predictors import lut as L
from leti.predictors.registry import available_families, make
from leti.space import expand as E
from leti.space import nb201

DEFAULT = ("lut", "flops", "xgboost", "lightgbm", "catboost")


def clear_caches() -> None:
    nb201._from_string.cache_clear()
    E.clear_caches()
    F.clear_memo()  # feature rows and graph summaries (the LUT prices the same summaries)


def graphs_of(strings: list[str]) -> list:
    return [nb201.from_string(s).to_graph() for s in strings]


def synthetic_latency(graphs) -> np.ndarray:
    X = F.featurize(graphs)
    macs = X[:, F.feature_index("tot.live_macs")]
    nodes = X[:, F.feature_index("tot.live_nodes")]
    rng = np.random.default_rng(0)
    return (0.5 + macs / 2e7 + 0.02 * nodes) * np.exp(rng.normal(0, 0.02, len(graphs)))


def uses_signatures(pred) -> bool:
    return pred.family == "lut" or getattr(pred, "base", "none") == "lut"


def bench(family: str, strings: list[str], train_strings: list[str], trust: bool = True) -> dict:
    gtr = graphs_of(train_strings)
    ytr = synthetic_latency(gtr)
    pred = make(family).fit(gtr, ytr)
    tm = None
    if trust:
        from leti.trust import calibrate

        tm = calibrate(pred, gtr, ytr, folds=3)
    del gtr
    n = len(strings)
    clear_caches()
    t0 = time.perf_counter()
    graphs = graphs_of(strings)
    t1 = time.perf_counter()
    F.featurize(graphs)
    t2 = time.perf_counter()
    if uses_signatures(pred):
        L.design(graphs, pred.states if family == "lut" else pred.base_states)
    t3 = time.perf_counter()
    pred.predict(graphs)
    t4 = time.perf_counter()
    cold = {"graphs": t1 - t0, "features": t2 - t1, "signatures": t3 - t2, "model": t4 - t3}
    t5 = time.perf_counter()
    out = pred.predict(graphs)  # the same graph objects: memoised features and summaries
    warm = time.perf_counter() - t5
    assert out.shape == (n,) and np.isfinite(out).all()
    res = {"family": family, "n": n, "cold": cold, "warm": warm}
    if tm is not None:
        # cold again, now with intervals and flags: graphs, features and memos all new
        clear_caches()
        t0 = time.perf_counter()
        graphs = graphs_of(strings)
        out = pred.predict(graphs)
        t1 = time.perf_counter()
        a = tm.assess(graphs, out, 0.9)
        t2 = time.perf_counter()
        res["trust_cold"] = (t1 - t0, t2 - t1)
        t0 = time.perf_counter()
        out = pred.predict(graphs)
        t1 = time.perf_counter()
        a = tm.assess(graphs, out, 0.9)
        t2 = time.perf_counter()
        res["trust_warm"] = (t1 - t0, t2 - t1)
        assert a.interval_ms.shape == (n, 2) and np.isfinite(a.interval_ms).all()
        res["flagged"] = float(np.mean(~a.in_distribution))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="archs to predict (at most 15625 - 900)")
    ap.add_argument("--families", default=",".join(DEFAULT))
    ap.add_argument("--topology", action="store_true", help="also time the topology columns (on request)")
    ap.add_argument("--no-trust", action="store_true", help="skip the intervals-and-flags timing")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    strings = nb201.all_strings()
    order = rng.permutation(len(strings))
    test = [strings[i] for i in order[: args.n]]
    train = [strings[i] for i in order[args.n : args.n + 900]]
    have = set(available_families())
    print(f"predictions/s on {args.n:,} NB201 archs, string -> LayerGraph -> features -> model (1 thread)")
    print(
        f"{'family':10s} {'cold/s':>9s} {'warm/s':>10s}   cold time split: graphs / features / signatures / model"
    )
    for fam in args.families.split(","):
        if fam not in have:
            print(f"{fam:10s} (not available)")
            continue
        r = bench(fam, test, train, not args.no_trust)
        c = r["cold"]
        total = sum(c.values())
        split = " / ".join(
            f"{100 * c[k] / total:4.1f}%" for k in ("graphs", "features", "signatures", "model")
        )
        print(f"{fam:10s} {r['n'] / total:9,.0f} {r['n'] / r['warm']:10,.0f}   {split}   "
              f"(features+signatures+model only: {r['n'] / (total - c['graphs']):,.0f}/s)")  # fmt: skip
        if "trust_cold" in r:
            (pc, tc), (pw, tw) = r["trust_cold"], r["trust_warm"]
            print(f"{'  +trust':10s} {r['n'] / (pc + tc):9,.0f} {r['n'] / (pw + tw):10,.0f}   intervals+flags add "
                  f"{100 * tc / pc:.1f}% cold, {100 * tw / pw:.1f}% warm (goal <= 30%); "
                  f"{100 * r['flagged']:.1f}% flagged")  # fmt: skip
    if args.topology:
        print(topology_cost(test))


def topology_cost(strings: list[str], repeats: int = 3) -> str:
    """Cold featurisation with and without the topology columns that models may ask for (best of ``repeats``)."""
    graphs = graphs_of(strings)
    plain, both = [], []
    for _ in range(repeats):
        F.clear_memo()
        t0 = time.perf_counter()
        F.featurize(graphs)
        plain.append(time.perf_counter() - t0)
        F.clear_memo()
        t0 = time.perf_counter()
        F.design(graphs, "all")
        both.append(time.perf_counter() - t0)
    a, b = min(plain), min(both)
    return (f"cold features of {len(graphs):,} graphs: {len(graphs) / a:,.0f}/s; with the topology columns "
            f"(models with topology != none): {len(graphs) / b:,.0f}/s, {b / a:.2f}x the time")  # fmt: skip


if __name__ == "__main__":
    main()
