"""``leti farm worker`` and ``leti farm status``: a phone farm across hosts sharing one PostgreSQL store."""

from __future__ import annotations

# leti imports that load numpy/pandas stay inside the functions: `leti --help` must start fast (issue 15).
import signal
import threading
import time

import leti.cli.args as T
from leti.cli.common import _Parser, _print_json, _store, add_store_option, wide_console
from leti.cli.measure import adb_options, add_lease_option, add_phone_options


def cmd_farm_worker(args) -> int:
    from leti.device_runner.bindings import parse_binding
    from leti.workflows.worker import run_worker

    bindings = [parse_binding(t) for t in args.target or []]
    store = _store(args)  # workers may start before the queue is filled
    stop = threading.Event()

    def on_signal(signum, frame):
        if stop.is_set():  # a second signal: leave now (the leases in flight expire and their jobs come back)
            raise KeyboardInterrupt
        stop.set()
        if not args.quiet:
            print("leti: stopping after the jobs in flight", flush=True)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    counts: dict[str, int] = {}

    def progress(worker, done):
        counts[worker] = done
        if not args.quiet and not args.json:
            print(f"{worker}: {done} measured", flush=True)

    try:
        run = run_worker(store, bindings, benchmark_binary=args.benchmark_binary or None, adb_options=adb_options(args),
                         lease_s=args.lease, drain=args.until_empty, stop=stop, max_failures=args.max_failures,
                         progress=progress)  # fmt: skip
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if args.json:
        _print_json(run.to_dict())
    else:
        for line in run.skipped:
            print(f"  skipped {line}")
        for w in run.workers:
            state = "QUARANTINED" if w.quarantined else "ok"
            print(f"  {w.worker}: {w.measured} measured, {w.failed_jobs} failed, {state}")
            for e in w.errors[-3:]:
                print(f"    {e}")
    return 1 if run.workers and all(w.quarantined for w in run.workers) else 0


def cmd_farm_status(args) -> int:
    store = _store(args, create=False)
    if not args.watch:
        status = store.farm_status(run_id=args.run)
        if args.json:
            _print_json(status)
        else:
            wide_console().print(*status_tables(status))
        return 0
    from rich.console import Group
    from rich.live import Live

    with Live(Group(*status_tables(store.farm_status(run_id=args.run))), refresh_per_second=4) as live:
        while True:  # until Ctrl-C
            time.sleep(args.watch)
            live.update(Group(*status_tables(store.farm_status(run_id=args.run))))


def status_tables(status: dict) -> list:
    from rich.table import Table

    per_min = f"per min ({status['window_s'] / 60:g} min)"
    t = Table(title=f"farm {status['store']}" + (f", run {status['run_id']}" if status["run_id"] else ""))
    for col in ("target", "queued", "leased", "done", "failed", per_min):
        t.add_column(col, justify="left" if col == "target" else "right")
    for r in status["targets"]:
        t.add_row(
            r["target"],
            str(r["queued"]),
            str(r["leased"]),
            str(r["done"]),
            str(r["failed"]),
            f"{r['per_min']:g}",
        )
    w = Table(title="workers")
    for col in ("worker", "state", "leased", "done", "failed", per_min, "last heartbeat"):
        w.add_column(col, justify="left" if col in ("worker", "state") else "right")
    for r in status["workers"]:
        beat = "-" if r["last_heartbeat_s"] is None else f"{r['last_heartbeat_s']:.0f} s ago"
        w.add_row(r["worker"], r["state"] or "-", str(r["leased"]), str(r["done"]), str(r["failed"]),
                  f"{r['per_min']:g}", beat)  # fmt: skip
    return [t, w]


def add_farm_parser(sub) -> None:
    farm = sub.add_parser(
        "farm", help="a phone farm across hosts sharing one PostgreSQL store"
    ).add_subparsers(dest="sub", required=True, parser_class=_Parser)
    s = farm.add_parser("worker", help="measure queued jobs on this host's devices until stopped (SIGTERM)")
    s.add_argument("--target", action="append", metavar="TARGET@DEVICE",
                   help="a target and the device that measures it (repeat: one per device)")  # fmt: skip
    add_phone_options(s)
    add_lease_option(s)
    s.add_argument("--until-empty", action="store_true", help="exit when the targets' queues are empty")
    s.add_argument("--quiet", action="store_true", help="no progress output")
    s.add_argument("--json", action="store_true", help="print the results as JSON")
    add_store_option(s)
    s.set_defaults(func=cmd_farm_worker)
    s = farm.add_parser("status", help="queued, leased, done and failed jobs per target and per worker")
    s.add_argument("--run", help="only this run's jobs")
    s.add_argument("--json", action="store_true", help="print the results as JSON")
    s.add_argument("--watch", type=T.WATCH_PERIOD, nargs="?", const=2.0, default=None, metavar="S",
                   help="a live table, refreshed every S seconds (default 2) until Ctrl-C")  # fmt: skip
    add_store_option(s)
    s.set_defaults(func=cmd_farm_status)
