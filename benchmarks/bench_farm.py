"""Farm overhead per job: what `leti generate` spends around each measurement on a phone, as a ratio to the time
the phone spends running the model.

Two loopback devices (the real ADB wire protocol on 127.0.0.1, driven by the unmodified adb-shell client) share one
target's queue. Each "phone" runs the pushed .tflite with LiteRT on this CPU, so the inference times are real; what
differs from a phone is the transport (loopback instead of USB/Wi-Fi) and the CPU. Per job:

* inference: (warmup + runs) x the mean time per run, plus the model's init time, from the stored measurement;
* overhead: everything else in the worker's measure and store phases: the ADB handshake, the hygiene checks
  (thermal zones, battery), pushing the model, the shell round trips, parsing benchmark_model's output, and the
  SQLite write. Building the .tflite is reported apart (it is the host's work, the same with or without phones).

    .venv/bin/python benchmarks/bench_farm.py [--n 20] [--runs 10] [--warmup 2] [--space nb201]
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
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--space", default="nb201")
    ap.add_argument("--target", default="pixel4-tflite-cpu-1t")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["LETI_HOME"] = home
        from leti.datasets.store import Store
        from leti.device_runner.bindings import parse_binding
        from leti.testing.loopback import DeviceProfile, LoopbackAdbDevice, make_fake_elf
        from leti.workflows.generate import generate

        binary = Path(home) / "benchmark_model"
        binary.write_bytes(make_fake_elf("arm64-v8a"))
        devices = [LoopbackAdbDevice(DeviceProfile(serialno=f"BENCH{i}")) for i in range(2)]
        for d in devices:
            d.start()
        try:
            store = Store.open(Path(home) / "leti.db")
            bindings = [parse_binding(f"{args.target}@tcp:{d.serial}") for d in devices]
            t0 = time.perf_counter()
            rep = generate(store, args.space, args.n, 0, bindings, runs=args.runs, warmup=args.warmup,
                           benchmark_binary=str(binary))  # fmt: skip
            wall = time.perf_counter() - t0
        finally:
            for d in devices:
                d.stop()
        df = store.measurements(target=args.target)
        jobs = len(df)
        inference_s = float(((args.warmup + args.runs) * df["mean_ms"] + df["init_ms"].fillna(0)).sum()) / 1e3
        measure_s = sum(w.measure_s for w in rep.workers)
        store_s = sum(w.store_s for w in rep.workers)
        build_s = sum(w.build_s for w in rep.workers)
        overhead_s = measure_s + store_s - inference_s
        print(f"farm: {args.n} {args.space} archs on {args.target}, 2 loopback devices, runs={args.runs} "
              f"warmup={args.warmup}: {jobs} jobs in {wall:.1f} s wall")  # fmt: skip
        print(f"  model latency           median {np.median(df['latency_ms']):.2f} ms per run")
        print(
            f"  inference per job       {1e3 * inference_s / jobs:8.1f} ms   (warmup+runs x mean, plus init)"
        )
        print(
            f"  overhead per job        {1e3 * overhead_s / jobs:8.1f} ms   (push, shell, hygiene, parse, store)"
        )
        print(f"    of which store        {1e3 * store_s / jobs:8.1f} ms")
        print(f"  build per job (host)    {1e3 * build_s / jobs:8.1f} ms   (not counted as farm overhead)")
        print(f"  overhead / inference    {overhead_s / inference_s:8.2f}")


if __name__ == "__main__":
    main()
