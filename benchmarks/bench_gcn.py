"""The gcn predictor: throughput (predictions/s with node-feature extraction) and accuracy on real targets.

speed: 10,000 distinct NB201 graphs. Cold = empty feature cache, so every graph is featurised (the graphs
themselves are built beforehand and not timed; see bench_graph.py). Warm = the same graphs again, features cached.
Speed does not depend on the weights, so a default-configured model is fitted briefly on a synthetic latency
unless ``--model DIR`` names a saved one. Target: >= 5,000 predictions/s cold on 2 cores.

accuracy: for each target in a store, train on ``--train`` archs (split by canonical hash, ``--seed``) with the
default hyper-parameters and test on all the others.

    .venv/bin/python benchmarks/bench_gcn.py speed [--n 10000] [--threads 1] [--model DIR]
    .venv/bin/python benchmarks/bench_gcn.py accuracy --store /tmp/lh/leti.db [--targets a,b] [--train 900]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
from bench_accuracy import TARGETS  # (the script's folder is on sys.path)

from leti.predictors.gcn import GCNPredictor
from leti.predictors.graph_tensors import CACHE


def timed(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def speed(args) -> None:
    from leti.space import nb201

    graphs = [nb201.from_string(s).to_graph() for s in nb201.all_strings()[: args.n]]
    if args.model:
        model = GCNPredictor.load(args.model).set_params(threads=args.threads)
    else:
        y = np.array([1.0 + 1e-8 * g.total_macs + 0.01 * int(g.live.sum()) for g in graphs[:200]])
        model = GCNPredictor(epochs=2, threads=args.threads).fit(graphs[:200], y)
    model.predict(graphs[:256])  # warm up torch kernels

    cold, warm, feat = [], [], []
    for _ in range(args.repeat):
        CACHE.clear()
        cold.append(timed(lambda: model.predict(graphs)))
        warm.append(timed(lambda: model.predict(graphs)))
        CACHE.clear()
        feat.append(timed(lambda: CACHE.entries(graphs)))
    n = len(graphs)
    print(f"gcn predictor, {n:,} distinct NB201 archs ({min(g.n_nodes for g in graphs)}-"
          f"{max(g.n_nodes for g in graphs)} nodes each), best of {args.repeat} runs")  # fmt: skip
    print(f"  hyper-parameters: {model.get_params()}")
    print(f"  torch threads {args.threads}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for name, runs in (
        ("cold: features + model", cold),
        ("warm: cached features", warm),
        ("features alone", feat),
    ):
        w, c = min(runs)  # the least disturbed run
        print(f"  {name:24s} {n / w:8,.0f} archs/s wall   ({n / c:8,.0f} archs per CPU-second)")


def accuracy(args) -> None:
    from leti.datasets import Store
    from leti.datasets.archs import target_data
    from leti.datasets.split import split_by_hash
    from leti.predictors.metrics import metrics

    store = Store.open(args.store)
    targets = args.targets.split(",") if args.targets else TARGETS
    head = (f"{'target':28s} {'train':>5s} {'test':>6s} {'acc5':>5s} {'acc10':>5s} {'acc20':>5s} {'MAPE':>6s} "
            f"{'rho':>6s} {'tau':>6s} {'fit s':>6s} {'epochs':>6s} {'pred/s':>7s}")  # fmt: skip
    print(f"gcn, default hyper-parameters, split by hash (seed {args.seed}), torch threads {args.threads}")
    print(head)
    for t in targets:
        td = target_data(store, t)
        tr, te = split_by_hash(td.hashes, args.train, args.seed)
        g_tr, g_te = td.graphs(tr), td.graphs(te)
        m = GCNPredictor(seed=args.seed, threads=args.threads)
        y_tr, h_tr = td.latency_ms[tr], td.hashes[tr]
        fit_s, _ = timed(lambda m=m, g=g_tr, y=y_tr, h=h_tr: m.fit(g, y, groups=h))
        t0 = time.perf_counter()
        p = m.predict(g_te)
        pred_rate = len(g_te) / (time.perf_counter() - t0)
        r = metrics(td.latency_ms[te], p)
        print(f"{t:28s} {tr.size:5d} {te.size:6d} {100 * r['acc5']:5.1f} {100 * r['acc10']:5.1f} "
              f"{100 * r['acc20']:5.1f} {100 * r['mape']:5.1f}% {r['spearman']:6.3f} {r['kendall']:6.3f} "
              f"{fit_s:6.0f} {m.best_epoch_:>3d}/{len(m.history_):<3d}{pred_rate:7.0f}", flush=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("speed", help="predictions/s on NB201 graphs")
    sp.add_argument("--n", type=int, default=10000, help="number of distinct NB201 archs (max 15625)")
    sp.add_argument(
        "--model", help="a saved gcn predictor directory (default: a briefly fitted default model)"
    )
    sp.add_argument("--repeat", type=int, default=3, help="timed runs; the best is reported")
    ac = sub.add_parser("accuracy", help="train on part of each target, test on the rest")
    ac.add_argument("--store", required=True, help="a leti store holding the targets' measurements")
    ac.add_argument("--targets", help=f"comma-separated (default: {','.join(TARGETS)})")
    ac.add_argument("--train", type=int, default=900, help="training archs per target")
    ac.add_argument("--seed", type=int, default=0, help="split and training seed")
    for p in (sp, ac):
        p.add_argument(
            "--threads", type=int, default=1, help="torch intra-op threads (the predictor's default: 1)"
        )
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    speed(args) if args.cmd == "speed" else accuracy(args)


if __name__ == "__main__":
    main()
