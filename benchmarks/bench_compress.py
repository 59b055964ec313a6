"""Host check of budgeted compression on host-litert-cpu-1t (LiteRT, 1 thread, XNNPACK, fp32).

For a ResNet-like and a MobileNetV2-like Keras model (seeded random weights):

1. Predictor: a layer LUT (``leti.workflows.lut_build.LayerLUT``): every distinct layer of the models below and of
   the model with each candidate alone is converted alone to .tflite and measured with LocalRunner; the prediction
   is the sum over layers, times a scale fitted (least squares through the origin) on whole-model measurements of
   the original and 3 random compressed models that are not among the 20 below.
2. Accuracy: 20 random compressed models (each unit gets a random candidate with probability 1/2) are built for
   real (Keras surgery -> TFLite converter), measured, and compared with the prediction of their Arch's graph.
3. Budget: ``plan(model, target, BUDGET, methods)`` with that predictor, for all four methods and for the
   decompositions alone; the planned model is built, measured, and its measured latency compared with BUDGET x
   the measured latency of the original (measured in the same passes).

Every latency, of a single layer or a whole model, is the minimum over 5 LocalRunner measurements of 10 timed runs
(after 3 warm-up runs each), taken in round-robin passes over all single-layer and whole models together: on a
shared machine the minimum is the run least disturbed by other processes, and measuring layers and whole models
in the same passes keeps a busy spell from biasing one against the other.

Run: ``.venv/bin/python benchmarks/bench_compress.py`` (``--quick`` for small models, a few minutes;
``--test-model`` for the ~0.7 ms ResNet-like that tests/test_compression.py plans for, whose measured budget and
prediction error (median < 10%, all < 20%) that test asserted until it proved a timed claim on a noisy machine).
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

TARGET = "host-litert-cpu-1t"
RUNS, REPEATS = 10, 5  # every latency: the minimum over REPEATS round-robin measurements of RUNS timed runs
# with random weights pruning loses the least weight per ms, so plans without it show the decompositions at work
METHOD_SETS = (("tucker2", "cp", "svd", "prune"), ("tucker2", "cp", "svd"))


def models(quick: bool, test_model: bool = False):
    from leti.compression.models import mobilenetv2_like, resnet_like

    if test_model:  # the ~0.7 ms model of tests/test_compression.py
        return {
            "resnet_like_test": lambda: resnet_like(32, widths=(24, 48, 96), blocks=(1, 1, 1), head_units=64)
        }
    if quick:
        return {
            "resnet_like": lambda: resnet_like(32, widths=(16, 32, 64), blocks=(1, 1, 1), head_units=64),
            "mobilenetv2_like": lambda: mobilenetv2_like(64, alpha=0.5),
        }
    return {
        "resnet_like": lambda: resnet_like(32, widths=(32, 64, 128), blocks=(2, 2, 2), head_units=128),
        "mobilenetv2_like": lambda: mobilenetv2_like(96, alpha=1.0),
    }


def random_picks(cands: dict, n: int, seed: int) -> list[list]:
    rnd = random.Random(seed)
    out = []
    while len(out) < n:
        pick = [rnd.choice(cs) for cs in cands.values() if rnd.random() < 0.5]
        if pick:
            out.append(pick)
    return out


def tflite(keras_model) -> bytes:
    from leti.tflite.convert import keras_to_tflite

    return keras_to_tflite(keras_model, "fp32")


def bench_model(name: str, build, budgets: list[str], n: int, seed: int) -> dict:
    from leti.cli.compress import format_plan
    from leti.compression.candidates import edited_arch, list_candidates
    from leti.compression.keras_ir import keras_to_arch
    from leti.compression.keras_surgery import apply_edits, output_error
    from leti.compression.plan import apply, plan
    from leti.errors import LetiError
    from leti.predictors.metrics import acc_within
    from leti.workflows.lut_build import LayerLUT

    print(f"\n=== {name}")
    t0 = time.perf_counter()
    model = build()
    ka = keras_to_arch(model)
    g = ka.graph()
    print(f"model: {g.total_macs:,} MACs, {g.total_params:,} params, {len(ka.units)} units")
    t = time.perf_counter()
    cands = list_candidates(model)
    print(
        f"candidates: {sum(map(len, cands.values()))} over {len(cands)} units ({time.perf_counter() - t:.1f} s)"
    )

    lut = LayerLUT(TARGET, runs=RUNS, warmup=3, stat="min", repeats=REPEATS)
    calib = random_picks(cands, 3, seed + 1000)
    evals = random_picks(cands, n, seed)
    graphs = [g] + [edited_arch(ka, [c.edit for c in p]).to_graph() for p in calib + evals]
    t = time.perf_counter()
    models_ = [tflite(model)] + [tflite(apply_edits(model, [c.edit for c in p])) for p in calib + evals]
    singles = [
        edited_arch(ka, [c.edit]).to_graph() for cs in cands.values() for c in cs
    ]  # plan() scores these
    n_layers = len(lut.missing(graphs + singles))
    print(f"built {len(models_)} whole models ({time.perf_counter() - t:.1f} s)")
    t = time.perf_counter()
    # one round-robin over single layers and whole models together: both see the machine in the same states
    measured = lut.measure_with_layers(graphs + singles, models_)
    print(
        f"measured {n_layers} single layers and {len(models_)} whole models, {REPEATS} passes of {RUNS} runs "
        f"({time.perf_counter() - t:.1f} s)"
    )
    k = 1 + len(calib)
    raw_calib = [lut.layer_sum(x) for x in graphs[:k]]
    scale = lut.calibrate(graphs[:k], measured[:k])
    print(
        f"calibration on {k} whole models (original + 3 random): measured "
        f"{', '.join(f'{v:.3f}' for v in measured[:k])} ms, layer sums {', '.join(f'{v:.3f}' for v in raw_calib)} ms "
        f"-> scale {scale:.4f}"
    )
    print(f"{n} random compressed models (not used for calibration): predicted vs measured")
    print(f"{'#':>3} {'edits':>5} {'layer sum':>10} {'predicted':>10} {'measured':>9} {'error':>7}")
    raw = [lut.layer_sum(x) for x in graphs[k:]]
    pred = [float(v) for v in lut.predict(graphs[k:])]
    meas = measured[k:]
    for i, p in enumerate(evals):
        print(
            f"{i:>3} {len(p):>5} {raw[i]:>10.3f} {pred[i]:>10.3f} {meas[i]:>9.3f} {pred[i] / meas[i] - 1:>+7.1%}"
        )
    acc_raw = acc_within(meas, raw, 0.10)
    acc = acc_within(meas, pred, 0.10)
    rel = np.abs(np.array(pred) / np.array(meas) - 1)
    mape = float(np.mean(rel))
    print(
        f"within +-10% of measured: {acc:.0%} calibrated ({acc_raw:.0%} uncalibrated layer sums), "
        f"MAPE {mape:.1%} ({time.perf_counter() - t:.1f} s)"
    )
    # the claim tests/test_compression.py made until it was found to be a timed test on a noisy machine
    print(f"median |error| {np.median(rel):.1%} (goal < 10%), max {rel.max():.1%} (goal < 20%): "
          f"{'met' if np.median(rel) < 0.10 and rel.max() < 0.20 else 'NOT met'}")  # fmt: skip

    results = {"acc10": acc, "acc10_raw": acc_raw, "mape": mape, "budgets": {}}
    for budget, methods in itertools.product(budgets, METHOD_SETS):
        t = time.perf_counter()
        try:
            p = plan(model, TARGET, budget, methods, predictor=lut)
        except LetiError as e:
            print(f"plan for {budget} with {','.join(methods)}: {e}")
            results["budgets"][f"{budget} {','.join(methods)}"] = {"error": str(e)}
            continue
        compressed = apply(p)
        orig, comp = lut.measure_many([models_[0], tflite(compressed)])
        limit = p.budget.value * orig if p.budget.kind == "x" else p.budget.value
        ok = comp <= limit
        print(
            f"plan for {budget} with {','.join(methods)} ({p.solver}, {p.steps[0].n_candidates} candidates):"
        )
        print(format_plan(p))
        print(
            f"measured: original {orig:.3f} ms, planned {comp:.3f} ms = {comp / orig:.3f}x "
            f"(predicted {p.predicted_ms:.3f} ms = {p.predicted_ms / p.original_ms:.3f}x, "
            f"error {p.predicted_ms / comp - 1:+.1%}); budget {limit:.3f} ms: {'MET' if ok else 'MISSED'}; "
            f"output error {output_error(model, compressed):.3f} ({time.perf_counter() - t:.1f} s)"
        )
        results["budgets"][f"{budget} {','.join(methods)}"] = {"measured_ratio": comp / orig, "met": ok}
    print(f"{name}: {time.perf_counter() - t0:.0f} s")
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small models")
    ap.add_argument("--test-model", action="store_true", help="only the small ResNet-like the tests plan for")
    ap.add_argument("-n", type=int, default=20, help="random compressed models per network")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budgets", default="0.6x", help="comma-separated, e.g. 0.6x,0.4x")
    args = ap.parse_args()
    from leti.device_runner.local import host_versions

    v = host_versions()
    print(
        f"target {TARGET} on {v['cpu']} ({v['cpu_count']} CPUs), LiteRT {v['litert']}, TF {v['tensorflow']}"
    )
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    summary = {}
    for name, build in models(args.quick, args.test_model).items():
        summary[name] = bench_model(name, build, args.budgets.split(","), args.n, args.seed)
    print("\n=== summary")
    for name, r in summary.items():
        budgets = "; ".join(
            f"{b}: measured {x['measured_ratio']:.3f}x {'met' if x['met'] else 'MISSED'}"
            if "error" not in x
            else f"{b}: no plan (budget cannot be met)"
            for b, x in r["budgets"].items()
        )
        print(
            f"{name}: acc@10% {r['acc10']:.0%} (uncalibrated {r['acc10_raw']:.0%}), MAPE {r['mape']:.1%}; {budgets}"
        )
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
