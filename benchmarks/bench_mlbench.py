"""Real models on real phones: mobile-ml-benchmark's 102 CNNs, leave-one-family-out, every device, fp32.

Protocol: the models are imported into a fresh store (``leti import --format mobile-ml-benchmark``). For each of the
32 families (``leti.datasets.split.model_family``), every predictor is fitted on the other 31 families and predicts
the held-out one; acc@10 etc. are computed once over all 102 held-out predictions. Targets: CPU ``1large`` (one big
core) and GPU, on pixel4, s10, mi8se, a03s, iphone7 and iphonexs. The ``kernel`` predictor also gets the per-op GPU
times of the training families (never of the held-out one) as kernel measurements on GPU targets.

The four anchors of issue 13, on the same split:

* ``flops``   the FLOPs-linear family (RANSAC line in MACs);
* ``optype``  per-op-type NNLS: latency = sum over the 8 op types of the per-op file of (a * MACs + b * count) + c,
              non-negative, relative error (a learned lookup table);
* ``lgbm``    LightGBM on the per-op-type MACs and counts (log target);
* ``opsum``   the plain sum of the model's own measured per-op GPU times (a perfect lookup table; GPU only).

``noise`` is the median std/mean of the repeated end-to-end runs in the source (the measurement noise floor).

    .venv/bin/python benchmarks/bench_mlbench.py [--data ../shared/data/mobile-ml-benchmark] [--devices pixel4,s10]
        [--units 1large,gpu] [--json out.json] [--plots docs/img]
    .venv/bin/python benchmarks/bench_mlbench.py --ablation     # the kernel family's design choices, same split
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _default_data() -> Path:
    """``shared/data/mobile-ml-benchmark`` next to the checkout or one of its parents."""
    here = Path(__file__).resolve()
    for up in here.parents:
        p = up / "shared" / "data" / "mobile-ml-benchmark"
        if p.is_dir():
            return p
    return here.parents[2] / "shared" / "data" / "mobile-ml-benchmark"


DEFAULT_DATA = _default_data()
DEVICES = ("pixel4", "s10", "mi8se", "a03s", "iphone7", "iphonexs")
UNITS = ("1large", "gpu")
GOAL = 0.85
# --ablation: the kernel family with one choice changed (leave-one-family-out, same split)
ABLATION = (
    ("default", {}),
    ("no kernel measurements (latent only)", {"kernel_model": "none"}),
    ("linear kernel regressor", {"kernel_model": "linear"}),
    ("work terms: full", {"features": "full"}),
    ("work terms: small", {"features": "small"}),
    ("no ridge", {"ridge": 0.0}),
    ("ridge 0.01", {"ridge": 0.01}),
)
_OPTYPES = ("conv", "gconv", "dwconv", "dense", "maxpool", "avgpool", "gap", "concat")


def optype_features(graphs) -> np.ndarray:
    """Per op type of the per-op file: (MACs, count), plus a constant column."""
    from leti.graph.layergraph import OPS, A

    X = np.zeros((len(graphs), 2 * len(_OPTYPES) + 1))
    X[:, -1] = 1.0
    for gi, g in enumerate(graphs):
        for n in range(g.n_nodes):
            op = OPS[int(g.op[n])]
            if op == "conv" and int(g.attr[n, A["groups"]]) > 1:
                op = "gconv"
            if op in _OPTYPES:
                j = _OPTYPES.index(op)
                X[gi, 2 * j] += float(g.macs[n])
                X[gi, 2 * j + 1] += 1.0
    return X


def anchor_optype(X, y, tr, te):
    from leti.predictors.kernel import nnls_relative

    return X[te] @ nnls_relative(X[tr], y[tr], True)


def anchor_lgbm(X, y, tr, te):
    import lightgbm as lgb

    m = lgb.LGBMRegressor(n_estimators=300, learning_rate=0.05, num_leaves=15, min_child_samples=5, random_state=0,
                          n_jobs=1, verbose=-1)  # fmt: skip
    m.fit(X[tr, :-1], np.log(y[tr]))
    return np.exp(m.predict(X[te, :-1]))


def target_of(device: str, unit: str) -> str:
    return f"{device}-tflite-gpu" if unit == "gpu" else f"{device}-tflite-cpu-{unit}"


def run(data: Path, devices, units, json_out: Path | None, plots: Path | None) -> dict:
    from leti.datasets.archs import target_data
    from leti.datasets.mlbench import import_mlbench
    from leti.datasets.store import Store
    from leti.importers.mlbench import read_e2e
    from leti.predictors.family_split import evaluate_by_family, families_of, leave_one_family_out, node_times
    from leti.predictors.metrics import metrics
    from leti.predictors.render import plot
    from leti.space import MODEL_SPACE

    tmp = tempfile.mkdtemp(prefix="leti-mlbench-")
    os.environ.setdefault("LETI_HOME", tmp)
    store = Store.open(Path(tmp) / "leti.db")
    t0 = time.perf_counter()
    imp = import_mlbench(store, data)
    print(f"imported {imp.models} models, {len(imp.targets)} targets, {imp.measurements} model and "
          f"{imp.kernel_measurements} kernel measurements in {time.perf_counter() - t0:.1f} s", flush=True)  # fmt: skip
    mean, std = read_e2e(data / "tflite_cnn_e2e.csv")
    results = {}
    for unit in units:
        for dev in devices:
            target = target_of(dev, unit)
            t1 = time.perf_counter()
            d = target_data(store, target, MODEL_SPACE)
            _, fams = families_of(d)
            y = d.latency_ms
            row = {}
            k = evaluate_by_family(store, target, "kernel", return_predictions=True)
            row["kernel"] = k
            row["flops"] = evaluate_by_family(store, target, "flops")
            X = optype_features(d.graphs())
            row["optype"] = metrics(
                y, leave_one_family_out(fams, lambda tr, te, X=X, y=y: anchor_optype(X, y, tr, te))
            )
            row["lgbm"] = metrics(
                y, leave_one_family_out(fams, lambda tr, te, X=X, y=y: anchor_lgbm(X, y, tr, te))
            )
            if unit == "gpu":
                times = node_times(store, target)
                row["opsum"] = metrics(y, np.array([sum(times[a].values()) for a in d.arch_ids]))
            names = [g.meta.get("model") for g in d.graphs()]
            row["noise"] = float(np.median([std[n][target] / mean[n][target] for n in names]))
            anchors = max(row[a]["acc10"] for a in ("flops", "optype", "lgbm", "opsum") if a in row)
            row["met"] = bool(k["acc10"] >= GOAL and k["acc10"] > anchors)
            results[target] = row
            print(f"{target:28s} kernel {100 * k['acc10']:5.1f}  flops {100 * row['flops']['acc10']:5.1f}  "
                  f"optype {100 * row['optype']['acc10']:5.1f}  lgbm {100 * row['lgbm']['acc10']:5.1f}  "
                  + (f"opsum {100 * row['opsum']['acc10']:5.1f}  " if "opsum" in row else "")
                  + f"rho {k['spearman']:.3f}  noise {100 * row['noise']:.1f}%  "
                  f"{'ok' if row['met'] else 'MISS'}  ({time.perf_counter() - t1:.0f} s)", flush=True)  # fmt: skip
            err = (k["y_pred"] - k["y_true"]) / k["y_true"]
            miss = [
                f"{k['models'][i]} {100 * err[i]:+.0f}%"
                for i in np.argsort(-np.abs(err))
                if abs(err[i]) > 0.1
            ]
            print(f"    outside ±10%: {', '.join(miss) or 'none'}", flush=True)
            if plots is not None:
                plot(k["y_true"], k["y_pred"], plots / f"mlbench-{target}.png", target, "kernel",
                     note="leave-one-family-out")  # fmt: skip
    print()
    print(table(results))
    if json_out is not None:
        slim = {t: {a: ({kk: v for kk, v in m.items() if kk not in ("y_true", "y_pred", "models")}
                        if isinstance(m, dict) else m) for a, m in r.items()} for t, r in results.items()}  # fmt: skip
        json_out.write_text(json.dumps(slim, indent=1, sort_keys=True, default=float))
    return results


def ablation(data: Path, devices, units) -> str:
    from leti.datasets.mlbench import import_mlbench
    from leti.datasets.store import Store
    from leti.predictors.family_split import evaluate_by_family

    tmp = tempfile.mkdtemp(prefix="leti-mlbench-")
    store = Store.open(Path(tmp) / "leti.db")
    import_mlbench(store, data)
    targets = [target_of(d, u) for u in units for d in devices]
    lines = ["| variant | " + " | ".join(targets) + " |", "|---|" + "---:|" * len(targets)]
    for name, params in ABLATION:
        accs = []
        for t in targets:
            if "kernel_model" in params and not t.endswith("-gpu"):
                accs.append("–")  # CPU targets have no kernel measurements: same as the default
                continue
            accs.append(f"{100 * evaluate_by_family(store, t, 'kernel', params)['acc10']:.1f}")
        lines.append(f"| {name} | " + " | ".join(accs) + " |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def table(results: dict) -> str:
    lines = [
        "| target | kernel acc@10 | ρ | MAPE | FLOPs-linear | per-op-type NNLS | LightGBM op-type | sum of op times "
        "| noise | goal |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for t, r in results.items():
        k = r["kernel"]
        opsum = f"{100 * r['opsum']['acc10']:.1f}" if "opsum" in r else "–"
        lines.append(
            f"| {t} | **{100 * k['acc10']:.1f}** | {k['spearman']:.3f} | {100 * k['mape']:.1f}% "
            f"| {100 * r['flops']['acc10']:.1f} | {100 * r['optype']['acc10']:.1f} | {100 * r['lgbm']['acc10']:.1f} "
            f"| {opsum} | {100 * r['noise']:.1f}% | {'met' if r['met'] else 'missed'} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--devices", default=",".join(DEVICES))
    ap.add_argument("--units", default=",".join(UNITS))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--plots", type=Path, default=None)
    ap.add_argument("--ablation", action="store_true", help="kernel variants instead of the anchors")
    a = ap.parse_args(argv)
    if not (a.data / "tflite_cnn_e2e.csv").is_file():
        print(f"no mobile-ml-benchmark data under {a.data}", file=sys.stderr)
        return 2
    if a.ablation:
        print(ablation(a.data, a.devices.split(","), a.units.split(",")))
        return 0
    run(a.data, a.devices.split(","), a.units.split(","), a.json, a.plots)
    return 0


if __name__ == "__main__":
    sys.exit(main())
