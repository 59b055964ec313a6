"""Throughput of NB201 cell string -> LayerGraph with totals (MACs, params, activation and peak memory).

Cold: every string is new to the process (all memo caches cleared first), as when a NAS loop asks about archs it has
never seen. Warm: the same strings again, served from the memo (it holds the last 4,096 graphs, so keep ``--n`` below
that for a warm figure). Target: >= 5,000 archs/s cold on 2 cores.

    .venv/bin/python benchmarks/bench_graph.py [--n 4000]
"""

from __future__ import annotations

import argparse
import time

from leti.space import expand as E
from leti.space import nb201


def clear_caches() -> None:
    nb201._from_string.cache_clear()
    E.clear_caches()


def run(strings: list[str]) -> float:
    t0 = time.perf_counter()
    for s in strings:
        g = nb201.from_string(s).to_graph()
        g.total_macs, g.total_params, g.activation_bytes(), g.peak_bytes()
    return len(strings) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000, help="number of distinct NB201 strings (max 15625)")
    args = ap.parse_args()
    strings = nb201.all_strings()[: args.n]
    clear_caches()
    cold = run(strings)
    warm = run(strings)
    print(f"NB201 string -> LayerGraph + totals, {len(strings)} distinct archs")
    print(f"  cold: {cold:,.0f} archs/s  ({1e6 / cold:.0f} us/arch)   target >= 5,000/s")
    print(f"  warm: {warm:,.0f} archs/s  (memoised graphs)")


if __name__ == "__main__":
    main()
