"""The one way leti reads JSON that comes from outside (flags, files, stdin, predictor metadata): bounded in size
and nesting, UTF-8 only, finite numbers only. Every failure is a one-line ``LetiError`` naming the input, never a
``RecursionError``, a ``UnicodeDecodeError`` or an infinity that breaks something later."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from leti.errors import LetiError, excerpt

MAX_BYTES = 16 << 20
MAX_DEPTH = 64  # deeper than any arch, config or metadata leti writes (an Arch JSON is 4 deep)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number leti accepts")


def _finite_float(text: str) -> float:
    v = float(text)
    if v in (float("inf"), float("-inf")):
        raise ValueError(f"{excerpt(text, 40)} is too large a number")
    return v


def depth(obj: Any, limit: int) -> int:
    """Nesting depth of lists and dicts in ``obj``, counted without recursion; stops once past ``limit``."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, dict):
            o = list(o.values())
        elif not isinstance(o, list):
            continue
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        stack.extend((x, d + 1) for x in o if isinstance(x, list | dict))
    return deepest


def loads(data: str | bytes, field: str, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``data`` as JSON; ``LetiError`` naming ``field`` when it is too large, too deep, not UTF-8, not JSON,
    or holds NaN, Infinity or a number beyond float range."""
    size = len(data)
    if size > max_bytes:
        raise LetiError(f"is {size:,} bytes of JSON; at most {max_bytes:,} are read", field)
    if isinstance(data, bytes | bytearray):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise LetiError(f"is not UTF-8 text (byte {e.start})", field) from None
    try:
        obj = json.loads(data, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise LetiError(f"is nested too deeply (at most {max_depth} levels)", field) from None
    except ValueError as e:  # JSONDecodeError, a number past float range, an int of too many digits
        raise LetiError(f"is not valid JSON ({excerpt(e, 120)})", field) from None
    if depth(obj, max_depth) > max_depth:
        raise LetiError(f"is nested too deeply (at most {max_depth} levels)", field)
    return obj


def read_bytes(path: str | Path, field: str | None = None, max_bytes: int = MAX_BYTES) -> bytes:
    """The bytes of a file of at most ``max_bytes``; ``LetiError`` naming ``field`` (default: the path)."""
    p = Path(path)
    name = field or str(path)
    try:
        with open(p, "rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise LetiError("no such file", name) from None
    except IsADirectoryError:
        raise LetiError("is a directory, not a file", name) from None
    except (OSError, ValueError) as e:  # ENAMETOOLONG, a NUL byte in the name, …
        raise LetiError(f"cannot read ({getattr(e, 'strerror', None) or e})", name) from None
    if len(data) > max_bytes:
        raise LetiError(f"is larger than {max_bytes:,} bytes", name)
    return data


def load_file(path: str | Path, field: str | None = None, max_bytes: int = MAX_BYTES,
              max_depth: int = MAX_DEPTH) -> Any:  # fmt: skip
    """JSON from a file, bounded as ``loads``."""
    name = field or str(path)
    return loads(read_bytes(path, name, max_bytes), name, max_bytes, max_depth)


__all__ = ["MAX_BYTES", "MAX_DEPTH", "depth", "load_file", "loads", "read_bytes"]
