"""`leti generate` on the host (LiteRT): sample -> build -> measure -> store, resumable after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from leti.cli import main
from leti.datasets.store import Store

TARGET = "host-litert-cpu-1t"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LETI_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _count(db, target=TARGET) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        n = con.execute("SELECT COUNT(*) FROM measurements WHERE target = ?", (target,)).fetchone()[0]
        con.close()
        return n
    except sqlite3.Error:
        return 0


def test_generate_measures_and_stores_with_noise_floor(home, capsys):
    argv = ["generate", "--space", "nb201", "-n", "4", "--seed", "1", "--target", TARGET, "--runs", "5",
            "--warmup", "1", "--repeat-check", "2", "--json"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["progress"]["done"] == 4 and report["progress"]["total"] == 4
    floor = report["noise_floor"][TARGET]
    assert (
        floor >= 0 and floor == floor
    )  # its size depends on how busy the machine is; it must be a real number
    w = report["workers"][0]
    assert w["measured"] == 4 and w["build_s"] > 0 and w["measure_s"] > 0
    store = Store.open(home / "leti.db")
    df = store.measurements(target=TARGET)
    assert len(df) == 4 and df["arch_id"].is_unique
    assert (df["min_ms"] <= df["median_ms"]).all() and (df["median_ms"] <= df["max_ms"]).all()
    rec = store.get_target(TARGET)
    assert rec.noise_floor == pytest.approx(report["noise_floor"][TARGET])
    assert "litert" in json.dumps(rec.versions).lower()
    assert main(["dataset", "stats", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["targets"] == {TARGET: 4}


def test_sigkill_mid_run_then_resume_gives_exactly_n(home):
    n = 24  # long enough that the kill lands mid-run even when a busy machine delays the polling
    env = {**os.environ, "LETI_HOME": str(home)}
    argv = [sys.executable, "-m", "leti.cli", "generate", "--space", "nb201", "-n", str(n), "--seed", "2",
            "--target", TARGET, "--runs", "3", "--warmup", "0", "--quiet"]  # fmt: skip
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = home / "leti.db"
    deadline = time.time() + 240
    while _count(db) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    killed_at = _count(db)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 2 <= killed_at < n
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    store = Store.open(db)
    df = store.measurements(target=TARGET)
    assert len(df) == n and df["arch_id"].is_unique
    runs = store._read("SELECT run_id FROM runs")
    assert len(runs) == 1
    progress = store.run_progress(runs[0][0])
    assert progress["pending"] == 0 and progress["running"] == 0


def test_bench_bad_inputs_are_one_line(home, tmp_path, capsys):
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"TFL3" + os.urandom(200))
    for path, target in (
        (empty, TARGET),
        (junk, TARGET),
        (tmp_path / "missing.tflite", TARGET),
        (junk, "nope"),
    ):
        assert main(["bench", str(path), "--target", target]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("leti: error:") and "\n" not in err


def test_bench_a_real_model(home, tmp_path, capsys):
    from leti.space import nb201
    from leti.tflite.convert import to_tflite

    g = nb201.from_string(
        "|nor_conv_1x1~0|+|skip_connect~0|none~1|+|none~0|none~1|avg_pool_3x3~2|"
    ).to_graph()
    f = tmp_path / "m.tflite"
    f.write_bytes(to_tflite(g))
    assert main(["bench", str(f), "--target", "host-litert-cpu-2t", "--runs", "5", "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["n_runs"] >= 5 and 0 < m["min_ms"] <= m["median_ms"] <= m["max_ms"]
