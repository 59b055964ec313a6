"""Budgeted compression of real Keras applications on host-litert-cpu-1t, scored by the ``kernel`` predictor.

Issue 13, item 8. Protocol:

1. **Models.** ``tf.keras.applications`` ResNet50, MobileNetV2 and EfficientNetB0 (``weights=None``, seeded random
   weights) at ``--size`` px, saved as ``.keras`` and converted to ``.tflite`` once (``--cache``).
2. **Kernel predictor.** ``leti kernels build --target host-litert-cpu-1t --n N --prior <the three .tflite>``,
   as a user would run it: the models' own kernels, then kernels jittered around them (channels x0.5-2, which
   covers the reduced ranks of the compressed layers), measured on this machine and saved as the target's
   ``kernel`` predictor (a fresh ``LETI_HOME`` under ``--cache``; ``--reuse-kernels`` keeps an earlier one).
3. **Plans.** ``leti compress MODEL --target host-litert-cpu-1t --latency-budget Bx --verify --json`` for each
   model at each budget (0.5x and 0.7x): ``leti compress`` picks the ``kernel`` predictor because the target has
   one; ``--verify`` converts the planned model, measures it and the original in the same passes (least of 3 x
   ``--runs`` runs) and gives the measured budget (B x the measured original).
4. **Report.** Per plan: predicted original / compressed ms, measured original / compressed ms, the error of the
   compressed model's prediction, and whether it meets its measured budget, also within the noise floor
   (``--noise``, default 10%: the host's repeat agreement is judged at +-10%).

Goal (issue 13): measured within +-10% of the plan's prediction for at least 5 of 6, and each measured latency
meets its budget within the noise floor.

    .venv/bin/python benchmarks/bench_compress_real.py [--size 112] [--n 600] [--runs 10] [--budgets 0.5x,0.7x]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from real_models import DEFAULT_CACHE

TARGET = "host-litert-cpu-1t"
APPS = ("ResNet50", "MobileNetV2", "EfficientNetB0")


def leti(args: list[str], env: dict) -> dict:
    """Run ``leti ARGS --json`` in a subprocess; its JSON answer (exits on failure with its message)."""
    cmd = [sys.executable, "-m", "leti.cli", *args, "--json"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[2:])} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def build_models(size: int, cache: Path) -> dict[str, tuple[Path, Path]]:
    """``{app: (.keras, .tflite)}``, built once per size and kept in ``cache``."""
    out = {}
    for app in APPS:
        k, t = cache / f"{app}_{size}.keras", cache / f"{app}_{size}.tflite"
        if not (k.is_file() and t.is_file()):
            import tensorflow as tf

            from leti.tflite.convert import keras_to_tflite

            tf.keras.utils.set_random_seed(0)
            model = getattr(tf.keras.applications, app)(input_shape=(size, size, 3), weights=None)
            model.save(k)
            t.write_bytes(keras_to_tflite(model, "fp32"))
        out[app] = (k, t)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=112, help="input size of every model (px)")
    ap.add_argument("--n", type=int, default=600, help="kernels leti kernels build measures")
    ap.add_argument("--rounds", type=int, default=2, help="leti kernels build rounds")
    ap.add_argument("--runs", type=int, default=10, help="timed runs per measurement")
    ap.add_argument("--budgets", default="0.5x,0.7x", help="comma-separated latency budgets")
    ap.add_argument(
        "--noise", type=float, default=0.10, help="the host's noise floor, as a share of the budget"
    )
    ap.add_argument("--apps", default=",".join(APPS), help="comma-separated tf.keras.applications names")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE / "compress", help="converted models and kernels")
    ap.add_argument(
        "--reuse-kernels", action="store_true", help="keep the kernel predictor of an earlier run"
    )
    ap.add_argument("--json", type=Path, help="write the results here")
    a = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    a.cache.mkdir(parents=True, exist_ok=True)
    home = a.cache / f"leti-home-{a.size}"
    env = {**os.environ, "LETI_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "3"}
    t_start = time.perf_counter()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    models = {app: p for app, p in build_models(a.size, a.cache).items() if app in a.apps.split(",")}
    if not (a.reuse_kernels and (home / "predictors" / TARGET / "kernel").is_dir()):
        t0 = time.perf_counter()
        r = leti(["kernels", "build", "--target", TARGET, "-n", str(a.n), "--rounds", str(a.rounds), "--runs",
                  str(a.runs), "--store", str(home / "kernels.db"), "--prior", *(str(t) for _, t in models.values())],
                 env)  # fmt: skip
        print(f"kernels build: {r.get('n_measured', r.get('measured'))} kernels in {time.perf_counter() - t0:.0f} s "
              f"-> {r.get('path')}", flush=True)  # fmt: skip
    rows = []
    for app, (keras_path, _) in models.items():
        for budget in a.budgets.split(","):
            t0 = time.perf_counter()
            r = leti(["compress", str(keras_path), "--target", TARGET, "--latency-budget", budget, "--verify",
                      "--allow-ood", "--runs", str(a.runs)], env)  # fmt: skip
            err = r["compressed_measured_ms"] / r["predicted_ms"] - 1
            within_noise = r["compressed_measured_ms"] <= r["budget_measured_ms"] * (1 + a.noise)
            rows.append({"model": f"{app} {a.size}px", "budget": budget, **{k: r[k] for k in (
                "predictor", "original_ms", "predicted_ms", "original_measured_ms", "compressed_measured_ms",
                "budget_measured_ms", "meets_budget_measured", "in_distribution", "output_error")},
                "error": err, "meets_within_noise": within_noise, "seconds": time.perf_counter() - t0})  # fmt: skip
            print(f"  {app} {budget}: predicted {r['predicted_ms']:.2f} ms, measured {r['compressed_measured_ms']:.2f}"
                  f" ms ({100 * err:+.1f}%), measured budget {r['budget_measured_ms']:.2f} ms "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
    print(f"\npredictor: {rows[0]['predictor'] if rows else '-'}; load average now {os.getloadavg()[0]:.1f}")
    print("\n| model | budget | predicted original ms | measured original ms | predicted ms | measured ms | error "
          "| measured budget ms | meets it | within noise |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['budget']} | {r['original_ms']:.2f} | {r['original_measured_ms']:.2f} "
              f"| {r['predicted_ms']:.2f} | {r['compressed_measured_ms']:.2f} | {100 * r['error']:+.1f}% "
              f"| {r['budget_measured_ms']:.2f} | {'yes' if r['meets_budget_measured'] else 'NO'} "
              f"| {'yes' if r['meets_within_noise'] else 'NO'} |")  # fmt: skip
    n_ok = sum(abs(r["error"]) <= 0.10 for r in rows)
    n_budget = sum(r["meets_within_noise"] for r in rows)
    goal = n_ok >= len(rows) - 1 and n_budget == len(rows)
    print(f"\nwithin +-10% of the prediction: {n_ok}/{len(rows)}; meet the measured budget within "
          f"{100 * a.noise:.0f}%: {n_budget}/{len(rows)}; goal {'met' if goal else 'MISSED'}; "
          f"runtime {time.perf_counter() - t_start:.0f} s")  # fmt: skip
    if a.json:
        a.json.write_text(json.dumps({"rows": rows, "goal_met": goal, "args": {k: str(v) for k, v in vars(a).items()}},
                                     indent=1, default=float))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
