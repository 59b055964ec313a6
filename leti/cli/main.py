"""The ``leti`` command. Bad input prints one line, ``leti: error: <field>: <reason>``, and exits with status 2.

Heavy libraries (TensorFlow, torch, boosting) are imported inside the subcommands that need them, so that
``leti --help`` and light commands start instantly.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from leti.cli.common import _Parser, _print_json, _store, add_store_option, run_parser, wide_console
from leti.cli.compress import add_compress_parser
from leti.cli.farm import adb_options, add_farm_parser, add_phone_options, lease_seconds
from leti.cli.predict import add_predict_parser, add_serve_parser
from leti.errors import LetiError


# ---- space ---------------------------------------------------------------------------------------------------------
def cmd_space_sample(args) -> int:
    from leti.space import sample

    constraints = json.loads(args.constraints) if args.constraints else None
    if constraints is not None and not isinstance(constraints, dict):
        raise LetiError("must be a JSON object", "--constraints")
    for arch, text in sample(args.space, args.n, args.seed, constraints):
        print(json.dumps({"hash": arch.hash, "full_hash": arch.full_hash, "space": arch.space,
                          "native": text, "arch": arch.to_dict()}, separators=(",", ":")))  # fmt: skip
    return 0


def read_arch_arg(text: str, space: str | None = None):
    """An arch from the command line: a native string, Arch JSON, a JSON/JSONL file or a .tflite file."""
    from leti.space import to_arch

    p = Path(text)
    if len(text) < 4096 and p.is_file():
        if p.suffix == ".tflite":
            from leti.tflite.reader import read_tflite

            return None, read_tflite(p.read_bytes())
        content = p.read_text().strip()
        first = content.splitlines()[0] if content else ""
        if not first:
            raise LetiError("file is empty", str(p))
        try:
            obj = json.loads(first) if p.suffix == ".jsonl" else json.loads(content)
        except ValueError:
            obj = first
        if isinstance(obj, dict) and "arch" in obj and "adjacency" not in obj:
            space = space or obj.get("space")
            obj = obj["arch"]
        arch = to_arch(obj, space if not isinstance(obj, dict) else None)
        return arch, arch.to_graph()
    arch = to_arch(text, space)
    return arch, arch.to_graph()


def cmd_space_show(args) -> int:
    from rich.table import Table

    arch, g = read_arch_arg(args.arch, args.space)
    if arch is not None and args.prune:
        arch = arch.prune()
        g = arch.to_graph()
    if args.json:
        _print_json({"hash": arch.hash if arch else None, "totals": g.totals(), "nodes": g.table()})
        return 0
    con = wide_console()
    title = f"{arch.space} arch {arch.hash[:12]}" if arch else "tflite model"
    t = Table(title=title, show_lines=False)
    for col in ("id", "op", "block", "attrs", "in", "out", "MACs", "params"):
        t.add_column(col, justify="right" if col in ("id", "MACs", "params") else "left")
    for nd in g.nodes():
        attrs = " ".join(f"{k}={v}" for k, v in nd.attrs.items())
        t.add_row(str(nd.id), nd.op + ("" if nd.live else " (dead)"), nd.block, attrs,
                  "x".join(map(str, nd.in_shape)), "x".join(map(str, nd.out_shape)), f"{nd.macs:,}", f"{nd.params:,}")  # fmt: skip
    con.print(t)
    tot = g.totals()
    con.print(
        f"nodes {tot['nodes']}, MACs {tot['macs']:,}, params {tot['params']:,}, "
        f"activations {tot['activation_bytes'] / 2**20:.2f} MiB, peak {tot['peak_bytes'] / 2**20:.2f} MiB, "
        f"depth {tot['depth']}  (MACs count multiply-accumulates; fp32 bytes)"
    )
    return 0


# ---- targets, dataset, import --------------------------------------------------------------------------------------
def cmd_targets(args) -> int:
    from leti.targets import host_targets

    store = _targets_store(args)
    stats = store.stats()["per_target"] if store else {}
    known = {t.name: t for t in store.list_targets()} if store else {}
    rows = []
    for name in sorted(set(host_targets()) | set(known)):
        rec = known.get(name)
        rows.append({"target": name, "measured_archs": stats.get(name, 0),
                     "noise_floor": rec.noise_floor if rec else None, "runnable_here": name in host_targets()})  # fmt: skip
    if args.json:
        _print_json({"targets": rows})
        return 0
    from rich.table import Table

    t = Table(title="targets")
    for col in ("target", "measured archs", "noise floor", "runnable here"):
        t.add_column(col)
    for r in rows:
        nf = f"{r['noise_floor'] * 100:.1f}%" if r["noise_floor"] is not None else "-"
        t.add_row(r["target"], str(r["measured_archs"]), nf, "yes" if r["runnable_here"] else "")
    wide_console().print(t)
    return 0


def _targets_store(args):
    """The store `leti targets` reads: none yet at the default location is fine (nothing measured), a named one
    that does not exist is an error."""
    import os

    from leti.datasets.location import ENV_VAR

    named = getattr(args, "store", None) or os.environ.get(ENV_VAR)
    try:
        return _store(args, create=False)
    except LetiError:
        if named:
            raise
        return None


def cmd_dataset_stats(args) -> int:
    store = _store(args, create=False)
    st = store.stats()
    if args.json:
        _print_json({"targets": st["per_target"], "targets_by_space": st["per_target_space"],
                     "archs": st["archs"], "measurements": st["measurements"]})  # fmt: skip
        return 0
    from rich.table import Table

    t = Table(title=f"store {store.location.display}: {st['archs']} archs, {st['measurements']} measurements")
    t.add_column("target")
    t.add_column("space")
    t.add_column("measured archs", justify="right")
    for target, by_space in sorted(st["per_target_space"].items()):
        for space, n in sorted(by_space.items()):
            t.add_row(target, space, str(n))
    wide_console().print(t)
    return 0


def cmd_dataset_export(args) -> int:
    from leti.datasets.export import export_measurements

    n = export_measurements(_store(args, create=False), args.output, target=args.target)
    print(f"wrote {n} measurements to {args.output}")
    return 0


def cmd_import(args) -> int:
    from rich.progress import Progress

    from leti.datasets.archs import record_from_text
    from leti.datasets.csvio import import_csv

    store = _store(args)
    reports = []
    for f in args.files:
        if not Path(f).is_file():
            raise LetiError("no such file", f)
        with Progress(transient=True) as prog:
            task = prog.add_task(f"import {Path(f).name}", total=None)

            def progress(done, total, task=task, prog=prog):
                prog.update(task, completed=done, total=total)

            report = import_csv(store, f, record_from_text, progress=progress, on_conflict=args.on_conflict)
        reports.append(report)
        if not args.json:
            print(report.summary())
    if args.json:
        _print_json({"files": [r.to_dict() for r in reports]})
    return 0


# ---- generate, bench, devices --------------------------------------------------------------------------------------
def cmd_generate(args) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from leti.workflows.generate import generate

    bindings = [_generate_binding(t, args.enqueue_only) for t in args.target]
    constraints = json.loads(args.constraints) if args.constraints else None
    store = _store(args)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())  # fmt: skip
    from rich.console import Console

    quiet = args.quiet or args.json
    with Progress(*columns, console=Console(stderr=True), disable=quiet) as prog:
        tasks = {}

        def on_start(run_id, jobs):
            if not quiet:
                prog.console.print(f"run {run_id}: {jobs['_total']} jobs to measure")
            for worker, n in jobs.items():
                if worker != "_total":
                    tasks[worker] = prog.add_task(worker, total=n)

        def progress(worker, done):
            prog.update(tasks[worker], completed=done)

        report = generate(store, args.space, args.n, args.seed, bindings, runs=args.runs, warmup=args.warmup,
                          min_time_s=args.min_time, constraints=constraints, repeat_check=args.repeat_check,
                          benchmark_binary=args.benchmark_binary, adb_options=adb_options(args),
                          max_failures=args.max_failures, progress=progress, on_start=on_start,
                          enqueue_only=args.enqueue_only, retry_failed=args.retry_failed, lease_s=args.lease,
                          max_attempts=args.max_attempts)  # fmt: skip
    p = report.progress
    left = p["pending"] + p["running"] + p["failed"]
    if args.json:
        _print_json(report.to_dict())
        return 0 if args.enqueue_only or left == 0 else 1
    if args.enqueue_only:
        print(f"run {report.run_id}: {report.enqueued} jobs queued ({p['pending']} pending, {p['done']} done, "
              f"{p['failed']} failed of {p['total']}) in {store.location.display}; start workers with "
              f"leti farm worker --store STORE --target TARGET@DEVICE")  # fmt: skip
        return 0
    print(f"run {report.run_id}{' (resumed)' if report.resumed else ''}: {p['done']} done, {p['failed']} failed, "
          f"{p['pending']} pending of {p['total']} jobs in {report.wall_s:.1f}s")  # fmt: skip
    for w in report.workers:
        state = "QUARANTINED" if w.quarantined else "ok"
        faults = {k: v for k, v in w.faults.items() if v and k != "attempts"}
        print(f"  {w.worker}: {w.measured} measured, {w.failed_jobs} failed, {state}"
              f"{', faults ' + json.dumps(faults) if faults else ''}")  # fmt: skip
        for e in w.errors[-3:]:
            print(f"    {e}")
    for target, floor in report.noise_floor.items():
        print(f"  noise floor {target}: median |Δ|/latency = {floor * 100:.2f}%")
    if p["failed"]:
        print(f"  {p['failed']} jobs failed for good; rerun with --retry-failed to try them again")
    return 0 if left == 0 else 1


def _generate_binding(text: str, enqueue_only: bool):
    """A --target of generate: bound to a device to measure here; a bare target name when only queueing."""
    from leti.device_runner.bindings import Binding, parse_binding
    from leti.targets import validate_name

    if enqueue_only and "@" not in text:
        return Binding(validate_name(text.strip()))
    return parse_binding(text)


def cmd_bench(args) -> int:
    from leti.device_runner.bindings import make_runner, parse_binding
    from leti.errors import ModelFileError
    from leti.measurement import target_settings

    p = Path(args.model)
    if not p.is_file():
        raise ModelFileError("no such file", str(p))
    data = p.read_bytes()
    binding = parse_binding(args.target)
    runner = make_runner(binding, args.benchmark_binary)
    try:
        settings = target_settings(
            binding.target, runs=args.runs, warmup=args.warmup, min_time_s=args.min_time
        )
        m = runner.measure(data, settings)
    finally:
        close = getattr(runner, "close", None)
        if close:
            close()
    d = {k: v for k, v in m.to_dict().items() if k not in ("raw",)}
    if args.json:
        _print_json(d)
        return 0
    print(f"{p.name} on {args.target}: median {m.median_ms:.3f} ms, mean {m.mean_ms:.3f} ± {m.std_ms:.3f} ms, "
          f"min {m.min_ms:.3f}, max {m.max_ms:.3f}, p90 {m.p90_ms:.3f} ms over {m.n_runs} runs")  # fmt: skip
    if m.init_ms is not None:
        print(f"init {m.init_ms:.1f} ms, model {m.model_bytes:,} bytes, memory {json.dumps(m.memory)}")
    return 0


def cmd_devices(args) -> int:
    from leti.device_runner.adb import list_devices

    if not args.address:
        raise LetiError("list the devices to query: leti devices 192.168.1.20:5555 usb:SERIAL …", "address")
    infos = list_devices(args.address)
    if args.json:
        _print_json({"devices": [i.to_dict() for i in infos]})
        return 0
    from rich.table import Table

    t = Table(title="devices")
    for col in ("serial", "state", "model", "SoC", "ABI", "Android", "battery", "temp °C"):
        t.add_column(col)
    for i in infos:
        temp = f"{i.max_thermal_c:.1f}" if i.max_thermal_c is not None else "-"
        batt = f"{i.battery_level}%" if i.battery_level is not None else "-"
        t.add_row(
            i.serial,
            i.state,
            i.model or "-",
            i.soc or "-",
            i.abi or "-",
            i.android_version or "-",
            batt,
            temp,
        )
    wide_console().print(t)
    return 0 if all(i.state != "unreachable" for i in infos) else 1


def cmd_lut_build(args) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from leti.device_runner.bindings import parse_binding
    from leti.workflows.lut_build import build_lut

    binding = parse_binding(args.target)
    with Progress(console=Console(stderr=True), transient=True) as prog:
        task = prog.add_task(f"measure layers on {binding.worker}", total=None)

        def progress(done, total):
            prog.update(task, completed=done, total=total)

        r = build_lut(binding, args.space, args.n, args.seed, args.runs, args.warmup, args.benchmark_binary,
                      progress=progress, rounds=args.rounds)  # fmt: skip
    print(f"lut for {r.target}: {r.n_layers} distinct layers of {r.n_archs} {r.space} archs measured in "
          f"{r.seconds:.0f}s (invocation overhead {r.overhead_ms:.3f} ms) -> {r.path}")  # fmt: skip
    if r.unbuilt:
        print(f"{len(r.unbuilt)} layers could not be built alone and will be priced by their nearest entry")
    return 0


# ---- predictors ----------------------------------------------------------------------------------------------------
FAMILY_CHOICES = ("lut", "flops", "xgboost", "catboost", "lightgbm", "gcn", "auto")


def _metrics_table(title: str, rows: list[tuple[str, dict]]):
    from rich.table import Table

    t = Table(title=title)
    for col in ("predictor", "acc@5 %", "acc@10 %", "acc@20 %", "RMSE ms", "MAPE %", "R²", "Spearman ρ", "Kendall τ",
                "n_train", "n_test"):  # fmt: skip
        t.add_column(col, justify="left" if col == "predictor" else "right")
    for name, m in rows:
        t.add_row(name, f"{100 * m['acc5']:.1f}", f"{100 * m['acc10']:.1f}", f"{100 * m['acc20']:.1f}",
                  f"{m['rmse']:.3f}", f"{100 * m['mape']:.1f}", f"{m['r2']:.3f}", f"{m['spearman']:.3f}",
                  f"{m['kendall']:.3f}", str(m.get("n_train", "")), str(m.get("n_test", "")))  # fmt: skip
    return t


def cmd_train(args) -> int:
    from leti.predictors.evaluate import train

    params = json.loads(args.params) if args.params else None
    if params is not None and not isinstance(params, dict):
        raise LetiError("must be a JSON object of hyper-parameters", "--params")
    pred, meta = train(_store(args, create=False), args.target, args.predictor, args.train_size, args.seed, params, args.space,
                       save=True)  # fmt: skip
    m = {**meta["metrics"], "n_train": meta["n_train"], "n_test": meta["n_test"]}
    if args.json:
        _print_json({k: v for k, v in meta.items() if k != "train_hashes"})
        return 0
    name = args.predictor + (f" ({meta['auto_chosen']['family']})" if args.predictor == "auto" else "")
    wide_console().print(_metrics_table(f"{args.target}: trained {name} in {meta['fit_seconds']:.1f}s, "
                                    f"tested on held-out archs", [(name, m)]))  # fmt: skip
    return 0


def cmd_evaluate(args) -> int:
    from leti.predictors.evaluate import evaluate

    store = _store(args, create=False)
    m = evaluate(store, args.target, args.predictor, space=args.space, return_predictions=bool(args.plot))
    if args.plot:
        from leti.predictors.evaluate import plot

        y_true, y_pred = m.pop("y_true"), m.pop("y_pred")
        plot(y_true, y_pred, args.plot, f"{args.target}: {m['family']}, acc@10 {100 * m['acc10']:.1f}%")
    keys = (
        "acc5",
        "acc10",
        "acc20",
        "rmse",
        "mape",
        "r2",
        "spearman",
        "kendall",
        "n_train",
        "n_test",
        "family",
    )
    if args.json:
        _print_json({k: m[k] for k in keys})
        return 0
    rec = store.get_target(args.target)
    floor = (
        f"; target noise floor {100 * rec.noise_floor:.1f}%" if rec and rec.noise_floor is not None else ""
    )
    wide_console().print(_metrics_table(f"{args.target}: {m['family']} on {m['n_test']} archs outside its training set"
                                    f"{floor}", [(m["family"], m)]))  # fmt: skip
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


def cmd_report(args) -> int:
    from leti.predictors.evaluate import report

    families = args.families.split(",") if args.families else None
    kwargs = {"families": families} if families else {}
    from rich.console import Console
    from rich.progress import Progress

    store = _store(args, create=False)
    with Progress(console=Console(stderr=True), transient=True) as prog:
        task = prog.add_task(f"report on {args.space}", total=None)

        def progress(row, done, total):
            prog.update(task, completed=done, total=total,
                        description=f"{row.target} {row.family}: acc@10 {100 * row.metrics['acc10']:.1f}%")  # fmt: skip

        md = report(
            store, args.space, args.train_size, out_dir=args.out, seed=args.seed, progress=progress, **kwargs
        )
    print(md)
    if args.out:
        print(f"\nwrote {Path(args.out) / 'report.md'} and one plot per target")
    return 0


# ---- parser --------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="leti", description="Estimate neural-network latency on phones and boards.")
    add_store_option(p, top=True)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sp = sub.add_parser("space", help="sample and inspect architectures").add_subparsers(
        dest="sub", required=True, parser_class=_Parser
    )
    s = sp.add_parser("sample", help="print N archs as JSON lines with keys hash and arch")
    s.add_argument("--space", required=True, help="nb101, nb201, fbnet or leti")
    s.add_argument("-n", type=int, default=10)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--constraints", help='JSON, e.g. {"max_macs": 3e8, "input_size": 96}')
    s.set_defaults(func=cmd_space_sample)
    s = sp.add_parser("show", help="layer table with shapes, MACs and params")
    s.add_argument("arch", help="NB201 string, FBNet blocks, Arch JSON, or a .json/.jsonl/.tflite file")
    s.add_argument("--space", help="how to read a native string (nb101, nb201, fbnet, leti)")
    s.add_argument("--prune", action="store_true", help="show the pruned arch")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_space_show)

    s = sub.add_parser("targets", help="list targets: runnable here and measured in the store")
    s.add_argument("--json", action="store_true")
    add_store_option(s)
    s.set_defaults(func=cmd_targets)

    ds = sub.add_parser("dataset", help="the measurement store").add_subparsers(
        dest="sub", required=True, parser_class=_Parser
    )
    s = ds.add_parser("stats", help="measured archs per target and space")
    s.add_argument("--json", action="store_true")
    add_store_option(s)
    s.set_defaults(func=cmd_dataset_stats)
    s = ds.add_parser("export", help="write measurements to .csv or .parquet")
    s.add_argument("--target")
    s.add_argument("-o", "--output", required=True)
    add_store_option(s)
    s.set_defaults(func=cmd_dataset_export)

    s = sub.add_parser("import", help="import measurement files: exchange CSV (space,arch,target,latency_ms,source) "
                       "or a `leti dataset export` (.csv/.parquet)")  # fmt: skip
    s.add_argument("files", nargs="+")
    s.add_argument("--on-conflict", choices=("keep-first", "keep-both", "reject"), default="keep-first",
                   help="a row whose arch, target and settings are stored with another latency: keep the stored "
                   "value (default), keep both (a repeat measurement), or reject the file")  # fmt: skip
    s.add_argument("--json", action="store_true")
    add_store_option(s)
    s.set_defaults(func=cmd_import)

    s = sub.add_parser("generate", help="sample, build, measure and store (resumable)")
    s.add_argument("--space", required=True)
    s.add_argument("-n", type=int, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--target", action="append", required=True,
                   help="TARGET (host) or TARGET@tcp:HOST:PORT / TARGET@usb:SERIAL; repeat for a farm")  # fmt: skip
    s.add_argument("--runs", type=int, default=30)
    s.add_argument("--warmup", type=int, default=3)
    s.add_argument(
        "--min-time", type=float, default=0.0, help="keep running each model at least this many seconds"
    )
    s.add_argument("--repeat-check", type=int, default=0, metavar="K",
                   help="re-measure K archs at the end; store the median |Δ|/latency as the target's noise floor")  # fmt: skip
    s.add_argument("--constraints", help='JSON sampler constraints, e.g. {"max_macs": 2e8}')
    add_phone_options(s)
    q = s.add_argument_group("queue")
    q.add_argument("--enqueue-only", action="store_true",
                   help="only fill the queue (TARGET without @device is fine): farm workers measure it")  # fmt: skip
    q.add_argument("--retry-failed", action="store_true", help="give the run's failed jobs another go")
    q.add_argument("--max-attempts", type=int, default=5, help="claims per job before it fails for good")
    q.add_argument("--lease", type=lease_seconds, default=60.0,
                   help="seconds a claimed job stays leased without a heartbeat")  # fmt: skip
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.add_argument("--json", action="store_true")
    add_store_option(s)
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser("bench", help="measure one .tflite file on a target")
    s.add_argument("model")
    s.add_argument("--target", required=True)
    s.add_argument("--runs", type=int, default=50)
    s.add_argument("--warmup", type=int, default=5)
    s.add_argument("--min-time", type=float, default=0.0)
    s.add_argument("--benchmark-binary")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_bench)

    lut = sub.add_parser("lut", help="lookup tables of per-layer latency").add_subparsers(
        dest="sub", required=True, parser_class=_Parser
    )
    s = lut.add_parser(
        "build", help="measure every distinct layer of a space alone on a target; save a lut predictor"
    )
    s.add_argument("--target", required=True, help="TARGET or TARGET@device, as for generate")
    s.add_argument("--space", required=True)
    s.add_argument("-n", type=int, default=50, help="archs sampled to collect the layers")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--runs", type=int, default=30)
    s.add_argument("--warmup", type=int, default=3)
    s.add_argument(
        "--rounds", type=int, default=3, help="passes over all layers; each layer keeps its median"
    )
    s.add_argument("--benchmark-binary")
    s.set_defaults(func=cmd_lut_build)

    s = sub.add_parser("train", help="train a predictor for a target on archs chosen by canonical-hash split")
    s.add_argument("--target", required=True)
    s.add_argument("--predictor", required=True, choices=FAMILY_CHOICES)
    s.add_argument("--train-size", type=int, default=900)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--space", help="only archs of this space")
    s.add_argument("--params", help="JSON hyper-parameters, e.g. '{\"n_estimators\": 500}'")
    s.add_argument("--json", action="store_true")
    add_store_option(s)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser(
        "evaluate", help="test a trained predictor on all the target's archs outside its training set"
    )
    s.add_argument("--target", required=True)
    s.add_argument("--predictor", default=None, help="family; default: the target's best")
    s.add_argument("--space")
    s.add_argument("--json", action="store_true")
    s.add_argument("--plot", metavar="FILE.png", help="predicted-vs-measured scatter (log-log, ±10%% band)")
    add_store_option(s)
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("report", help="train and evaluate every family on every target of a space")
    s.add_argument("--space", required=True)
    s.add_argument("--train-size", type=int, default=900)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--families", help="comma-separated (default: all)")
    s.add_argument("--out", help="folder for report.md and one plot per target")
    add_store_option(s)
    s.set_defaults(func=cmd_report)

    add_predict_parser(sub)
    add_serve_parser(sub)
    add_compress_parser(sub)
    add_farm_parser(sub)

    s = sub.add_parser("devices", help="list Android devices with model, SoC, battery and temperature")
    s.add_argument("address", nargs="*", help="HOST:PORT or usb[:SERIAL]")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_devices)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_parser(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
