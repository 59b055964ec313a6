"""``make demo``: the main job end to end on this machine, no phone needed.

1. sample 100 NAS-Bench-101 archs, build their .tflite models and measure them on this CPU with LiteRT;
2. re-measure 10 of them to get the target's noise floor;
3. train a FLOPs + RANSAC and a boosting predictor on 70 archs (split by canonical hash) and test on the rest;
4. predict three archs never measured, then measure them, to compare.

    LETI_HOME=demo_out python -m leti.demo [--n 100] [--train-size 70]
"""

from __future__ import annotations

import argparse
import sys
import time

from rich.console import Console
from rich.table import Table

from leti.cli.common import wide_console
from leti.datasets.store import Store
from leti.device_runner.bindings import parse_binding
from leti.device_runner.local import LocalRunner
from leti.errors import LetiError
from leti.measurement import target_settings
from leti.paths import default_store_path
from leti.predictors.evaluate import train
from leti.space import sample
from leti.tflite.convert import build_tflite
from leti.workflows.generate import generate

TARGET = "host-litert-cpu-1t"


def run(n: int, train_size: int, runs: int, console: Console) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    store = Store.open(default_store_path())
    console.print(
        f"[bold]1. generate[/] {n} NAS-Bench-101 archs on {TARGET} (store: {store.location.display})"
    )
    t0 = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console) as prog:  # fmt: skip
        task = prog.add_task("build + measure", total=None)
        report = generate(
            store, "nb101", n, 0, [parse_binding(TARGET)], runs=runs, warmup=2, repeat_check=10,
            on_start=lambda run_id, jobs: prog.update(task, total=jobs["_total"]),
            progress=lambda worker, done: prog.update(task, completed=done),
        )  # fmt: skip
    w = report.workers[0]
    console.print(
        f"   {report.progress['done']} measured in {time.perf_counter() - t0:.0f}s "
        f"(build {w.build_s:.0f}s, measure {w.measure_s:.0f}s, store {w.store_s:.1f}s); "
        f"noise floor {100 * report.noise_floor.get(TARGET, float('nan')):.1f}% (median |Δ|/latency, 10 repeats)"
    )

    console.print(
        f"[bold]2. train[/] on {train_size} archs (split by canonical hash, seed 0), test on the rest"
    )
    table = Table(title=f"{TARGET}: held-out archs")
    for col in (
        "predictor",
        "acc@5 %",
        "acc@10 %",
        "acc@20 %",
        "MAPE %",
        "Spearman ρ",
        "Kendall τ",
        "n_test",
    ):
        table.add_column(col, justify="left" if col == "predictor" else "right")
    trained = {}
    for family in ("flops", "lightgbm", "xgboost"):
        pred, meta = train(store, TARGET, family, train_size, 0, save=True)
        m = meta["metrics"]
        trained[family] = (pred, m)
        table.add_row(family, f"{100 * m['acc5']:.1f}", f"{100 * m['acc10']:.1f}", f"{100 * m['acc20']:.1f}",
                      f"{100 * m['mape']:.1f}", f"{m['spearman']:.3f}", f"{m['kendall']:.3f}", str(meta["n_test"]))  # fmt: skip
    console.print(table)

    best = max(trained, key=lambda f: trained[f][1]["acc10"])
    console.print(f"[bold]3. predict, then measure[/] three archs never seen (predictor: {best})")
    seen = {a.hash for a, _ in sample("nb101", n, 0)}
    fresh = [a for a, _ in sample("nb101", n + 30, 1) if a.hash not in seen][:3]
    predicted = trained[best][0].predict([a.to_graph() for a in fresh])
    runner = LocalRunner()
    settings = target_settings(TARGET, runs=runs, warmup=2)
    for arch, p in zip(fresh, predicted, strict=True):
        m = runner.measure(build_tflite(arch.to_graph()), settings).latency_ms
        console.print(f"   {arch.hash[:12]}  MACs {arch.to_graph().total_macs / 1e6:7.1f}M  predicted {p:7.2f} ms  "
                      f"measured {m:7.2f} ms  error {100 * (p - m) / m:+.1f}%")  # fmt: skip
    console.print("Next: `leti space show`, `leti serve`, and the README for phones and compression.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="leti's end-to-end demo on this machine")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--train-size", type=int, default=70)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args(argv)

    console = wide_console()
    try:
        run(args.n, args.train_size, args.runs, console)
    except LetiError as e:
        print(f"leti demo: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
