"""``leti kernels build``: kernel datasets for the ``kernel`` predictor (nn-Meter-style adaptive sampling)."""

from __future__ import annotations

# leti imports that load numpy/pandas stay inside the functions: `leti --help` must start fast (issue 15).
import leti.cli.args as T
from leti.cli.common import _Parser, _print_json, _store, add_store_option, add_timing_args


def add_kernels_parsers(sub) -> None:
    kp = sub.add_parser(
        "kernels", help="kernel datasets: single kernels measured on a target"
    ).add_subparsers(dest="sub", required=True, parser_class=_Parser)
    s = kp.add_parser(
        "build",
        help="sample kernel configurations of real models, measure them, add samples where the kernel regressor "
        "errs most; resumable",
    )
    s.add_argument("--target", required=True, help="TARGET or TARGET@tcp:HOST:PORT / TARGET@usb:SERIAL")
    s.add_argument("-n", "--n", type=T.COUNT, default=200, help="kernels to measure (all rounds)")
    s.add_argument("--seed", type=T.SEED, default=0, help="sampling seed")
    s.add_argument(
        "--rounds", type=T.POSITIVE_INT, default=3, help="round 1 samples the prior; later rounds adapt"
    )
    add_timing_args(s)
    s.add_argument("--max-macs", type=T.MACS, default=None, help="leave out kernels above this many MACs")
    s.add_argument("--prior", nargs="+", metavar="MODEL", help="model files whose kernels form the prior "
                   "(default: the imported models in the store, else typical CNN layers)")  # fmt: skip
    s.add_argument("--benchmark-binary", help="TFLite benchmark_model for Android targets")
    s.add_argument("--json", action="store_true", help="print the results as JSON")
    add_store_option(s)
    s.set_defaults(func=cmd_kernels_build)


def cmd_kernels_build(args) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from leti.device_runner.bindings import parse_binding
    from leti.workflows.kernels import DEFAULT_MAX_MACS, build_kernels

    binding = parse_binding(args.target)
    prior = None
    if args.prior:
        from leti.importers.models import read_model

        prior = [read_model(p) for p in args.prior]
    store = _store(args)
    with Progress(console=Console(stderr=True), transient=True) as prog:
        task = prog.add_task(f"measure kernels on {binding.worker}", total=None)

        def progress(done, total):
            prog.update(task, completed=done, total=total)

        r = build_kernels(store, binding, n=args.n, seed=args.seed, rounds=args.rounds, runs=args.runs,
                          warmup=args.warmup, prior=prior, max_macs=args.max_macs or DEFAULT_MAX_MACS,
                          benchmark_binary=args.benchmark_binary, progress=progress)  # fmt: skip
    if args.json:
        _print_json(r.to_dict())
        return 0
    print(f"kernels for {r.target} ({r.rules} rules, prior: {r.prior}): {r.n_configs} configurations, "
          f"{r.n_measured} measured now at {r.kernels_per_s:.1f} kernels/s; invocation overhead "
          f"{r.overhead_ms:.3f} ms; {r.seconds:.0f} s in all")  # fmt: skip
    for rd in r.rounds:
        cv = (
            f", kernel regressor CV MAPE before it {100 * rd['cv_mape_before']:.1f}%"
            if rd["cv_mape_before"]
            else ""
        )
        print(f"  round {rd['round']}: {rd['new']} new, {rd['measured']} measured{cv}")
    if r.path:
        print(f"kernel predictor -> {r.path}")
    return 0


__all__ = ["add_kernels_parsers", "cmd_kernels_build"]
