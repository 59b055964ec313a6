"""Where the wall time of `leti generate` goes on the host: sampling, building .tflite models, measuring, storing.

    .venv/bin/python benchmarks/bench_generate.py [--space nb201] [--n 20] [--runs 10]

Runs in a throw-away LETI_HOME; prints the split and the models built per second.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="nb201")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--target", default="host-litert-cpu-1t")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["LETI_HOME"] = home
        from leti.datasets.store import Store
        from leti.device_runner.bindings import parse_binding
        from leti.workflows.generate import generate

        store = Store.open(Path(home) / "leti.db")
        r = generate(store, args.space, args.n, 0, [parse_binding(args.target)], runs=args.runs, warmup=2)
        w = r.workers[0]
        accounted = r.sample_s + w.build_s + w.measure_s + w.store_s
        print(f"leti generate --space {args.space} -n {args.n} --target {args.target} --runs {args.runs}")
        print(f"  wall        {r.wall_s:8.2f} s   ({r.progress['done']} archs measured)")
        for name, sec in (("sample+IR", r.sample_s), ("build", w.build_s), ("measure", w.measure_s),
                          ("store", w.store_s), ("other", r.wall_s - accounted)):  # fmt: skip
            print(f"  {name:<11} {sec:8.2f} s   {100 * sec / r.wall_s:5.1f} %")
        print(f"  models built per second: {w.measured / w.build_s:.2f}")


if __name__ == "__main__":
    main()
