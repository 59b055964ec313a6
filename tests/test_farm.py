"""The phone farm end to end: `leti generate` drives the real adb-shell client against loopback ADB devices that
speak the ADB wire protocol, with every fault switch on; each job must be measured exactly once."""

from __future__ import annotations

import json

import pytest

from leti.cli import main
from leti.datasets.store import Store
from leti.device_runner.bindings import Binding, parse_binding
from leti.errors import TargetError
from leti.testing.loopback import ALWAYS, DeviceProfile, Faults, LoopbackAdbDevice, make_fake_elf

N = 5


@pytest.fixture
def farm_devices():
    devs = {
        # one-shot faults of every kind, spread over the two devices of target A and the device of target B
        "a1": LoopbackAdbDevice(
            DeviceProfile(model="Pixel 4", serialno="A1"),
            faults=Faults(drop_mid_push=1, garbage=1, hang=1, hang_match="benchmark_model", low_battery=1),
        ),  # fmt: skip
        "a2": LoopbackAdbDevice(
            DeviceProfile(model="Pixel 4", serialno="A2"), faults=Faults(drop_mid_push=ALWAYS)
        ),
        "b1": LoopbackAdbDevice(DeviceProfile(model="Mi 9", serialno="B1"), faults=Faults(drop_mid_run=1)),
    }
    devs["b1"].faults.overheat(70.0, reads=2)
    for d in devs.values():
        d.start()
    yield devs
    for d in devs.values():
        d.stop()


def test_farm_run_under_faults(tmp_path, monkeypatch, farm_devices, capsys):
    monkeypatch.setenv("LETI_HOME", str(tmp_path / "home"))
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(make_fake_elf("arm64-v8a"))
    d = farm_devices
    argv = [
        "generate", "--space", "nb201", "-n", str(N), "--seed", "5",
        "--target", f"pixel4-tflite-cpu-1t@tcp:{d['a1'].serial}",
        "--target", f"pixel4-tflite-cpu-1t@tcp:{d['a2'].serial}",
        "--target", f"mi9-tflite-cpu-2t@{d['b1'].serial}",
        "--benchmark-binary", str(binary), "--runs", "3", "--warmup", "1",
        "--command-timeout", "2", "--cooldown-poll", "0.05", "--cooldown-wait", "20", "--backoff", "0.05",
        "--attempts", "4", "--max-failures", "3", "--json", "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["progress"] == {"pending": 0, "running": 0, "done": 2 * N, "failed": 0, "total": 2 * N}

    store = Store.open(tmp_path / "home" / "leti.db")
    for target in ("pixel4-tflite-cpu-1t", "mi9-tflite-cpu-2t"):
        df = store.measurements(target=target)
        assert len(df) == N and df["arch_id"].is_unique  # each job measured exactly once
        assert (df["latency_ms"] > 0).all() and (df["raw_unit"] == "us").all()

    workers = {w["device"]: w for w in report["workers"]}
    a1, a2, b1 = workers[d["a1"].serial], workers[d["a2"].serial], workers[d["b1"].serial]
    assert a2["quarantined"] and a2["measured"] == 0 and a2["faults"]["drops"] >= 1
    assert not a1["quarantined"] and a1["measured"] == N  # took over the quarantined device's share
    assert a1["faults"]["drops"] >= 1 and a1["faults"]["garbage"] >= 1 and a1["faults"]["timeouts"] >= 1
    assert a1["faults"]["low_battery"] >= 1 or any("battery" in e for e in a1["errors"])
    assert b1["measured"] == N and b1["faults"]["drops"] >= 1 and b1["faults"]["overheat_waits"] >= 1
    # the report is stored with the run, faults included
    stored = store.get_run(report["run_id"])["report"]
    assert {w["worker"] for w in stored["workers"]} == {w["worker"] for w in report["workers"]}
    # the models really ran on the devices: benchmark_model was executed with the pushed graphs
    assert sum(len(dev.executed("benchmark_model")) for dev in d.values()) >= 2 * N


def test_rerun_resumes_and_measures_nothing_twice(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LETI_HOME", str(tmp_path / "home"))
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(make_fake_elf("arm64-v8a"))
    with LoopbackAdbDevice(DeviceProfile(serialno="R1")) as dev:
        argv = ["generate", "--space", "nb201", "-n", "3", "--seed", "9", "--target",
                f"phone-tflite-cpu-1t@tcp:{dev.serial}", "--benchmark-binary", str(binary), "--runs", "2",
                "--warmup", "0", "--json", "--quiet"]  # fmt: skip
        assert main(argv) == 0
        first = json.loads(capsys.readouterr().out)
        runs_before = len(dev.executed("benchmark_model"))
        assert main(argv) == 0
        second = json.loads(capsys.readouterr().out)
        assert second["resumed"] and second["run_id"] == first["run_id"]
        assert len(dev.executed("benchmark_model")) == runs_before  # nothing re-measured
    assert len(Store.open(tmp_path / "home" / "leti.db").measurements(target="phone-tflite-cpu-1t")) == 3


def test_binding_syntax():
    assert parse_binding("host-litert-cpu-1t") == Binding("host-litert-cpu-1t")
    assert parse_binding("p4-tflite-gpu@tcp:10.0.0.2:5555") == Binding("p4-tflite-gpu", "10.0.0.2:5555")
    assert parse_binding("p4-tflite-gpu@usb:0A1B") == Binding("p4-tflite-gpu", "usb:0A1B")
    assert parse_binding("p4-tflite-gpu@usb") == Binding("p4-tflite-gpu", "usb")
    for bad in ("p4-tflite-gpu", "p4@tcp:", "P4@usb", "host-litert-cpu-1t@tcp:a b"):
        with pytest.raises(TargetError):
            parse_binding(bad)


def _generate_argv(dev, binary, n: int, *extra) -> list[str]:
    return ["generate", "--space", "nb201", "-n", str(n), "--seed", "11", "--target",
            f"phone-tflite-cpu-1t@tcp:{dev.serial}", "--benchmark-binary", str(binary), "--runs", "2", "--warmup",
            "0", "--backoff", "0.05", "--attempts", "1", *extra]  # fmt: skip


def test_two_identical_generate_runs_at_once_both_exit_0(tmp_path):
    """They share the run's queue; the one that runs out of pending jobs first waits for the other's leases."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    binary = tmp_path / "benchmark_model"
    binary.write_bytes(make_fake_elf("arm64-v8a"))
    env = {**os.environ, "LETI_HOME": str(tmp_path / "home"), "PYTHONPATH": str(Path(__file__).parents[1])}
    with LoopbackAdbDevice(DeviceProfile(serialno="TWIN")) as dev:
        argv = [sys.executable, "-m", "leti.cli", *_generate_argv(dev, binary, 6, "--json", "--quiet")]
        procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for _ in range(2)]  # fmt: skip
        outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-500:] for _, e in outs]
    reports = [json.loads(o) for o, _ in outs]
    assert all(
        r["progress"] == {"pending": 0, "running": 0, "done": 6, "failed": 0, "total": 6} for r in reports
    )
    assert sum(w["measured"] for r in reports for w in r["workers"]) == 6  # each job measured once
    assert len(Store.open(tmp_path / "home" / "leti.db").measurements()) == 6


def test_failed_jobs_keep_the_exit_status_non_zero_until_retried(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LETI_HOME", str(tmp_path / "home"))
    wrong = tmp_path / "benchmark_model_x86"
    wrong.write_bytes(make_fake_elf("x86_64"))  # a binary for the wrong ABI: every job fails
    right = tmp_path / "benchmark_model"
    right.write_bytes(make_fake_elf("arm64-v8a"))
    with LoopbackAdbDevice(DeviceProfile(serialno="RETRY")) as dev:
        bad = _generate_argv(dev, wrong, 2, "--max-attempts", "1", "--max-failures", "5")
        assert main(bad) == 1
        out = capsys.readouterr().out
        assert "2 failed" in out and "--retry-failed" in out
        assert main(_generate_argv(dev, right, 2)) == 1  # still failed: not retried without the flag
        capsys.readouterr()
        assert main(_generate_argv(dev, right, 2, "--retry-failed", "--json")) == 0
        assert json.loads(capsys.readouterr().out)["progress"]["done"] == 2
    assert len(Store.open(tmp_path / "home" / "leti.db").measurements()) == 2
