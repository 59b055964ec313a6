"""Fault tests of the multi-host farm: `leti farm worker` processes on a real PostgreSQL store, with loopback ADB
devices (the real ADB wire protocol) as their phones. After each fault every job is done exactly once: 0 lost,
0 duplicated measurements.

Faults: kill -9 of a worker mid-run, mid-push and at a random moment; the server stopped for seconds and started
again; workers racing for one job; a worker whose clock is an hour off; SIGTERM; a device claimed twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest

from leti.datasets.store import Store
from leti.device_runner.bindings import Binding
from leti.testing.loopback import DeviceProfile, Faults, LoopbackAdbDevice, make_fake_elf
from leti.workflows.generate import generate

REPO = Path(__file__).resolve().parents[1]
TARGET = "pixel4-tflite-cpu-1t"
LEASE = "2"


@pytest.fixture
def farm(pg_url, tmp_path):
    """A queue of N NB201 jobs (enqueued as `leti generate --enqueue-only` does) and a fake benchmark_model."""
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(make_fake_elf("arm64-v8a"))
    home = tmp_path / "home"
    f = SimpleNamespace(url=pg_url, binary=binary, home=home, devices=[], procs=[], n=0)

    def enqueue(n: int, seed: int = 0) -> None:
        with Store.open(pg_url) as s:
            generate(s, "nb201", n, seed, [Binding(TARGET)], runs=2, warmup=0, enqueue_only=True)
        f.n += n

    def device(**faults) -> LoopbackAdbDevice:
        d = LoopbackAdbDevice(DeviceProfile(serialno=f"P{len(f.devices)}"), faults=Faults(**faults)).start()
        f.devices.append(d)
        return d

    def worker(*devices, until_empty: bool = True, skew_s: float = 0.0, extra=()) -> subprocess.Popen:
        argv = [sys.executable, "-m", "leti.cli", "farm", "worker", "--store", pg_url, "--benchmark-binary",
                str(binary), "--lease", LEASE, "--json", "--quiet", "--command-timeout", "20", "--attempts", "2",
                "--backoff", "0.05", "--cooldown-poll", "0.05", *extra]  # fmt: skip
        argv += [a for d in devices for a in ("--target", f"{TARGET}@tcp:{d.serial}")]
        if until_empty:
            argv.append("--until-empty")
        env = {**os.environ, "PYTHONPATH": str(REPO), "LETI_HOME": str(home)}
        if skew_s:
            env["PYTHONPATH"] = f"{skewed_site(tmp_path, skew_s)}:{REPO}"
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        f.procs.append(p)
        return p

    f.enqueue, f.device, f.worker = enqueue, device, worker
    yield f
    for p in f.procs:
        if p.poll() is None:
            p.kill()
        p.communicate()
    for d in f.devices:
        d.stop()


def skewed_site(tmp_path: Path, skew_s: float) -> Path:
    """A sitecustomize that shifts this process's wall clock (time.time and datetime.now) by ``skew_s``."""
    site = tmp_path / f"skew{int(skew_s)}"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import datetime, time
        _real = time.time
        time.time = lambda: _real() + {skew_s}
        time.time_ns = lambda: int(time.time() * 1e9)

        class _Skewed(datetime.datetime):
            @classmethod
            def now(cls, tz=None):
                return datetime.datetime.fromtimestamp(time.time(), tz)

        datetime.datetime = _Skewed
    """))  # fmt: skip
    return site


def done(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT COUNT(*) FROM jobs WHERE state = 'done'").fetchone()[0]


def wait_for(cond, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def finish(p: subprocess.Popen, timeout: float = 120) -> dict:
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


def kill9(p: subprocess.Popen) -> None:
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=30)
    assert p.returncode == -signal.SIGKILL


def exactly_once(url: str, n: int) -> dict:
    """Every job done, one measurement each: 0 lost, 0 duplicated. Returns attempts per job."""
    with psycopg.connect(url) as conn:
        states = dict(conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
        total, distinct = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT (arch_id, target, settings_key)) FROM measurements"
        ).fetchone()
        attempts = dict(conn.execute("SELECT id, attempts FROM jobs").fetchall())
    assert states == {"done": n}, states
    assert (total, distinct) == (n, n)  # lost = n - distinct = 0, duplicated = total - distinct = 0
    return attempts


def test_kill9_mid_run_then_a_worker_of_this_host_takes_the_job_back_at_once(farm):
    farm.enqueue(4)
    d1, d2 = farm.device(hang=1, hang_match="benchmark_model"), farm.device()
    w1 = farm.worker(d1)
    wait_for(lambda: "hang" in d1.events, what="benchmark_model to hang on the first phone")
    kill9(w1)  # mid-run: its job stays leased to a dead process
    w2 = farm.worker(d2)  # same host: it requeues the dead worker's job without waiting for the lease
    report = finish(w2)
    assert report["workers"][0]["measured"] == 4
    attempts = exactly_once(farm.url, 4)
    assert sorted(attempts.values()) == [1, 1, 1, 2]


def test_kill9_mid_push_and_the_lease_expires(farm):
    farm.enqueue(5, seed=1)
    d1, d2 = farm.device(hang_mid_push=1), farm.device()
    w1, w2 = farm.worker(d1), farm.worker(d2)
    wait_for(lambda: "hang_mid_push" in d1.events, what="a push to stall")
    kill9(w1)  # mid-push; w2 started before, so the job comes back only when its lease expires
    finish(w2)
    attempts = exactly_once(farm.url, 5)
    assert max(attempts.values()) == 2


def test_kill9_at_a_random_moment_then_restart_on_the_same_device(farm):
    farm.enqueue(8, seed=2)
    d1, d2 = farm.device(), farm.device()
    w1, w2 = farm.worker(d1), farm.worker(d2)
    wait_for(lambda: done(farm.url) >= 3, what="3 jobs done")
    kill9(w1)
    w1b = farm.worker(d1)  # the device's claim died with its worker: it may be bound again
    reports = [finish(w) for w in (w1b, w2)]
    exactly_once(farm.url, 8)
    assert sum(r["workers"][0]["measured"] for r in reports) <= 8


def test_postgres_stopped_for_seconds_workers_back_off_and_resume(farm, pg_server):
    farm.enqueue(8, seed=3)
    w = [farm.worker(farm.device()), farm.worker(farm.device())]
    wait_for(lambda: done(farm.url) >= 2, what="2 jobs done")
    pg_server.stop()
    time.sleep(3)
    pg_server.start()
    reports = [finish(p) for p in w]
    exactly_once(farm.url, 8)
    assert sum(r["workers"][0]["store_outages"] for r in reports) > 0  # they did meet the outage


def test_workers_racing_for_one_job_measure_it_once(farm):
    farm.enqueue(1, seed=4)
    devices = [farm.device() for _ in range(3)]
    reports = [finish(p) for p in [farm.worker(d) for d in devices]]
    attempts = exactly_once(farm.url, 1)
    assert list(attempts.values()) == [1]
    assert sum(r["workers"][0]["measured"] for r in reports) == 1
    assert sum(len(d.executed("benchmark_model")) for d in devices) == 1


def test_a_worker_with_a_skewed_clock_keeps_its_leases_by_the_database_clock(farm):
    farm.enqueue(8, seed=5)
    d1, d2 = farm.device(), farm.device()
    slow = farm.worker(d1, skew_s=-3600.0)  # an hour behind: by its own clock every lease is long expired
    fast = farm.worker(d2, skew_s=+3600.0)  # an hour ahead
    leases = []
    with psycopg.connect(farm.url, autocommit=True) as conn:
        while slow.poll() is None or fast.poll() is None:
            leases += [r[0] for r in conn.execute("SELECT lease_until - EXTRACT(EPOCH FROM clock_timestamp())"
                                                  " FROM jobs WHERE state = 'running'").fetchall()]  # fmt: skip
            time.sleep(0.05)
    reports = [finish(p) for p in (slow, fast)]
    attempts = exactly_once(farm.url, 8)
    assert set(attempts.values()) == {1}  # no lease was ever taken over
    assert leases and all(
        0 < left <= float(LEASE) + 0.1 for left in leases
    )  # deadlines on the server's clock
    assert all(r["workers"][0]["measured"] > 0 for r in reports)


def test_sigterm_finishes_the_current_job_and_a_busy_device_is_refused(farm):
    farm.enqueue(30, seed=6)
    d1 = farm.device()
    w1 = farm.worker(d1, until_empty=False)
    wait_for(lambda: done(farm.url) >= 2, what="2 jobs done")
    twin = farm.worker(d1)  # the same phone from a second worker on this host
    out, err = twin.communicate(timeout=60)
    assert twin.returncode == 2 and err.count("\n") == 1 and f"device {d1.serial} is already claimed" in err
    w1.send_signal(signal.SIGTERM)
    report = finish(w1, timeout=60)
    with psycopg.connect(farm.url) as conn:
        states = dict(conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
        worker_state = conn.execute("SELECT state FROM workers").fetchall()
    assert "running" not in states and states["done"] == report["workers"][0]["measured"] < 30
    assert worker_state == [("stopped",)]
    assert "leti-secret-pw" not in out + err


def test_worker_without_a_target_it_can_serve_is_exit_2(farm):
    d = farm.device()
    cases = [
        ([], "give at least one --target"),
        (
            ["--target", f"{TARGET}@tcp:{d.serial}", "--benchmark-binary", ""],
            "no target this worker can serve",
        ),
        (
            ["--target", f"{TARGET}@tcp:{d.serial}", "--target", f"pixel4-tflite-gpu@tcp:{d.serial}"],
            "bound twice",
        ),
    ]
    for extra, needle in cases:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        argv = [sys.executable, "-m", "leti.cli", "farm", "worker", "--store", farm.url, "--benchmark-binary",
                str(farm.binary), *extra]  # fmt: skip
        r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 2 and needle in r.stderr and r.stderr.count("\n") == 1, r.stderr
