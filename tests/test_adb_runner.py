"""AdbRunner end to end: real adb-shell client, loopback ADB device on 127.0.0.1, real LiteRT runs."""

import os
import socket
import stat
import threading

import pytest

from leti.device_runner.adb import (
    AdbRunner,
    DeviceInfo,
    affinity_mask,
    benchmark_argv,
    list_devices,
    parse_address,
    parse_health,
    shell_command,
)
from leti.device_runner.base import Runner
from leti.errors import DeviceError, LetiError
from leti.measurement import Settings
from leti.targets import parse_target
from leti.testing.loopback import ALWAYS, DeviceProfile, LoopbackAdbDevice, make_fake_elf

TMP = "/data/local/tmp"
FAST = Settings(threads=1, warmup=2, runs=10)


@pytest.fixture(scope="session")
def arm64_binary(tmp_path_factory):
    path = tmp_path_factory.mktemp("bin") / "benchmark_model"
    path.write_bytes(make_fake_elf("arm64-v8a"))
    return path


@pytest.fixture
def device():
    with LoopbackAdbDevice(seed=3) as dev:
        yield dev


def make_runner(dev, key_path, binary, **kw) -> AdbRunner:
    options = dict(key_path=key_path, command_timeout_s=5.0, backoff_s=0.01, cooldown_poll_s=0.05)
    options.update(kw)
    return AdbRunner(dev.serial, binary, **options)


@pytest.fixture
def runner(device, key_path, arm64_binary):
    r = make_runner(device, key_path, arm64_binary)
    yield r
    r.close()


def bench_argv(dev: LoopbackAdbDevice) -> tuple[str, ...]:
    runs = dev.benchmark_runs
    assert runs, "benchmark_model never ran"
    return runs[-1]["argv"]


def assert_sane(m, runs):
    assert m.n_runs == runs
    assert 0 < m.min_ms <= m.median_ms <= m.max_ms
    assert m.min_ms <= m.mean_ms <= m.max_ms and m.p90_ms <= m.max_ms
    assert m.raw_unit == "us" and "Inference timings in us" in m.raw


# --- construction and device info -----------------------------------------------------------------


def test_constructor_does_not_touch_the_device(key_path):
    with LoopbackAdbDevice() as dev:
        r = AdbRunner(dev.serial, "/does/not/exist", key_path=key_path)
        assert dev.connections == 0 and not r.connected
        assert isinstance(r, Runner)


def test_device_info_and_list_devices(device, runner):
    info = runner.device_info()
    assert (info.model, info.soc, info.abi, info.android_version, info.sdk) == (
        "Pixel 4",
        "SM8150",
        "arm64-v8a",
        "11",
        30,
    )
    assert info.serial == device.serial and info.state == "device" and info.hw_serial == "LOOPBACK0001"
    assert info.battery_level == 85 and info.battery_temp_c == 29.0 and info.max_thermal_c == 38.5
    assert info.thermal_c == {"cpu-1-0-usr": 38.5, "gpu-usr": 36.0, "battery": 29.0}
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    listed = list_devices([device.serial, dead], key_path=runner.key_path, command_timeout_s=2.0)
    assert [d.state for d in listed] == ["device", "unreachable"]
    assert listed[0].model == "Pixel 4" and isinstance(listed[1], DeviceInfo) and listed[1].error


def test_keys_are_created_in_leti_home(tmp_path, monkeypatch, device, arm64_binary):
    monkeypatch.setenv("LETI_HOME", str(tmp_path))
    r = AdbRunner(device.serial, arm64_binary, command_timeout_s=5.0)
    assert r.device_info().model == "Pixel 4"
    r.close()
    key = tmp_path / "adbkey"
    assert key.is_file() and (tmp_path / "adbkey.pub").is_file()
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600


def test_workers_starting_together_share_one_key(tmp_path):
    # a farm's workers all call ensure_key on their first job; none may read a half-written key
    from concurrent.futures import ThreadPoolExecutor

    from leti.device_runner.adb_keys import load_signer

    key = tmp_path / "home" / "adbkey"
    with ThreadPoolExecutor(8) as pool:
        signers = list(pool.map(lambda _: load_signer(key), range(8)))
    assert len(signers) == 8 and {s.GetPublicKey() for s in signers} == {signers[0].GetPublicKey()}
    assert sorted(p.name for p in key.parent.iterdir()) == ["adbkey", "adbkey.lock", "adbkey.pub"]


def test_targets_follow_the_target_grammar(runner):
    names = runner.targets()
    assert (
        "pixel4-tflite-cpu-1t" in names
        and "pixel4-tflite-cpu-1t-big" in names
        and "pixel4-tflite-gpu" in names
    )
    for name in names:
        assert parse_target(name).device == "pixel4"
    assert runner.target_for(Settings(threads=4)) == "pixel4-tflite-cpu-4t"
    assert runner.target_for(Settings(threads=1, affinity="big")) == "pixel4-tflite-cpu-1t-big"
    assert runner.target_for(Settings(delegate="gpu")) == "pixel4-tflite-gpu"
    assert runner.target_for(Settings(xnnpack=False, affinity="0x30")) == "pixel4-tflite-cpu-1t-noxnn-m30"


# --- measuring ------------------------------------------------------------------------------------


def test_measure_tiny_model(device, runner, tiny_model):
    m = runner.measure(tiny_model, Settings(threads=2, warmup=3, runs=25))
    assert_sane(m, 25)
    assert m.model_bytes == len(tiny_model) and m.init_ms > 0 and m.first_ms > 0
    assert m.versions["device_model"] == "Pixel 4" and m.versions["percentiles"] == "reported"
    argv = bench_argv(device)
    assert argv[0] == f"{TMP}/leti/benchmark_model"
    assert "--num_threads=2" in argv and "--warmup_runs=3" in argv and "--num_runs=25" in argv
    assert "--use_xnnpack=true" in argv
    graph = next(a for a in argv if a.startswith("--graph="))[len("--graph=") :]
    assert not device.host_path(graph).exists()  # the model is deleted after the run
    assert device.host_path(f"{TMP}/leti/benchmark_model").stat().st_mode & 0o111
    # A second measure reuses the binary already on the device.
    runner.measure(tiny_model, FAST)
    assert len(device.executed("chmod")) == 1
    assert runner.fault_counts["failed_attempts"] == 0


def test_op_profiling_and_flags(device, runner, tiny_model):
    m = runner.measure(tiny_model, Settings(runs=5, warmup=1, op_profiling=True, xnnpack=False))
    assert [op["node_type"] for op in m.op_profile] == ["CONV_2D", "MEAN", "FULLY_CONNECTED"]
    assert sum(op["percent"] for op in m.op_profile) == pytest.approx(100, abs=0.01)
    argv = bench_argv(device)
    assert "--enable_op_profiling=true" in argv and "--use_xnnpack=false" in argv
    runner.measure(tiny_model, Settings(runs=3, warmup=1, delegate="gpu", gpu_precision_loss_allowed=False))
    argv = bench_argv(device)
    assert "--use_gpu=true" in argv and "--gpu_precision_loss_allowed=false" in argv
    assert not any(a.startswith("--use_xnnpack") for a in argv)
    runner.measure(tiny_model, Settings(runs=3, warmup=1, delegate="nnapi"))
    assert "--use_nnapi=true" in bench_argv(device)


@pytest.mark.parametrize(
    ("affinity", "mask"), [("big", 0xF0), ("little", 0x0F), ("0x30", 0x30), ((0, 2), 0x5)]
)
def test_affinity_runs_under_taskset(device, runner, tiny_model, affinity, mask):
    m = runner.measure(tiny_model, Settings(runs=3, warmup=1, affinity=affinity))
    run = device.benchmark_runs[-1]
    assert run["affinity"] == mask
    assert device.shell_log[-2].argvs[0][:2] == ("taskset", format(mask, "x"))
    assert m.versions["affinity_mask"] == format(mask, "x")


def test_a_benchmark_failure_is_not_retried(key_path, arm64_binary, tiny_model):
    with LoopbackAdbDevice(DeviceProfile(nnapi=False)) as dev:
        r = make_runner(dev, key_path, arm64_binary)
        with pytest.raises(DeviceError) as err:
            r.measure(tiny_model, Settings(runs=3, delegate="nnapi"))
        assert err.value.field == "benchmark_model" and "NNAPI" in str(err.value)
        assert r.fault_counts["benchmark_failures"] == 1 and len(dev.benchmark_runs) == 1
        r.close()


def test_bad_inputs_are_leti_errors(runner, key_path, tiny_model, tmp_path, device):
    with pytest.raises(LetiError) as err:
        runner.measure(b"not a model at all", FAST)
    assert err.value.field == "model_bytes"
    with pytest.raises(LetiError) as err:
        runner.measure(tiny_model, Settings(affinity="fast"))
    assert err.value.field == "settings.affinity"
    with pytest.raises(LetiError) as err:
        runner.measure(tiny_model, FAST, name="../escape")
    assert err.value.field == "name"
    wrong = tmp_path / "bm_x86"
    wrong.write_bytes(make_fake_elf("x86_64"))
    with pytest.raises(LetiError) as err:
        make_runner(device, key_path, wrong).measure(tiny_model, FAST)
    assert err.value.field == "benchmark_binary" and "x86_64" in str(err.value)
    text = tmp_path / "bm.sh"
    text.write_text("#!/bin/sh\n")
    with pytest.raises(LetiError) as err:
        make_runner(device, key_path, text).measure(tiny_model, FAST)
    assert err.value.field == "benchmark_binary"
    with pytest.raises(LetiError) as err:
        make_runner(device, key_path, None).measure(tiny_model, FAST)
    assert err.value.field == "benchmark_binary"
    assert device.benchmark_runs == []


def test_addresses(key_path):
    assert parse_address("10.0.0.2:5555") == ("tcp", "10.0.0.2", 5555)
    assert parse_address("usb") == ("usb", None, None)
    assert parse_address("usb:R58M1234") == ("usb", "R58M1234", None)
    for bad in ["", "host:99999", "127.0.0.1:5555; rm -rf /", "usb:$(reboot)"]:
        with pytest.raises(LetiError) as err:
            AdbRunner(bad, key_path=key_path).device_info()
        assert err.value.field == "address"


def test_usb_without_the_usb_extra_is_a_clear_error(key_path):
    try:
        import usb1  # noqa: F401

        pytest.skip("libusb1 is installed here")
    except ImportError:
        pass
    with pytest.raises(LetiError) as err:
        AdbRunner("usb:R58M1234", key_path=key_path).device_info()
    assert err.value.field == "address" and "adb-shell[usb]" in str(err.value)


# --- faults ---------------------------------------------------------------------------------------


def test_drop_mid_push_is_retried(device, runner, tiny_model):
    device.faults.drop_mid_push = 1
    assert_sane(runner.measure(tiny_model, FAST), 10)
    c = runner.fault_counts
    assert (c["drops"], c["reconnects"], c["failed_attempts"]) == (1, 1, 1)
    assert device.events.count("drop_mid_push") == 1 and device.connections == 2


def test_drop_mid_run_is_retried(device, runner, tiny_model):
    device.faults.drop_mid_run = 1
    assert_sane(runner.measure(tiny_model, FAST), 10)
    assert runner.fault_counts["drops"] == 1 and len(device.benchmark_runs) == 2


def test_hang_times_out_and_is_retried(device, key_path, arm64_binary, tiny_model):
    device.faults.hang = 1
    r = make_runner(device, key_path, arm64_binary, command_timeout_s=0.4)
    assert_sane(r.measure(tiny_model, FAST), 10)
    assert r.fault_counts["timeouts"] == 1 and device.events.count("hang") == 1
    r.close()


def test_garbage_is_retried(device, runner, tiny_model):
    device.faults.garbage = 2
    assert_sane(runner.measure(tiny_model, FAST), 10)
    assert runner.fault_counts["garbage"] == 2 and runner.fault_counts["reconnects"] == 0


def test_persistent_faults_give_device_error_after_n_attempts(device, key_path, arm64_binary, tiny_model):
    device.faults.drop_mid_run = ALWAYS
    r = make_runner(device, key_path, arm64_binary, attempts=3)
    with pytest.raises(DeviceError) as err:
        r.measure(tiny_model, FAST)
    assert err.value.field == "device" and "after 3 attempts" in str(err.value)
    assert r.fault_counts["drops"] == 3 and r.fault_counts["failed_attempts"] == 3
    device.faults.drop_mid_run = 0
    device.faults.garbage = ALWAYS
    with pytest.raises(DeviceError):
        r.measure(tiny_model, FAST)
    assert r.fault_counts["garbage"] == 3
    r.close()


def test_overheated_device_is_waited_for(device, runner, tiny_model):
    device.faults.overheat(58.0, reads=3)
    m = runner.measure(tiny_model, FAST)
    assert_sane(m, 10)
    assert runner.fault_counts["overheat_waits"] == 1 and runner.fault_counts["cooldown_s"] > 0
    assert device.events.count("hot") == 3
    # The benchmark started only after the device reported a normal temperature again.
    health = [i for i, rec in enumerate(device.shell_log) if "thermal_zone" in rec.command]
    bench = next(i for i, rec in enumerate(device.shell_log) if "benchmark_model" in rec.command)
    assert len(health) == 4 and health[-1] < bench


def test_device_cooling_over_time(device, runner, tiny_model):
    runner.connect()
    device.faults.overheat(70.0, cool_s=0.6)  # above 45 °C for the first ~0.47 s
    assert_sane(runner.measure(tiny_model, FAST), 10)
    assert runner.fault_counts["overheat_waits"] == 1 and 0.2 <= runner.fault_counts["cooldown_s"] <= 2.0


def test_device_that_stays_hot_is_refused(device, key_path, arm64_binary, tiny_model):
    device.faults.overheat(80.0)
    r = make_runner(device, key_path, arm64_binary, cooldown_max_wait_s=0.3)
    with pytest.raises(DeviceError) as err:
        r.measure(tiny_model, FAST)
    assert err.value.field == "device.thermal" and "80.0" in str(err.value)
    assert device.benchmark_runs == []
    r.close()


def test_low_battery_is_refused_or_waited_for(device, key_path, arm64_binary, tiny_model):
    device.faults.low_battery = 1
    r = make_runner(device, key_path, arm64_binary)
    with pytest.raises(DeviceError) as err:
        r.measure(tiny_model, FAST)
    assert err.value.field == "device.battery" and "5%" in str(err.value)
    assert r.fault_counts["low_battery"] == 1 and device.benchmark_runs == []
    device.faults.low_battery = 2
    patient = make_runner(device, key_path, arm64_binary, battery_wait_s=5.0)
    assert_sane(patient.measure(tiny_model, FAST), 10)
    assert patient.fault_counts["low_battery"] == 1
    r.close()
    patient.close()


# --- shell injection ------------------------------------------------------------------------------

HOSTILE = "; rm -rf / ; $(touch /data/local/tmp/pwned) `touch /data/local/tmp/pwned2` #"
QUOTES = 'it\'s "quoted" \\ $HOME'


def test_hostile_strings_reach_the_shell_as_inert_text(device, key_path, arm64_binary, tiny_model):
    remote_dir = f"{TMP}/leti{HOSTILE}{QUOTES}"
    name = "m; reboot $(id) `id` && x " + QUOTES
    flag = f"--benchmark_name={HOSTILE}"
    r = make_runner(device, key_path, arm64_binary, remote_dir=remote_dir, extra_args=[flag])
    assert_sane(r.measure(tiny_model, FAST, name=name), 10)
    r.close()
    argv = bench_argv(device)
    assert argv[0] == f"{remote_dir}/benchmark_model"
    assert f"--graph={remote_dir}/{name}.tflite" in argv and argv[-1] == flag
    ran = {a[0] for a in device.argv_log}
    assert ran <= {"getprop", "grep", "mkdir", "chmod", f"{remote_dir}/benchmark_model", "rm"}
    assert not device.executed("touch") and not device.executed("reboot") and not device.executed("id")
    assert all(a == ("rm", "-f", f"{remote_dir}/{name}.tflite") for a in device.executed("rm"))
    assert not device.host_path(f"{TMP}/pwned").exists() and not device.host_path(f"{TMP}/pwned2").exists()
    assert not os.path.exists("/tmp/pwned")
    assert device.host_path(f"{remote_dir}/benchmark_model").exists()  # nothing was wiped


def test_the_injection_check_can_fail(device, key_path):
    # Unquoted, the same text does run commands on the loopback device: the test above is meaningful.
    from adb_shell.adb_device import AdbDeviceTcp

    from leti.device_runner.adb_keys import load_signer

    host, port = device.serial.rsplit(":", 1)
    c = AdbDeviceTcp(host, int(port), default_transport_timeout_s=5)
    c.connect(rsa_keys=[load_signer(key_path)], auth_timeout_s=5)
    c.shell(f"mkdir -p {TMP}/leti; echo {TMP}/leti{HOSTILE}")
    c.close()
    assert device.executed("touch") and device.host_path(f"{TMP}/pwned").exists()
    assert ("rm", "-rf", "/") in device.argv_log


def test_quoting_helpers():
    argv = benchmark_argv("/d/bm", "/d/a b.tflite", Settings(threads=4, runs=7), ["--x=$(y)"])
    assert argv[:5] == [
        "/d/bm",
        "--graph=/d/a b.tflite",
        "--num_threads=4",
        "--warmup_runs=3",
        "--num_runs=7",
    ]
    assert shell_command(["echo", "a b", "$(x)"], mask="f0") == "taskset f0 echo 'a b' '$(x)'"


# --- pure helpers ---------------------------------------------------------------------------------


def test_parse_health_normalises_units_and_drops_nonsense():
    text = "\n".join(
        [
            "/sys/class/power_supply/battery/capacity:64",
            "/sys/class/power_supply/battery/temp:312",
            "/sys/class/thermal/thermal_zone0/type:cpu0",
            "/sys/class/thermal/thermal_zone0/temp:47100",  # m°C
            "/sys/class/thermal/thermal_zone1/type:skin",
            "/sys/class/thermal/thermal_zone1/temp:395",  # d°C
            "/sys/class/thermal/thermal_zone2/type:pmic",
            "/sys/class/thermal/thermal_zone2/temp:41",  # °C
            "/sys/class/thermal/thermal_zone3/temp:-273000",  # a dead sensor
            "grep: /sys/class/thermal/thermal_zone4/temp: Invalid argument",
        ]
    )
    h = parse_health(text)
    assert h.battery_level == 64 and h.battery_temp_c == 31.2
    assert h.thermal_c == {"cpu0": 47.1, "skin": 39.5, "pmic": 41.0}
    assert h.max_thermal_c == 47.1


def test_affinity_masks():
    freqs = {0: 1800, 1: 1800, 2: 1800, 3: 1800, 4: 2400, 5: 2400, 6: 2400, 7: 2800}
    assert affinity_mask("big", freqs) == "f0" and affinity_mask("little", freqs) == "f"
    assert affinity_mask("big", {0: 2000, 1: 2000}) == "3"
    assert affinity_mask("0XF0") == "f0" and affinity_mask((1, 3)) == "a" and affinity_mask(None) is None
    for bad in ["0", "zz", "0x", (), (64,)]:
        with pytest.raises(LetiError):
            affinity_mask(bad, freqs)


# --- concurrency ----------------------------------------------------------------------------------


def test_two_devices_from_two_threads(key_path, arm64_binary, tiny_model):
    profiles = [
        DeviceProfile(model="Pixel 4"),
        DeviceProfile(model="Mi 9", soc_model="SM8150-AC", serialno="B"),
    ]
    results, errors = {}, []
    with LoopbackAdbDevice(profiles[0], seed=1) as a, LoopbackAdbDevice(profiles[1], seed=2) as b:

        def work(dev):
            r = make_runner(dev, key_path, arm64_binary)
            try:
                results[dev.serial] = (
                    r.device_info().model,
                    r.measure(tiny_model, Settings(runs=20, warmup=2)),
                )
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                r.close()

        threads = [threading.Thread(target=work, args=(dev,)) for dev in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        assert results[a.serial][0] == "Pixel 4" and results[b.serial][0] == "Mi 9"
        for dev in (a, b):
            assert_sane(results[dev.serial][1], 20)
            assert len(dev.benchmark_runs) == 1
