"""The value types of every ``leti`` flag, in one place: each checks its range while argparse parses, so that a bad
value is one ``leti: error: argument --seed: …`` line and exit 2, never a traceback later in a handler.

Numeric flags never use bare ``int`` or ``float`` (tests/test_cli_fuzz.py checks every verb's parser for that).
JSON flags go through the bounded reader (``leti.importers.bounded_json``).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from leti.errors import LetiError, excerpt
from leti.importers.bounded_json import loads

BIG = 10**9  # the default upper bound of a count: anything larger is a typo, and would take forever


class _Type:
    """An argparse ``type``: a callable with a readable name (argparse shows ``__name__`` in messages)."""

    def __init__(self, name: str, parse: Callable[[str], object]):
        self.__name__ = name
        self._parse = parse

    def __call__(self, text: str):
        return self._parse(text)

    def __repr__(self) -> str:
        return self.__name__


def _bad(what: str, text: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"must be {what}, got {excerpt(repr(text), 60)}")


def int_in(lo: int, hi: int = BIG, name: str | None = None) -> _Type:
    """An integer in [lo, hi]."""
    what = f"an integer in [{lo}, {hi}]" if hi != BIG else f"an integer >= {lo}"

    def parse(text: str) -> int:
        try:
            v = int(text.strip().replace("_", ""), 10)
        except (ValueError, AttributeError):
            raise _bad(what, text) from None
        if not lo <= v <= hi:
            raise _bad(what, text)
        return v

    return _Type(name or f"int[{lo},{hi}]", parse)


def float_in(lo: float, hi: float = math.inf, *, lo_open: bool = False, name: str | None = None) -> _Type:
    """A finite number in [lo, hi] (or (lo, hi] when ``lo_open``); NaN and infinities are refused."""
    what = f"a number {'>' if lo_open else '>='} {lo:g}" + (f" and <= {hi:g}" if hi != math.inf else "")

    def parse(text: str) -> float:
        try:
            v = float(text)
        except (ValueError, TypeError):
            raise _bad(what, text) from None
        if not math.isfinite(v) or v < lo or (lo_open and v == lo) or v > hi:
            raise _bad(what, text)
        return v

    return _Type(name or f"float[{lo:g},{hi:g}]", parse)


def json_value(name: str = "JSON", kind: type | tuple = dict) -> _Type:
    """JSON text (bounded: size, depth, UTF-8, finite numbers) whose top level is ``kind``."""

    def parse(text: str):
        try:
            v = loads(text, "value", max_bytes=1 << 20)
        except LetiError as e:
            raise argparse.ArgumentTypeError(e.reason) from None
        if not isinstance(v, kind):
            kinds = kind if isinstance(kind, tuple) else (kind,)
            raise argparse.ArgumentTypeError(
                f"must be a JSON {' or '.join('object' if k is dict else k.__name__ for k in kinds)}, "
                f"got {excerpt(text, 60)}"
            )
        return v

    return _Type(name, parse)


# ---- the table ---------------------------------------------------------------------------------------------------
POSITIVE_INT = int_in(1, name="positive_int")
NONNEG_INT = int_in(0, name="nonneg_int")
SEED = int_in(0, 2**32 - 1, name="seed")
PORT = int_in(0, 65535, name="port")
COUNT = int_in(1, 10_000_000, name="count")  # archs to sample, jobs to make
TRAIN_SIZE = int_in(2, 10_000_000, name="train_size")  # one arch trains nothing (LightGBM aborted on it)
PERCENT = int_in(0, 100, name="percent")
STEPS = int_in(1, 16, name="steps")
MACS = int_in(1, 10**15, name="macs")
BYTES = int_in(1024, 1 << 34, name="bytes")
POSITIVE_FLOAT = float_in(0.0, lo_open=True, name="positive_float")
NONNEG_FLOAT = float_in(0.0, name="nonneg_float")
PROBABILITY = float_in(0.0, 1.0, name="probability")
SECONDS = float_in(0.0, 7 * 24 * 3600.0, lo_open=True, name="seconds")  # a timeout, a polling period
DURATION = float_in(0.0, 7 * 24 * 3600.0, name="duration")  # a wait that may be 0
LEASE = float_in(
    1.0, 86400.0, name="lease_seconds"
)  # how long a claimed job stays leased without a heartbeat
WATCH_PERIOD = float_in(0.1, 3600.0, name="watch_seconds")
CELSIUS = float_in(-50.0, 150.0, name="celsius")
MARGIN = float_in(0.0, 0.9, name="margin")  # a share of the budget
JSON_OBJECT = json_value("json_object", dict)

NUMERIC_TYPES = frozenset({POSITIVE_INT, NONNEG_INT, SEED, PORT, COUNT, TRAIN_SIZE, PERCENT, STEPS, MACS, BYTES,
                           POSITIVE_FLOAT, NONNEG_FLOAT, PROBABILITY, SECONDS, DURATION, LEASE, WATCH_PERIOD, CELSIUS, MARGIN})  # fmt: skip


__all__ = [
    "BYTES",
    "CELSIUS",
    "COUNT",
    "DURATION",
    "MARGIN",
    "JSON_OBJECT",
    "LEASE",
    "MACS",
    "NONNEG_FLOAT",
    "NONNEG_INT",
    "NUMERIC_TYPES",
    "PERCENT",
    "PORT",
    "POSITIVE_FLOAT",
    "POSITIVE_INT",
    "PROBABILITY",
    "SECONDS",
    "SEED",
    "STEPS",
    "TRAIN_SIZE",
    "WATCH_PERIOD",
    "float_in",
    "int_in",
    "json_value",
]
