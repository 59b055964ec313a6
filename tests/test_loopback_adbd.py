"""The loopback ADB device against the real adb-shell client over TCP on 127.0.0.1."""

import io
import time

import numpy as np
import pytest
from adb_shell.adb_device import AdbDeviceTcp
from adb_shell.exceptions import (
    AdbCommandFailureException,
    AdbTimeoutError,
    PushFailedError,
    TcpTimeoutException,
)

from leti.device_runner import bm_output
from leti.device_runner.adb_keys import load_signer
from leti.errors import LetiError
from leti.testing.loopback import ALWAYS, DeviceProfile, LoopbackAdbDevice, make_fake_elf

TMP = "/data/local/tmp"
# What the stock adb-shell client raises when a device stops answering or goes away.
GONE = (AdbTimeoutError, TcpTimeoutException, OSError)


@pytest.fixture(scope="session")
def signer(key_path):
    return load_signer(key_path)


@pytest.fixture
def device():
    with LoopbackAdbDevice(seed=1) as dev:
        yield dev


def connect(dev: LoopbackAdbDevice, signer, timeout=5.0) -> AdbDeviceTcp:
    host, port = dev.serial.rsplit(":", 1)
    client = AdbDeviceTcp(host, int(port), default_transport_timeout_s=timeout)
    client.connect(rsa_keys=[signer], auth_timeout_s=timeout, read_timeout_s=timeout)
    return client


@pytest.fixture
def client(device, signer):
    c = connect(device, signer)
    yield c
    c.close()


# --- handshake -------------------------------------------------------------------------------------


def test_new_key_is_accepted_then_recognised_by_signature(device, signer):
    connect(device, signer).close()
    assert device.events == ["auth:bad-signature", "auth:new-key"]
    connect(device, signer).close()
    assert device.events[-1] == "auth:signature"


def test_preauthorised_key_signs_in(key_path, signer):
    pub = key_path.with_name("adbkey.pub").read_bytes()
    with LoopbackAdbDevice(authorized_keys=[pub], accept_new_keys=False) as dev:
        c = connect(dev, signer)
        assert c.shell("getprop ro.product.model") == "Pixel 4\n"
        c.close()
        assert dev.events == ["auth:signature"]


def test_unknown_key_is_refused(signer):
    with LoopbackAdbDevice(accept_new_keys=False) as dev:
        with pytest.raises(GONE):
            connect(dev, signer, timeout=0.5)
        assert "auth:rejected" in dev.events


def test_device_without_auth_needs_no_key():
    with LoopbackAdbDevice(require_auth=False) as dev:
        host, port = dev.serial.rsplit(":", 1)
        c = AdbDeviceTcp(host, int(port), default_transport_timeout_s=5)
        assert c.connect(read_timeout_s=5)
        assert c.shell("echo hi") == "hi\n"
        c.close()


# --- sync service ----------------------------------------------------------------------------------


def test_push_stat_pull_list_roundtrip(device, client, tmp_path):
    payload = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    client.push(io.BytesIO(payload), f"{TMP}/leti/blob.bin", st_mode=0o100640)
    mode, size, mtime = client.stat(f"{TMP}/leti/blob.bin")
    assert size == len(payload) and mode & 0o777 == 0o640 and mtime > 0
    assert device.host_path(f"{TMP}/leti/blob.bin").read_bytes() == payload
    pulled = tmp_path / "back.bin"
    client.pull(f"{TMP}/leti/blob.bin", str(pulled))
    assert pulled.read_bytes() == payload
    names = {f.filename.decode() for f in client.list(f"{TMP}/leti")}
    assert "blob.bin" in names
    assert client.stat(f"{TMP}/leti/missing") == (0, 0, 0)


def test_push_outside_the_writable_area_fails(device, client):
    with pytest.raises((PushFailedError, AdbCommandFailureException)):
        client.push(io.BytesIO(b"x"), f"{TMP}/../../../system/bin/evil")
    assert not device.host_path("/system/bin/evil").exists()


def test_pull_of_missing_file_fails(client, tmp_path):
    with pytest.raises(AdbCommandFailureException):
        client.pull(f"{TMP}/nope", str(tmp_path / "x"))


# --- shell -----------------------------------------------------------------------------------------


def test_getprop(client):
    assert client.shell("getprop ro.product.cpu.abi") == "arm64-v8a\n"
    assert client.shell("getprop ro.nothing.here fallback") == "fallback\n"
    everything = client.shell("getprop")
    assert "[ro.soc.model]: [SM8150]\n" in everything and "[ro.build.version.release]: [11]\n" in everything


def test_quoting_follows_posix_sh(device, client):
    out = client.shell("""echo 'a  b' "c  $HOME" e\\ f '' "x'y" 'p"q'""")
    assert out == "a  b c  / e f  x'y p\"q\n"
    assert device.shell_log[-1].argvs == [("echo", "a  b", "c  /", "e f", "", "x'y", 'p"q')]


def test_unquoted_operators_and_substitutions_are_executed(device, client):
    # The control for the injection tests: unquoted, these DO run and leave traces.
    out = client.shell(
        f"echo one; touch {TMP}/made; echo $(echo sub) `echo back`; false && echo no || echo yes"
    )
    assert out == "one\nsub back\nyes\n"
    assert device.host_path(f"{TMP}/made").exists()
    assert ("touch", f"{TMP}/made") in device.argv_log
    assert client.shell("echo $(echo a   b)x") == "a bx\n"  # unquoted expansion is split into fields


def test_globs_expand_against_the_device_tree(client):
    out = client.shell("grep -H . /sys/class/thermal/thermal_zone*/type")
    assert out.splitlines() == [
        "/sys/class/thermal/thermal_zone0/type:cpu-1-0-usr",
        "/sys/class/thermal/thermal_zone1/type:gpu-usr",
        "/sys/class/thermal/thermal_zone2/type:battery",
    ]
    assert client.shell("echo '/sys/class/thermal/*'") == "/sys/class/thermal/*\n"


def test_unknown_command_answers_like_sh(device, client):
    assert client.shell("frobnicate --now") == "/system/bin/sh: frobnicate: inaccessible or not found\n"
    assert device.shell_log[-1].exit_code == 127
    assert client.shell("echo 'unterminated").startswith("/system/bin/sh: syntax error")


def test_writes_are_confined_to_data_local_tmp(device, client):
    client.push(io.BytesIO(b"data"), f"{TMP}/leti/file")
    out = client.shell("rm -rf /")
    assert "Permission denied" in out
    assert not device.host_path(f"{TMP}/leti").exists()
    assert device.host_path("/sys/class/power_supply/battery/capacity").exists()
    assert client.shell("mkdir /system/x") == "mkdir: '/system/x': Permission denied\n"
    assert (
        client.shell("echo hi > /sdcard/x") == "/system/bin/sh: can't create /sdcard/x: Permission denied\n"
    )
    assert client.shell(f"echo hi > {TMP}/x; cat {TMP}/x") == "hi\n"


def test_thermal_battery_and_their_faults(device, client):
    zone0 = "cat /sys/class/thermal/thermal_zone0/temp"
    assert client.shell(zone0) == "38500\n"
    device.faults.overheat(61.5, reads=2)
    assert [client.shell(zone0) for _ in range(3)] == ["61500\n", "61500\n", "38500\n"]
    device.faults.overheat(80.0, cool_s=0.3)
    assert int(client.shell(zone0)) > 60000
    time.sleep(0.35)
    assert client.shell(zone0) == "38500\n"
    battery = "cat /sys/class/power_supply/battery/capacity"
    device.faults.low_battery = True
    assert [client.shell(battery) for _ in range(2)] == ["5\n", "85\n"]
    assert "level: 85" in client.shell("dumpsys battery")


def test_several_streams_at_once_on_one_connection(device, client):
    # One stream stays open (a long cat, read piecewise) while other commands run on new streams.
    # (adb-shell's client is not safe for concurrent commands from several threads on one connection,
    # so the interleaving happens in one thread; the device serves each stream in its own thread.)
    big = bytes(range(97, 123)) * 30_000  # 780 kB: several WRTE packets
    client.push(io.BytesIO(big), f"{TMP}/big")
    stream = client.streaming_shell(f"cat {TMP}/big", decode=False)
    first = next(stream)
    assert 0 < len(first) < len(big)
    others = [client.shell("getprop ro.product.model") for _ in range(3)]
    rest = b"".join(stream)
    assert first + rest == big
    assert others == ["Pixel 4\n"] * 3
    assert device.peak_streams >= 2


# --- benchmark_model -------------------------------------------------------------------------------


def test_elf_binary_runs_as_benchmark_model(device, client, tiny_model):
    client.push(io.BytesIO(make_fake_elf("arm64-v8a")), f"{TMP}/bm", st_mode=0o100644)
    client.push(io.BytesIO(tiny_model), f"{TMP}/m.tflite")
    run = f"{TMP}/bm --graph={TMP}/m.tflite --num_runs=7 --warmup_runs=2 --min_secs=0 --warmup_min_secs=0"
    assert client.shell(run) == f"/system/bin/sh: {TMP}/bm: can't execute: Permission denied\n"
    assert client.shell(f"chmod +x {TMP}/bm") == ""
    out = client.shell(run)
    parsed = bm_output.parse(out)
    assert parsed.runs.count == 7 and parsed.warmup.count == 2
    assert parsed.runs.min <= parsed.runs.median <= parsed.runs.max
    assert device.benchmark_runs[-1]["flags"]["num_runs"] == 7


def test_binary_for_another_machine_is_not_executable(client):
    client.push(io.BytesIO(make_fake_elf("x86_64")), f"{TMP}/bm", st_mode=0o100755)
    assert "not executable: 64-bit ELF file, machine 62" in client.shell(f"{TMP}/bm --graph=x")
    client.push(io.BytesIO(b"#!/bin/sh\necho hi\n"), f"{TMP}/script", st_mode=0o100755)
    assert "Exec format error" in client.shell(f"{TMP}/script")


def test_taskset_rejects_a_mask_without_cpus(client):
    assert client.shell("taskset 0 echo x") == "taskset: sched_setaffinity: Invalid argument\n"
    assert client.shell("taskset f00 echo x") == "taskset: sched_setaffinity: Invalid argument\n"
    assert client.shell("taskset 0x3 echo x") == "x\n"


def test_missing_model_makes_benchmark_fail(client):
    client.push(io.BytesIO(make_fake_elf()), f"{TMP}/bm", st_mode=0o100755)
    with pytest.raises(bm_output.BenchmarkFailedError):
        bm_output.parse(client.shell(f"{TMP}/bm --graph={TMP}/none.tflite"))


def test_gpu_refused_on_a_device_without_gpu(signer, tiny_model):
    with LoopbackAdbDevice(DeviceProfile(gpu=False)) as dev:
        c = connect(dev, signer)
        c.push(io.BytesIO(make_fake_elf()), f"{TMP}/bm", st_mode=0o100755)
        c.push(io.BytesIO(tiny_model), f"{TMP}/m.tflite")
        out = c.shell(f"{TMP}/bm --graph={TMP}/m.tflite --use_gpu=true")
        assert "Failed to apply GPU delegate" in out and "Benchmarking failed" in out
        c.close()


# --- faults at the protocol level ------------------------------------------------------------------


def test_drop_mid_push_cuts_the_connection(device, signer):
    device.faults.drop_mid_push = True
    c = connect(device, signer, timeout=1.0)
    with pytest.raises(GONE):  # stock adb-shell notices EOF only at its read timeout
        c.push(io.BytesIO(b"y" * 100_000), f"{TMP}/half", read_timeout_s=1)
    c.close()
    assert device.events[-1] == "drop_mid_push"
    assert not device.host_path(f"{TMP}/half").exists()
    c = connect(device, signer)  # one-shot: the next push goes through
    c.push(io.BytesIO(b"y" * 100_000), f"{TMP}/half")
    assert device.host_path(f"{TMP}/half").stat().st_size == 100_000
    c.close()


def test_hang_never_answers(device, signer):
    device.faults.hang, device.faults.hang_match = ALWAYS, "sleepy"
    c = connect(device, signer, timeout=0.5)
    assert c.shell("echo awake") == "awake\n"  # does not match: answered
    t0 = time.monotonic()
    with pytest.raises(GONE):
        c.shell("echo sleepy")
    assert time.monotonic() - t0 >= 0.4
    assert device.events.count("hang") == 1
    c.close()


def test_garbage_and_drop_mid_run(device, signer, tiny_model):
    c = connect(device, signer, timeout=2.0)
    c.push(io.BytesIO(make_fake_elf()), f"{TMP}/bm", st_mode=0o100755)
    c.push(io.BytesIO(tiny_model), f"{TMP}/m.tflite")
    run = f"{TMP}/bm --graph={TMP}/m.tflite --num_runs=3 --min_secs=0 --warmup_min_secs=0"
    device.faults.garbage = 1
    with pytest.raises(LetiError):
        bm_output.parse(c.shell(run))
    assert bm_output.parse(c.shell(run)).runs.count == 3
    device.faults.drop_mid_run = 1
    with pytest.raises(GONE):
        c.shell(run, read_timeout_s=1)
    c.close()
    assert device.events.count("garbage") == 1 and device.events.count("drop_mid_run") == 1
