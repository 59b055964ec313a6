"""The ADB wire protocol: packet framing (24-byte header, checksum, magic) and the AUTH and SYNC constants."""

from __future__ import annotations

import struct

# --- ADB wire format: 24-byte little-endian header (cmd, arg0, arg1, length, checksum, magic) ---
HEADER = struct.Struct("<6I")
A_VERSION = 0x01000001
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3
CMDS = {b"CNXN", b"AUTH", b"OPEN", b"OKAY", b"WRTE", b"CLSE", b"SYNC"}
SYNC = struct.Struct("<4sI")


def _wire(cmd: bytes) -> int:
    return struct.unpack("<I", cmd)[0]


def pack(cmd: bytes, arg0: int, arg1: int, data: bytes = b"") -> bytes:
    word = _wire(cmd)
    return HEADER.pack(word, arg0, arg1, len(data), sum(data) & 0xFFFFFFFF, word ^ 0xFFFFFFFF) + data


class Dropped(Exception):
    """The connection to the client is gone (or was cut on purpose)."""
