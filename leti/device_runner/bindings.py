"""Which device measures a target: ``TARGET`` (this machine) or ``TARGET@tcp:HOST:PORT`` / ``TARGET@usb[:SERIAL]``,
and the runner for such a binding.

* ``host-litert-cpu-1t`` — this machine, through LiteRT;
* ``pixel4-tflite-cpu-4t@tcp:192.168.1.20:5555`` — an Android device over TCP (``adb tcpip 5555`` on the phone);
* ``pixel4-tflite-gpu@usb:0A1B2C3D`` — an Android device over USB by serial (``usb`` alone: the only one attached).
"""

from __future__ import annotations

from dataclasses import dataclass

from leti.device_runner.adb import AdbRunner
from leti.device_runner.address import parse_address
from leti.device_runner.base import Runner
from leti.errors import LetiError, TargetError
from leti.targets import is_host_target, validate_name


@dataclass(frozen=True)
class Binding:
    """A target measured on one device (``device`` None: this machine)."""

    target: str
    device: str | None = None

    @property
    def worker(self) -> str:
        return self.target if self.device is None else f"{self.target}@{self.device}"


def parse_binding(text: str) -> Binding:
    """``TARGET`` or ``TARGET@tcp:HOST:PORT`` / ``TARGET@usb[:SERIAL]`` / ``TARGET@HOST:PORT``."""
    if not isinstance(text, str) or not text.strip():
        raise TargetError("must be a target name, optionally @device", "target")
    target, sep, device = text.strip().partition("@")
    validate_name(target)
    if not sep:
        if not is_host_target(target):
            raise TargetError(
                f"{target!r} is not a host target; bind it to a device as {target}@tcp:HOST:PORT or "
                f"{target}@usb:SERIAL (host targets: host-litert-cpu-<N>t[-fp16|-int8][-noxnn])",
                "target",
            )
        return Binding(target)
    kind, _, rest = device.partition(":")
    if kind == "tcp":
        address = rest
    elif kind == "usb":
        address = f"usb:{rest}" if rest else "usb"
    else:
        address = device  # bare host:port
    try:
        if parse_address(address)[0] != "tcp" and kind == "tcp":
            raise LetiError("tcp: needs HOST:PORT", "address")
    except LetiError as e:
        raise TargetError(f"bad device address {device!r}: {e.reason} (use tcp:HOST:PORT or usb:SERIAL)",
                          "target") from None  # fmt: skip
    return Binding(target, address)


def make_runner(binding: Binding, benchmark_binary: str | None = None, **adb_options) -> Runner:
    """The runner that measures ``binding``: LiteRT here, or ``benchmark_model`` over ADB. Close it after use."""
    if binding.device is None:
        from leti.device_runner.local import LocalRunner  # deferred: loads LiteRT

        return LocalRunner()

    if benchmark_binary is None:
        raise LetiError(
            "an Android target needs --benchmark-binary PATH (TFLite's benchmark_model)", "benchmark_binary"
        )
    return AdbRunner(binding.device, benchmark_binary, **adb_options)
