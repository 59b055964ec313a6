"""The measurement store: one SQLite file (WAL) with archs, targets, measurements, runs and the job queue.

Concurrency model: every thread gets its own connection (SQLite connections must not be shared across
threads mid-transaction), and every write transaction starts with ``BEGIN IMMEDIATE``, which takes the
database's single write lock up front. So a read-then-write (claiming a job) can never interleave with
another writer, in this process or another, and ``busy_timeout`` makes contenders wait instead of failing.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leti.datasets.csvio import canonical_space
from leti.errors import LetiError, StoreError
from leti.measurement import Measurement
from leti.paths import default_store_path
from leti.targets import parse_target, validate_name

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_VERSION = 1
JOB_STATES = ("pending", "running", "done", "failed")
BUSY_TIMEOUT_S = 60.0

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS archs (
        arch_id TEXT PRIMARY KEY,
        hash TEXT NOT NULL,
        space TEXT NOT NULL,
        arch_text TEXT NOT NULL,
        spec_json TEXT NOT NULL,
        macs INTEGER, params INTEGER, peak_bytes INTEGER, n_nodes INTEGER,
        created TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS archs_hash ON archs(hash)",
    "CREATE INDEX IF NOT EXISTS archs_space ON archs(space)",
    """CREATE TABLE IF NOT EXISTS targets (
        name TEXT PRIMARY KEY,
        device TEXT NOT NULL DEFAULT '', runtime TEXT NOT NULL DEFAULT '', unit TEXT NOT NULL DEFAULT '',
        delegate TEXT NOT NULL DEFAULT '', threads INTEGER, precision TEXT NOT NULL DEFAULT '',
        versions TEXT NOT NULL DEFAULT '{}', info TEXT NOT NULL DEFAULT '{}',
        noise_floor REAL,
        created TEXT NOT NULL, updated TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS measurements (
        id INTEGER PRIMARY KEY,
        arch_id TEXT NOT NULL REFERENCES archs(arch_id),
        target TEXT NOT NULL REFERENCES targets(name),
        settings_key TEXT NOT NULL,
        latency_ms REAL NOT NULL CHECK (latency_ms > 0),
        mean_ms REAL, median_ms REAL, std_ms REAL, min_ms REAL, max_ms REAL, p90_ms REAL,
        n_runs INTEGER, init_ms REAL, raw_unit TEXT, raw TEXT, stats TEXT,
        source TEXT NOT NULL DEFAULT '', measured_at TEXT, tool_versions TEXT,
        created TEXT NOT NULL,
        UNIQUE (arch_id, target, settings_key))""",
    "CREATE INDEX IF NOT EXISTS measurements_target ON measurements(target, settings_key)",
    """CREATE TABLE IF NOT EXISTS runs (
        run_id TEXT PRIMARY KEY, params TEXT NOT NULL, created TEXT NOT NULL, report TEXT)""",
    """CREATE TABLE IF NOT EXISTS jobs (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs(run_id),
        arch_id TEXT NOT NULL REFERENCES archs(arch_id),
        target TEXT NOT NULL REFERENCES targets(name),
        settings_key TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'running', 'done', 'failed')),
        worker TEXT, attempts INTEGER NOT NULL DEFAULT 0, error TEXT,
        updated TEXT NOT NULL,
        UNIQUE (run_id, arch_id, target, settings_key))""",
    # claim_job scans pending jobs of one run (optionally one target) in id order.
    "CREATE INDEX IF NOT EXISTS jobs_claim ON jobs(run_id, state, target, id)",
    # Kernel measurements: the time of one kernel of an arch (``node``: the graph node that heads it), e.g. a GPU
    # profiler's per-op times or a single-kernel model timed alone (leti kernels build). Kept apart from
    # ``measurements`` so whole-model training data never mixes with them.
    """CREATE TABLE IF NOT EXISTS kernel_measurements (
        id INTEGER PRIMARY KEY,
        arch_id TEXT NOT NULL REFERENCES archs(arch_id),
        target TEXT NOT NULL REFERENCES targets(name),
        settings_key TEXT NOT NULL,
        node INTEGER NOT NULL CHECK (node >= 0),
        latency_ms REAL NOT NULL CHECK (latency_ms >= 0),
        runtime_kernel TEXT NOT NULL DEFAULT '',
        source TEXT NOT NULL DEFAULT '',
        created TEXT NOT NULL,
        UNIQUE (arch_id, target, settings_key, node))""",
    "CREATE INDEX IF NOT EXISTS kernel_measurements_target ON kernel_measurements(target, settings_key)",
]

_MEAS_COLS = (
    "arch_id", "target", "settings_key", "latency_ms", "mean_ms", "median_ms", "std_ms", "min_ms", "max_ms",
    "p90_ms", "n_runs", "init_ms", "raw_unit", "raw", "stats", "source", "measured_at", "tool_versions", "created",
)  # fmt: skip
_STAT_FLOATS = ("mean_ms", "median_ms", "std_ms", "min_ms", "max_ms", "p90_ms", "init_ms")

# Columns of Store.measurements(), with their pandas dtypes (fixed, so an empty frame has the same shape).
FRAME_COLUMNS: dict[str, str] = {
    "arch_id": "object", "hash": "object", "space": "object", "arch_text": "object", "spec_json": "object",
    "macs": "Int64", "params": "Int64", "peak_bytes": "Int64", "n_nodes": "Int64",
    "target": "object", "settings_key": "object", "latency_ms": "float64",
    "mean_ms": "float64", "median_ms": "float64", "std_ms": "float64", "min_ms": "float64", "max_ms": "float64",
    "p90_ms": "float64", "n_runs": "Int64", "init_ms": "float64", "raw_unit": "object", "source": "object",
    "measured_at": "object", "tool_versions": "object", "stats": "object",
}  # fmt: skip
_ARCH_FRAME_COLS = (
    "arch_id",
    "hash",
    "space",
    "arch_text",
    "spec_json",
    "macs",
    "params",
    "peak_bytes",
    "n_nodes",
)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _json(value: Any, what: str) -> str:
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


def _opt_int(value, what: str) -> int | None:
    if value is None:
        return None
    try:
        x = int(value)
    except (TypeError, ValueError, OverflowError):
        x = None
    if isinstance(value, bool) or x is None or x != value or x < 0:  # x != value rejects 2.5 and "2"
        raise LetiError(f"must be a non-negative integer or None, got {value!r}", what)
    return x


def _opt_float(value, what: str) -> float | None:
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


def _latency(value, what: str) -> float:
    x = _opt_float(value, what) if not isinstance(value, bool) else None
    if x is None or x <= 0:
        raise LetiError(f"must be a positive number of milliseconds, got {value!r}", what)
    return x


def _text(value, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise LetiError(f"must be a non-empty string, got {value!r}", what)
    return value


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
        _text(self.arch_id, "arch.arch_id")
        _text(self.hash, "arch.hash")
        object.__setattr__(self, "space", canonical_space(self.space, "arch.space"))
        if not isinstance(self.arch_text, str):
            raise LetiError(f"must be a string, got {type(self.arch_text).__name__}", "arch.arch_text")
        if not isinstance(self.spec_json, str):
            raise LetiError(f"must be a JSON string, got {type(self.spec_json).__name__}", "arch.spec_json")
        for name in ("macs", "params", "peak_bytes", "n_nodes"):
            object.__setattr__(self, name, _opt_int(getattr(self, name), f"arch.{name}"))


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


@dataclass(frozen=True)
class Job:
    """One (arch, target, settings) to measure within a run."""

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


class Store:
    """The SQLite measurement store. Use ``Store.open(path)`` (default ``$LETI_HOME/leti.db``) as a context manager."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path).expanduser() if path is not None else default_store_path()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []
        self._pid = os.getpid()
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create {self.path.parent}: {e.strerror or e}", "store") from None
        if self.path.is_dir():
            raise StoreError(f"cannot open {self.path}: is a directory", "store")
        self._init_schema()

    @classmethod
    def open(cls, path: str | os.PathLike | None = None) -> Store:
        return cls(path)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    def close(self) -> None:
        """Close every connection this store opened (in all threads)."""
        with self._lock:
            self._closed = True
            conns, self._conns = self._conns, []
        for conn in conns:
            with suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()

    # -- connections and transactions ------------------------------------------------------------------

    def _error(self, action: str, e: Exception) -> StoreError:
        return StoreError(f"cannot {action} {self.path}: {e}", "store")

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError(f"{self.path} is closed", "store")
        if os.getpid() != self._pid:  # forked: a parent's SQLite handle must not be used in the child
            self._pid, self._local, self._conns = os.getpid(), threading.local(), []
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        try:
            conn = sqlite3.connect(
                str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            conn.execute("PRAGMA synchronous = NORMAL")  # in WAL this survives a process crash
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as e:
            raise self._error("open", e) from None
        if str(mode).lower() != "wal":
            conn.close()
            raise StoreError(f"cannot use WAL mode for {self.path} (got {mode!r})", "store")
        self._local.conn = conn
        with self._lock:
            self._conns.append(conn)
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``). Store calls made inside it join it, so they commit
        or roll back together."""
        conn = self._conn()
        if conn.in_transaction:
            yield conn
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise self._error("write to", e) from None
        try:
            yield conn
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._error("write to", exc) from None
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise self._error("write to", e) from None

    def _read(self, sql: str, params: Iterable = ()) -> list[tuple]:
        try:
            return self._conn().execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as e:
            raise self._error("read", e) from None

    def _init_schema(self) -> None:
        with self.transaction() as conn:
            for stmt in _SCHEMA:
                conn.execute(stmt)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
            elif int(row[0]) > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {row[0]}, newer than this leti supports ({SCHEMA_VERSION})",
                    "store",
                )

    def schema_version(self) -> int:
        return int(self._read("SELECT value FROM meta WHERE key = 'schema_version'")[0][0])

    # -- archs --------------------------------------------------------------------------------------------

    _ARCH_INSERT = (
        "INSERT INTO archs (arch_id, hash, space, arch_text, spec_json, macs, params, peak_bytes, n_nodes, created)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (arch_id) DO NOTHING"
    )
    # An existing arch keeps its created time and any metric the new record leaves unknown (None).
    _ARCH_UPDATE = (
        "UPDATE archs SET hash = ?, space = ?, arch_text = ?, spec_json = ?, macs = COALESCE(?, macs),"
        " params = COALESCE(?, params), peak_bytes = COALESCE(?, peak_bytes), n_nodes = COALESCE(?, n_nodes)"
        " WHERE arch_id = ?"
    )

    def upsert_arch(self, rec: ArchRecord) -> bool:
        """Insert or update one arch; True if it was new."""
        return self.upsert_archs([rec]) == 1

    def upsert_archs(self, recs: Iterable[ArchRecord]) -> int:
        """Insert or update many archs in one transaction; returns how many were new."""
        recs = list(recs)
        for r in recs:
            if not isinstance(r, ArchRecord):
                raise LetiError(f"expected an ArchRecord, got {type(r).__name__}", "arch")
        now = _now()
        common = [
            (r.hash, r.space, r.arch_text, r.spec_json, r.macs, r.params, r.peak_bytes, r.n_nodes)
            for r in recs
        ]
        ins = [(r.arch_id, *c, now) for r, c in zip(recs, common, strict=True)]
        upd = [(*c, r.arch_id) for r, c in zip(recs, common, strict=True)]
        with self.transaction() as conn:
            before = conn.total_changes
            conn.executemany(self._ARCH_INSERT, ins)
            new = conn.total_changes - before
            if new < len(recs):  # some existed: refresh them (a no-op for the rows just inserted)
                conn.executemany(self._ARCH_UPDATE, upd)
        return new

    def get_arch(self, arch_id: str) -> ArchRecord | None:
        rows = self._read(
            "SELECT arch_id, hash, space, arch_text, spec_json, macs, params, peak_bytes, n_nodes, created"
            " FROM archs WHERE arch_id = ?",
            (arch_id,),
        )
        return ArchRecord(*rows[0]) if rows else None

    def _missing_archs(self, conn: sqlite3.Connection, arch_ids: Iterable[str]) -> list[str]:
        missing = []
        for a in dict.fromkeys(arch_ids):
            if conn.execute("SELECT 1 FROM archs WHERE arch_id = ?", (a,)).fetchone() is None:
                missing.append(a)
        return missing

    def _unknown_arch_error(self, missing: list[str]) -> LetiError:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        return LetiError(f"unknown arch {missing[0]!r}{more}; upsert_arch it first", "arch_id")

    # -- targets --------------------------------------------------------------------------------------------

    _TARGET_COLS = (
        "name",
        "device",
        "runtime",
        "unit",
        "delegate",
        "threads",
        "precision",
        "versions",
        "info",
        "noise_floor",
        "created",
        "updated",
    )

    def upsert_target(self, rec: TargetRecord) -> bool:
        """Insert or replace a target's description; True if it was new.

        ``created`` is kept, and so is a stored noise floor when ``rec.noise_floor`` is None.
        """
        if not isinstance(rec, TargetRecord):
            raise LetiError(f"expected a TargetRecord, got {type(rec).__name__}", "target")
        validate_name(rec.name)
        threads = _opt_int(rec.threads, "target.threads")
        noise = _opt_float(rec.noise_floor, "target.noise_floor")
        now = _now()
        values = (
            rec.name,
            rec.device or "",
            rec.runtime or "",
            rec.unit or "",
            rec.delegate or "",
            threads,
            rec.precision or "",
            _json(rec.versions or {}, "target.versions"),
            _json(rec.info or {}, "target.info"),
            noise,
            now,
            now,
        )
        with self.transaction() as conn:
            new = conn.execute("SELECT 1 FROM targets WHERE name = ?", (rec.name,)).fetchone() is None
            conn.execute(
                f"INSERT INTO targets ({', '.join(self._TARGET_COLS)}) VALUES ({', '.join('?' * 12)})"
                " ON CONFLICT (name) DO UPDATE SET device = excluded.device, runtime = excluded.runtime,"
                " unit = excluded.unit, delegate = excluded.delegate, threads = excluded.threads,"
                " precision = excluded.precision, versions = excluded.versions, info = excluded.info,"
                " noise_floor = COALESCE(excluded.noise_floor, targets.noise_floor), updated = excluded.updated",
                values,
            )
        return new

    def ensure_targets(self, names: Iterable[str]) -> int:
        """Add targets known only by name (imports); existing ones are left alone. Returns how many were new."""
        names = list(dict.fromkeys(validate_name(n) for n in names))
        now = _now()
        with self.transaction() as conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT INTO targets (name, created, updated) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
                [(n, now, now) for n in names],
            )
            return conn.total_changes - before

    def set_noise_floor(self, target: str, value: float | None) -> None:
        """Record the latency difference (ms) below which two measurements on ``target`` are indistinguishable."""
        validate_name(target)
        value = _opt_float(value, "noise_floor")
        if value is not None and value < 0:
            raise LetiError(f"must be >= 0, got {value!r}", "noise_floor")
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE targets SET noise_floor = ?, updated = ? WHERE name = ?", (value, _now(), target)
            )
            if cur.rowcount == 0:
                raise LetiError(f"unknown target {target!r}", "target")

    def get_target(self, name: str) -> TargetRecord | None:
        rows = self._read(f"SELECT {', '.join(self._TARGET_COLS)} FROM targets WHERE name = ?", (name,))
        return self._target(rows[0]) if rows else None

    def list_targets(self) -> list[TargetRecord]:
        return [
            self._target(r)
            for r in self._read(f"SELECT {', '.join(self._TARGET_COLS)} FROM targets ORDER BY name")
        ]

    @staticmethod
    def _target(row: tuple) -> TargetRecord:
        d = dict(zip(Store._TARGET_COLS, row, strict=True))
        d["versions"], d["info"] = json.loads(d["versions"]), json.loads(d["info"])
        return TargetRecord(**d)

    # -- measurements -------------------------------------------------------------------------------------

    @staticmethod
    def _measurement_values(arch_id: str, target: str, settings_key: str, m, source: str) -> tuple:
        """One measurements row from a Measurement (or its dict form, or a dict with just latency_ms)."""
        _text(arch_id, "arch_id")
        validate_name(target)
        _text(settings_key, "settings_key")
        if isinstance(m, Measurement):
            d = m.to_dict()
            latency = m.latency_ms
        elif isinstance(m, Mapping):
            d = dict(m)
            latency = d.get("latency_ms", d.get("median_ms"))
        else:
            raise LetiError(f"must be a Measurement or a dict, got {type(m).__name__}", "measurement")
        latency = _latency(latency, "measurement.latency_ms")
        # NaN/inf are not JSON; an unmeasured stat is stored as null.
        stats = {
            k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in d.items()
            if k != "raw"
        }
        floats = {k: _opt_float(d.get(k), f"measurement.{k}") for k in _STAT_FLOATS}
        return (
            arch_id,
            target,
            settings_key,
            latency,
            floats["mean_ms"],
            floats["median_ms"],
            floats["std_ms"],
            floats["min_ms"],
            floats["max_ms"],
            floats["p90_ms"],
            _opt_int(d.get("n_runs"), "measurement.n_runs"),
            floats["init_ms"],
            str(d.get("raw_unit") or "ms"),
            str(d.get("raw") or ""),
            _json(stats, "measurement"),
            str(source or ""),
            d.get("when"),
            _json(d.get("versions") or {}, "measurement.versions"),
            _now(),
        )

    def _insert_measurement(self, conn: sqlite3.Connection, values: tuple, replace: bool) -> bool:
        """Insert one row inside the caller's transaction; True if it is new."""
        arch_id, target = values[0], values[1]
        if self._missing_archs(conn, [arch_id]):
            raise self._unknown_arch_error([arch_id])
        now = _now()
        conn.execute(
            "INSERT INTO targets (name, created, updated) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (target, now, now),
        )
        exists = conn.execute(
            "SELECT 1 FROM measurements WHERE arch_id = ? AND target = ? AND settings_key = ?", values[:3]
        ).fetchone()
        if exists and not replace:
            return False
        if exists:
            sets = ", ".join(f"{c} = ?" for c in _MEAS_COLS[3:])
            conn.execute(
                f"UPDATE measurements SET {sets} WHERE arch_id = ? AND target = ? AND settings_key = ?",
                values[3:] + values[:3],
            )
            return False
        conn.execute(
            f"INSERT INTO measurements ({', '.join(_MEAS_COLS)}) VALUES ({', '.join('?' * len(_MEAS_COLS))})",
            values,
        )
        return True

    def add_measurement(
        self,
        arch_id: str,
        target: str,
        settings_key: str,
        m: Measurement | Mapping,
        source: str,
        replace: bool = False,
    ) -> bool:
        """Store one measurement; False if one already existed for (arch_id, target, settings_key).

        The existing row is kept unless ``replace=True``. The arch must be in the store; an unknown target
        is added by name.
        """
        values = self._measurement_values(arch_id, target, settings_key, m, source)
        with self.transaction() as conn:
            return self._insert_measurement(conn, values, replace)

    def add_measurements_bulk(self, rows: Iterable[Mapping]) -> int:
        """Fast path for imported data where only the latency is known; returns how many rows were new.

        Each row is a mapping with arch_id, target, latency_ms and optionally settings_key (default
        ``"import"``), source and measured_at. Existing rows are kept, and within ``rows`` the first wins.
        """
        now = _now()
        values, targets = [], {}
        for i, r in enumerate(rows):
            try:
                arch_id, target, latency = r["arch_id"], r["target"], r["latency_ms"]
            except KeyError as e:
                raise LetiError(f"missing key {e.args[0]!r}", f"rows[{i}]") from None
            targets.setdefault(target, None)
            key = _text(r.get("settings_key", "import"), f"rows[{i}].settings_key")
            values.append(
                (
                    _text(arch_id, f"rows[{i}].arch_id"),
                    target,
                    key,
                    _latency(latency, f"rows[{i}].latency_ms"),
                    str(r.get("source") or ""),
                    r.get("measured_at"),
                    now,
                )
            )
        with self.transaction() as conn:
            self.ensure_targets(targets)
            return self._insert_rows(
                conn,
                "INSERT INTO measurements (arch_id, target, settings_key, latency_ms, source, measured_at, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (arch_id, target, settings_key) DO NOTHING",
                values,
            )

    def _insert_rows(self, conn: sqlite3.Connection, sql: str, values: list[tuple]) -> int:
        """``executemany`` of rows whose first value is an arch id; an unknown arch gives one clear LetiError.
        Returns how many rows were new."""
        before = conn.total_changes
        try:
            conn.executemany(sql, values)
        except sqlite3.IntegrityError:
            missing = self._missing_archs(conn, (v[0] for v in values))
            if missing:
                raise self._unknown_arch_error(missing) from None
            raise
        return conn.total_changes - before

    def add_kernel_measurements(self, rows: Iterable[Mapping]) -> int:
        """Store kernel times: mappings with arch_id, target, node, latency_ms and optionally settings_key (default
        ``"import"``), runtime_kernel and source. Existing rows are kept; returns how many were new."""
        now = _now()
        values, targets = [], {}
        for i, r in enumerate(rows):
            try:
                arch_id, target, node, ms = r["arch_id"], r["target"], r["node"], r["latency_ms"]
            except KeyError as e:
                raise LetiError(f"missing key {e.args[0]!r}", f"rows[{i}]") from None
            x = _opt_float(ms, f"rows[{i}].latency_ms")
            if x is None or x < 0:
                raise LetiError(
                    f"must be a non-negative number of milliseconds, got {ms!r}", f"rows[{i}].latency_ms"
                )
            targets.setdefault(validate_name(target), None)
            values.append((_text(arch_id, f"rows[{i}].arch_id"), target,
                           _text(r.get("settings_key", "import"), f"rows[{i}].settings_key"),
                           _opt_int(node, f"rows[{i}].node"), x, str(r.get("runtime_kernel") or ""),
                           str(r.get("source") or ""), now))  # fmt: skip
        with self.transaction() as conn:
            self.ensure_targets(targets)
            return self._insert_rows(
                conn,
                "INSERT INTO kernel_measurements (arch_id, target, settings_key, node, latency_ms, runtime_kernel,"
                " source, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (arch_id, target, settings_key, node) DO NOTHING",
                values,
            )

    def kernel_measurements(self, target: str | None = None, settings_key: str | None = None) -> pd.DataFrame:
        """Kernel times joined with their archs: arch_id, space, arch_text, target, settings_key, node, latency_ms,
        runtime_kernel, source."""
        import pandas as pd

        cols = ["arch_id", "space", "arch_text", "target", "settings_key", "node", "latency_ms", "runtime_kernel",
                "source"]  # fmt: skip
        sql = (
            "SELECT k.arch_id, a.space, a.arch_text, k.target, k.settings_key, k.node, k.latency_ms,"
            " k.runtime_kernel, k.source FROM kernel_measurements k JOIN archs a ON a.arch_id = k.arch_id WHERE 1"
        )
        params: list = []
        if target is not None:
            sql, params = sql + " AND k.target = ?", params + [target]
        if settings_key is not None:
            sql, params = sql + " AND k.settings_key = ?", params + [settings_key]
        rows = self._read(sql + " ORDER BY k.target, k.settings_key, k.arch_id, k.node", params)
        return pd.DataFrame.from_records(rows, columns=cols)

    def has_measurement(self, arch_id: str, target: str, settings_key: str) -> bool:
        return bool(
            self._read(
                "SELECT 1 FROM measurements WHERE arch_id = ? AND target = ? AND settings_key = ?",
                (arch_id, target, settings_key),
            )
        )

    def get_measurement(self, arch_id: str, target: str, settings_key: str) -> dict | None:
        """One stored row as a dict (JSON columns decoded), or None."""
        rows = self._read(
            f"SELECT {', '.join(_MEAS_COLS)} FROM measurements WHERE arch_id = ? AND target = ? AND settings_key = ?",
            (arch_id, target, settings_key),
        )
        if not rows:
            return None
        d = dict(zip(_MEAS_COLS, rows[0], strict=True))
        for k in ("stats", "tool_versions"):
            d[k] = json.loads(d[k]) if d[k] is not None else None
        return d

    # -- runs and jobs ----------------------------------------------------------------------------------

    def create_run(self, run_id: str, params: Mapping | None = None) -> bool:
        """Start a run; False if it already existed (a resume: its params are left as they were)."""
        _text(run_id, "run_id")
        with self.transaction() as conn:
            before = conn.total_changes
            conn.execute(
                "INSERT INTO runs (run_id, params, created) VALUES (?, ?, ?) ON CONFLICT (run_id) DO NOTHING",
                (run_id, _json(dict(params or {}), "params"), _now()),
            )
            return conn.total_changes > before

    def get_run(self, run_id: str) -> dict | None:
        """``{run_id, params, created, report, progress}`` or None."""
        rows = self._read("SELECT run_id, params, created, report FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            return None
        rid, params, created, report = rows[0]
        return {
            "run_id": rid,
            "params": json.loads(params),
            "created": created,
            "report": json.loads(report) if report is not None else None,
            "progress": self.run_progress(run_id),
        }

    def set_run_report(self, run_id: str, report: Mapping) -> None:
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE runs SET report = ? WHERE run_id = ?", (_json(dict(report), "report"), run_id)
            )
            if cur.rowcount == 0:
                raise LetiError(f"unknown run {run_id!r}", "run_id")

    def add_jobs(self, run_id: str, items: Iterable, skip_measured: bool = False) -> int:
        """Queue (arch_id, target, settings_key) items (tuples or mappings) for a run; returns how many are new.

        Idempotent: an item already queued for this run is left as it is. With ``skip_measured``, items
        that already have a measurement in the store are not queued.
        """
        now = _now()
        values = []
        for i, it in enumerate(items):
            if isinstance(it, Mapping):
                it = (it.get("arch_id"), it.get("target"), it.get("settings_key"))
            it = tuple(it)
            if len(it) != 3:
                raise LetiError(f"expected (arch_id, target, settings_key), got {it!r}", f"items[{i}]")
            arch_id, target, key = it
            values.append(
                (
                    run_id,
                    _text(arch_id, f"items[{i}].arch_id"),
                    validate_name(target),
                    _text(key, f"items[{i}].settings_key"),
                    now,
                )
            )
        guard = (
            " AND NOT EXISTS (SELECT 1 FROM measurements m WHERE m.arch_id = ?2 AND m.target = ?3"
            " AND m.settings_key = ?4)"
            if skip_measured
            else ""
        )
        sql = (
            "INSERT INTO jobs (run_id, arch_id, target, settings_key, state, attempts, updated)"
            f" SELECT ?1, ?2, ?3, ?4, 'pending', 0, ?5 WHERE 1{guard}"
            " ON CONFLICT (run_id, arch_id, target, settings_key) DO NOTHING"
        )
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
                raise LetiError(f"unknown run {run_id!r}; create_run it first", "run_id")
            self.ensure_targets(v[2] for v in values)
            before = conn.total_changes
            try:
                conn.executemany(sql, values)
            except sqlite3.IntegrityError:
                missing = self._missing_archs(conn, (v[1] for v in values))
                if missing:
                    raise self._unknown_arch_error(missing) from None
                raise
            return conn.total_changes - before

    _JOB_COLS = "id, run_id, arch_id, target, settings_key, state, worker, attempts, error, updated"

    def _job(self, conn: sqlite3.Connection, job_id: int) -> Job | None:
        row = conn.execute(f"SELECT {self._JOB_COLS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job(*row) if row else None

    def get_job(self, job_id: int) -> Job | None:
        rows = self._read(f"SELECT {self._JOB_COLS} FROM jobs WHERE id = ?", (job_id,))
        return Job(*rows[0]) if rows else None

    def jobs(self, run_id: str, state: str | None = None) -> list[Job]:
        sql, params = f"SELECT {self._JOB_COLS} FROM jobs WHERE run_id = ?", [run_id]
        if state is not None:
            sql, params = sql + " AND state = ?", params + [self._state(state)]
        return [Job(*r) for r in self._read(sql + " ORDER BY id", params)]

    @staticmethod
    def _state(state: str) -> str:
        if state not in JOB_STATES:
            raise LetiError(f"must be one of {', '.join(JOB_STATES)}, got {state!r}", "state")
        return state

    def claim_job(self, run_id: str, worker: str, target: str | None = None) -> Job | None:
        """Take the oldest pending job of the run (of ``target`` if given) and mark it running; None if none.

        Atomic across threads and processes: the select and the update share one BEGIN IMMEDIATE transaction.
        """
        _text(worker, "worker")
        sql, params = "SELECT id FROM jobs WHERE run_id = ? AND state = 'pending'", [run_id]
        if target is not None:
            sql, params = sql + " AND target = ?", params + [target]
        with self.transaction() as conn:
            row = conn.execute(sql + " ORDER BY id LIMIT 1", params).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET state = 'running', worker = ?, attempts = attempts + 1, updated = ? WHERE id = ?",
                (worker, _now(), row[0]),
            )
            return self._job(conn, row[0])

    def _finish_job(self, conn: sqlite3.Connection, job_id: int) -> None:
        conn.execute(
            "UPDATE jobs SET state = 'done', error = NULL, updated = ? WHERE id = ?", (_now(), job_id)
        )

    def complete_job(self, job_id: int, measurement: Measurement | Mapping, source: str = "") -> bool:
        """Store the job's measurement and mark it done, in one transaction; True if the measurement is new."""
        with self.transaction() as conn:
            job = self._job(conn, job_id)
            if job is None:
                raise LetiError(f"no job {job_id!r}", "job_id")
            values = self._measurement_values(job.arch_id, job.target, job.settings_key, measurement, source)
            new = self._insert_measurement(conn, values, replace=False)
            self._finish_job(conn, job_id)
        return new

    def fail_job(self, job_id: int, error: str, requeue: bool = True, max_attempts: int = 3) -> str:
        """Record a failure; the job goes back to pending while it has attempts left, else to failed.

        Returns the job's new state. A job already done stays done (a late report from a stale worker).
        """
        with self.transaction() as conn:
            job = self._job(conn, job_id)
            if job is None:
                raise LetiError(f"no job {job_id!r}", "job_id")
            if job.state == "done":
                return "done"
            state = "pending" if requeue and job.attempts < max_attempts else "failed"
            conn.execute(
                "UPDATE jobs SET state = ?, error = ?, updated = ? WHERE id = ?",
                (state, str(error), _now(), job_id),
            )
            return state

    def requeue_running(self, run_id: str, worker: str | None = None) -> int:
        """Put the run's running jobs (of ``worker`` if given) back to pending; returns how many."""
        sql, params = (
            "UPDATE jobs SET state = 'pending', updated = ? WHERE run_id = ? AND state = 'running'",
            [
                _now(),
                run_id,
            ],
        )
        if worker is not None:
            sql, params = sql + " AND worker = ?", params + [worker]
        with self.transaction() as conn:
            return conn.execute(sql, params).rowcount

    def run_progress(self, run_id: str) -> dict[str, int]:
        """Job counts per state, plus ``total``."""
        counts = dict.fromkeys(JOB_STATES, 0)
        for state, n in self._read(
            "SELECT state, COUNT(*) FROM jobs WHERE run_id = ? GROUP BY state", (run_id,)
        ):
            counts[state] = n
        counts["total"] = sum(counts[s] for s in JOB_STATES)
        return counts

    # -- queries ----------------------------------------------------------------------------------------

    def measurements(
        self, target: str | None = None, space: str | None = None, settings_key: str | None = None
    ) -> pd.DataFrame:
        """All measurements joined with their archs, one row each, in a stable order.

        Columns: see FRAME_COLUMNS (arch_id, hash, space, arch_text, spec_json, macs, ..., target,
        settings_key, latency_ms, the stats, source, measured_at; JSON columns stay JSON text).
        """
        import pandas as pd  # late: workers and the job queue should not pay for pandas

        cols = [("a." if c in _ARCH_FRAME_COLS else "m.") + c for c in FRAME_COLUMNS]
        sql = f"SELECT {', '.join(cols)} FROM measurements m JOIN archs a ON a.arch_id = m.arch_id WHERE 1"
        params: list = []
        if target is not None:
            sql, params = sql + " AND m.target = ?", params + [target]
        if space is not None:
            sql, params = sql + " AND a.space = ?", params + [canonical_space(space)]
        if settings_key is not None:
            sql, params = sql + " AND m.settings_key = ?", params + [settings_key]
        rows = self._read(sql + " ORDER BY m.target, m.settings_key, a.space, m.arch_id", params)
        df = pd.DataFrame.from_records(rows, columns=list(FRAME_COLUMNS))
        return df.astype(FRAME_COLUMNS)

    to_pandas = measurements

    def stats(self) -> dict:
        """Counts: archs, measurements, and measured archs (distinct arch_id) per target and per (target, space)."""
        per_target = {name: 0 for (name,) in self._read("SELECT name FROM targets ORDER BY name")}
        for t, n in self._read("SELECT target, COUNT(DISTINCT arch_id) FROM measurements GROUP BY target"):
            per_target[t] = n
        per_target_space: dict[str, dict[str, int]] = {}
        for t, s, n in self._read(
            "SELECT m.target, a.space, COUNT(DISTINCT m.arch_id) FROM measurements m"
            " JOIN archs a ON a.arch_id = m.arch_id GROUP BY m.target, a.space ORDER BY m.target, a.space"
        ):
            per_target_space.setdefault(t, {})[s] = n
        return {
            "archs": self._read("SELECT COUNT(*) FROM archs")[0][0],
            "hashes": self._read("SELECT COUNT(DISTINCT hash) FROM archs")[0][0],
            "measurements": self._read("SELECT COUNT(*) FROM measurements")[0][0],
            "targets": len(per_target),
            "per_target": per_target,
            "per_target_space": per_target_space,
        }

    def export(self, path: str | os.PathLike, target: str | None = None) -> int:
        """Write ``measurements(target)`` to ``path`` (.csv or .parquet by suffix); returns the row count."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".parquet", ".pq"):
            raise LetiError(
                f"cannot export to {path}: unknown suffix {path.suffix!r} (use .csv or .parquet)", "path"
            )
        df = self.measurements(target=target)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if suffix == ".csv":
                df.to_csv(path, index=False)
            else:
                df.to_parquet(path, index=False)
        except OSError as e:
            raise StoreError(f"cannot write {path}: {e.strerror or e}", "path") from None
        except ImportError as e:
            raise LetiError(f"parquet export needs pyarrow ({e})", "path") from None
        return len(df)
