"""The SQLite store: idempotent writes, WAL, errors, the job queue under threads, processes and SIGKILL."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from leti.datasets.export import export_measurements
from leti.datasets.store import FRAME_COLUMNS, SCHEMA_VERSION, ArchRecord, Job, Store, TargetRecord
from leti.errors import LetiError, StoreError
from leti.measurement import Measurement

REPO = Path(__file__).resolve().parents[1]
TARGET = "pixel3-tflite-cpu"


def arch(text: str, space: str = "nasbench201", hash_: str | None = None, **metrics) -> ArchRecord:
    arch_id = hashlib.sha1(text.encode()).hexdigest()
    return ArchRecord(arch_id, hash_ or arch_id[:10], space, text, json.dumps({"text": text}), **metrics)


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "leti.db") as s:
        yield s


def n_rows(path: Path, sql: str) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchone()[0]


# -- opening -------------------------------------------------------------------------------------------


def test_open_creates_parent_dirs_wal_and_schema_version(tmp_path):
    path = tmp_path / "a" / "b" / "leti.db"
    with Store.open(path) as s:
        assert s.schema_version() == SCHEMA_VERSION
    assert path.is_file()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"meta", "archs", "targets", "measurements", "runs", "jobs"} <= tables


def test_default_path_is_under_leti_home(tmp_path, monkeypatch):
    monkeypatch.setenv("LETI_HOME", str(tmp_path / "home"))
    with Store.open() as s:
        assert s.path == tmp_path / "home" / "leti.db"
    assert (tmp_path / "home" / "leti.db").is_file()


def test_unwritable_location_raises_store_error_naming_path(tmp_path):
    blocker = tmp_path / "plain-file"
    blocker.write_text("not a directory")
    bad = blocker / "sub" / "leti.db"  # a path under a regular file: cannot be created, even as root
    with pytest.raises(StoreError) as e:
        Store.open(bad)
    msg = str(e.value)
    assert str(blocker) in msg and "\n" not in msg
    assert "directory" in msg.lower() or "exists" in msg.lower()  # the OS reason


def test_directory_or_garbage_file_raises_store_error(tmp_path):
    with pytest.raises(StoreError, match="is a directory"):
        Store.open(tmp_path)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not an sqlite database, just some text" * 100)
    with pytest.raises(StoreError) as e:
        Store.open(junk)
    assert str(junk) in str(e.value)


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "leti.db"
    Store.open(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="schema version 99"):
        Store.open(path)


def test_a_version_1_file_with_the_kernel_table_upgrades_keeping_its_kernel_rows(tmp_path):
    """leti wrote version-1 files with a kernel_measurements table before schema 2; the schema-3 migration that adds
    the table keeps it and its rows."""
    from leti.datasets.schema import statements

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        for stmt in statements(1, "sqlite"):
            conn.execute(stmt)
        conn.execute("""CREATE TABLE kernel_measurements (
            id INTEGER PRIMARY KEY,
            arch_id TEXT NOT NULL REFERENCES archs(arch_id),
            target TEXT NOT NULL REFERENCES targets(name),
            settings_key TEXT NOT NULL,
            node INTEGER NOT NULL CHECK (node >= 0),
            latency_ms REAL NOT NULL CHECK (latency_ms >= 0),
            runtime_kernel TEXT NOT NULL DEFAULT '',
            source TEXT NOT NULL DEFAULT '',
            created TEXT NOT NULL,
            UNIQUE (arch_id, target, settings_key, node))""")
        conn.execute("CREATE INDEX kernel_measurements_target ON kernel_measurements(target, settings_key)")
        conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        conn.execute("INSERT INTO archs VALUES ('a1', 'h1', 'model', '{}', '{}', 10, 2, 3, 4, 't0')")
        conn.execute("INSERT INTO targets (name, created, updated) VALUES ('p4-gpu', 't0', 't0')")
        conn.execute("INSERT INTO kernel_measurements (arch_id, target, settings_key, node, latency_ms,"
                     " runtime_kernel, source, created) VALUES ('a1', 'p4-gpu', 'import', 3, 0.75, 'conv', 'x', 't0')")  # fmt: skip
    with Store.open(path) as s:
        assert s.schema_version() == SCHEMA_VERSION
        df = s.kernel_measurements()
        assert df[["arch_id", "node", "latency_ms", "runtime_kernel"]].values.tolist() == [
            ["a1", 3, 0.75, "conv"]
        ]
        row = {"arch_id": "a1", "target": "p4-gpu", "node": 3, "latency_ms": 9.0}
        assert s.add_kernel_measurements([row]) == 0  # its unique key survived the upgrade


def test_closed_store_refuses_use(tmp_path):
    s = Store.open(tmp_path / "leti.db")
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.stats()


# -- archs and targets ---------------------------------------------------------------------------------


def test_upsert_arch_is_idempotent_and_fills_unknown_metrics(store):
    a = arch("x")
    assert store.upsert_arch(a) is True
    assert store.upsert_arch(a) is False
    assert store.stats()["archs"] == 1
    created = store.get_arch(a.arch_id).created
    store.upsert_arch(arch("x", macs=1000, params=10))
    got = store.get_arch(a.arch_id)
    assert (got.macs, got.params, got.created) == (1000, 10, created)
    store.upsert_arch(arch("x"))  # None metrics keep the known ones
    assert store.get_arch(a.arch_id).macs == 1000
    assert store.get_arch("nope") is None


def test_arch_record_validates_and_canonicalises_space():
    assert arch("y", space="NB201").space == "nasbench201"
    with pytest.raises(LetiError, match=r"^arch\.space:"):
        arch("y", space="imagenet")
    with pytest.raises(LetiError, match=r"^arch\.macs:"):
        arch("y", macs=-3)
    with pytest.raises(LetiError, match=r"^arch\.hash:"):
        ArchRecord("id", "", "leti", "{}", "{}")


def test_upsert_target_noise_floor_and_listing(store):
    rec = TargetRecord.from_name("host-litert-cpu-2t-fp16", versions={"litert": "1.2"})
    assert (rec.device, rec.runtime, rec.unit, rec.threads, rec.precision) == (
        "host",
        "litert",
        "cpu",
        2,
        "fp16",
    )
    assert store.upsert_target(rec) is True
    assert store.upsert_target(rec) is False
    store.set_noise_floor(rec.name, 0.05)
    store.upsert_target(rec)  # noise_floor None in the record: the stored one stays
    got = store.get_target(rec.name)
    assert got.noise_floor == 0.05 and got.versions == {"litert": "1.2"} and got.threads == 2
    store.upsert_target(TargetRecord("a-cpu"))
    assert [t.name for t in store.list_targets()] == ["a-cpu", rec.name]
    assert store.get_target("zzz-cpu") is None
    with pytest.raises(LetiError, match="^target:"):
        store.set_noise_floor("zzz-cpu", 1.0)
    with pytest.raises(LetiError, match="^target:"):
        store.upsert_target(TargetRecord("Bad Name"))


# -- measurements --------------------------------------------------------------------------------------


def test_add_measurement_never_duplicates_and_replace_is_explicit(store, tmp_path):
    a = arch("m")
    store.upsert_arch(a)
    m = Measurement.from_samples(
        [2.0, 3.0, 4.0], raw="benchmark text", raw_unit="us", versions={"tf": "2.21"}
    )
    assert store.add_measurement(a.arch_id, "host-litert-cpu-1t", "t1-w3-r30-dcpu", m, "local") is True
    assert (
        store.add_measurement(a.arch_id, "host-litert-cpu-1t", "t1-w3-r30-dcpu", {"latency_ms": 9.0}, "x")
        is False
    )
    row = store.get_measurement(a.arch_id, "host-litert-cpu-1t", "t1-w3-r30-dcpu")
    assert row["latency_ms"] == 3.0 and row["source"] == "local"  # the first stays
    assert (
        row["raw"] == "benchmark text" and row["raw_unit"] == "us" and row["tool_versions"] == {"tf": "2.21"}
    )
    assert "raw" not in row["stats"] and row["stats"]["p90_ms"] == m.p90_ms
    assert store.get_target("host-litert-cpu-1t") is not None  # added by name
    store.add_measurement(
        a.arch_id, "host-litert-cpu-1t", "t1-w3-r30-dcpu", {"latency_ms": 9.0}, "x", replace=True
    )
    row = store.get_measurement(a.arch_id, "host-litert-cpu-1t", "t1-w3-r30-dcpu")
    assert row["latency_ms"] == 9.0 and row["source"] == "x"
    assert n_rows(tmp_path / "leti.db", "SELECT COUNT(*) FROM measurements") == 1


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "abc", None, True])
def test_add_measurement_rejects_bad_latency(store, bad):
    a = arch("m")
    store.upsert_arch(a)
    with pytest.raises(LetiError, match=r"^measurement\.latency_ms:"):
        store.add_measurement(a.arch_id, TARGET, "k", {"latency_ms": bad}, "x")


def test_add_measurement_needs_a_known_arch(store):
    with pytest.raises(LetiError, match="^arch_id: unknown arch 'ghost'"):
        store.add_measurement("ghost", TARGET, "k", {"latency_ms": 1.0}, "x")
    assert store.stats()["measurements"] == 0


def test_bulk_insert_is_fast_first_wins_and_idempotent(store):
    archs = [arch(f"a{i}") for i in range(15_625)]
    store.upsert_archs(archs)
    rows = [
        {"arch_id": a.arch_id, "target": TARGET, "latency_ms": 1.0 + i, "source": "s"}
        for i, a in enumerate(archs)
    ]
    rows.append({"arch_id": archs[0].arch_id, "target": TARGET, "latency_ms": 999.0})  # same arch again
    t0 = time.perf_counter()
    assert store.add_measurements_bulk(rows) == 15_625
    assert time.perf_counter() - t0 < 2.0
    assert store.add_measurements_bulk(rows) == 0
    assert store.get_measurement(archs[0].arch_id, TARGET, "import")["latency_ms"] == 1.0


def test_bulk_insert_with_unknown_arch_writes_nothing(store):
    a = arch("known")
    store.upsert_arch(a)
    rows = [
        {"arch_id": a.arch_id, "target": TARGET, "latency_ms": 1.0},
        {"arch_id": "ghost", "target": TARGET, "latency_ms": 1.0},
    ]
    with pytest.raises(LetiError, match="unknown arch 'ghost'"):
        store.add_measurements_bulk(rows)
    assert store.stats()["measurements"] == 0


def test_transaction_rolls_back_everything_on_error(store):
    with pytest.raises(RuntimeError), store.transaction():
        store.upsert_arch(arch("t"))
        raise RuntimeError("boom")
    assert store.stats()["archs"] == 0


# -- queries and export --------------------------------------------------------------------------------


def fill(store: Store) -> None:
    shared = "shared-hash"
    a, b, c = arch("A", hash_=shared), arch("B", hash_=shared), arch('{"x": 1}', space="leti")
    store.upsert_archs([a, b, c])
    store.add_measurements_bulk(
        [
            {"arch_id": a.arch_id, "target": "p3-cpu", "latency_ms": 1.5},
            {"arch_id": b.arch_id, "target": "p3-cpu", "latency_ms": 2.5},
            {"arch_id": c.arch_id, "target": "p3-cpu", "latency_ms": 3.5},
            {"arch_id": a.arch_id, "target": "p3-gpu", "latency_ms": 0.5},
        ]
    )
    store.add_measurement(
        a.arch_id, "p3-gpu", "other-settings", Measurement.from_samples([0.7, 0.8]), "local"
    )
    store.upsert_target(TargetRecord("idle-cpu"))


def test_stats_counts_distinct_archs_per_target_and_space(store):
    fill(store)
    st = store.stats()
    assert st["archs"] == 3 and st["hashes"] == 2 and st["measurements"] == 5 and st["targets"] == 3
    assert st["per_target"] == {"idle-cpu": 0, "p3-cpu": 3, "p3-gpu": 1}  # a on p3-gpu twice counts once
    assert st["per_target_space"] == {"p3-cpu": {"leti": 1, "nasbench201": 2}, "p3-gpu": {"nasbench201": 1}}


def test_measurements_frame_filters_and_is_ordered(store):
    assert list(store.measurements().columns) == list(FRAME_COLUMNS)  # same shape when empty
    fill(store)
    df = store.measurements(target="p3-cpu", space="nb201")
    assert len(df) == 2 and set(df["space"]) == {"nasbench201"} and set(df["hash"]) == {"shared-hash"}
    assert list(df["arch_id"]) == sorted(df["arch_id"])
    assert len(store.to_pandas()) == 5
    assert len(store.measurements(settings_key="other-settings")) == 1
    pd.testing.assert_frame_equal(store.measurements(), store.measurements())


def test_export_round_trips_csv_and_parquet(store, tmp_path):
    fill(store)
    expected = store.measurements()
    (tmp_path / "out").mkdir()
    assert export_measurements(store, tmp_path / "out" / "all.parquet") == 5
    back = pd.read_parquet(tmp_path / "out" / "all.parquet")
    assert back["macs"].dtype == "Int64" and back["latency_ms"].dtype == "float64"
    frame = back[list(FRAME_COLUMNS)].astype(FRAME_COLUMNS)  # text may come back as str dtype
    pd.testing.assert_frame_equal(frame, expected)
    assert export_measurements(store, tmp_path / "gpu.csv", target="p3-gpu") == 2
    back = pd.read_csv(
        tmp_path / "gpu.csv", float_precision="round_trip", keep_default_na=False, na_values=[""]
    )
    want = store.measurements(target="p3-gpu")
    assert list(back.columns) == list(want.columns) + ["raw", "created", "kernel_node", "runtime_kernel"]
    assert back["kernel_node"].isna().all()  # whole-model rows only
    assert list(back["arch_id"]) == list(want["arch_id"])
    assert list(back["latency_ms"]) == list(want["latency_ms"])
    assert json.loads(back["stats"].dropna().iloc[0]) == json.loads(want["stats"].dropna().iloc[0])


def test_export_refuses_bad_paths_and_unknown_targets(store, tmp_path):
    fill(store)
    with pytest.raises(LetiError, match="out.xlsx"):
        export_measurements(store, tmp_path / "out.xlsx")
    with pytest.raises(LetiError, match=r"^output: .*folder .*nonexistent.* does not exist"):
        export_measurements(store, tmp_path / "nonexistent" / "dir" / "x.csv")
    with pytest.raises(
        LetiError, match=r"^target: no measurements for 'nosuch' \(measured targets: p3-cpu, p3-gpu\)"
    ):
        export_measurements(store, tmp_path / "x.csv", target="nosuch")
    assert not list(tmp_path.glob("*.csv")) and not list(tmp_path.glob(".*tmp*"))


# -- runs and jobs -------------------------------------------------------------------------------------


def make_run(store: Store, n: int, run_id: str = "run1", targets=(TARGET,)) -> list[ArchRecord]:
    archs = [arch(f"job{i}") for i in range(n)]
    store.upsert_archs(archs)
    store.create_run(run_id, {"n": n})
    store.add_jobs(run_id, [(a.arch_id, t, "k") for a in archs for t in targets])
    return archs


def test_runs_and_jobs_lifecycle(store):
    assert store.create_run("r", {"seed": 1}) is True
    assert store.create_run("r", {"seed": 2}) is False  # a resume: params stay
    archs = [arch(f"j{i}") for i in range(3)]
    store.upsert_archs(archs)
    items = [(a.arch_id, t, "k") for a in archs for t in ("p3-cpu", "p3-gpu")]
    assert store.add_jobs("r", items) == 6
    assert store.add_jobs("r", items) == 0
    assert store.run_progress("r") == {"pending": 6, "running": 0, "done": 0, "failed": 0, "total": 6}

    job = store.claim_job("r", "w1", target="p3-gpu")
    assert isinstance(job, Job) and job.target == "p3-gpu" and job.state == "running" and job.attempts == 1
    assert store.complete_job(job.id, Measurement.from_samples([1.0, 2.0]), "w1") is True
    assert store.get_job(job.id).state == "done"
    assert store.has_measurement(job.arch_id, "p3-gpu", "k")

    job2 = store.claim_job("r", "w1")
    assert job2.id != job.id
    assert store.fail_job(job2.id, "timeout", requeue=True, max_attempts=2) == "pending"
    assert store.claim_job("r", "w2").id == job2.id  # oldest pending first
    assert store.fail_job(job2.id, "timeout again", requeue=True, max_attempts=2) == "failed"
    assert store.get_job(job2.id).error == "timeout again"
    assert store.fail_job(job.id, "late", requeue=False) == "done"  # a done job stays done

    store.claim_job("r", "w3")
    store.claim_job("r", "w4")
    assert store.requeue_running("r", worker="w3") == 1
    assert store.run_progress("r") == {"pending": 3, "running": 1, "done": 1, "failed": 1, "total": 6}
    assert store.requeue_running("r") == 1
    assert [j.worker for j in store.jobs("r", state="failed")] == ["w2"]

    store.set_run_report("r", {"ok": True})
    run = store.get_run("r")
    assert run["params"] == {"seed": 1} and run["report"] == {"ok": True} and run["progress"]["total"] == 6
    assert store.get_run("nope") is None


def test_add_jobs_errors_and_skip_measured(store):
    a, b = arch("p"), arch("q")
    store.upsert_archs([a, b])
    with pytest.raises(LetiError, match="^run_id: unknown run"):
        store.add_jobs("none", [(a.arch_id, TARGET, "k")])
    store.create_run("r")
    with pytest.raises(LetiError, match="^arch_id: unknown arch 'ghost'"):
        store.add_jobs("r", [(a.arch_id, TARGET, "k"), ("ghost", TARGET, "k")])
    assert store.run_progress("r")["total"] == 0  # all or nothing
    store.add_measurement(a.arch_id, TARGET, "k", {"latency_ms": 1.0}, "earlier run")
    assert (
        store.add_jobs(
            "r",
            [(a.arch_id, TARGET, "k"), {"arch_id": b.arch_id, "target": TARGET, "settings_key": "k"}],
            skip_measured=True,
        )
        == 1
    )
    assert [j.arch_id for j in store.jobs("r")] == [b.arch_id]
    with pytest.raises(LetiError, match="^job_id:"):
        store.complete_job(12345, {"latency_ms": 1.0})


def test_threads_never_claim_the_same_job(store):
    n, workers = 240, 4
    make_run(store, n)
    claimed: dict[str, list[int]] = {f"w{i}": [] for i in range(workers)}
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            while (job := store.claim_job("run1", name)) is not None:
                claimed[name].append(job.id)
                store.complete_job(job.id, {"latency_ms": 1.0}, name)
        except BaseException as e:  # surfaced below: a thread's exception would otherwise vanish
            errors.append(e)

    threads = [threading.Thread(target=work, args=(w,)) for w in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    ids = [i for lst in claimed.values() for i in lst]
    assert len(ids) == len(set(ids)) == n
    assert sum(1 for lst in claimed.values() if lst) >= 2  # the threads really competed
    assert store.run_progress("run1")["done"] == n
    assert all(j.attempts == 1 for j in store.jobs("run1"))


WORKER = """
import os, signal, sys, time
from leti.datasets.store import Store

db, run_id, worker, mode, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])


class CrashingStore(Store):
    finished = 0

    def _finish_job(self, conn, job_id):
        CrashingStore.finished += 1
        if CrashingStore.finished == kill_at:  # the measurement row is written, the job not yet marked done
            os.kill(os.getpid(), signal.SIGKILL)
        super()._finish_job(conn, job_id)


store = CrashingStore.open(db)
claimed = []
while (job := store.claim_job(run_id, worker)) is not None:
    claimed.append(job.id)
    if mode == "slow":
        time.sleep(0.003)  # "measuring"
    store.complete_job(job.id, {"latency_ms": 1.0 + job.id}, source=worker)
print(" ".join(map(str, claimed)))
"""


def start_worker(
    tmp_path: Path, db: Path, worker: str, mode: str = "fast", kill_at: int = 0
) -> subprocess.Popen:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, str(script), str(db), "run1", worker, mode, str(kill_at)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def check_consistent(db: Path, n: int) -> tuple[int, int]:
    """No duplicate measurements, and exactly one measurement per done job (no half-completed job)."""
    with sqlite3.connect(db) as conn:
        total, distinct = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT arch_id || target || settings_key) FROM measurements"
        ).fetchone()
        done = conn.execute("SELECT COUNT(*) FROM jobs WHERE state = 'done'").fetchone()[0]
        orphans = conn.execute(
            "SELECT COUNT(*) FROM measurements m JOIN jobs j USING (arch_id, target, settings_key)"
            " WHERE j.state != 'done'"
        ).fetchone()[0]
    assert total == distinct <= n
    assert orphans == 0 and total == done
    return done, total


def resume(db: Path, n: int) -> None:
    with Store.open(db) as s:
        assert s.create_run("run1", {}) is False
        s.requeue_running("run1")
        while (job := s.claim_job("run1", "resumer")) is not None:
            s.complete_job(job.id, {"latency_ms": 1.0}, "resumer")
        assert s.run_progress("run1") == {"pending": 0, "running": 0, "done": n, "failed": 0, "total": n}
        assert s.stats()["measurements"] == n


def test_sigkill_inside_complete_job_leaves_no_half_state(tmp_path):
    db, n = tmp_path / "leti.db", 30
    with Store.open(db) as s:
        make_run(s, n)
    proc = start_worker(tmp_path, db, "victim", kill_at=12)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert check_consistent(db, n) == (11, 11)  # the 12th insert was rolled back with its transaction
    resume(db, n)


def test_sigkill_at_a_random_moment_then_resume_completes_exactly_n(tmp_path):
    db, n = tmp_path / "leti.db", 400
    with Store.open(db) as s:
        make_run(s, n)
        proc = start_worker(tmp_path, db, "victim", mode="slow")
        deadline = time.monotonic() + 30
        while s.run_progress("run1")["done"] < 25 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done, _ = check_consistent(db, n)
    assert 25 <= done < n
    resume(db, n)


def test_two_processes_never_claim_the_same_job(tmp_path):
    db, n = tmp_path / "leti.db", 300
    with Store.open(db) as s:
        make_run(s, n)
    procs = [start_worker(tmp_path, db, f"p{i}") for i in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    ids = [int(x) for out, _ in outs for x in out.split()]
    assert len(ids) == len(set(ids)) == n
    check_consistent(db, n)


def test_import_into_a_store_with_an_overwritten_page_is_refused_with_a_recovery_hint(
    tmp_path, capsys, monkeypatch
):
    from leti.cli import main
    from leti.space import sample

    monkeypatch.setenv("LETI_HOME", str(tmp_path))
    rows = [f"nb201,{t},dev-cpu,{1 + i / 10},x" for i, (_, t) in enumerate(sample("nb201", 260, seed=0))]
    head = "space,arch,target,latency_ms,source\n"
    (tmp_path / "a.csv").write_text(head + "\n".join(rows[:200]) + "\n")
    (tmp_path / "b.csv").write_text(head + "\n".join(rows[200:]) + "\n")
    assert main(["import", str(tmp_path / "a.csv")]) == 0
    db = tmp_path / "leti.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    with open(db, "r+b") as f:  # a page the next import does not touch: only a check of the file can tell
        f.seek(10 * page_size)
        f.write(bytes(range(256)) * (page_size // 256))
    capsys.readouterr()
    assert main(["import", str(tmp_path / "b.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is corrupt" in err and ".recover" in err and "Nothing was written" in err
