"""The multi-host farm on PostgreSQL: throughput of 1, 2 and 4 `leti farm worker` processes with 2 loopback phones
each, the queue's overhead per job, lost and duplicated jobs, and the bare queue's claims per second.

A throwaway PostgreSQL server (initdb + pg_ctl, fsync on unless --fast) holds the store. For each worker count a
fresh database gets 200 NB201 jobs (`leti generate --enqueue-only`); each worker is the real CLI process, and its
two phones are loopback ADB devices (the real ADB wire protocol; `benchmark_model` runs the pushed model with
LiteRT on this machine's CPU) served by a separate "rack" process, as phones are separate hardware. The models are
built once beforehand, so every run measures the queue and the phones, not the .tflite writer.

* throughput: (jobs - 1) / (last completion - first completion), on the database clock; scaling = vs 1 worker;
* queue overhead per job: the workers' time in claims that returned a job, in completions (the result's
  transaction) and in heartbeats, divided by the jobs;
* claims/s: 16 claimers (4 processes x 4 threads) that claim (and complete) empty jobs as fast as they can;
* one client on an idle queue: the latency of a claim, a heartbeat and a completion.

Note: the loopback phones compute on this host's CPU, so on a small machine the phones, not the queue, cap the
scaling; the claims/s figure is the queue's own capacity.

    .venv/bin/python benchmarks/bench_farm_pg.py [--jobs 200] [--workers 1,2,4] [--runs 10] [--fast]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = "pixel4-tflite-cpu-1t"

RACK = """
import sys, time
from leti.testing.loopback import DeviceProfile, LoopbackAdbDevice
devs = [LoopbackAdbDevice(DeviceProfile(serialno=f"R{sys.argv[1]}P{i}")).start() for i in range(2)]
print(" ".join(d.serial for d in devs), flush=True)
sys.stdin.read()  # until the benchmark closes our stdin
for d in devs:
    d.stop()
"""


def enqueue(url: str, n: int, runs: int, warmup: int, home: Path) -> str:
    from leti.datasets.store import Store
    from leti.device_runner.bindings import Binding
    from leti.workflows.generate import generate
    from leti.workflows.models import ModelCache, store_archs

    with Store.open(url) as store:
        rep = generate(store, "nb201", n, 0, [Binding(TARGET)], runs=runs, warmup=warmup, enqueue_only=True)
        cache = ModelCache(store_archs(store), home / "models")
        for job in store.jobs(rep.run_id):
            cache(job.arch_id, "fp32")  # built once: every worker count measures the same warm cache
    return rep.run_id


def farm_run(pg, k: int, args, home: Path) -> dict:
    import psycopg

    url = pg.create_database(f"farm{k}")
    enqueue(url, args.jobs, args.runs, args.warmup, home)
    env = {**os.environ, "PYTHONPATH": str(REPO), "LETI_HOME": str(home), "OMP_NUM_THREADS": "1"}
    racks, workers = [], []
    binary = home / "benchmark_model"
    try:
        for i in range(k):
            rack = subprocess.Popen([sys.executable, "-c", RACK, str(i)], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
            racks.append((rack, rack.stdout.readline().split()))
        t0 = time.perf_counter()
        for _, serials in racks:
            argv = [sys.executable, "-m", "leti.cli", "farm", "worker", "--store", url, "--benchmark-binary",
                    str(binary), "--until-empty", "--json", "--quiet", "--cooldown-poll", "0.1"]  # fmt: skip
            argv += [a for s in serials for a in ("--target", f"{TARGET}@tcp:{s}")]
            workers.append(
                subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            )
        outs = [w.communicate(timeout=3600) for w in workers]
        wall = time.perf_counter() - t0
    finally:
        for rack, _ in racks:
            rack.stdin.close()
            rack.wait(timeout=30)
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGKILL)
    bad = [e[-800:] for w, (_, e) in zip(workers, outs, strict=True) if w.returncode != 0]
    if bad:
        raise SystemExit(f"a worker failed: {bad[0]}")
    reports = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    with psycopg.connect(url) as conn:
        first, last, done = conn.execute(
            "SELECT MIN(finished_at), MAX(finished_at), COUNT(*) FROM jobs WHERE state = 'done'"
        ).fetchone()
        total, distinct = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT (arch_id, target, settings_key)) FROM measurements"
        ).fetchone()
        jobs = conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    ws = [w for r in reports for w in r["workers"]]
    queue_s = sum(w["claim_s"] + w["complete_s"] for w in ws) + sum(r["heartbeat_s"] for r in reports)
    return {
        "workers": k, "jobs": jobs, "done": done, "wall_s": wall, "rate": (done - 1) / (last - first),
        "overhead_ms": 1e3 * queue_s / max(done, 1), "lost": jobs - distinct, "duplicated": total - distinct,
        "measured": sum(w["measured"] for w in ws), "beats": sum(r["heartbeats"] for r in reports),
    }  # fmt: skip


def _claimer(url: str, threads: int, seconds: float, complete: bool, start, out) -> None:
    from leti.datasets.store import Store

    store = Store.open(url)
    store.db_now()  # connected
    out.put("ready")
    start.wait()
    counts = [0] * threads
    deadline = time.monotonic() + seconds

    def loop(i: int) -> None:
        while time.monotonic() < deadline:
            job = store.claim_job("bench", f"c{os.getpid()}-{i}", targets=["dev-cpu"], lease_s=60)
            if job is None:
                return
            if complete:
                store.complete_job(job.id, {"latency_ms": 1.0}, attempt=job.attempts)
            counts[i] += 1

    ts = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out.put(sum(counts))


def queue_rate(pg, name: str, procs: int, claimers: int, seconds: float, complete: bool) -> float:
    """Jobs through the bare queue per second: ``claimers`` threads over ``procs`` processes claim (and complete)
    empty jobs as fast as they can."""
    from leti.datasets.store import ArchRecord, Store

    url = pg.create_database(name)
    n = int(seconds * 4000)  # more than 16 claimers take in the time
    with Store.open(url) as s:
        s.upsert_archs(ArchRecord(f"a{i}", f"h{i}", "nasbench201", f"x{i}", "{}") for i in range(n))
        s.create_run("bench", {})
        s.add_jobs("bench", [(f"a{i}", "dev-cpu", "k") for i in range(n)])
    ctx = mp.get_context("spawn")
    q, start = ctx.Queue(), ctx.Event()
    ps = [ctx.Process(target=_claimer, args=(url, claimers // procs, seconds, complete, start, q))
          for _ in range(procs)]  # fmt: skip
    for p in ps:
        p.start()
    for _ in ps:
        assert q.get() == "ready"  # start-up and imports are not timed
    start.set()
    done = sum(q.get() for _ in ps)
    for p in ps:
        p.join()
    with Store.open(url) as s:
        p = s.run_progress("bench")
        assert p["done" if complete else "running"] == done
    return done / seconds


def single_client_overhead(pg, n: int = 500) -> dict:
    """Per-job queue cost for one worker on an idle queue: claim, one heartbeat, complete (ms, medians)."""
    import statistics

    from leti.datasets.store import ArchRecord, Store

    url = pg.create_database("single")
    with Store.open(url) as s:
        s.upsert_archs(ArchRecord(f"a{i}", f"h{i}", "nasbench201", f"x{i}", "{}") for i in range(n))
        s.create_run("bench", {})
        s.add_jobs("bench", [(f"a{i}", "dev-cpu", "k") for i in range(n)])
        t = {"claim": [], "heartbeat": [], "complete": []}
        for _ in range(n):
            t0 = time.perf_counter()
            job = s.claim_job("bench", "w", targets=["dev-cpu"], lease_s=60)
            t1 = time.perf_counter()
            s.heartbeat(["w"], 60)
            t2 = time.perf_counter()
            s.complete_job(job.id, {"latency_ms": 1.0}, attempt=job.attempts, worker="w")
            t3 = time.perf_counter()
            t["claim"].append(t1 - t0)
            t["heartbeat"].append(t2 - t1)
            t["complete"].append(t3 - t2)
    return {k: 1e3 * statistics.median(v) for k, v in t.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--claim-seconds", type=float, default=10.0)
    ap.add_argument(
        "--fast", action="store_true", help="server without fsync (a throwaway's default in tests)"
    )
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from leti.testing.loopback import make_fake_elf
    from leti.testing.postgres import TempPostgres

    with tempfile.TemporaryDirectory() as tmp, TempPostgres(fast=args.fast) as pg:
        home = Path(tmp)
        os.environ["LETI_HOME"] = str(home)
        (home / "benchmark_model").write_bytes(make_fake_elf("arm64-v8a"))
        print(f"farm on PostgreSQL ({'fsync off' if args.fast else 'fsync on'}), {os.cpu_count()} CPUs: "
              f"{args.jobs} NB201 jobs on {TARGET}, runs={args.runs} warmup={args.warmup}, 2 loopback phones "
              f"per worker process")  # fmt: skip
        results = [farm_run(pg, int(k), args, home) for k in args.workers.split(",")]
        base = results[0]["rate"]
        for r in results:
            print(f"  {r['workers']} worker(s): {r['rate']:6.2f} jobs/s  scaling {r['rate'] / base:4.2f}x  "
                  f"(wall {r['wall_s']:.1f} s with start-up; {r['done']}/{r['jobs']} done; "
                  f"queue overhead {r['overhead_ms']:.2f} ms/job; {r['beats']} heartbeats)")  # fmt: skip
        for procs in (4,):
            claim_only = queue_rate(pg, f"claims{procs}", procs, 16, args.claim_seconds, complete=False)
            both = queue_rate(pg, f"jobs{procs}", procs, 16, args.claim_seconds, complete=True)
            print(f"  bare queue, 16 claimers in {procs} processes: {claim_only:,.0f} claims/s (claim only), "
                  f"{both:,.0f} jobs/s (claim + complete)")  # fmt: skip
        one = single_client_overhead(pg)
        print(f"  one client, idle queue (medians): claim {one['claim']:.2f} ms, heartbeat {one['heartbeat']:.2f} ms, "
              f"complete {one['complete']:.2f} ms")  # fmt: skip
        overhead = max(r["overhead_ms"] for r in results)
        print(f"queue overhead per job (claim + heartbeat + complete): {sum(one.values()):.2f} ms for one client; "
              f"{overhead:.2f} ms inside the busiest farm run (CPU shared with the phones)")  # fmt: skip
        print(f"lost {sum(r['lost'] for r in results)}")
        print(f"duplicated {sum(r['duplicated'] for r in results)}")


if __name__ == "__main__":
    main()
