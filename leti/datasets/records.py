"""The store's records (archs, targets, jobs), its column layouts, and the validators every write goes through."""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from leti.errors import LetiError
from leti.measurement import Measurement
from leti.space import canonical_space
from leti.targets import parse_target, validate_name

JOB_STATES = ("pending", "running", "done", "failed")

MEAS_COLS = (
    "arch_id", "target", "settings_key", "rep", "latency_ms", "mean_ms", "median_ms", "std_ms", "min_ms", "max_ms",
    "p90_ms", "n_runs", "init_ms", "raw_unit", "raw", "stats", "source", "measured_at", "tool_versions", "created",
)  # fmt: skip
STAT_FLOATS = ("mean_ms", "median_ms", "std_ms", "min_ms", "max_ms", "p90_ms", "init_ms")
ARCH_COLS = ("arch_id", "hash", "space", "arch_text", "spec_json", "macs", "params", "peak_bytes", "n_nodes")

# Columns of Store.measurements(), with their pandas dtypes (fixed, so an empty frame has the same shape).
FRAME_COLUMNS: dict[str, str] = {
    "arch_id": "object", "hash": "object", "space": "object", "arch_text": "object", "spec_json": "object",
    "macs": "Int64", "params": "Int64", "peak_bytes": "Int64", "n_nodes": "Int64",
    "target": "object", "settings_key": "object", "rep": "Int64", "latency_ms": "float64",
    "mean_ms": "float64", "median_ms": "float64", "std_ms": "float64", "min_ms": "float64", "max_ms": "float64",
    "p90_ms": "float64", "n_runs": "Int64", "init_ms": "float64", "raw_unit": "object", "source": "object",
    "measured_at": "object", "tool_versions": "object", "stats": "object",
}  # fmt: skip
# Columns of Store.kernel_measurements() (the kernel_measurements table joined with archs), with their dtypes.
KERNEL_FRAME_COLUMNS: dict[str, str] = {
    "arch_id": "object", "space": "object", "arch_text": "object", "target": "object", "settings_key": "object",
    "node": "int64", "latency_ms": "float64", "runtime_kernel": "object", "source": "object",
}  # fmt: skip
KERNEL_COLS = (
    "arch_id", "target", "settings_key", "node", "latency_ms", "runtime_kernel", "source", "created",
)  # fmt: skip
# What `leti dataset export` writes and `leti import` reads back: the frame plus the raw tool output and the row's
# creation time, so that export -> import -> export is byte-identical. Kernel measurements travel in the same file:
# a row with a ``kernel_node`` is the time of that one kernel of the arch (never a whole-model latency), and it
# leaves the measurement-only columns (rep, the stats, ...) empty; whole-model rows leave the two kernel columns
# empty.
EXPORT_COLUMNS: dict[str, str] = {
    **FRAME_COLUMNS, "raw": "object", "created": "object", "kernel_node": "Int64", "runtime_kernel": "object",
}  # fmt: skip
INT_COLUMNS = frozenset(c for c, t in EXPORT_COLUMNS.items() if t == "Int64")
FLOAT_COLUMNS = frozenset(c for c, t in EXPORT_COLUMNS.items() if t == "float64")
# text columns that may be NULL; a CSV cannot tell NULL from "", so the store never keeps "" in them
NULLABLE_TEXT = frozenset({"raw_unit", "raw", "stats", "measured_at", "tool_versions"})


def now_text() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def to_json(value: Any, what: str) -> str:
    def default(o):
        if hasattr(o, "item"):  # numpy scalars
            return o.item()
        if hasattr(o, "tolist"):  # numpy arrays
            return o.tolist()
        raise TypeError(f"{type(o).__name__} is not JSON-serialisable")

    try:
        return json.dumps(value, sort_keys=True, default=default, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise LetiError(f"cannot store as JSON: {e}", what) from None


def opt_int(value, what: str) -> int | None:
    if value is None:
        return None
    try:
        x = int(value)
    except (TypeError, ValueError, OverflowError):
        x = None
    if isinstance(value, bool) or x is None or x != value or x < 0:  # x != value rejects 2.5 and "2"
        raise LetiError(f"must be a non-negative integer or None, got {value!r}", what)
    return x


def opt_float(value, what: str) -> float | None:
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise LetiError(f"must be a number or None, got {value!r}", what) from None
    if math.isnan(x):
        return None  # a stat that was not measured
    if not math.isfinite(x):
        raise LetiError(f"must be finite, got {value!r}", what)
    return x


def latency(value, what: str) -> float:
    x = opt_float(value, what) if not isinstance(value, bool) else None
    if x is None or x <= 0:
        raise LetiError(f"must be a positive number of milliseconds, got {value!r}", what)
    return x


def text(value, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise LetiError(f"must be a non-empty string, got {value!r}", what)
    return value


def opt_text(value) -> str | None:
    return None if value is None or value == "" else str(value)


@dataclass(frozen=True)
class ArchRecord:
    """One architecture. ``arch_id`` hashes the arch as given; ``hash`` its pruned (isomorphism) class."""

    arch_id: str
    hash: str
    space: str
    arch_text: str  # the space's native text (NB201 string, FBNet blocks, Arch JSON)
    spec_json: str  # the Arch JSON
    macs: int | None = None
    params: int | None = None
    peak_bytes: int | None = None
    n_nodes: int | None = None
    created: str | None = None  # set by the store

    def __post_init__(self):
        text(self.arch_id, "arch.arch_id")
        text(self.hash, "arch.hash")
        object.__setattr__(self, "space", canonical_space(self.space, "arch.space"))
        if not isinstance(self.arch_text, str):
            raise LetiError(f"must be a string, got {type(self.arch_text).__name__}", "arch.arch_text")
        if not isinstance(self.spec_json, str):
            raise LetiError(f"must be a JSON string, got {type(self.spec_json).__name__}", "arch.spec_json")
        for name in ("macs", "params", "peak_bytes", "n_nodes"):
            object.__setattr__(self, name, opt_int(getattr(self, name), f"arch.{name}"))


@dataclass
class TargetRecord:
    """A device + runtime + settings that measurements are grouped by (see leti.targets)."""

    name: str
    device: str = ""
    runtime: str = ""
    unit: str = ""
    delegate: str = ""
    threads: int | None = None
    precision: str = ""
    versions: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    noise_floor: float | None = None  # ms; differences below this on this target are noise
    created: str | None = None
    updated: str | None = None

    @classmethod
    def from_name(cls, name: str, **extra) -> TargetRecord:
        """Fill device, runtime, unit, threads and precision from a target name in leti's grammar."""
        spec = parse_target(name)
        values = dict(
            device=spec.device,
            runtime=spec.runtime,
            unit=spec.unit,
            threads=spec.threads,
            precision=spec.precision,
        )
        return cls(name=name, **{**values, **extra})


JOB_COLS = "id, run_id, arch_id, target, settings_key, state, worker, attempts, error, updated, lease_until, max_attempts"


@dataclass(frozen=True)
class Job:
    """One (arch, target, settings) to measure within a run. ``attempts`` counts claims: a claim's lease is
    (id, attempts), so a worker whose lease was taken over cannot act on the job as if it still held it."""

    id: int
    run_id: str
    arch_id: str
    target: str
    settings_key: str
    state: str  # pending | running | done | failed
    worker: str | None
    attempts: int
    error: str | None
    updated: str
    lease_until: float | None = None  # database clock, epoch s
    max_attempts: int = 5


def measurement_values(arch_id: str, target: str, settings_key: str, m, source: str, rep: int = 0) -> tuple:
    """One measurements row (MEAS_COLS order) from a Measurement, its dict form, or a dict with just latency_ms."""
    text(arch_id, "arch_id")
    validate_name(target)
    text(settings_key, "settings_key")
    if isinstance(m, Measurement):
        d = m.to_dict()
        lat = m.latency_ms
    elif isinstance(m, Mapping):
        d = dict(m)
        lat = d.get("latency_ms", d.get("median_ms"))
    else:
        raise LetiError(f"must be a Measurement or a dict, got {type(m).__name__}", "measurement")
    lat = latency(lat, "measurement.latency_ms")
    # NaN/inf are not JSON; an unmeasured stat is stored as null.
    stats = {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in d.items() if k != "raw"
    }
    floats = {k: opt_float(d.get(k), f"measurement.{k}") for k in STAT_FLOATS}
    return (
        arch_id, target, settings_key, rep, lat, floats["mean_ms"], floats["median_ms"], floats["std_ms"],
        floats["min_ms"], floats["max_ms"], floats["p90_ms"], opt_int(d.get("n_runs"), "measurement.n_runs"),
        floats["init_ms"], str(d.get("raw_unit") or "ms"), opt_text(d.get("raw")), to_json(stats, "measurement"),
        str(source or ""), opt_text(d.get("when")), to_json(d.get("versions") or {}, "measurement.versions"),
        now_text(),
    )  # fmt: skip
