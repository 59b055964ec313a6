"""Real models on this host: 36 Keras applications, leave-one-family-out, ``kernel`` against every other family.

Issue 13, item 5. Protocol:

1. **Models.** ``real_models.catalogue()``: MobileNet v1 (alpha 0.25-1.0), MobileNetV2 (alpha 0.35-1.4),
   MobileNetV3 Small/Large (alpha 1.0), ResNet50, EfficientNetB0-B2, DenseNet121 and NASNetMobile, two input
   sizes each, ``weights=None``, converted once by ``TFLiteConverter.from_keras_model`` and cached outside the repo
   (``--cache``). leti reads each ``.tflite`` back into its IR (``leti.importers.models.read_model``). 7 families.
2. **Kernels.** Per family, every distinct kernel its models launch under this host's fusion rules (``litert``),
   exactly, plus ``--jitter`` times as many around them (channels x0.5-2, neighbouring sizes: the sampler of
   ``leti kernels build``), plus the built-in prior of typical CNN layers. Each kernel remembers which families'
   priors produced it: the kernel dataset of the fold that holds family F out keeps only kernels that the other
   families or the built-in prior produced (a kernel that F shares with another family stays, as it would in a
   kernel dataset built without F).
3. **Training archs for the whole-model families.** ``--generated`` archs sampled from the ``leti`` and ``fbnet``
   spaces (half each), as ``leti generate`` would measure them.
4. **Measurement**, ``host-litert-cpu-1t`` (LiteRT, XNNPACK, one thread): every model, kernel, generated arch and a
   trivial model (the invocation overhead) once per round, in a seeded random order that changes each round, for
   ``--rounds`` rounds; so a slow stretch of the shared host hits models, kernels and training archs alike. Each
   item's figure is the median over rounds of its per-round median of ``--runs`` runs (``--stat min``: the least
   disturbed round). Per-round results are kept in ``--cache``/measure: a killed run resumes, and ``--reuse``
   analyses without measuring.
5. **Predictors**, each fold fitted without the held-out family, metrics over all 36 held-out predictions:

   * ``kernel``: the kernel family with everything it may use: the fold's kernels and the whole-model times of the
     other 6 families (``KernelPredictor().fit(..., kernels=...)``).
   * ``kernel (kernels only)``: no whole-model time at all: the sum of the kernel regressor over the model's
     kernels plus the measured invocation overhead (``KernelPredictor.from_kernels``, what ``leti kernels build``
     saves).
   * every other family (``lut``, ``flops``, ``xgboost``, ``lightgbm``, ``catboost``, ``gcn``, ``auto``) trained
     on the generated archs alone (as ``leti train`` on ``leti generate`` data: no real model), and again on the
     generated archs plus the other 6 families' models (``+real``; gcn and auto only with ``--slow``).

6. **Repeat agreement** (the host's noise floor): the share of models whose figure from the odd rounds lands
   within +-10% of the figure from the even rounds (each half a repeat measurement of the other), and the same for
   single rounds (round 1 against round 2).

Goal (issue 13): ``kernel`` rho >= 0.98 and acc@10 >= 90%, or, where repeat agreement < 95%, acc@10 within 5 points
of it. The load average is printed with every round and figure.

    .venv/bin/python benchmarks/bench_real_models.py [--rounds 4] [--runs 10] [--jitter 2] [--generated 600]
        [--cache $TMPDIR/leti-real-models] [--reuse] [--slow] [--json out.json] [--plots docs/img]
    .venv/bin/python benchmarks/bench_real_models.py --quick     # 1 model per family, 2 rounds: a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_models import DEFAULT_CACHE, RealModel, catalogue, convert_all  # noqa: E402

TARGET = "host-litert-cpu-1t"
RULES = "litert"
BUILTIN = "builtin"
OTHER_FAMILIES = ("lut", "flops", "xgboost", "lightgbm", "catboost", "gcn", "auto")
SLOW_FAMILIES = ("gcn", "auto")  # refitted per fold with real models only with --slow


def load_avg() -> float:
    return os.getloadavg()[0]


# ---- what gets measured ------------------------------------------------------------------------------------------
@dataclass
class Items:
    """Everything one round measures, by key: ``model:<name>``, ``kernel:<config key>``, ``gen:<space>:<hash>``,
    ``overhead``."""

    models: list[RealModel]
    graphs: dict[str, object] = field(default_factory=dict)  # model name -> LayerGraph
    kernels: dict[str, object] = field(default_factory=dict)  # config key -> KernelConfig
    origins: dict[str, set] = field(
        default_factory=dict
    )  # config key -> families (or BUILTIN) that sampled it
    gen: dict[str, object] = field(default_factory=dict)  # "gen:<space>:<hash>" -> LayerGraph

    def keys(self) -> list[str]:
        return (["overhead"] + [f"model:{m.name}" for m in self.models] + [f"kernel:{k}" for k in self.kernels]
                + list(self.gen))  # fmt: skip


def sample_kernels(
    items: Items, jitter: float, seed: int, max_macs: int, max_kernels: int | None = None
) -> None:
    """Per family: its exact kernels plus ``jitter`` times as many jittered around them; plus the built-in prior;
    at most ``max_kernels`` of them (a seeded draw)."""
    from leti.workflows.kernels import _valid, builtin_prior, prior_configs, sample_round

    fams = sorted({m.family for m in items.models})
    pools = {
        f: prior_configs([items.graphs[m.name] for m in items.models if m.family == f], RULES) for f in fams
    }
    pools[BUILTIN] = builtin_prior()
    for i, (origin, pool) in enumerate(pools.items()):
        pool = [c for c in pool if _valid(c, max_macs)]
        seen = {c.key() for c in pool}
        rng = np.random.default_rng([seed, i])
        extra = sample_round(pool, int(round(jitter * len(pool))), rng, seen, max_macs, 0.5, 2.0, 0.0)
        for c in pool + extra:
            items.kernels.setdefault(c.key(), c)
            items.origins.setdefault(c.key(), set()).add(origin)
    if max_kernels is not None and len(items.kernels) > max_kernels:
        keep = set(np.random.default_rng(seed).choice(sorted(items.kernels), max_kernels, replace=False))
        items.kernels = {k: c for k, c in items.kernels.items() if k in keep}
        items.origins = {k: o for k, o in items.origins.items() if k in keep}


def sample_generated(items: Items, n: int, seed: int) -> None:
    from leti.space import sample

    for space, k in (("leti", n - n // 2), ("fbnet", n // 2)):
        if k:
            for arch, _ in sample(space, k, seed=seed):
                items.gen[f"gen:{space}:{arch.hash}"] = arch.to_graph()


# ---- measuring in interleaved rounds ------------------------------------------------------------------------------
class Blobs:
    """The .tflite of each item: models from the cache on disk, kernels and generated archs built (fast path) and
    kept in memory up to a budget."""

    KEEP = 512 << 20

    def __init__(self, items: Items, cache: Path):
        self.items, self.cache, self.kept, self.held = items, cache, {}, 0

    def get(self, key: str) -> bytes:
        if key in self.kept:
            return self.kept[key]
        from leti.tflite.convert import build_tflite
        from leti.workflows.lut_build import overhead_graph

        if key == "overhead":
            data = build_tflite(overhead_graph())
        elif key.startswith("model:"):
            return next(m for m in self.items.models if m.name == key[6:]).path(self.cache).read_bytes()
        elif key.startswith("kernel:"):
            data = build_tflite(self.items.kernels[key[7:]].graph())
        else:
            data = build_tflite(self.items.gen[key])
        if self.held + len(data) <= self.KEEP:
            self.kept[key], self.held = data, self.held + len(data)
        return data


def measure_rounds(items: Items, cache: Path, rounds: int, runs: int, warmup: int, seed: int, reuse: bool,
                   log) -> list[dict]:  # fmt: skip
    """Per round, {key: [median_ms, min_ms]} plus ``_load`` (load averages at its start and end); rounds already on
    disk are completed, not redone."""
    from leti.device_runner.local import LocalRunner
    from leti.measurement import target_settings

    d = cache / "measure" / f"{TARGET}-runs{runs}-warmup{warmup}"
    d.mkdir(parents=True, exist_ok=True)
    settings = target_settings(TARGET, runs=runs, warmup=warmup)
    runner, blobs, keys, out = LocalRunner(), Blobs(items, cache), items.keys(), []
    for r in range(rounds):
        path = d / f"round{r + 1}.json"
        done = json.loads(path.read_text()) if path.is_file() else {}
        todo = [k for k in keys if k not in done]
        if todo and reuse:
            raise SystemExit(f"--reuse: round {r + 1} lacks {len(todo)} items (run without --reuse)")
        if todo:
            order = np.random.default_rng([seed, r]).permutation(len(todo))
            t0, load0 = time.perf_counter(), load_avg()
            for n, i in enumerate(order):
                m = runner.measure(blobs.get(todo[i]), settings)
                done[todo[i]] = [m.median_ms, m.min_ms]
                if n % 200 == 199 or n == len(order) - 1:
                    done["_load"] = done.get("_load", []) + [load_avg()]
                    tmp = path.with_suffix(".part")
                    tmp.write_text(json.dumps(done))
                    tmp.replace(path)  # kill-safe: a killed round resumes where it stopped
            log(f"round {r + 1}/{rounds}: {len(todo)} items in {time.perf_counter() - t0:.0f} s, "
                f"load average {load0:.1f} -> {load_avg():.1f}")  # fmt: skip
        out.append(done)
    return out


def figures(rounds: list[dict], keys: list[str], stat: str) -> dict[str, float]:
    """Per key: the median over rounds of the per-round medians (``stat="min"``: the least of the per-round
    minima)."""
    j = 0 if stat == "median" else 1
    pick = np.median if stat == "median" else np.min
    return {k: float(pick([r[k][j] for r in rounds])) for k in keys}


def repeat_agreement(rounds: list[dict], keys: list[str], stat: str) -> dict[str, float]:
    """Share of ``keys`` whose odd-round figure is within +-10% of the even-round figure (split half), and whose
    round-2 median is within +-10% of round 1's (single rounds)."""
    out = {}
    if len(rounds) >= 2:
        a, b = figures(rounds[0::2], keys, stat), figures(rounds[1::2], keys, stat)
        out["split_half"] = float(np.mean([abs(b[k] - a[k]) <= 0.1 * a[k] for k in keys]))
        out["single_round"] = float(np.mean([abs(rounds[1][k][0] - rounds[0][k][0]) <= 0.1 * rounds[0][k][0]
                                             for k in keys]))  # fmt: skip
    return out


# ---- predictors, leave one family out ------------------------------------------------------------------------------
def kernel_samples(items: Items, fig: dict, overhead: float, exclude: str | None):
    """The measured kernels whose origin is not only ``exclude``, as KernelSamples (less the overhead)."""
    from leti.predictors.kernel import KernelSamples

    keys = [k for k, o in items.origins.items() if o - {exclude}]
    graphs = [items.kernels[k].graph() for k in keys]
    node_ms = [{1: max(fig[f"kernel:{k}"] - overhead, 1e-4)} for k in keys]
    return KernelSamples.from_node_times(graphs, node_ms, RULES)


def seeded(family: str, seed: int):
    """A fresh predictor of ``family``, seeded where it has a seed."""
    from leti.errors import PredictorError
    from leti.predictors.registry import make

    try:
        return make(family, seed=seed)
    except PredictorError:  # lut and flops have no seed
        return make(family)


def lofo(items: Items, fig: dict, slow: bool, seed: int, log) -> dict[str, dict]:
    """Every predictor's held-out predictions: name -> {"pred": array over items.models, "train": description}."""
    from leti.predictors.kernel import KernelPredictor

    models = items.models
    fams = np.array([m.family for m in models])
    graphs = [items.graphs[m.name] for m in models]
    y = np.array([fig[f"model:{m.name}"] for m in models])
    overhead = fig["overhead"]
    gen_keys = list(items.gen)
    gen_graphs = [items.gen[k] for k in gen_keys]
    gen_y = np.array([fig[k] for k in gen_keys])
    out: dict[str, dict] = {}

    def fold_loop(name: str, train: str, fit_predict) -> None:
        t0 = time.perf_counter()
        pred = np.zeros(len(models))
        for f in sorted(set(fams)):
            te = fams == f
            pred[te] = fit_predict(~te, te, f)
        out[name] = {"pred": pred, "train": train, "seconds": time.perf_counter() - t0}
        log(f"  {name}: {time.perf_counter() - t0:.0f} s")

    def kernel_full(tr, te, f):
        ks = kernel_samples(items, fig, overhead, f)
        p = KernelPredictor(rules=RULES, seed=seed).fit([graphs[i] for i in np.flatnonzero(tr)], y[tr],
                                                        groups=fams[tr], kernels=ks, target=TARGET)  # fmt: skip
        return p.predict([graphs[i] for i in np.flatnonzero(te)])

    def kernel_only(tr, te, f):
        ks = kernel_samples(items, fig, overhead, f)
        p = KernelPredictor.from_kernels(ks, RULES, overhead, kernel_model="lightgbm", seed=seed)
        return p.predict([graphs[i] for i in np.flatnonzero(te)])

    n_k = len(items.kernels)
    fold_loop("kernel", f"fold's kernels (of {n_k}) + the other 6 families' models", kernel_full)
    fold_loop("kernel (kernels only)", f"fold's kernels (of {n_k}) + measured overhead; no model times",
              kernel_only)  # fmt: skip
    for fam in OTHER_FAMILIES:
        t0 = time.perf_counter()
        p = seeded(fam, seed)
        p.fit(gen_graphs, gen_y)
        out[fam] = {"pred": p.predict(graphs), "train": f"{len(gen_keys)} generated leti+fbnet archs",
                    "seconds": time.perf_counter() - t0}  # fmt: skip
        log(f"  {fam}: {time.perf_counter() - t0:.0f} s")
        if fam in SLOW_FAMILIES and not slow:
            continue

        def with_real(tr, te, f, fam=fam):
            q = seeded(fam, seed)
            q.fit(gen_graphs + [graphs[i] for i in np.flatnonzero(tr)], np.concatenate([gen_y, y[tr]]))
            return q.predict([graphs[i] for i in np.flatnonzero(te)])

        fold_loop(
            f"{fam} +real", f"{len(gen_keys)} generated archs + the other 6 families' models", with_real
        )
    return out


# ---- the report ------------------------------------------------------------------------------------------------------
def report(items: Items, fig: dict, preds: dict, agree: dict, rounds: list[dict], plots: Path | None) -> dict:
    from leti.predictors.evaluate import plot
    from leti.predictors.metrics import metrics

    models = items.models
    y = np.array([fig[f"model:{m.name}"] for m in models])
    loads = [v for r in rounds for v in r.get("_load", [])]
    print(f"\n{len(models)} models, {len({m.family for m in models})} families, {len(items.kernels)} kernels, "
          f"{len(items.gen)} generated archs; {len(rounds)} rounds, load average over the rounds "
          f"{min(loads):.1f}-{max(loads):.1f} (mean {np.mean(loads):.1f}) on {os.cpu_count()} CPUs")  # fmt: skip
    sh, sr = agree.get("split_half", float("nan")), agree.get("single_round", float("nan"))
    print(
        f"repeat agreement (models within +-10%): split half {100 * sh:.1f}%, single rounds {100 * sr:.1f}%"
    )
    print("\n| predictor | trained on | acc@10 | acc@20 | rho | MAPE |")
    print("|---|---|---:|---:|---:|---:|")
    rows = {}
    for name, p in preds.items():
        m = metrics(y, np.maximum(p["pred"], 1e-9))
        rows[name] = {**m, "train": p["train"], "seconds": p["seconds"]}
        print(f"| {name} | {p['train']} | {100 * m['acc10']:.1f} | {100 * m['acc20']:.1f} | {m['spearman']:.3f} "
              f"| {100 * m['mape']:.1f}% |")  # fmt: skip
    k = rows["kernel"]
    floor = max(sh, sr) if agree else 1.0
    goal = (k["spearman"] >= 0.98 and k["acc10"] >= 0.90) or (floor < 0.95 and k["acc10"] >= floor - 0.05)
    print(f"\ngoal (kernel rho >= 0.98 and acc@10 >= 90%, or acc@10 within 5 points of a repeat agreement < 95%, "
          f"here {100 * floor:.1f}%): {'met' if goal else 'MISSED'}")  # fmt: skip
    print("\nper model (measured ms, kernel / kernels-only predicted, error):")
    per = []
    for i, m in enumerate(models):
        a, b = preds["kernel"]["pred"][i], preds["kernel (kernels only)"]["pred"][i]
        per.append(
            {"model": m.name, "family": m.family, "measured_ms": y[i], "kernel_ms": a, "kernels_only_ms": b}
        )
        print(f"  {m.name:<28} {y[i]:9.2f}  {a:9.2f} ({100 * (a / y[i] - 1):+5.1f}%)  "
              f"{b:9.2f} ({100 * (b / y[i] - 1):+5.1f}%)")  # fmt: skip
    if plots is not None:
        for name, tag in (("kernel", "kernel"), ("kernel (kernels only)", "kernels-only"), ("lightgbm", "lightgbm"),
                          ("flops", "flops")):  # fmt: skip
            if name in preds:
                m = rows[name]
                title = f"{name}: acc@10 {100 * m['acc10']:.1f}%, rho {m['spearman']:.3f}"
                plot(y, preds[name]["pred"], plots / f"real-models-host-{tag}.png", title)
    return {"rows": rows, "agreement": agree, "per_model": per, "goal_met": bool(goal), "load": loads}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--jitter", type=float, default=2.0, help="jittered kernels per exact one")
    ap.add_argument(
        "--generated", type=int, default=600, help="leti+fbnet archs for the whole-model families"
    )
    ap.add_argument("--max-macs", type=int, default=400_000_000, help="largest kernel measured")
    ap.add_argument("--max-kernels", type=int, help="measure at most this many kernels (a seeded draw)")
    ap.add_argument("--stat", choices=("median", "min"), default="median")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reuse", action="store_true", help="analyse the stored rounds; measure nothing")
    ap.add_argument("--slow", action="store_true", help="also refit gcn and auto per fold with real models")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: one model per family, 2 rounds, 300 kernels, 40 archs",
    )
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plots", type=Path)
    a = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("LETI_HOME", str(a.cache / "leti-home"))
    t_start = time.perf_counter()
    models = catalogue()
    if a.quick:
        firsts = {}
        for m in models:
            firsts.setdefault(m.family, m)
        models = list(firsts.values())
        a.rounds, a.generated, a.jitter = 2, min(a.generated, 40), min(a.jitter, 0.5)
        a.max_kernels = min(a.max_kernels or 300, 300)
        a.cache = a.cache / "quick" if a.cache == DEFAULT_CACHE else a.cache
        a.cache.mkdir(parents=True, exist_ok=True)
        (a.cache / "tflite").mkdir(exist_ok=True)
        for m in models:  # the converted models are shared with full runs
            src, dst = m.path(DEFAULT_CACHE), m.path(a.cache)
            if src.is_file() and not dst.exists():
                dst.symlink_to(src)
    print(f"load average {load_avg():.1f} on {os.cpu_count()} CPUs; cache {a.cache}")
    convert_all(models, a.cache, log=lambda s: print(s, flush=True))
    from leti.importers.models import read_model

    items = Items(models)
    for m in models:
        items.graphs[m.name] = read_model(m.path(a.cache))
    sample_kernels(items, a.jitter, a.seed, a.max_macs, a.max_kernels)
    sample_generated(items, a.generated, a.seed)
    print(f"{len(models)} models, {len(items.kernels)} kernels, {len(items.gen)} generated archs to measure",
          flush=True)  # fmt: skip
    t0 = time.perf_counter()
    rounds = measure_rounds(items, a.cache, a.rounds, a.runs, a.warmup, a.seed, a.reuse,
                            log=lambda s: print(s, flush=True))  # fmt: skip
    t_measure = time.perf_counter() - t0
    keys = items.keys()
    fig = figures(rounds, keys, a.stat)
    agree = repeat_agreement(rounds, [f"model:{m.name}" for m in models], a.stat)
    print("fitting (leave one family out):", flush=True)
    t0 = time.perf_counter()
    preds = lofo(items, fig, a.slow, a.seed, log=lambda s: print(s, flush=True))
    t_fit = time.perf_counter() - t0
    out = report(items, fig, preds, agree, rounds, a.plots)
    total = time.perf_counter() - t_start
    print(f"\nruntime: {total:.0f} s (measuring {t_measure:.0f} s, fitting {t_fit:.0f} s); load average now "
          f"{load_avg():.1f}")  # fmt: skip
    if a.json:
        out.update(
            {
                "runtime_s": total,
                "measure_s": t_measure,
                "fit_s": t_fit,
                "args": {k: str(v) for k, v in vars(a).items()},
            }
        )
        a.json.write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
