"""The job queue on a real PostgreSQL server: SKIP LOCKED claims across processes, leases on the database clock,
heartbeats, expiry and takeover, late results stored once, the retry cap, workers and `farm status`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from leti.cli import main
from leti.datasets.store import ArchRecord, Store
from leti.errors import LetiError

REPO = Path(__file__).resolve().parents[1]
TARGET = "dev-cpu"


def make_run(store: Store, n: int, run_id: str = "r", max_attempts: int = 5) -> None:
    archs = [ArchRecord(f"a{i:04d}", f"h{i}", "nasbench201", f"x{i}", "{}") for i in range(n)]
    store.upsert_archs(archs)
    store.create_run(run_id, {})
    store.add_jobs(run_id, [(a.arch_id, TARGET, "k") for a in archs], max_attempts=max_attempts)


def exactly_once(url: str, n: int) -> None:
    """Every job done, one measurement each: 0 lost, 0 duplicated."""
    with psycopg.connect(url) as conn:
        done = conn.execute("SELECT COUNT(*) FROM jobs WHERE state = 'done'").fetchone()[0]
        total, distinct = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT (arch_id, target, settings_key)) FROM measurements"
        ).fetchone()
    assert (done, total, distinct) == (n, n, n)


CLAIMER = """
import sys
from leti.datasets.store import Store
url, name = sys.argv[1], sys.argv[2]
store = Store.open(url)
got = []
while (job := store.claim_job("r", name, lease_s=30)) is not None:
    got.append(job.id)
    store.complete_job(job.id, {"latency_ms": 1.0 + job.id}, source=name, attempt=job.attempts, worker=name)
print(" ".join(map(str, got)))
"""


def test_processes_racing_for_jobs_claim_each_exactly_once(pg_url, tmp_path):
    n = 400
    with Store.open(pg_url) as s:
        make_run(s, n)
    script = tmp_path / "claimer.py"
    script.write_text(CLAIMER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, str(script), pg_url, f"p{i}"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for i in range(4)]  # fmt: skip
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [e for _, e in outs]
    ids = [int(x) for out, _ in outs for x in out.split()]
    assert len(ids) == len(set(ids)) == n
    assert sum(1 for out, _ in outs if out.split()) >= 2  # they really competed
    exactly_once(pg_url, n)
    with Store.open(pg_url) as s:
        assert {j.attempts for j in s.jobs("r")} == {1}


def test_many_threads_racing_for_one_job_only_one_wins(pg_url):
    with Store.open(pg_url) as s:
        make_run(s, 1)
        barrier = threading.Barrier(12)
        won: list = []

        def race(i: int) -> None:
            barrier.wait()
            job = s.claim_job("r", f"w{i}", lease_s=30)
            if job is not None:
                won.append(job)

        threads = [threading.Thread(target=race, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1 and won[0].attempts == 1


def test_expired_lease_is_taken_over_and_the_late_result_is_stored_once(pg_url):
    with Store.open(pg_url) as s:
        make_run(s, 1)
        a = s.claim_job("r", "A", lease_s=0.5)
        assert s.claim_job("r", "B", lease_s=30) is None  # A's lease is alive
        time.sleep(0.7)
        b = s.claim_job("r", "B", lease_s=30)  # A's lease ran out on the database clock: B takes the job
        assert (b.id, b.attempts, b.worker) == (a.id, 2, "B")
        assert s.heartbeat(["A"], 30) == set()  # A learns it lost the job
        assert (
            s.fail_job(a.id, "A's stale failure", attempt=a.attempts) == "running"
        )  # ignored: not A's any more
        assert s.release_job(a.id, a.attempts) is False
        assert (
            s.complete_job(a.id, {"latency_ms": 1.5}, "A", attempt=a.attempts, worker="A") is True
        )  # late, first
        assert (
            s.complete_job(b.id, {"latency_ms": 9.9}, "B", attempt=b.attempts, worker="B") is False
        )  # second
        job = s.get_job(a.id)
        assert (job.state, job.worker) == ("done", "A")
        assert s.stats()["measurements"] == 1 and s.measurements()["latency_ms"].tolist() == [1.5]
    exactly_once(pg_url, 1)


def test_retries_are_capped_then_the_job_fails_with_its_error(pg_url):
    with Store.open(pg_url) as s:
        make_run(s, 2, max_attempts=2)
        j = s.claim_job("r", "w", lease_s=30)
        assert s.fail_job(j.id, "boom 1", attempt=j.attempts) == "pending"
        j = s.claim_job("r", "w", lease_s=30)
        assert j.attempts == 2 and s.fail_job(j.id, "boom 2", attempt=j.attempts) == "failed"
        assert s.get_job(j.id).error == "boom 2"
        # the other job: its worker dies twice (the lease expires twice); then it fails too, saying so
        k = s.claim_job("r", "w", lease_s=0.2)
        assert k.id != j.id
        time.sleep(0.3)
        k = s.claim_job("r", "w2", lease_s=0.2)
        assert k.attempts == 2
        time.sleep(0.3)
        assert s.claim_job("r", "w3", lease_s=30) is None
        job = s.get_job(k.id)
        assert job.state == "failed" and job.error == "lease of w2 expired"
        assert s.run_progress("r") == {"pending": 0, "running": 0, "done": 0, "failed": 2, "total": 2}
        assert s.retry_failed("r") == 2
        assert s.claim_job("r", "w4", lease_s=30).attempts == 1


def test_heartbeats_keep_a_lease_alive_and_its_deadline_is_the_database_clock(pg_url):
    with Store.open(pg_url) as s:
        make_run(s, 1)
        job = s.claim_job("r", "A", lease_s=1.0)
        for _ in range(6):  # 1.8 s: longer than the lease, renewed all along
            time.sleep(0.3)
            assert s.heartbeat(["A"], 1.0) == {(job.id, 1)}
            assert s.claim_job("r", "B", lease_s=30) is None
        with psycopg.connect(pg_url) as conn:
            left = conn.execute(
                "SELECT lease_until - EXTRACT(EPOCH FROM clock_timestamp()) FROM jobs WHERE id = %s",
                (job.id,),
            ).fetchone()[0]
        assert 0.5 < left <= 1.0
        time.sleep(1.1)  # no more heartbeats
        assert s.claim_job("r", "B", lease_s=30).worker == "B"


def test_worker_registration_refuses_a_device_busy_on_this_host(pg_url):
    alive = {100: True, 200: True, 300: False}.get
    with Store.open(pg_url) as s:
        s.register_workers("hostA", 100, [("hostA/t@usb:X", "t", "usb:X")], alive)
        with pytest.raises(
            LetiError, match=r"^target: device usb:X is already claimed by worker hostA/t@usb:X \(pid 100\)"
        ):
            s.register_workers("hostA", 200, [("hostA/u@usb:X", "u", "usb:X")], alive)
        s.register_workers(
            "hostB", 200, [("hostB/t@usb:X", "t", "usb:X")], alive
        )  # another host: another phone
        s.set_worker_state(["hostA/t@usb:X"], "stopped")
        s.register_workers("hostA", 200, [("hostA/u@usb:X", "u", "usb:X")], alive)  # free again
        s.register_workers("hostA", 300, [("hostA/v@usb:Y", "v", "usb:Y")], alive)
        s.register_workers("hostA", 100, [("hostA/w@usb:Y", "w", "usb:Y")], alive)  # pid 300 died: free


def test_farm_status_per_target_and_worker_and_json_without_password(pg_url, capsys):
    with Store.open(pg_url) as s:
        make_run(s, 5)
        s.register_workers("h", os.getpid(), [("h/dev-cpu@usb:1", TARGET, "usb:1")], lambda p: True)
        for _ in range(2):
            j = s.claim_job("r", "h/dev-cpu@usb:1", lease_s=30)
            s.complete_job(j.id, {"latency_ms": 1.0}, attempt=j.attempts, worker="h/dev-cpu@usb:1")
        s.claim_job("r", "h/dev-cpu@usb:1", lease_s=30)
        j = s.claim_job("r", "other", lease_s=30)
        s.fail_job(j.id, "x", requeue=False)
        s.heartbeat(["h/dev-cpu@usb:1"], 30)
    assert main(["farm", "status", "--store", pg_url, "--json"]) == 0
    out = capsys.readouterr().out
    assert "leti-secret-pw" not in out
    status = json.loads(out)
    (t,) = status["targets"]
    assert (t["target"], t["queued"], t["leased"], t["done"], t["failed"]) == (TARGET, 1, 1, 2, 1)
    assert t["per_min"] == pytest.approx(2 / 5)
    w = {r["worker"]: r for r in status["workers"]}
    assert (w["h/dev-cpu@usb:1"]["done"], w["h/dev-cpu@usb:1"]["leased"], w["other"]["failed"]) == (2, 1, 1)
    assert w["h/dev-cpu@usb:1"]["state"] == "running" and 0 <= w["h/dev-cpu@usb:1"]["last_heartbeat_s"] < 5
    assert status["store"].startswith("postgresql://leti@127.0.0.1:") and "secret" not in status["store"]
    assert main(["farm", "status", "--store", pg_url]) == 0
    table = capsys.readouterr().out
    assert TARGET in table and "h/dev-cpu@usb:1" in table and "leti-secret-pw" not in table


def test_generate_enqueue_only_fills_the_queue_once_and_status_watch_shows_it(pg_url, capsys):
    argv = ["generate", "--store", pg_url, "--enqueue-only", "--space", "nb201", "-n", "3", "--seed", "2",
            "--target", "pixel4-tflite-cpu-1t", "--target", "mi9-tflite-gpu", "--runs", "5"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "6 jobs queued" in out and "leti farm worker" in out and "leti-secret-pw" not in out
    assert main(argv) == 0
    assert "0 jobs queued (6 pending" in capsys.readouterr().out
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    p = subprocess.Popen([sys.executable, "-m", "leti.cli", "farm", "status", "--store", pg_url, "--watch", "0.2"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    time.sleep(4)
    p.send_signal(__import__("signal").SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130 and "pixel4-tflite-cpu-1t" in out and "mi9-tflite-gpu" in out
    assert "leti-secret-pw" not in out + err
