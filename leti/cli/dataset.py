"""``leti targets``, ``leti dataset stats|export`` and ``leti import``: what the measurement store holds."""

from __future__ import annotations

# leti imports that load numpy/pandas stay inside the functions: `leti --help` must start fast (issue 15).
import os
from pathlib import Path

from leti.cli.common import _Parser, _print_json, _store, add_store_option, wide_console
from leti.errors import LetiError
from leti.paths import is_file
from leti.targets import host_targets

IMPORT_FORMATS = ("csv", "mobile-ml-benchmark")


def add_dataset_parsers(sub) -> None:
    s = sub.add_parser("targets", help="list targets: with a predictor (trained or pretrained), measured in the store, "
                       "runnable here")  # fmt: skip
    s.add_argument("--json", action="store_true", help="print the results as JSON")
    add_store_option(s)
    s.set_defaults(func=cmd_targets)

    ds = sub.add_parser("dataset", help="the measurement store").add_subparsers(
        dest="sub", required=True, parser_class=_Parser
    )
    s = ds.add_parser("stats", help="measured archs per target and space")
    s.add_argument("--json", action="store_true", help="print the results as JSON")
    add_store_option(s)
    s.set_defaults(func=cmd_dataset_stats)
    s = ds.add_parser(
        "export",
        help="write every measurement and kernel measurement, all columns, to .csv or .parquet "
        "(leti import reads it)",
    )
    s.add_argument("--target", help="only this target's measurements")
    s.add_argument("-o", "--output", required=True, help="the .csv or .parquet file (its folder must exist)")
    s.add_argument("--json", action="store_true", help="print the results as JSON")
    add_store_option(s)
    s.set_defaults(func=cmd_dataset_export)

    s = sub.add_parser(
        "import",
        help="import measurement files: exchange CSV (space,arch,target,latency_ms,source) or a `leti dataset "
        "export` (.csv/.parquet); or a mobile-ml-benchmark directory with --format mobile-ml-benchmark",
    )
    s.add_argument(
        "files", nargs="+", help="CSV/parquet files (--format csv) or one directory (mobile-ml-benchmark)"
    )
    s.add_argument("--format", choices=IMPORT_FORMATS, default="csv", help="what the files are")
    s.add_argument("--precision", default="float",
                   help="mobile-ml-benchmark precisions, comma-separated: float, quant")  # fmt: skip
    s.add_argument("--on-conflict", choices=("keep-first", "keep-both", "reject"), default="keep-first",
                   help="a row whose arch, target and settings are stored with another latency: keep the stored "
                   "value (keep-first), keep both (a repeat measurement), or reject the file")  # fmt: skip
    s.add_argument("--json", action="store_true", help="print the results as JSON")
    add_store_option(s)
    s.set_defaults(func=cmd_import)


def _targets_store(args):
    """The store `leti targets` reads: none yet at the default location is fine (nothing measured), a named one
    that does not exist is an error."""
    from leti.datasets.location import ENV_VAR

    named = getattr(args, "store", None) or os.environ.get(ENV_VAR)
    try:
        return _store(args, create=False)
    except LetiError:
        if named:
            raise
        return None


def cmd_targets(args) -> int:
    from leti.predictors.registry import PRETRAINED, saved

    store = _targets_store(args)
    stats = store.stats()["per_target"] if store else {}
    known = {t.name: t for t in store.list_targets()} if store else {}
    answers = {r.target: r for r in saved() if r.answers}
    pretrained = {r.target for r in saved() if r.source == PRETRAINED}
    rows = []
    for name in sorted(set(host_targets()) | set(known) | set(answers)):
        rec, hit = known.get(name), answers.get(name)
        rows.append({"target": name, "measured_archs": stats.get(name, 0),
                     "noise_floor": rec.noise_floor if rec else None, "runnable_here": name in host_targets(),
                     "pretrained": name in pretrained,
                     "predictor": {"family": hit.family, "version": hit.version, "source": hit.source} if hit else None})  # fmt: skip
    if args.json:
        _print_json({"targets": rows})
        return 0
    from rich.table import Table

    t = Table(title="targets (predictor: what leti predict --target T uses)")
    for col in ("target", "predictor", "measured archs", "noise floor", "runnable here"):
        t.add_column(col)
    for r in rows:
        nf = f"{r['noise_floor'] * 100:.1f}%" if r["noise_floor"] is not None else "-"
        p = r["predictor"]
        pred = f"{p['family']} v{p['version']} ({p['source']})" if p else "-"
        t.add_row(r["target"], pred, str(r["measured_archs"]), nf, "yes" if r["runnable_here"] else "")
    wide_console().print(t)
    return 0


def cmd_dataset_stats(args) -> int:
    store = _store(args, create=False)
    st = store.stats()
    if args.json:
        _print_json({"targets": st["per_target"], "targets_by_space": st["per_target_space"],
                     "archs": st["archs"], "measurements": st["measurements"],
                     "kernel_measurements": st["kernel_measurements"]})  # fmt: skip
        return 0
    from rich.table import Table

    kernels = f", {st['kernel_measurements']} kernel measurements" if st["kernel_measurements"] else ""
    t = Table(
        title=f"store {store.location.display}: {st['archs']} archs, {st['measurements']} measurements{kernels}"
    )
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
    if args.json:
        _print_json({"measurements": n, "output": args.output})
        return 0
    print(f"wrote {n} rows to {args.output}")
    return 0


def cmd_import(args) -> int:
    from rich.progress import Progress

    from leti.datasets.archs import record_from_text
    from leti.datasets.csvio import import_csv

    if args.format == "mobile-ml-benchmark":
        return _import_mlbench(args)
    store = _store(args)
    reports = []
    for f in args.files:
        if not is_file(f):
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


def _import_mlbench(args) -> int:
    from leti.datasets.mlbench import import_mlbench

    if len(args.files) != 1:
        raise LetiError("give one mobile-ml-benchmark directory", "files")
    precisions = tuple(p.strip() for p in args.precision.split(",") if p.strip())
    r = import_mlbench(_store(args), args.files[0], precisions, on_conflict=args.on_conflict)
    if args.json:
        _print_json(r.to_dict())
        return 0
    print(f"mobile-ml-benchmark: {r.models} models, {len(r.targets)} targets, {r.measurements} new measurements, "
          f"{r.kernel_measurements} new kernel measurements ({r.skipped} already in the store)")  # fmt: skip
    return 0
