"""Measure .tflite models on Android devices over ADB with TFLite's ``benchmark_model``.

``AdbRunner`` talks to one device through the ``adb-shell`` client (TCP ``host:port`` or USB): it
pushes the model and the user's ``benchmark_model`` binary to ``/data/local/tmp/leti/``, waits until
the phone is cool and charged enough, runs the benchmark (optionally pinned with ``taskset``),
parses the report and deletes the model. Transport faults are retried with exponential backoff on a
fresh connection; the runner counts every fault it sees (``fault_counts``) so a farm can report and
quarantine devices that keep failing. Every value that reaches the device shell is ``shlex``-quoted.

Address forms: ``host:port`` (TCP, e.g. ``192.168.1.20:5555``), ``usb`` (the only USB device) or
``usb:SERIAL`` / ``SERIAL`` (USB; needs ``adb-shell[usb]``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import shlex
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

from leti.device_runner import bm_output
from leti.device_runner.address import parse_address
from leti.errors import DeviceError, LetiError
from leti.measurement import Measurement, Settings
from leti.targets import parse_target

T = TypeVar("T")

DEFAULT_REMOTE_DIR = "/data/local/tmp/leti"
# Android ABI -> (ELF class bits, e_machine)
ABI_ELF: dict[str, tuple[int, int]] = {
    "arm64-v8a": (64, 183),
    "armeabi-v7a": (32, 40),
    "armeabi": (32, 40),
    "x86_64": (64, 62),
    "x86": (32, 3),
    "riscv64": (64, 243),
}
_TFLITE_IDENT = b"TFL3"
_COUNTER_KEYS = (
    "attempts",
    "failed_attempts",
    "timeouts",
    "drops",
    "garbage",
    "benchmark_failures",
    "overheat_waits",
    "cooldown_s",
    "low_battery",
    "reconnects",
)


def elf_arch(header: bytes) -> tuple[int, int]:
    """(class bits, e_machine) of an ELF header; LetiError if ``header`` is not ELF."""
    if len(header) < 20 or header[:4] != b"\x7fELF" or header[4] not in (1, 2) or header[5] not in (1, 2):
        raise LetiError("not an ELF executable", "benchmark_binary")
    machine = struct.unpack("<H" if header[5] == 1 else ">H", header[18:20])[0]
    return (32 if header[4] == 1 else 64), machine


def binary_abis(header: bytes) -> list[str]:
    """The Android ABIs an ELF binary with this header runs as."""
    arch = elf_arch(header)
    return [abi for abi, spec in ABI_ELF.items() if spec == arch]


# --------------------------------------------------------------------------------------- pure helpers


@dataclass(frozen=True)
class Health:
    """Battery and thermal state read from sysfs. Temperatures in °C."""

    battery_level: int | None = None
    battery_temp_c: float | None = None
    thermal_c: dict = field(default_factory=dict)  # zone type (or zoneN) -> °C

    @property
    def max_thermal_c(self) -> float | None:
        return max(self.thermal_c.values()) if self.thermal_c else None


@dataclass
class DeviceInfo:
    """What ``leti devices`` shows for one device."""

    serial: str
    state: str = "device"  # device | unreachable
    model: str = ""
    manufacturer: str = ""
    soc: str = ""
    abi: str = ""
    abis: tuple[str, ...] = ()
    android_version: str = ""
    sdk: int | None = None
    hw_serial: str = ""
    battery_level: int | None = None
    battery_temp_c: float | None = None
    max_thermal_c: float | None = None
    thermal_c: dict = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["abis"] = list(self.abis)
        return d


def parse_getprop(text: str) -> dict[str, str]:
    """``[key]: [value]`` lines of ``getprop`` into a dict."""
    return dict(re.findall(r"^\[([^\]]+)\]: \[(.*)\]\s*$", text, re.M))


def _celsius(raw: str) -> float | None:
    """sysfs temperatures come in m°C, d°C or °C depending on the driver; normalise, drop nonsense."""
    try:
        value = float(raw)
    except ValueError:
        return None
    if abs(value) >= 1000:
        value /= 1000
    elif abs(value) >= 200:
        value /= 10
    return value if -30.0 <= value <= 150.0 else None


def parse_health(text: str) -> Health:
    """Parse ``grep -H . <battery files> <thermal zone files>`` output (``path:value`` lines)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        path, sep, value = line.strip().partition(":")
        if sep and path.startswith("/sys/"):
            values[path] = value.strip()
    level = values.get("/sys/class/power_supply/battery/capacity", "")
    btemp = values.get("/sys/class/power_supply/battery/temp")
    thermal: dict[str, float] = {}
    for path, value in values.items():
        m = re.fullmatch(r"/sys/class/thermal/(thermal_zone\d+)/temp", path)
        if m:
            temp = _celsius(value)
            if temp is not None:
                zone = values.get(f"/sys/class/thermal/{m[1]}/type") or m[1]
                key = zone if zone not in thermal else f"{zone}:{m[1]}"
                thermal[key] = temp
    return Health(
        battery_level=int(level) if level.isdigit() else None,
        battery_temp_c=None if btemp is None or not re.fullmatch(r"-?\d+", btemp) else int(btemp) / 10,
        thermal_c=thermal,
    )


def parse_cpu_freqs(text: str) -> dict[int, int]:
    """``grep -H . /sys/devices/system/cpu/cpu*/cpufreq/cpuinfo_max_freq`` -> {cpu: max kHz}."""
    found = re.findall(r"/sys/devices/system/cpu/cpu(\d+)/cpufreq/cpuinfo_max_freq:(\d+)", text)
    return {int(cpu): int(khz) for cpu, khz in found}


def affinity_mask(affinity, cpu_max_khz: dict[int, int] | None = None) -> str | None:
    """Hex CPU mask (no ``0x``) for ``Settings.affinity``.

    ``'big'`` means every core faster than the slowest cluster, ``'little'`` the slowest cluster
    (both: all cores on a homogeneous CPU). A string of hex digits is a mask; a tuple lists CPU ids.
    """
    if affinity is None:
        return None
    if isinstance(affinity, (tuple, list)):
        if not affinity or not all(isinstance(c, int) and 0 <= c < 64 for c in affinity):
            raise LetiError(f"CPU ids must be integers in 0..63, got {affinity!r}", "settings.affinity")
        return format(sum(1 << c for c in set(affinity)), "x")
    if not isinstance(affinity, str):
        raise LetiError(
            f"must be 'big', 'little', a hex mask or CPU ids, got {affinity!r}", "settings.affinity"
        )
    if affinity in ("big", "little"):
        if not cpu_max_khz:
            raise DeviceError(
                f"cannot resolve {affinity!r}: the device reports no CPU frequencies", "settings.affinity"
            )
        slowest = min(cpu_max_khz.values())
        if affinity == "little":
            cpus = [c for c, f in cpu_max_khz.items() if f == slowest]
        else:
            cpus = [c for c, f in cpu_max_khz.items() if f > slowest] or list(cpu_max_khz)
        return format(sum(1 << c for c in cpus), "x")
    text = affinity.lower()
    text = text[2:] if text.startswith("0x") else text
    if not re.fullmatch(r"[0-9a-f]{1,16}", text) or int(text, 16) == 0:
        raise LetiError(
            f"must be 'big', 'little' or a non-zero hex mask, got {affinity!r}", "settings.affinity"
        )
    return format(int(text, 16), "x")


def benchmark_argv(binary: str, model: str, settings: Settings, extra_args: Sequence[str] = ()) -> list[str]:
    """The ``benchmark_model`` command line for ``settings`` (unquoted argv)."""
    argv = [
        binary,
        f"--graph={model}",
        f"--num_threads={settings.threads}",
        f"--warmup_runs={settings.warmup}",
        f"--num_runs={settings.runs}",
        f"--min_secs={settings.min_time_s:g}",
        "--warmup_min_secs=0",
    ]
    if settings.delegate == "gpu":
        argv += [
            "--use_gpu=true",
            f"--gpu_precision_loss_allowed={str(settings.gpu_precision_loss_allowed).lower()}",
        ]
    elif settings.delegate == "nnapi":
        argv.append("--use_nnapi=true")
    else:
        argv.append(f"--use_xnnpack={str(settings.xnnpack).lower()}")
    if settings.op_profiling:
        argv.append("--enable_op_profiling=true")
    argv.extend(extra_args)
    return argv


def shell_command(argv: Sequence[str], mask: str | None = None) -> str:
    """Quote ``argv`` for the device shell, optionally under ``taskset mask``."""
    words = (["taskset", mask] if mask else []) + list(argv)
    return " ".join(shlex.quote(w) for w in words)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _remote_name(model_bytes: bytes, name: str | None) -> str:
    if name is None:
        return f"model-{hashlib.sha256(model_bytes).hexdigest()[:16]}.tflite"
    if not isinstance(name, str) or not 1 <= len(name) <= 128:
        raise LetiError("must be a string of 1..128 characters", "name")
    if "/" in name or name in (".", "..") or re.search(r"[\x00-\x1f]", name):
        raise LetiError(f"must be a plain file name (no '/', no control characters), got {name!r}", "name")
    return name if name.endswith(".tflite") else name + ".tflite"


def _check_remote_dir(path: str) -> str:
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path or "\n" in path:
        raise LetiError(f"must be an absolute device path, got {path!r}", "remote_dir")
    if ".." in path.split("/"):
        raise LetiError(f"must not contain '..', got {path!r}", "remote_dir")
    return path.rstrip("/") or "/"


# --------------------------------------------------------------------------------------- transport


def _adb():
    """adb-shell's modules, imported on first use so that leti imports without it."""
    from adb_shell import adb_device, exceptions
    from adb_shell.transport.tcp_transport import TcpTransport

    return adb_device, exceptions, TcpTransport


def _tcp_transport(host: str, port: int):
    """adb-shell's TcpTransport, made to notice a closed connection and to finish partial writes.

    The stock transport treats EOF as "no data yet" (the client then spins until its read timeout,
    which is long for a benchmark), ignores short ``send()`` counts on big pushes, and leaves Nagle
    on although it writes each packet as two small writes (header, payload): ~40 ms per command.
    """
    import select
    import socket

    _, exceptions, TcpTransport = _adb()

    class _Transport(TcpTransport):
        def connect(self, transport_timeout_s):
            super().connect(transport_timeout_s)
            self._connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def bulk_read(self, numbytes, transport_timeout_s):
            data = super().bulk_read(numbytes, transport_timeout_s)
            if not data:
                raise ConnectionResetError(f"{host}:{port} closed the connection")
            return data

        def bulk_write(self, data, transport_timeout_s):
            view = memoryview(data)
            while view:
                _, writable, _ = select.select([], [self._connection], [], transport_timeout_s)
                if not writable:
                    raise exceptions.TcpTimeoutException(f"sending to {host}:{port} timed out")
                view = view[self._connection.send(view) :]
            return len(data)

    return _Transport(host, port)


def _usb_device(serial: str | None, timeout_s: float):
    adb_device, exceptions, _ = _adb()
    if adb_device.UsbTransport is None:
        raise LetiError("USB needs the 'usb' extra of adb-shell (pip install 'adb-shell[usb]')", "address")
    try:
        return adb_device.AdbDeviceUsb(serial=serial, default_transport_timeout_s=timeout_s)
    except exceptions.UsbDeviceNotFoundError as exc:
        raise DeviceError(f"no USB device {serial or ''} found: {exc}", "address") from exc


class _Garbage(Exception):
    """benchmark_model printed something that is not a report; worth another try."""


# --------------------------------------------------------------------------------------- runner


class AdbRunner:
    """Measure models on one Android device. Not thread-safe: use one runner per thread and device.

    Parameters are stored only; the device is contacted on first use (or by :meth:`connect`).
    """

    def __init__(
        self,
        address: str,
        benchmark_binary: str | Path | None = None,
        *,
        key_path: str | Path | None = None,
        remote_dir: str = DEFAULT_REMOTE_DIR,
        device_name: str | None = None,
        max_temp_c: float = 45.0,
        min_battery: int = 20,
        cooldown_poll_s: float = 5.0,
        cooldown_max_wait_s: float = 300.0,
        battery_wait_s: float = 0.0,
        connect_timeout_s: float = 10.0,
        command_timeout_s: float = 30.0,
        run_timeout_s: float = 600.0,
        attempts: int = 3,
        backoff_s: float = 1.0,
        backoff_max_s: float = 30.0,
        extra_args: Sequence[str] = (),
    ):
        self.address = address
        self.benchmark_binary = benchmark_binary
        self.key_path = key_path
        self.remote_dir = remote_dir
        self.device_name = device_name
        self.max_temp_c = max_temp_c
        self.min_battery = min_battery
        self.cooldown_poll_s = cooldown_poll_s
        self.cooldown_max_wait_s = cooldown_max_wait_s
        self.battery_wait_s = battery_wait_s
        self.connect_timeout_s = connect_timeout_s
        self.command_timeout_s = command_timeout_s
        self.run_timeout_s = run_timeout_s
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.extra_args = tuple(extra_args)
        self._dev = None
        self._signer = None
        self._props: dict[str, str] | None = None
        self._cpu_khz: dict[int, int] | None = None
        self._dir_ready = False
        self._binary_pushed: str | None = None
        self._counts: dict[str, float] = dict.fromkeys(_COUNTER_KEYS, 0)

    # -- connection
    @property
    def fault_counts(self) -> dict[str, float]:
        """Faults seen so far: timeouts, drops, garbage, benchmark_failures, overheat_waits, low_battery…"""
        return dict(self._counts)

    @property
    def connected(self) -> bool:
        return self._dev is not None and self._dev.available

    def connect(self) -> None:
        """Open (or reopen) the ADB connection. Raises DeviceError if the device refuses it."""
        if self.connected:
            return
        kind, host, port = parse_address(self.address)
        _check_remote_dir(self.remote_dir)
        adb_device, exceptions, _ = _adb()
        self._load_signer()
        if kind == "tcp":
            dev = adb_device.AdbDevice(
                _tcp_transport(host, port), default_transport_timeout_s=self.command_timeout_s
            )
        else:
            dev = _usb_device(host, self.command_timeout_s)
        try:
            dev.connect(
                rsa_keys=[self._signer],
                transport_timeout_s=self.connect_timeout_s,
                auth_timeout_s=self.connect_timeout_s,
                read_timeout_s=self.connect_timeout_s,
            )
        except exceptions.DeviceAuthError as exc:
            dev.close()
            raise DeviceError(f"{self.address} refused our ADB key: {exc}", "address") from exc
        except BaseException:
            dev.close()
            raise
        self._dev = dev
        self._dir_ready = False

    def _load_signer(self) -> None:
        if self._signer is None:
            from leti.device_runner.adb_keys import load_signer  # deferred: loads cryptography

            self._signer = load_signer(self.key_path)

    def close(self) -> None:
        dev, self._dev = self._dev, None
        if dev is not None:
            with contextlib.suppress(OSError):
                dev.close()

    def __enter__(self) -> AdbRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _sh(self, command: str, timeout_s: float | None = None) -> str:
        t = timeout_s or self.command_timeout_s
        return self._dev.shell(command, transport_timeout_s=t, read_timeout_s=t, timeout_s=t)

    def _retrying(self, op: Callable[[], T], what: str) -> T:
        """Run ``op`` on a live connection; on transport faults or garbage, reconnect and retry."""
        _, exc_mod, _ = _adb()
        timeouts = (exc_mod.AdbTimeoutError, exc_mod.TcpTimeoutException, TimeoutError)
        drops = (
            ConnectionError,
            OSError,
            exc_mod.AdbConnectionError,
            exc_mod.InvalidResponseError,
            exc_mod.InvalidCommandError,
            exc_mod.InvalidChecksumError,
        )
        parse_address(self.address)
        self._load_signer()  # key problems are not worth retrying
        last: BaseException | None = None
        for attempt in range(1, self.attempts + 1):
            self._counts["attempts"] += 1
            try:
                self.connect()
                return op()
            except timeouts as exc:
                self._counts["timeouts"] += 1
                last = exc
            except drops as exc:
                self._counts["drops"] += 1
                last = exc
            except _Garbage as exc:
                self._counts["garbage"] += 1
                last = exc.__cause__ or exc
                self._counts["failed_attempts"] += 1
                if attempt < self.attempts:
                    time.sleep(min(self.backoff_s * 2 ** (attempt - 1), self.backoff_max_s))
                continue
            except (exc_mod.AdbCommandFailureException, exc_mod.PushFailedError) as exc:
                raise DeviceError(f"{self.address}: {what} failed on the device: {exc}", "device") from exc
            self._counts["failed_attempts"] += 1
            self.close()  # a transport fault leaves the stream state unknown: start afresh
            self._counts["reconnects"] += 1
            if attempt < self.attempts:
                time.sleep(min(self.backoff_s * 2 ** (attempt - 1), self.backoff_max_s))
        reason = f"{type(last).__name__}: {last}" if last is not None else "no attempt made"
        raise DeviceError(
            f"{self.address}: {what} failed after {self.attempts} attempts ({reason})", "device"
        )

    # -- device state
    def _getprop(self) -> dict[str, str]:
        if self._props is None:
            props = parse_getprop(self._sh("getprop"))
            if not props:
                raise DeviceError(f"{self.address}: getprop returned nothing", "device")
            self._props = props
        return self._props

    def _cpu_freqs(self) -> dict[int, int]:
        if self._cpu_khz is None:
            self._cpu_khz = parse_cpu_freqs(
                self._sh("grep -H . /sys/devices/system/cpu/cpu*/cpufreq/cpuinfo_max_freq")
            )
        return self._cpu_khz

    def _read_health(self) -> Health:
        return parse_health(
            self._sh(
                "grep -H . /sys/class/power_supply/battery/capacity /sys/class/power_supply/battery/temp "
                "/sys/class/thermal/thermal_zone*/type /sys/class/thermal/thermal_zone*/temp"
            )
        )

    def health(self) -> Health:
        """Battery level and temperatures now."""
        return self._retrying(self._read_health, "reading health")

    def device_info(self) -> DeviceInfo:
        """Model, SoC, ABI, Android version, battery and temperatures of the device."""

        def op() -> DeviceInfo:
            props = self._getprop()
            h = self._read_health()
            sdk = props.get("ro.build.version.sdk", "")
            return DeviceInfo(
                serial=self.address,
                model=props.get("ro.product.model", ""),
                manufacturer=props.get("ro.product.manufacturer", ""),
                soc=props.get("ro.soc.model")
                or props.get("ro.board.platform")
                or props.get("ro.hardware", ""),
                abi=props.get("ro.product.cpu.abi", ""),
                abis=tuple(a for a in props.get("ro.product.cpu.abilist", "").split(",") if a),
                android_version=props.get("ro.build.version.release", ""),
                sdk=int(sdk) if sdk.isdigit() else None,
                hw_serial=props.get("ro.serialno", ""),
                battery_level=h.battery_level,
                battery_temp_c=h.battery_temp_c,
                max_thermal_c=h.max_thermal_c,
                thermal_c=dict(h.thermal_c),
            )

        return self._retrying(op, "reading device info")

    def _wait_until_ready(self) -> Health:
        """Block until the battery is charged enough and the device has cooled down."""
        start = time.monotonic()
        hot = low = False
        while True:
            h = self._read_health()
            waited = time.monotonic() - start
            if h.battery_level is not None and h.battery_level < self.min_battery:
                if not low:
                    self._counts["low_battery"] += 1
                    low = True
                if waited >= self.battery_wait_s:
                    raise DeviceError(
                        f"{self.address}: battery at {h.battery_level}% is below {self.min_battery}%",
                        "device.battery",
                    )
            elif h.max_thermal_c is not None and h.max_thermal_c > self.max_temp_c:
                if not hot:
                    self._counts["overheat_waits"] += 1
                    hot = True
                if waited >= self.cooldown_max_wait_s:
                    raise DeviceError(
                        f"{self.address}: still {h.max_thermal_c:.1f} °C (> {self.max_temp_c:g} °C) after "
                        f"waiting {waited:.0f} s to cool down",
                        "device.thermal",
                    )
            else:
                if hot:
                    self._counts["cooldown_s"] += waited
                return h
            time.sleep(self.cooldown_poll_s)

    # -- Runner protocol
    def _device_slug(self) -> str:
        if self.device_name:
            return self.device_name
        return _slug(self._getprop().get("ro.product.model", "")) or "android"

    def targets(self) -> list[str]:
        """Target names this device can be measured as (CPU thread counts, big/little, GPU, NNAPI)."""

        def op() -> list[str]:
            dev = self._device_slug()
            freqs = self._cpu_freqs()
            ncpu = len(freqs) or 1
            names = [f"{dev}-tflite-cpu-{t}t" for t in (1, 2, 4, 8) if t <= ncpu]
            if len(set(freqs.values())) > 1:
                names += [f"{dev}-tflite-cpu-1t-big", f"{dev}-tflite-cpu-1t-little"]
            names += [f"{dev}-tflite-gpu", f"{dev}-tflite-nnapi"]
            for name in names:
                parse_target(name)
            return names

        return self._retrying(op, "listing targets")

    def target_for(self, settings: Settings) -> str:
        """The target name that measurements with ``settings`` belong to."""
        dev = self._retrying(self._device_slug, "reading device name")
        name = f"{dev}-tflite-{settings.delegate}"
        if settings.delegate == "cpu":
            name += f"-{settings.threads}t" + ("" if settings.xnnpack else "-noxnn")
        if isinstance(settings.affinity, str) and settings.affinity in ("big", "little"):
            name += f"-{settings.affinity}"
        elif settings.affinity is not None:
            name += f"-m{affinity_mask(settings.affinity)}"
        parse_target(name)
        return name

    def measure(self, model_bytes: bytes, settings: Settings, *, name: str | None = None) -> Measurement:
        """Run ``benchmark_model`` on the device and return its statistics in ms (raw text kept).

        ``name`` is the file name the model gets on the device (default: its content hash).
        """
        if not isinstance(model_bytes, (bytes, bytearray)) or len(model_bytes) < 8:
            raise LetiError("must be the bytes of a .tflite model", "model_bytes")
        if bytes(model_bytes[4:8]) != _TFLITE_IDENT:
            raise LetiError("is not a .tflite flatbuffer (no 'TFL3' identifier)", "model_bytes")
        if not isinstance(settings, Settings):
            raise LetiError(f"must be a Settings, got {type(settings).__name__}", "settings")
        if not isinstance(settings.affinity, str) or settings.affinity not in ("big", "little"):
            affinity_mask(settings.affinity)  # reject a bad mask before touching the device
        remote_dir = _check_remote_dir(self.remote_dir)
        model_path = f"{remote_dir}/{_remote_name(bytes(model_bytes), name)}"
        binary = self._read_binary()
        binary_sha = hashlib.sha256(binary).hexdigest()
        binary_path = f"{remote_dir}/benchmark_model"

        def op() -> Measurement:
            props = self._getprop()
            abis = [a for a in props.get("ro.product.cpu.abilist", "").split(",") if a]
            abis = abis or [props.get("ro.product.cpu.abi", "")]
            if not set(binary_abis(binary)) & set(abis):
                raise LetiError(
                    f"{self.benchmark_binary} is built for {binary_abis(binary) or 'an unknown machine'}, "
                    f"the device runs {abis}",
                    "benchmark_binary",
                )
            self._wait_until_ready()
            mask = affinity_mask(settings.affinity, self._cpu_freqs() if settings.affinity else None)
            if not self._dir_ready:
                self._expect_silent(self._sh(shell_command(["mkdir", "-p", remote_dir])), "mkdir")
                self._dir_ready = True
            self._dev.push(
                io.BytesIO(bytes(model_bytes)), model_path, st_mode=0o100644, **self._io_timeouts()
            )
            self._ensure_binary(binary, binary_sha, binary_path)
            argv = benchmark_argv(binary_path, model_path, settings, self.extra_args)
            out = self._sh(shell_command(argv, mask), timeout_s=self.run_timeout_s)
            # After a transport fault the model stays; the retry pushes it to the same path again.
            self._expect_silent(self._sh(shell_command(["rm", "-f", model_path])), "rm")
            try:
                parsed = bm_output.parse(out)
            except bm_output.BenchmarkFailedError as exc:
                self._counts["benchmark_failures"] += 1
                raise DeviceError(f"{self.address}: {exc.reason}", "benchmark_model") from exc
            except LetiError as exc:
                raise _Garbage(str(exc)) from exc
            versions = {
                "runner": "adb",
                "device_model": props.get("ro.product.model", ""),
                "soc": props.get("ro.soc.model") or props.get("ro.board.platform", ""),
                "android": props.get("ro.build.version.release", ""),
                "abi": props.get("ro.product.cpu.abi", ""),
                "benchmark_model_sha256": binary_sha[:16],
            }
            if mask:
                versions["affinity_mask"] = mask
            return bm_output.to_measurement(parsed, out, model_bytes=len(model_bytes), versions=versions)

        return self._retrying(op, "measuring")

    # -- measure helpers
    def _io_timeouts(self) -> dict:
        return {"transport_timeout_s": self.command_timeout_s, "read_timeout_s": self.command_timeout_s}

    def _read_binary(self) -> bytes:
        if self.benchmark_binary is None:
            raise LetiError(
                "no benchmark_model binary given (AdbRunner(address, benchmark_binary=…))", "benchmark_binary"
            )
        path = Path(self.benchmark_binary)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise LetiError(f"cannot read {path}: {exc.strerror or exc}", "benchmark_binary") from exc
        elf_arch(data[:64])
        return data

    def _ensure_binary(self, binary: bytes, sha: str, remote: str) -> None:
        if self._binary_pushed == sha:
            _mode, size, _mtime = self._dev.stat(remote, **self._io_timeouts())
            if size == len(binary):
                return
        self._dev.push(io.BytesIO(binary), remote, st_mode=0o100755, **self._io_timeouts())
        self._expect_silent(self._sh(shell_command(["chmod", "755", remote])), "chmod")
        self._binary_pushed = sha

    def _expect_silent(self, output: str, what: str) -> None:
        if output.strip():
            raise DeviceError(f"{self.address}: {what} failed: {output.strip()}", "device")


def list_devices(addresses: Sequence[str], **runner_options) -> list[DeviceInfo]:
    """Device info for each address; unreachable devices are listed with ``state='unreachable'``."""
    runner_options.setdefault("attempts", 1)
    infos = []
    for address in addresses:
        runner = AdbRunner(address, **runner_options)
        try:
            infos.append(runner.device_info())
        except LetiError as exc:
            infos.append(DeviceInfo(serial=str(address), state="unreachable", error=str(exc)))
        finally:
            runner.close()
    return infos
