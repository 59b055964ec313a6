"""The store on a real PostgreSQL server next to SQLite: one API, one schema, the same idempotency; migrations;
export -> import round trips between the engines (imported real models and kernel measurements included); store URLs
and their errors (never a password)."""

from __future__ import annotations

import sqlite3

import pandas as pd
import psycopg
import pytest

from leti.cli import main
from leti.datasets.archs import arch_record, record_from_text
from leti.datasets.csvio import import_csv
from leti.datasets.export import export_measurements
from leti.datasets.location import resolve
from leti.datasets.mlbench import import_mlbench
from leti.datasets.records import KERNEL_FRAME_COLUMNS
from leti.datasets.schema import SCHEMA_VERSION, statements
from leti.datasets.store import Store, TargetRecord
from leti.errors import LetiError, StoreError
from leti.measurement import Measurement
from leti.predictors.kernel import KernelPredictor
from leti.space import MODEL_SPACE, sample
from leti.testing.mlbench_synth import write_mlbench
from leti.testing.postgres import free_port

TARGET = "pixel4-tflite-cpu-1t"


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "leti.db")
    return request.getfixturevalue("pg_url")


def fill(store: Store) -> list:
    """Archs, full measurements, bulk rows with only a latency, a repeat measurement, a target record."""
    recs = [arch_record(a, t) for a, t in sample("nb201", 6, seed=3)]
    store.upsert_archs(recs)
    for i, r in enumerate(recs[:4]):
        m = Measurement.from_samples([1.0 + i, 1.5 + i, 2.25 + i / 3], raw=f"INFO: run {i}\nline, two", raw_unit="us",
                                     versions={"tflite": "2.1"}, when="2026-01-02T03:04:05+00:00")  # fmt: skip
        assert store.add_measurement(r.arch_id, TARGET, "t1-w3-r30-dcpu", m, "phone") is True
    rows = [{"arch_id": r.arch_id, "target": "sd855-cpu", "latency_ms": 10 / (i + 3), "source": "paper"}
            for i, r in enumerate(recs)]  # fmt: skip
    assert store.import_measurements(rows).new == 6
    conflict = [{**rows[0], "latency_ms": 99.5}]
    res = store.import_measurements(conflict, on_conflict="keep-both")
    assert (res.new, res.conflicts) == (1, 1)
    store.upsert_target(TargetRecord.from_name(TARGET, versions={"tflite": "2.1"}))
    store.set_noise_floor(TARGET, 0.02)
    return recs


def test_same_api_and_results_on_both_engines(tmp_path, pg_url):
    frames, stats = [], []
    for loc in (str(tmp_path / "a.db"), pg_url):
        with Store.open(loc) as s:
            assert s.schema_version() == SCHEMA_VERSION
            recs = fill(s)
            assert s.upsert_archs(recs) == 0  # idempotent
            assert (
                s.add_measurement(recs[0].arch_id, TARGET, "t1-w3-r30-dcpu", {"latency_ms": 7.0}, "x")
                is False
            )
            assert s.import_measurements([{"arch_id": recs[1].arch_id, "target": "sd855-cpu",
                                           "latency_ms": 10 / 4, "source": "paper"}]).duplicates == 1  # fmt: skip
            assert s.get_target(TARGET).noise_floor == 0.02
            frames.append(s.measurements())
            stats.append(s.stats())
    assert stats[0] == stats[1] and stats[0]["measurements"] == 4 + 6 + 1
    pd.testing.assert_frame_equal(frames[0], frames[1])
    assert sorted(frames[1]["rep"].tolist()).count(1) == 1  # the repeat measurement kept under rep 1


def test_export_import_export_round_trips_between_engines(tmp_path, pg_url):
    (tmp_path / "out").mkdir()
    csv1, pq, csv2, csv3 = (tmp_path / "out" / n for n in ("a.csv", "b.parquet", "c.csv", "d.csv"))
    with Store.open(tmp_path / "src.db") as src:
        fill(src)
        assert export_measurements(src, csv1) == 11
        with Store.open(pg_url) as pg:
            rep = import_csv(pg, csv1, record_from_text)
            assert (rep.format, rep.measurements_new, rep.conflicts) == ("export", 11, 0)
            assert pg.export_rows() == src.export_rows()  # every column, raw output and times included
            assert export_measurements(pg, csv2) == 11
            assert export_measurements(pg, pq) == 11
            assert import_csv(pg, csv1, record_from_text).measurements_new == 0  # idempotent
        with Store.open(tmp_path / "back.db") as back:
            assert import_csv(back, pq, record_from_text).measurements_new == 11
            assert back.export_rows() == src.export_rows()
            export_measurements(back, csv3)
    assert csv1.read_bytes() == csv2.read_bytes() == csv3.read_bytes()


def test_kernel_measurements_on_both_engines(location):
    with Store.open(location) as s:
        empty = s.kernel_measurements()
        assert empty.empty and list(empty.columns) == list(KERNEL_FRAME_COLUMNS)
        recs = [arch_record(a, t) for a, t in sample("nb201", 2, seed=5)]
        s.upsert_archs(recs)
        a, b = recs[0].arch_id, recs[1].arch_id
        rows = [{"arch_id": b, "target": "p4-gpu", "node": 3, "latency_ms": 0.5, "runtime_kernel": "conv",
                 "source": "prof"},
                {"arch_id": a, "target": "p4-gpu", "node": 1, "latency_ms": 0.0},  # a profiler's 0 is a time
                {"arch_id": b, "target": "p4-gpu", "node": 3, "latency_ms": 9.0},  # same key: the first wins
                {"arch_id": a, "target": "p4-gpu", "node": 1, "latency_ms": 0.25, "settings_key": "k2"}]  # fmt: skip
        assert s.add_kernel_measurements(rows) == 3
        assert s.add_kernel_measurements(rows) == 0  # idempotent
        df = s.kernel_measurements(target="p4-gpu")
        want = sorted([(a, "import", 1, 0.0, "", ""), (b, "import", 3, 0.5, "conv", "prof"),
                       (a, "k2", 1, 0.25, "", "")], key=lambda r: (r[1], r[0]))  # fmt: skip
        cols = ["arch_id", "settings_key", "node", "latency_ms", "runtime_kernel", "source"]
        assert [tuple(r) for r in df[cols].values.tolist()] == want
        assert df["node"].dtype == "int64" and set(df["space"]) == {"nasbench201"}
        assert (
            len(s.kernel_measurements(settings_key="k2")) == 1 and s.kernel_measurements(target="x-cpu").empty
        )
        assert s.get_target("p4-gpu") is not None  # added by name
        st = s.stats()
        assert st["kernel_measurements"] == 3 and st["measurements"] == 0  # never mixed with whole-model data
        with pytest.raises(LetiError, match=r"^arch_id: unknown arch 'nope'"):
            s.add_kernel_measurements([{"arch_id": a, "target": "p4-gpu", "node": 7, "latency_ms": 1.0},
                                       {"arch_id": "nope", "target": "p4-gpu", "node": 1, "latency_ms": 1.0}])  # fmt: skip
        for bad, where in (({"latency_ms": -1.0}, r"rows\[0\]\.latency_ms"), ({"latency_ms": True}, "latency_ms"),
                           ({"node": -1}, r"rows\[0\]\.node"), ({"node": 1.5}, "node"), ({"node": None}, "node"),
                           ({"target": "Bad Target"}, "target")):  # fmt: skip
            with pytest.raises(LetiError, match=where):
                s.add_kernel_measurements(
                    [{"arch_id": a, "target": "p4-gpu", "node": 9, "latency_ms": 1.0, **bad}]
                )
        with pytest.raises(LetiError, match="missing key 'node'"):
            s.add_kernel_measurements([{"arch_id": a, "target": "p4-gpu", "latency_ms": 1.0}])
        assert s.stats()["kernel_measurements"] == 3  # nothing of the refused batches was written


def test_imported_models_and_kernel_measurements_move_from_sqlite_to_postgresql(tmp_path, pg_url, capsys):
    out = tmp_path / "out"
    out.mkdir()
    synth = write_mlbench(tmp_path / "mlbench")
    with Store.open(tmp_path / "src.db") as src:
        fill(src)
        imp = import_mlbench(src, synth)
        kernels = src.kernel_measurements()
        n_meas = src.stats()["measurements"]
        assert imp.kernel_measurements == len(kernels) > 0 and n_meas == 11 + imp.measurements
        assert export_measurements(src, out / "a.csv") == n_meas + len(kernels)
        assert (
            main(["import", "--store", pg_url, "--json", str(out / "a.csv")]) == 0
        )  # the CLI, as a user moves it
        (report,) = __import__("json").loads(capsys.readouterr().out)["files"]
        assert (report["measurements_new"], report["kernel_measurements_new"]) == (n_meas, len(kernels))
        with Store.open(pg_url) as pg:
            assert pg.export_rows() == src.export_rows()
            pd.testing.assert_frame_equal(pg.kernel_measurements(), kernels)
            pd.testing.assert_frame_equal(
                pg.measurements(space=MODEL_SPACE), src.measurements(space=MODEL_SPACE)
            )
            # the kernel family reads its training kernels from either engine alike
            gpu = "pixel4-tflite-gpu"
            ids = sorted(set(src.measurements(target=gpu)["arch_id"]))
            a, b = (KernelPredictor().store_inputs(st, gpu, ids)["kernels"] for st in (src, pg))
            assert len(a) == len(b) > 0
            assert main(["dataset", "export", "--store", pg_url, "-o", str(out / "b.csv")]) == 0
            assert export_measurements(pg, out / "c.parquet") == n_meas + len(kernels)
            again = import_csv(pg, out / "a.csv", record_from_text)  # idempotent
            assert (again.measurements_new, again.kernel_measurements_new, again.duplicates) == (
                0,
                0,
                again.rows,
            )
            # one target's export carries its kernel rows too
            only = export_measurements(pg, out / "gpu.csv", target=gpu)
            assert only == len(pg.measurements(target=gpu)) + len(pg.kernel_measurements(target=gpu))
        with Store.open(tmp_path / "back.db") as back:
            rep = import_csv(back, out / "c.parquet", record_from_text)
            assert (rep.measurements_new, rep.kernel_measurements_new) == (n_meas, len(kernels))
            assert back.export_rows() == src.export_rows()
            export_measurements(back, out / "d.csv")
    assert (out / "a.csv").read_bytes() == (out / "b.csv").read_bytes() == (out / "d.csv").read_bytes()


def test_import_conflicts_keep_first_keep_both_or_reject(location, tmp_path, capsys):
    recs = [arch_record(a, t) for a, t in sample("nb201", 2, seed=4)]
    f = tmp_path / "m.csv"
    f.write_text(f"space,arch,target,latency_ms,source\nnb201,{recs[0].arch_text},dev-cpu,1.5,a\n"
                 f"nb201,{recs[1].arch_text},dev-cpu,2.5,a\n")  # fmt: skip
    g = tmp_path / "n.csv"  # the same two archs: one repeats its value, one conflicts
    g.write_text(f"space,arch,target,latency_ms,source\nnb201,{recs[0].arch_text},dev-cpu,1.5,b\n"
                 f"nb201,{recs[1].arch_text},dev-cpu,3.0,b\n")  # fmt: skip
    assert main(["import", "--store", location, str(f)]) == 0
    capsys.readouterr()
    assert main(["import", "--store", location, "--on-conflict", "reject", str(g)]) == 2
    err = capsys.readouterr().err
    assert (
        "1 rows conflict" in err
        and "line 3" in err
        and "2.5" in err
        and "3.0" in err
        and "\n" not in err.strip()
    )
    assert main(["import", "--store", location, "--json", str(g)]) == 0
    (report,) = __import__("json").loads(capsys.readouterr().out)["files"]
    assert (report["measurements_new"], report["duplicates"], report["conflicts"]) == (0, 1, 1)
    assert main(["import", "--store", location, "--on-conflict", "keep-both", str(g)]) == 0
    assert "1 conflicts (kept both values" in capsys.readouterr().out
    with Store.open(location) as s:
        df = s.measurements(target="dev-cpu")
        assert sorted(df["latency_ms"]) == [1.5, 2.5, 3.0] and sorted(df["rep"]) == [0, 0, 1]


def v1_store(conn, dialect: str, execute) -> None:
    """A store as leti wrote it before schema 2, with a measurement and a job left running by a dead run."""
    for stmt in statements(1, dialect):
        execute(stmt)
    execute("INSERT INTO meta VALUES ('schema_version', '1')")
    execute("INSERT INTO archs VALUES ('a1', 'h1', 'nasbench201', 'txt', '{}', 10, 2, 3, 4, 't0')")
    execute("INSERT INTO targets (name, created, updated) VALUES ('dev-cpu', 't0', 't0')")
    execute("INSERT INTO measurements (arch_id, target, settings_key, latency_ms, source, created)"
            " VALUES ('a1', 'dev-cpu', 'import', 1.25, 'old', 't0')")  # fmt: skip
    execute("INSERT INTO runs VALUES ('r', '{}', 't0', NULL)")
    execute("INSERT INTO jobs (run_id, arch_id, target, settings_key, state, worker, attempts, updated)"
            " VALUES ('r', 'a1', 'dev-cpu', 'k', 'running', 'w', 1, 't0')")  # fmt: skip


def check_upgraded(loc) -> None:
    with Store.open(loc) as s:
        assert s.schema_version() == SCHEMA_VERSION
        assert s.kernel_measurements().empty
        assert (
            s.add_kernel_measurements([{"arch_id": "a1", "target": "dev-cpu", "node": 0, "latency_ms": 0.5}])
            == 1
        )
        assert s.measurements()[["arch_id", "latency_ms", "rep"]].values.tolist() == [["a1", 1.25, 0]]
        job = s.claim_job(
            "r", "new-worker", lease_s=5
        )  # the old run's orphan has no lease: claimable at once
        assert job is not None and job.attempts == 2
        assert s.complete_job(job.id, {"latency_ms": 2.0}) is True


def test_a_version_1_store_upgrades_in_place_on_both_engines(tmp_path, pg_url):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        v1_store(conn, "sqlite", conn.execute)
    check_upgraded(path)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        v1_store(conn, "postgresql", conn.execute)
    check_upgraded(pg_url)


def test_a_version_2_store_gains_kernel_measurements_on_both_engines(tmp_path, pg_url):
    def v2_store(execute, dialect: str) -> None:
        for v in (1, 2):
            for stmt in statements(v, dialect):
                execute(stmt)
        execute("INSERT INTO meta VALUES ('schema_version', '2')")
        execute("INSERT INTO archs VALUES ('a1', 'h1', 'nasbench201', 'txt', '{}', 10, 2, 3, 4, 't0')")
        execute("INSERT INTO targets (name, created, updated) VALUES ('dev-cpu', 't0', 't0')")
        execute("INSERT INTO measurements (arch_id, target, settings_key, latency_ms, source, created)"
                " VALUES ('a1', 'dev-cpu', 'import', 1.25, 'old', 't0')")  # fmt: skip

    path = tmp_path / "v2.db"
    with sqlite3.connect(path) as conn:
        v2_store(conn.execute, "sqlite")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        v2_store(conn.execute, "postgresql")
    for loc in (path, pg_url):
        with Store.open(loc) as s:
            assert s.schema_version() == SCHEMA_VERSION == 3
            assert s.measurements()[["arch_id", "latency_ms"]].values.tolist() == [["a1", 1.25]]
            assert s.add_kernel_measurements([{"arch_id": "a1", "target": "dev-cpu", "node": 2, "latency_ms": 0.5,
                                               "runtime_kernel": "conv"}]) == 1  # fmt: skip
            assert s.kernel_measurements()[["node", "runtime_kernel"]].values.tolist() == [[2, "conv"]]


def test_a_newer_schema_is_refused_with_exit_2(location, capsys):
    Store.open(location).close()
    if location.startswith("postgresql"):
        with psycopg.connect(location, autocommit=True) as conn:
            conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    else:
        with sqlite3.connect(location) as conn:
            conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(
        StoreError, match=rf"schema version 99, newer than this leti supports \({SCHEMA_VERSION}\)"
    ):
        Store.open(location)
    assert main(["dataset", "stats", "--store", location]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "schema version 99" in err and "leti-secret-pw" not in err


@pytest.mark.parametrize(
    "url, needle",
    [
        ("postgresql://leti@127.0.0.1:99999/db", "port"),
        ("postgresql://leti@127.0.0.1:5432", "name one database"),
        ("postgresql://leti:pw@:5432/db", "no host"),
        ("postgresql://leti@host:abc/db", "port"),
        ("mysql://leti@host/db", "unknown store URL scheme 'mysql'"),
        ("sqlite://relative.db", "sqlite:///ABSOLUTE/PATH"),
        ("postgresql://leti@host/db?sslmode", "key=value"),
    ],
)
def test_malformed_store_urls_are_one_line_exit_2(url, needle, capsys):
    with pytest.raises(StoreError, match=needle):
        resolve(url)
    assert main(["dataset", "stats", "--store", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("leti: error: store:") and needle in err and err.count("\n") == 1


def test_refused_connection_names_host_and_port_never_the_password(capsys, monkeypatch):
    port = free_port()
    url = f"postgresql://leti:s3cr3t-pass@127.0.0.1:{port}/leti"
    with pytest.raises(StoreError) as e:
        Store.open(url)
    msg = str(e.value)
    assert f"127.0.0.1:{port}" in msg and "refused" in msg.lower() and "s3cr3t" not in msg
    monkeypatch.setenv("LETI_STORE", url)  # through the environment, for every command
    for argv in (["dataset", "stats"], ["farm", "status", "--json"], ["import", "/dev/null"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"127.0.0.1:{port}" in err and "s3cr3t" not in err


def test_wrong_password_and_missing_database_do_not_echo_secrets(pg_server):
    bad = pg_server.url().replace(pg_server.password, "wrong-Pa55word")
    with pytest.raises(StoreError) as e:
        Store.open(bad)
    assert "password authentication failed" in str(e.value) and "wrong-Pa55word" not in str(e.value)
    with pytest.raises(StoreError, match='database "nosuchdb" does not exist') as e:
        Store.open(pg_server.url("nosuchdb"))
    assert pg_server.password not in str(e.value)


def test_store_option_after_the_verb_env_and_read_only_commands(tmp_path, pg_url, capsys, monkeypatch):
    f = tmp_path / "m.csv"
    (a, text), = sample("nb201", 1, seed=9)  # fmt: skip
    f.write_text(f"space,arch,target,latency_ms\nnb201,{text},dev-cpu,1.5\n")
    assert main(["import", str(f), "--store", pg_url]) == 0  # after the verb
    capsys.readouterr()
    assert main(["--store", pg_url, "dataset", "stats", "--json"]) == 0  # before it
    assert '"dev-cpu": 1' in capsys.readouterr().out
    monkeypatch.setenv("LETI_STORE", pg_url)
    assert main(["dataset", "stats", "--json"]) == 0
    assert '"dev-cpu": 1' in capsys.readouterr().out
    missing = tmp_path / "nope" / "leti.db"
    for argv in (["dataset", "stats"], ["dataset", "export", "-o", str(tmp_path / "x.csv")], ["farm", "status"],
                 ["targets"], ["train", "--target", "dev-cpu", "--predictor", "flops"]):  # fmt: skip
        assert main([*argv, "--store", str(missing)]) == 2
        assert "no store at" in capsys.readouterr().err
    assert not missing.parent.exists()
    # dataset export: a folder that does not exist and an unknown target are errors, and nothing is written
    assert main(["dataset", "export", "-o", str(tmp_path / "no" / "dir" / "x.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["dataset", "export", "--target", "nosuch", "-o", str(tmp_path / "x.csv")]) == 2
    assert "no measurements for 'nosuch'" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()


def test_concurrent_first_opens_create_the_schema_once(pg_url):
    import threading

    errors = []

    def open_it():
        try:
            Store.open(pg_url).close()
        except LetiError as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with Store.open(pg_url) as s:
        assert s.schema_version() == SCHEMA_VERSION
