"""``leti generate``, ``bench``, ``devices``, ``lut build`` and ``lut calibrate``: measuring on this machine or on phones."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import leti.cli.args as T
from leti.cli.common import _Parser, _print_json, _store, add_store_option, add_timing_args, wide_console
from leti.errors import LetiError
from leti.paths import is_file

# mirror leti.datasets.queue's defaults (not imported: it would slow `leti --help`); tests/test_cli_conventions.py
# checks they agree
DEFAULT_LEASE_S = 60.0
DEFAULT_MAX_ATTEMPTS = 5


def add_lease_option(p) -> None:
    """``--lease``, shared by generate and farm worker."""
    p.add_argument("--lease", type=T.LEASE, default=DEFAULT_LEASE_S,
                   help="seconds a claimed job stays leased without a heartbeat")  # fmt: skip


def add_phone_options(p: argparse.ArgumentParser) -> None:
    """The flags of Android measurements (shared by generate and farm worker)."""
    p.add_argument("--benchmark-binary", help="TFLite benchmark_model for the Android devices")
    g = p.add_argument_group("phone hygiene (Android targets)")
    g.add_argument(
        "--max-temp", type=T.CELSIUS, default=45.0, help="wait for every thermal zone to cool below this (°C)"
    )
    g.add_argument(
        "--cooldown-wait",
        type=T.DURATION,
        default=300.0,
        help="give up waiting for cool-down after S seconds",
    )
    g.add_argument(
        "--cooldown-poll",
        type=T.SECONDS,
        default=5.0,
        help="re-read temperatures every S seconds while waiting",
    )
    g.add_argument(
        "--backoff", type=T.DURATION, default=1.0, help="first retry delay (s), doubling on each failure"
    )
    g.add_argument(
        "--min-battery", type=T.PERCENT, default=20, help="do not measure below this battery level (%%)"
    )
    g.add_argument("--command-timeout", type=T.SECONDS, default=30.0, help="per-command timeout (s)")
    g.add_argument(
        "--attempts", type=T.POSITIVE_INT, default=3, help="tries per command on transport errors (backoff)"
    )
    g.add_argument("--max-failures", type=T.POSITIVE_INT, default=3,
                   help="quarantine a device after this many failed jobs in a row")  # fmt: skip


def adb_options(args) -> dict:
    return {
        "max_temp_c": args.max_temp,
        "cooldown_max_wait_s": args.cooldown_wait,
        "cooldown_poll_s": args.cooldown_poll,
        "backoff_s": args.backoff,
        "min_battery": args.min_battery,
        "command_timeout_s": args.command_timeout,
        "attempts": args.attempts,
    }


def add_measure_parsers(sub) -> None:
    s = sub.add_parser("generate", help="sample, build, measure and store (resumable)")
    s.add_argument("--space", required=True, help="nb101, nb201, fbnet or leti")
    s.add_argument("-n", type=T.COUNT, help="archs to sample and measure (or --suggest K)")
    s.add_argument("--seed", type=T.SEED, default=0, help="sampling seed")
    s.add_argument("--target", action="append", required=True,
                   help="TARGET (host) or TARGET@tcp:HOST:PORT / TARGET@usb:SERIAL; repeat for a farm")  # fmt: skip
    g = s.add_argument_group("a new target (few-shot)")
    g.add_argument("--suggest", type=T.COUNT, metavar="K",
                   help="measure the K archs `leti suggest` picks for the target instead of a random sample")  # fmt: skip
    g.add_argument("--sources", help="for --suggest: comma-separated source targets (default: all others)")
    g.add_argument("--pool", type=T.COUNT, default=2000, help="for --suggest: archs sampled to choose from")
    add_timing_args(s)
    s.add_argument(
        "--min-time", type=T.DURATION, default=0.0, help="keep running each model at least this many seconds"
    )
    s.add_argument("--repeat-check", type=T.NONNEG_INT, default=0, metavar="K",
                   help="re-measure K archs at the end; store the median |Δ|/latency as the target's noise floor")  # fmt: skip
    s.add_argument(
        "--constraints", type=T.JSON_OBJECT, help='JSON sampler constraints, e.g. {"max_macs": 2e8}'
    )
    add_phone_options(s)
    q = s.add_argument_group("queue")
    q.add_argument("--enqueue-only", action="store_true",
                   help="only fill the queue (TARGET without @device is fine): farm workers measure it")  # fmt: skip
    q.add_argument("--retry-failed", action="store_true", help="give the run's failed jobs another go")
    q.add_argument(
        "--max-attempts", type=T.POSITIVE_INT, default=DEFAULT_MAX_ATTEMPTS,
        help="claims per job before it fails for good",
    )
    add_lease_option(q)
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.add_argument("--json", action="store_true", help="print the results as JSON")
    add_store_option(s)
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser("bench", help="measure one .tflite file on a target")
    s.add_argument("model", help="a .tflite file")
    s.add_argument(
        "--target", required=True, help="TARGET (host) or TARGET@tcp:HOST:PORT / TARGET@usb:SERIAL"
    )
    add_timing_args(s)
    s.add_argument("--min-time", type=T.DURATION, default=0.0, help="keep running at least this many seconds")
    s.add_argument("--benchmark-binary", help="TFLite benchmark_model for Android targets")
    s.add_argument("--json", action="store_true", help="print the results as JSON")
    s.set_defaults(func=cmd_bench)

    lut = sub.add_parser("lut", help="lookup tables of per-layer latency").add_subparsers(
        dest="sub", required=True, parser_class=_Parser
    )
    s = lut.add_parser(
        "build", help="measure every distinct layer of a space alone on a target; save a lut predictor"
    )
    s.add_argument("--target", required=True, help="TARGET or TARGET@device, as for generate")
    s.add_argument("--space", required=True, help="nb101, nb201, fbnet or leti")
    s.add_argument("-n", type=T.COUNT, default=50, help="archs sampled to collect the layers")
    s.add_argument("--seed", type=T.SEED, default=0, help="sampling seed")
    add_timing_args(s)
    s.add_argument(
        "--rounds", type=T.POSITIVE_INT, default=3, help="passes over all layers; each layer keeps its median"
    )
    s.add_argument("--benchmark-binary", help="TFLite benchmark_model for Android targets")
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    s.set_defaults(func=cmd_lut_build)
    s = lut.add_parser(
        "calibrate", help="scale the target's lut predictor to the whole models measured on it in the store"
    )
    s.add_argument("--target", required=True, help="the target whose lut predictor is calibrated")
    s.add_argument("--space", help="only the measured archs of this space (nb101, nb201, fbnet or leti)")
    s.add_argument("-n", type=T.COUNT, help="at most this many archs, drawn with --seed (default: all)")
    s.add_argument("--seed", type=T.SEED, default=0, help="seed of the draw of -n archs")
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    add_store_option(s)
    s.set_defaults(func=cmd_lut_calibrate)

    s = sub.add_parser("devices", help="list Android devices with model, SoC, battery and temperature")
    s.add_argument("address", nargs="*", help="HOST:PORT or usb[:SERIAL]")
    s.add_argument("--json", action="store_true", help="print the results as JSON")
    s.set_defaults(func=cmd_devices)


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
    constraints = args.constraints
    store = _store(args)
    picks = None
    if args.suggest is not None:
        from leti.cli.predictors import sources_arg
        from leti.predictors.fewshot_data import suggest_archs

        if args.n is not None:
            raise LetiError("give -n or --suggest, not both", "--suggest")
        targets = {b.target for b in bindings}
        if len(targets) != 1:
            raise LetiError(f"suggests archs for one target, got {', '.join(sorted(targets))}", "--target")
        if constraints:
            raise LetiError("sampler constraints do not apply to suggested archs", "--constraints")
        picks = suggest_archs(store, targets.pop(), args.space, args.suggest, sources_arg(args.sources), args.pool,
                              args.seed)  # fmt: skip
    elif args.n is None:
        raise LetiError("give -n (archs to sample) or --suggest K", "-n")
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
                          max_attempts=args.max_attempts, archs=picks)  # fmt: skip
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
    if not is_file(p):
        raise ModelFileError("no such file", str(p))
    data = p.read_bytes()
    binding = parse_binding(args.target)
    settings = target_settings(binding.target, runs=args.runs, warmup=args.warmup, min_time_s=args.min_time)
    with make_runner(binding, args.benchmark_binary) as runner:
        m = runner.measure(data, settings)
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
    from leti.device_runner.address import parse_address

    if not args.address:
        raise LetiError("list the devices to query: leti devices 192.168.1.20:5555 usb:SERIAL …", "address")
    for i, address in enumerate(
        args.address
    ):  # a malformed address is bad input (exit 2), before any connection
        try:
            parse_address(address)
        except LetiError as e:
            raise LetiError(e.reason, "address" if len(args.address) == 1 else f"address[{i}]") from None
    infos = list_devices(args.address)
    status = 0 if all(i.state != "unreachable" for i in infos) else 1  # the same with --json
    if args.json:
        _print_json({"devices": [i.to_dict() for i in infos]})
        return status
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
    return status


def cmd_lut_calibrate(args) -> int:
    from leti.workflows.lut_build import calibrate_lut

    r = calibrate_lut(_store(args, create=False), args.target, args.space, args.n, args.seed)
    if args.json:
        _print_json(asdict(r))
        return 0
    print(f"lut for {r.target} calibrated on {r.n_models} measured models: scale {r.scale_before:.4g} -> "
          f"{r.scale:.4g}, MAPE on them {100 * r.mape_before:.1f}% -> {100 * r.mape_after:.1f}% -> {r.path}")  # fmt: skip
    return 0


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
    if args.json:
        from dataclasses import asdict

        _print_json(asdict(r))
        return 0
    print(f"lut for {r.target}: {r.n_layers} distinct layers of {r.n_archs} {r.space} archs measured in "
          f"{r.seconds:.0f}s (invocation overhead {r.overhead_ms:.3f} ms) -> {r.path}")  # fmt: skip
    if r.unbuilt:
        print(f"{len(r.unbuilt)} layers could not be built alone and will be priced by their nearest entry")
    return 0
