"""The host LUT (single-layer runs) against whole-model measurements of NAS-Bench-101 archs.

1. ``leti generate``: 200 + 20 NB101 archs (seed 0) measured whole on the host target; ``split_by_hash`` puts 20
   aside for calibration and judges on the 200 others.
2. ``leti lut build``: every distinct layer of the archs sampled with ``--lut-seed`` measured alone on the same
   target; the table's sum (plus one invocation overhead) predicts each whole model.
3. acc@10 and the other metrics of that prediction on the 200 models: raw, and after ``LUTPredictor.calibrate``
   on the 20 calibration archs (one scale factor: the median measured/predicted ratio).

With ``--lut-seed 0`` (the default) the table is built from the very archs it is judged on, as nn-Meter-style kernel
tables are: every layer is in the table and nothing is fitted to whole-model times. Another seed judges the
nearest-entry fallback on layers the table lacks.

    .venv/bin/python benchmarks/bench_lut_host.py [--n 200] [--target host-litert-cpu-1t] [--runs 10] [--lut-seed 0]

Runs in a throw-away LETI_HOME; about 10 minutes on an idle 2-core machine. Measure with nothing else running: both
sides are wall-clock times of this machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="whole NB101 models to judge the table on")
    ap.add_argument(
        "--calibrate", type=int, default=20, help="more whole models, to calibrate the table's scale"
    )
    ap.add_argument(
        "--lut-archs", type=int, default=None, help="archs whose layers fill the table (default --n)"
    )
    ap.add_argument(
        "--lut-seed", type=int, default=0, help="sampling seed of those archs (0: the judged archs)"
    )
    ap.add_argument("--target", default="host-litert-cpu-1t")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument(
        "--repeat-check", type=int, default=20, help="whole models measured twice: the host's noise"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["LETI_HOME"] = home
        from leti.datasets.archs import target_data
        from leti.datasets.split import split_by_hash
        from leti.datasets.store import Store
        from leti.device_runner.bindings import parse_binding
        from leti.predictors.lut import LUTPredictor
        from leti.predictors.metrics import metrics
        from leti.predictors.registry import load
        from leti.workflows.generate import generate
        from leti.workflows.lut_build import build_lut

        binding = parse_binding(args.target)
        store = Store.open(Path(home) / "leti.db")
        t0 = time.perf_counter()
        total = args.n + args.calibrate
        rep = generate(store, "nasbench101", total, 0, [binding], runs=args.runs, warmup=args.warmup,
                       repeat_check=args.repeat_check)  # fmt: skip
        floor = rep.noise_floor.get(args.target)
        whole_s = time.perf_counter() - t0
        lut = build_lut(binding, "nasbench101", args.lut_archs or total, args.lut_seed, runs=args.runs,
                        warmup=args.warmup, root=Path(home) / "predictors")  # fmt: skip
        pred = load(args.target, "lut", root=Path(home) / "predictors")
        assert isinstance(pred, LUTPredictor)
        everything = target_data(store, args.target, "nasbench101")
        cal, test = split_by_hash(everything.hashes, args.calibrate, 0) if args.calibrate else ([], None)
        data = everything.subset(test if test is not None else np.arange(len(everything)))
        graphs = data.graphs()
        details = pred.predict_details(graphs)
        m = metrics(data.latency_ms, details.latency_ms)
        ratio = details.latency_ms / data.latency_ms

        print(f"host LUT vs whole models: {args.target}, nasbench101, runs={args.runs} warmup={args.warmup}")
        print(f"  whole models measured   {len(everything)} archs (seed 0) in {whole_s:.0f} s, judged on {len(data)}; "
              f"median {np.median(data.latency_ms):.2f} ms, range {data.latency_ms.min():.2f}-"
              f"{data.latency_ms.max():.2f} ms")  # fmt: skip
        print(f"  table                   {lut.n_layers} layers from {lut.n_archs} archs (seed {args.lut_seed}) "
              f"in {lut.seconds:.0f} s; invocation overhead {lut.overhead_ms:.3f} ms")  # fmt: skip
        if floor is not None:
            print(f"  host noise floor        {100 * floor:.1f}% (median |change| of {args.repeat_check} models "
                  f"measured again at the end)")  # fmt: skip
        print(
            f"  layers missing          {int(details.n_missing.sum())} of {int(details.n_layers.sum())} costed"
        )
        print(f"  acc@10 {100 * m['acc10']:.1f}%   acc@5 {100 * m['acc5']:.1f}%   acc@20 {100 * m['acc20']:.1f}%   "
              f"MAPE {100 * m['mape']:.1f}%   Spearman {m['spearman']:.3f}   Kendall {m['kendall']:.3f}")  # fmt: skip
        print(f"  predicted/measured      median {np.median(ratio):.3f}, "
              f"5-95% {np.percentile(ratio, 5):.3f}-{np.percentile(ratio, 95):.3f}")  # fmt: skip
        if args.calibrate:
            pred.calibrate(everything.graphs(cal), everything.latency_ms[cal])
            c = metrics(data.latency_ms, pred.predict(graphs))
            print(f"  calibrated on {len(cal)} other archs (scale {pred.scale_:.3f}):")
            print(f"  acc@10 {100 * c['acc10']:.1f}%   acc@5 {100 * c['acc5']:.1f}%   acc@20 {100 * c['acc20']:.1f}%   "
                  f"MAPE {100 * c['mape']:.1f}%   Spearman {c['spearman']:.3f}   Kendall {c['kendall']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
