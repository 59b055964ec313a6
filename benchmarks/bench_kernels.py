"""The kernel family's speed goals and its CPU fusion rules, measured on this machine.

1. ``predict``: a 200-layer model (50 blocks of 1x1 conv-BN-ReLU, depthwise conv, 1x1 conv and a residual add, each
   block of another width, so no two blocks share a kernel) predicted
   by a fitted ``kernel`` predictor with its LightGBM kernel regressor (the slowest configuration), each time on a
   fresh graph (nothing memoised). Goal: under 20 ms.
2. ``kernels build``: ``leti kernels build --target host-litert-cpu-1t --runs 20`` kernels per second (building the
   single-kernel .tflite and timing it). Goal: at least 5 kernels/s.
3. ``fusion``: for each CPU fusion rule, a fused pair timed as one model against its parts timed alone, in
   interleaved rounds; each model's figure is its least disturbed round (the minimum over rounds of the median of
   its runs), less the invocation overhead timed on a trivial model. A fused pair costs about its main op alone; an
   unfused pair costs about the sum of its parts.

The host's load is printed; timings taken on a busy machine are noisy and should be re-run on a quiet one.

    .venv/bin/python benchmarks/bench_kernels.py [--n 40] [--rounds 9] [--skip-build] [--skip-fusion]
        [--prior-mlbench ../shared/data/mobile-ml-benchmark]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def block_graph(blocks: int = 50, c: int = 32, h: int = 28):
    from leti.graph.builder import GraphBuilder

    b = GraphBuilder()
    x = b.input((h, h, c))
    for i in range(blocks):
        y = b.conv(x, c + 8 * i, 1, act="relu", bn=True)  # every block a different width: no repeated kernels
        y = b.dwconv(y, 3, act="relu", bn=True)
        y = b.conv(y, c, 1, bn=True)
        x = b.add([x, y])
    return b.finish()


def bench_predict(reps: int = 20) -> dict:
    from leti.graph.layergraph import LayerGraph
    from leti.predictors.kernel import KernelPredictor, KernelSamples, kernels_of
    from leti.space import sample

    train = [a.to_graph() for a, _ in sample("leti", 80, seed=1)]
    y = np.array([0.2 + 1e-9 * g.total_macs + 0.01 * g.n_nodes for g in train])
    node_ms = [
        {ns[0]: 1e-9 * float(g.macs[ns[0]]) + 0.01 for ns in kernels_of(g, "gpu").nodes} for g in train
    ]
    ks = KernelSamples.from_node_times(train, node_ms, "gpu")
    pred = KernelPredictor().fit(train, y, kernels=ks, target="pixel4-tflite-gpu")
    g = block_graph()
    layers = g.n_nodes - 1
    d = g.to_dict()
    cold = []
    for _ in range(reps):
        fresh = LayerGraph.from_dict(d)
        t0 = time.perf_counter()
        pred.predict([fresh])
        cold.append((time.perf_counter() - t0) * 1e3)
    t0 = time.perf_counter()
    for _ in range(reps):
        pred.predict([fresh])
    warm = (time.perf_counter() - t0) / reps * 1e3
    return {"layers": layers, "cold_ms_median": float(np.median(cold)), "cold_ms_max": float(np.max(cold)),
            "warm_ms": warm}  # fmt: skip


def bench_build(n: int, mlbench: Path | None = None) -> dict:
    from leti.datasets.store import Store
    from leti.device_runner.bindings import Binding
    from leti.workflows.kernels import build_kernels

    with tempfile.TemporaryDirectory() as tmp:
        st = Store.open(Path(tmp) / "leti.db")
        if mlbench is not None:  # the prior: the kernels of mobile-ml-benchmark's 102 models
            from leti.datasets.mlbench import import_mlbench

            import_mlbench(st, mlbench)
        r = build_kernels(st, Binding("host-litert-cpu-1t"), n=n, rounds=2, runs=20, root=Path(tmp) / "p")
        return {"prior": r.prior, "kernels": r.n_measured, "measure_s": r.measure_seconds, "kernels_per_s": r.kernels_per_s,
                "total_s": r.seconds}  # fmt: skip


def _pairs():
    """(what, pair as one model, [its parts alone])"""
    from leti.graph.builder import GraphBuilder

    def one(fn, shape=(112, 112, 32)):  # large maps: the elementwise parts cost tens of microseconds
        b = GraphBuilder()
        fn(b, b.input(shape))
        return b.finish()

    # (a dense layer is left out: the ReLU of its short output vector takes less time than the noise)
    def conv(b, x, act="none"):
        return b.conv(x, 32, 1, act=act)

    return [
        ("conv + relu", one(lambda b, x: conv(b, x, "relu")), [one(conv), one(lambda b, x: b.act(x, "relu"))]),
        ("dwconv + relu6", one(lambda b, x: b.dwconv(x, 3, act="relu6")),
         [one(lambda b, x: b.dwconv(x, 3)), one(lambda b, x: b.act(x, "relu6"))]),
        ("maxpool + relu", one(lambda b, x: b.act(b.pool("maxpool", x, 3, 1), "relu")),
         [one(lambda b, x: b.pool("maxpool", x, 3, 1)), one(lambda b, x: b.act(x, "relu"))]),
        ("conv + bn", one(lambda b, x: b.bn(conv(b, x))), [one(conv), one(lambda b, x: b.bn(x))]),
        ("add + relu", one(lambda b, x: b.act(b.add([x, x]), "relu")),
         [one(lambda b, x: b.add([x, x])), one(lambda b, x: b.act(x, "relu"))]),
        ("mul + relu", one(lambda b, x: b.act(b.mul(x, x), "relu")),
         [one(lambda b, x: b.mul(x, x)), one(lambda b, x: b.act(x, "relu"))]),
        ("conv + hswish", one(lambda b, x: b.act(conv(b, x), "hswish")), [one(conv), one(lambda b, x: b.act(x, "hswish"))]),
        ("add + bn", one(lambda b, x: b.bn(b.add([x, x]))), [one(lambda b, x: b.add([x, x])), one(lambda b, x: b.bn(x))]),
    ]  # fmt: skip


def bench_fusion(rounds: int, runs: int = 30) -> list[dict]:
    from leti.device_runner.local import LocalRunner
    from leti.measurement import target_settings
    from leti.predictors import fusion as FU
    from leti.tflite.convert import build_tflite
    from leti.workflows.lut_build import overhead_graph

    runner = LocalRunner()
    settings = target_settings("host-litert-cpu-1t", runs=runs, warmup=3)
    pairs = _pairs()
    over = build_tflite(overhead_graph())
    models = [(build_tflite(f), [build_tflite(p) for p in parts]) for _, f, parts in pairs]
    t_over: list[float] = []
    t_fused = [[] for _ in pairs]
    t_parts = [[[] for _ in parts] for _, _, parts in pairs]
    for _ in range(rounds):  # interleaved: drift of the host hits every model alike
        t_over.append(runner.measure(over, settings).median_ms)
        for i, (f, parts) in enumerate(models):
            t_fused[i].append(runner.measure(f, settings).median_ms)
            for j, p in enumerate(parts):
                t_parts[i][j].append(runner.measure(p, settings).median_ms)
    # the least disturbed round of each model: on a shared machine other processes only ever add time
    o = float(np.min(t_over))
    out = []
    rules = FU.ruleset_for_target("host-litert-cpu-1t")
    for i, (name, fused, _parts) in enumerate(pairs):
        tf = float(np.min(t_fused[i])) - o
        tp = [float(np.min(t)) - o for t in t_parts[i]]
        kernels = len(FU.split(fused, rules))
        expect = kernels == 1  # what leti's rule table says: the pair is one kernel
        # fused when the pair costs less than its main op plus half its second part
        fused_seen = tf - tp[0] < 0.5 * tp[1]
        out.append({"rule": name, "fused_ms": tf, "parts_ms": tp, "sum_ms": sum(tp), "kernels": kernels,
                    "expected_fused": expect, "looks_fused": fused_seen,
                    "agrees": fused_seen == expect})  # fmt: skip
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40, help="kernels to build and time")
    ap.add_argument("--rounds", type=int, default=9, help="interleaved rounds of the fusion check")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument(
        "--prior-mlbench", type=Path, help="a mobile-ml-benchmark directory: build from its models' kernels"
    )
    ap.add_argument("--skip-fusion", action="store_true")
    a = ap.parse_args(argv)
    os.environ.setdefault("LETI_HOME", tempfile.mkdtemp(prefix="leti-bench-kernels-"))
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    p = bench_predict()
    print(f"predict: {p['layers']}-layer model, cold median {p['cold_ms_median']:.1f} ms (max {p['cold_ms_max']:.1f}), "
          f"warm {p['warm_ms']:.2f} ms  goal < 20 ms: {'met' if p['cold_ms_median'] < 20 else 'MISSED'}")  # fmt: skip
    if not a.skip_build:
        b = bench_build(a.n, a.prior_mlbench)
        print(f"kernels build (prior: {b['prior']}): {b['kernels']} kernels at --runs 20 in {b['measure_s']:.1f} s of building+timing "
              f"= {b['kernels_per_s']:.1f} kernels/s (total {b['total_s']:.1f} s)  goal >= 5: "
              f"{'met' if b['kernels_per_s'] >= 5 else 'MISSED'}")  # fmt: skip
    if not a.skip_fusion:
        print(
            f"\nfusion rules on this host (XNNPACK), best of {a.rounds} interleaved rounds, overhead removed:"
        )
        print(
            "| pair | as one model ms | parts alone ms | sum of parts | kernels (litert rules) | rules say | measured | agrees |"
        )
        print("|---|---:|---:|---:|---:|---|---|---|")
        for r in bench_fusion(a.rounds):
            parts = " + ".join(f"{v:.3f}" for v in r["parts_ms"])
            print(f"| {r['rule']} | {r['fused_ms']:.3f} | {parts} | {r['sum_ms']:.3f} | {r['kernels']} "
                  f"| {'fused' if r['expected_fused'] else 'separate'} "
                  f"| {'fused' if r['looks_fused'] else 'separate'} | {'yes' if r['agrees'] else 'NO'} |")  # fmt: skip
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
