"""Trust on the real phone measurements: interval coverage, out-of-distribution flags, few-shot to a new device.

* coverage: every NB201 target x family, ``leti train`` as it saves (split_by_hash seed 0, trust calibrated by
  5-fold CV on the training archs), tested on all other archs: coverage of the 90% intervals, their median relative
  width (hi - lo) / prediction against the median relative error |pred - true| / true, and the share flagged
  out of distribution. Goal: coverage 87-93%, width <= 2.5 x error, <= 3% flagged.
* ood: the same predictors on real Keras-application models (converted to .tflite by TensorFlow, read back by
  leti) and on 0-MAC models: all must be flagged.
* fewshot: leave one device out. The other five are the sources (a lookup table each, on up to 5,000 archs); K of
  the held-out device's archs are "measured", chosen at random (mean of 5 seeds) or by ``suggest`` from the
  device's measured archs (one per canonical hash); the test set is every arch of another hash. Goals: K=10 suggested mean rho >= 0.95 and acc@10 >= 60%,
  K=20 rho >= 0.96 and acc@10 >= 75%.

    .venv/bin/python benchmarks/bench_trust.py --data ../shared/data [--parts coverage,ood,fewshot]
        [--families lut,flops,xgboost,lightgbm,catboost,gcn,auto] [--train-sizes 900,300] [--plots docs/trust]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_accuracy import DEFAULT_DATA, TARGETS, load_store

from leti.datasets.archs import target_data
from leti.datasets.split import one_per_hash
from leti.graph.builder import GraphBuilder
from leti.predictors import evaluate as E
from leti.predictors.fewshot import FewShotPredictor, suggest
from leti.predictors.metrics import metrics
from leti.predictors.registry import make
from leti.trust import calibrate

FAMILIES = "lut,flops,xgboost,lightgbm,catboost,gcn,auto"
KERAS_APPS = ("MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large", "EfficientNetB0", "ResNet50",
              "DenseNet121", "NASNetMobile", "InceptionV3", "Xception", "VGG16", "EfficientNetV2B0")  # fmt: skip
KS = (5, 10, 20, 50, 100)
RANDOM_SEEDS = 5
GOALS = {10: (0.95, 0.60), 20: (0.96, 0.75)}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- coverage ------------------------------------------------------------------------------------------------------
def coverage_table(st, targets, families, sizes, seed, plots) -> tuple[str, dict]:
    lines = [
        "| target | family | train | coverage % | width % | error % | width / error | ood % |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    trained = {}
    scatter = {}
    for n in sizes:
        for t in targets:
            data = target_data(st, t)
            for fam in families:
                t0 = time.perf_counter()
                pred, meta = E.train(st, t, fam, n, seed, trust=True)
                seen = set(meta["train_hashes"])
                te = np.flatnonzero([h not in seen for h in data.hashes])
                g, y = data.graphs(te), data.latency_ms[te]
                p = pred.predict(g)
                a = pred.trust_.assess(g, p, 0.9)
                err = float(np.median(np.abs(p - y) / y))
                tr = meta["trust"]
                lines.append(
                    f"| {t} | {fam}{' (' + meta['auto_chosen']['family'] + ')' if fam == 'auto' else ''} | {n} "
                    f"| {100 * tr['coverage']:.1f} | {100 * tr['interval_rel_width']:.1f} | {100 * err:.2f} "
                    f"| {tr['interval_rel_width'] / err:.2f} | {100 * tr['ood_share']:.1f} |"
                )
                log(f"  {lines[-1]}  ({time.perf_counter() - t0:.0f}s)")
                if n == sizes[0]:
                    trained[(t, fam)] = pred
                    scatter[(t, fam)] = (p, y, a.interval_ms)
    if plots is not None:
        _plot_interval_vs_error(scatter, plots / "interval_vs_error.png")
    return "\n".join(lines), trained


def _plot_interval_vs_error(scatter: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in (("sd855-gpu", "lut"), ("pixel3-tflite-cpu", "lightgbm")) if k in scatter] or list(
        scatter
    )[:2]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.6 * len(keys), 4.2), dpi=110, squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        p, y, iv = scatter[key]
        half = (iv[:, 1] - iv[:, 0]) / 2 / p
        err = np.abs(p - y) / y
        inside = (y >= iv[:, 0]) & (y <= iv[:, 1])
        ax.scatter(half[inside], err[inside], s=3, alpha=0.4, color="tab:blue", label="inside its interval")
        ax.scatter(half[~inside], err[~inside], s=4, alpha=0.7, color="tab:red", label="outside")
        top = float(max(np.quantile(half, 0.995), np.quantile(err, 0.995)))
        ax.plot([0, top], [0, top], color="gray", lw=0.8)
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_xlabel("interval half-width / prediction (90%)")
        ax.set_ylabel("|prediction − measured| / measured")
        ax.set_title(f"{key[0]}, {key[1]}: coverage {100 * inside.mean():.1f}%", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    log(f"wrote {path}")


# ---- out of distribution -------------------------------------------------------------------------------------------
def keras_graphs(cache: Path) -> list[tuple[str, object]]:
    """Keras applications (random weights, 224x224) as LayerGraphs through .tflite; converted once into ``cache``."""
    from leti.tflite.reader import read_tflite

    out = []
    cache.mkdir(parents=True, exist_ok=True)
    for name in KERAS_APPS:
        f = cache / f"{name}.tflite"
        if not f.is_file():
            t0 = time.perf_counter()
            f.write_bytes(_convert(name))
            log(f"  converted {name} in {time.perf_counter() - t0:.0f}s")
        try:
            out.append((name, read_tflite(f.read_bytes())))
        except Exception as e:  # report, do not hide: a model leti cannot read is not a flagged prediction
            log(f"  {name}: cannot be read ({type(e).__name__}: {e})")
    return out


def _convert(name: str) -> bytes:
    """A Keras application with batch size 1 (a fixed shape: no SHAPE ops) as .tflite, quietly."""
    import contextlib
    import io

    import tensorflow as tf

    inp = tf.keras.Input((224, 224, 3), batch_size=1)
    model = getattr(tf.keras.applications, name)(weights=None, input_tensor=inp)
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its SavedModel signature
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def zero_mac_graphs(cache: Path) -> list[tuple[str, object]]:
    from leti.tflite.reader import read_tflite

    b = GraphBuilder()
    b.input((32, 32, 3))
    out = [("input only (no layers)", b.finish())]
    b = GraphBuilder()
    b.slice(b.input((32, 32, 16)), 8)
    out.append(("a channel slice", b.finish()))
    f = cache / "reshape_only.tflite"
    if not f.is_file():
        import tensorflow as tf

        m = tf.keras.Sequential([tf.keras.Input((8, 8, 4), batch_size=1), tf.keras.layers.Reshape((16, 16))])
        f.write_bytes(tf.lite.TFLiteConverter.from_keras_model(m).convert())
    try:
        out.append(("reshape-only .tflite", read_tflite(f.read_bytes())))
    except Exception as e:
        log(f"  reshape-only .tflite: cannot be read ({type(e).__name__}: {e})")
    return out


def ood_table(trained: dict, cache: Path) -> str:
    models = keras_graphs(cache)
    zero = zero_mac_graphs(cache)
    for name, g in zero:
        assert g.total_macs == 0, name
    lines = ["| target | family | Keras apps flagged | 0-MAC models flagged | example reason (MobileNetV2) |",
             "|---|---|---:|---:|---|"]  # fmt: skip
    for (t, fam), pred in trained.items():
        cells = []
        for group in (models, zero):
            gs = [g for _, g in group]
            a = pred.trust_.assess(gs, pred.predict(gs))
            cells.append(f"{int((~a.in_distribution).sum())} / {len(gs)}")
            if group is models:
                why = dict(zip([n for n, _ in group], a.why, strict=True)).get("MobileNetV2", "")
        lines.append(f"| {t} | {fam} | {cells[0]} | {cells[1]} | {why[:110]} |")
    names = ", ".join(n for n, _ in models)
    zeros = ", ".join(n for n, _ in zero)
    return "\n".join(lines) + f"\n\nKeras applications: {names}. 0-MAC models: {zeros}."


# ---- few-shot, leave one device out ----------------------------------------------------------------------------------
def fewshot_lodo(st, targets, seed: int, plots) -> str:
    data = {t: target_data(st, t) for t in targets}
    rng = np.random.default_rng(seed)
    sources = {}
    for t in targets:
        d = data[t]
        pick = np.arange(len(d)) if len(d) <= 5000 else np.sort(rng.choice(len(d), 5000, replace=False))
        sources[t] = (
            make("lut").fit(d.graphs(pick), d.latency_ms[pick]),
            float(np.median(d.latency_ms[pick])),
        )
    res: dict = {}
    for t in targets:
        d = data[t]
        graphs = d.graphs()
        pool = np.unique(d.hashes, return_index=True)[1]  # one arch per canonical hash: k different networks
        src = {s: sources[s] for s in targets if s != t}
        ref = [
            g for s in src for g in data[s].graphs(np.arange(0, len(data[s]), max(1, len(data[s]) // 400)))
        ]
        for k in KS:
            sug = suggest([graphs[i] for i in pool], {s: m for s, (m, _) in src.items()},
                          {s: sc for s, (_, sc) in src.items()}, k)  # fmt: skip
            runs = [("suggested", pool[sug])] + [
                ("random", one_per_hash(d.hashes, k, seed + r)) for r in range(RANDOM_SEEDS)
            ]
            for how, tr in runs:
                seen = set(d.hashes[tr].tolist())
                te = np.flatnonzero([h not in seen for h in d.hashes])
                gtr = [graphs[i] for i in tr]
                pred = FewShotPredictor().fit(gtr, d.latency_ms[tr], source_data=src)
                p = pred.predict([graphs[i] for i in te])
                m = metrics(d.latency_ms[te], p)
                tm = calibrate(pred, gtr, d.latency_ms[tr], groups=list(d.hashes[tr]), reference_graphs=ref)
                c = tm.coverage_of([graphs[i] for i in te], p, d.latency_ms[te])
                res.setdefault((t, k, how), []).append((m["spearman"], m["acc10"], c["coverage"]))
            r = np.mean(res[(t, k, "random")], axis=0)
            s = res[(t, k, "suggested")][0]
            log(f"  {t} K={k}: suggested rho {s[0]:.3f} acc10 {100 * s[1]:.1f}% | random rho {r[0]:.3f} "
                f"acc10 {100 * r[1]:.1f}%")  # fmt: skip
    lines = ["| held-out device | K | suggested ρ | suggested acc@10 % | random ρ | random acc@10 % | "
             "suggested coverage % |", "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    summary = ["", "| K | suggested mean ρ | suggested mean acc@10 % | random mean ρ | random mean acc@10 % | goal |",
               "|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for k in KS:
        for t in targets:
            s = res[(t, k, "suggested")][0]
            r = np.mean(res[(t, k, "random")], axis=0)
            lines.append(f"| {t} | {k} | {s[0]:.3f} | {100 * s[1]:.1f} | {r[0]:.3f} | {100 * r[1]:.1f} "
                         f"| {100 * s[2]:.0f} |")  # fmt: skip
        sm = np.mean([res[(t, k, "suggested")][0] for t in targets], axis=0)
        rm = np.mean([np.mean(res[(t, k, "random")], axis=0) for t in targets], axis=0)
        goal = ""
        if k in GOALS:
            g_rho, g_acc = GOALS[k]
            ok = sm[0] >= g_rho and sm[1] >= g_acc
            goal = f"ρ ≥ {g_rho}, acc@10 ≥ {100 * g_acc:.0f}%: {'met' if ok else 'MISSED'}"
        summary.append(
            f"| {k} | {sm[0]:.3f} | {100 * sm[1]:.1f} | {rm[0]:.3f} | {100 * rm[1]:.1f} | {goal} |"
        )
    if plots is not None:
        _plot_curves(res, targets, plots / "fewshot_curve.png")
    return "\n".join(lines + summary)


def _plot_curves(res: dict, targets, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    for i, t in enumerate(targets):
        color = f"C{i}"
        for how, style in (("suggested", "-"), ("random", "--")):
            vals = np.array([np.mean(res[(t, k, how)], axis=0) for k in KS])
            for ax, j in zip(axes, (0, 1), strict=True):
                ax.plot(KS, vals[:, j] * (100 if j else 1), style, color=color, marker="o", ms=3,
                        label=f"{t} ({how})" if how == "suggested" else None)  # fmt: skip
    axes[0].set_ylabel("Spearman ρ on the rest")
    axes[1].set_ylabel("acc@10 % on the rest")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks(KS, [str(k) for k in KS])
        ax.set_xlabel("K archs measured on the held-out device")
        ax.set_title("solid: suggested archs, dashed: random (mean of 5)", fontsize=8)
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    log(f"wrote {path}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="folder of nasbench201__<target>.csv files"
    )
    ap.add_argument("--store", type=Path, help="reuse (or create) this store instead of a temporary one")
    ap.add_argument("--parts", default="coverage,ood,fewshot")
    ap.add_argument("--families", default=FAMILIES)
    ap.add_argument("--train-sizes", default="900,300")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plots", type=Path, help="write interval_vs_error.png and fewshot_curve.png here")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "leti_bench_trust",
                    help="converted Keras models are kept here")  # fmt: skip
    args = ap.parse_args()
    missing = [t for t in TARGETS if not (args.data / f"nasbench201__{t}.csv").is_file()]
    if missing:
        print(f"skipped: the real measurements are not in {args.data} (missing {', '.join(missing)})")
        return 0
    parts = set(args.parts.split(","))
    targets = args.targets.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        st = load_store(args.data, args.store or Path(tmp) / "leti.db")
        t0 = time.perf_counter()
        trained = {}
        if parts & {"coverage", "ood"}:
            sizes = [int(s) for s in args.train_sizes.split(",")] if "coverage" in parts else [900]
            fams = args.families.split(",") if "coverage" in parts else ["lut"]
            md, trained = coverage_table(st, targets, fams, sizes, args.seed, args.plots)
            if "coverage" in parts:
                print("90% intervals on the test archs (all archs outside the training set), split_by_hash seed "
                      f"{args.seed}; width = median (hi - lo) / prediction, error = median |pred - true| / true\n")  # fmt: skip
                print(md)
                print(f"\n({time.perf_counter() - t0:.0f}s)\n")
        if "ood" in parts:
            print("Out-of-distribution flags of the NB201-trained predictors above (train 900) on models unlike "
                  "NB201 cells\n")  # fmt: skip
            print(ood_table(trained, args.cache))
            print(f"\n({time.perf_counter() - t0:.0f}s)\n")
        if "fewshot" in parts:
            print(f"Few-shot, leave one device out: sources = the other {len(targets) - 1} devices (lut on up to "
                  f"5,000 archs each); test = the held-out device's archs outside the K; random = mean of "
                  f"{RANDOM_SEEDS} seeds\n")  # fmt: skip
            print(fewshot_lodo(st, targets, args.seed, args.plots))
            print(f"\n({time.perf_counter() - t0:.0f}s)")
        st.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
