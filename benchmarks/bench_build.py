"""Throughput of LayerGraph -> .tflite: the reference path (Keras + TFLite converter) against the fast path
(FlatBuffer written directly), fp32, N sampled archs per space.

Reference: ``to_tflite`` (build_keras + trace + convert). Fast: ``graph_to_tflite`` with seeded random weights.
Both start from the same LayerGraphs (expansion not timed) and the converter is warmed up on one arch first, so
neither column pays TensorFlow's import. That the two paths write the same op graphs is tested in
tests/test_build.py and tests/test_flatbuffer.py.

    .venv/bin/python benchmarks/bench_build.py [--n 5] [--seed 0] [--spaces nb101 nb201 fbnet leti]
"""

from __future__ import annotations

import argparse
import time

from leti.space import canonical_space, sample
from leti.tflite.convert import to_tflite
from leti.tflite.flatbuffer import graph_to_tflite


def timed(fn, graphs) -> float:
    t0 = time.perf_counter()
    for g in graphs:
        fn(g)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5, help="archs per space")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--spaces", nargs="+", default=["nb101", "nb201", "fbnet", "leti"])
    args = ap.parse_args()
    spaces = [canonical_space(s) for s in args.spaces]
    graphs = {s: [a.to_graph() for a, _ in sample(s, args.n, seed=args.seed)] for s in spaces}
    to_tflite(graphs[spaces[0]][0])  # import TensorFlow and warm the converter up
    graph_to_tflite(graphs[spaces[0]][0])
    print(f"LayerGraph -> .tflite (fp32), {args.n} archs per space, seed {args.seed}")
    print(
        f"{'space':<12} {'reference/s':>12} {'fast/s':>10} {'ratio':>8} {'ref s/model':>12} {'fast ms/model':>14}"
    )
    tot_ref = tot_fast = 0.0
    for s in spaces:
        t_ref = timed(to_tflite, graphs[s])
        t_fast = timed(graph_to_tflite, graphs[s])
        tot_ref, tot_fast = tot_ref + t_ref, tot_fast + t_fast
        n = len(graphs[s])
        print(f"{s:<12} {n / t_ref:>12.2f} {n / t_fast:>10.1f} {t_ref / t_fast:>7.1f}x "
              f"{t_ref / n:>12.2f} {1e3 * t_fast / n:>14.1f}")  # fmt: skip
    n = args.n * len(spaces)
    print(f"{'all':<12} {n / tot_ref:>12.2f} {n / tot_fast:>10.1f} {tot_ref / tot_fast:>7.1f}x "
          f"{tot_ref / n:>12.2f} {1e3 * tot_fast / n:>14.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
