"""Device addresses as ``leti devices`` and target bindings take them: ``HOST:PORT``, ``usb`` or ``usb:SERIAL``."""

from __future__ import annotations

import re

from leti.errors import LetiError


def parse_address(address: str) -> tuple[str, str | None, int | None]:
    """``('tcp', host, port)`` or ``('usb', serial_or_None, None)``; LetiError for anything else."""
    if not isinstance(address, str) or not address:
        raise LetiError("must be a non-empty string (host:port, usb or usb:SERIAL)", "address")
    if address == "usb":
        return "usb", None, None
    m = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})", address)
    if m:
        port = int(m[2])
        if not 1 <= port <= 65535:
            raise LetiError(f"port {port} out of range 1..65535", "address")
        return "tcp", m[1].strip("[]"), port
    serial = address[4:] if address.startswith("usb:") else address
    if re.fullmatch(r"[A-Za-z0-9._-]+", serial):
        return "usb", serial, None
    raise LetiError(f"{address!r} is not host:port, usb or usb:SERIAL", "address")
