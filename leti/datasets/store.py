"""The measurement store: archs, targets, measurements, kernel measurements, runs and the job queue, in SQLite or
PostgreSQL.

``Store.open(location)`` takes a path, ``sqlite:///PATH`` or ``postgresql://USER@HOST:PORT/DB`` (default: the
``LETI_STORE`` variable, else ``$LETI_HOME/leti.db``). Both engines hold the same schema (``schema.py``) and behave
the same: every write is idempotent (unique keys and upserts), and a bad value is a one-line LetiError.
Connections and transactions are in ``db.py``; runs, jobs and leases in ``queue.py``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from leti.datasets.db import StoreCorrupt, StoreUnavailable
from leti.datasets.location import StoreLocation
from leti.datasets.queue import JobQueue
from leti.datasets.records import (
    ARCH_COLS,
    EXPORT_COLUMNS,
    FRAME_COLUMNS,
    JOB_STATES,
    KERNEL_COLS,
    KERNEL_FRAME_COLUMNS,
    MEAS_COLS,
    NULLABLE_TEXT,
    STAT_FLOATS,
    ArchRecord,
    Job,
    TargetRecord,
    latency,
    measurement_values,
    now_text,
    opt_float,
    opt_int,
    opt_text,
    text,
    to_json,
)
from leti.datasets.schema import SCHEMA_VERSION
from leti.errors import LetiError
from leti.measurement import Measurement
from leti.space import canonical_space
from leti.targets import validate_name

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FRAME_COLUMNS", "JOB_STATES", "SCHEMA_VERSION", "ArchRecord", "BulkResult", "Job", "Store",
           "StoreCorrupt", "StoreUnavailable", "TargetRecord"]  # fmt: skip

ON_CONFLICT = ("keep-first", "keep-both", "reject")
_TARGET_COLS = ("name", "device", "runtime", "unit", "delegate", "threads", "precision", "versions", "info",
                "noise_floor", "created", "updated")  # fmt: skip


@dataclass
class BulkResult:
    """What a bulk insert did. A *duplicate* repeats a stored value (same key, same latency); a *conflict* has
    the key of a stored row but another latency."""

    new: int = 0
    duplicates: int = 0
    conflicts: int = 0
    examples: list[str] = field(default_factory=list)  # the first few conflicts, described


class Store(JobQueue):
    """The measurement store. Use ``Store.open(location)`` as a context manager.

    ``create=False`` (read-only commands) refuses a location that holds no store instead of creating one.
    """

    @classmethod
    def open(cls, location: str | os.PathLike | StoreLocation | None = None, create: bool = True) -> Store:
        return cls(location, create=create)

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
        recs.sort(key=lambda r: r.arch_id)  # one lock order for concurrent writers (PostgreSQL row locks)
        now = now_text()
        common = [
            (r.hash, r.space, r.arch_text, r.spec_json, r.macs, r.params, r.peak_bytes, r.n_nodes)
            for r in recs
        ]
        with self.transaction() as conn:
            new = self._many(
                conn,
                self._ARCH_INSERT,
                [(r.arch_id, *c, r.created or now) for r, c in zip(recs, common, strict=True)],
            )
            if new < len(recs):  # some existed: refresh them (a no-op for the rows just inserted)
                self._many(
                    conn, self._ARCH_UPDATE, [(*c, r.arch_id) for r, c in zip(recs, common, strict=True)]
                )
        return new

    def get_arch(self, arch_id: str) -> ArchRecord | None:
        rows = self._read(f"SELECT {', '.join(ARCH_COLS)}, created FROM archs WHERE arch_id = ?", (arch_id,))
        return ArchRecord(*rows[0]) if rows else None

    # -- targets --------------------------------------------------------------------------------------------

    def upsert_target(self, rec: TargetRecord) -> bool:
        """Insert or replace a target's description; True if it was new.

        ``created`` is kept, and so is a stored noise floor when ``rec.noise_floor`` is None.
        """
        if not isinstance(rec, TargetRecord):
            raise LetiError(f"expected a TargetRecord, got {type(rec).__name__}", "target")
        validate_name(rec.name)
        threads = opt_int(rec.threads, "target.threads")
        noise = opt_float(rec.noise_floor, "target.noise_floor")
        now = now_text()
        values = (rec.name, rec.device or "", rec.runtime or "", rec.unit or "", rec.delegate or "", threads,
                  rec.precision or "", to_json(rec.versions or {}, "target.versions"),
                  to_json(rec.info or {}, "target.info"), noise, now, now)  # fmt: skip
        with self.transaction() as conn:
            new = self._x(conn, "SELECT 1 FROM targets WHERE name = ?", (rec.name,)).fetchone() is None
            self._x(
                conn,
                f"INSERT INTO targets ({', '.join(_TARGET_COLS)}) VALUES ({', '.join('?' * 12)})"
                " ON CONFLICT (name) DO UPDATE SET device = excluded.device, runtime = excluded.runtime,"
                " unit = excluded.unit, delegate = excluded.delegate, threads = excluded.threads,"
                " precision = excluded.precision, versions = excluded.versions, info = excluded.info,"
                " noise_floor = COALESCE(excluded.noise_floor, targets.noise_floor), updated = excluded.updated",
                values,
            )
        return new

    def ensure_targets(self, names: Iterable[str]) -> int:
        """Add targets known only by name (imports); existing ones are left alone. Returns how many were new."""
        names = [validate_name(n) for n in names]
        with self.transaction() as conn:
            return self._ensure_target_names(conn, names)

    def set_noise_floor(self, target: str, value: float | None) -> None:
        """Record the latency difference (ms) below which two measurements on ``target`` are indistinguishable."""
        validate_name(target)
        value = opt_float(value, "noise_floor")
        if value is not None and value < 0:
            raise LetiError(f"must be >= 0, got {value!r}", "noise_floor")
        with self.transaction() as conn:
            cur = self._x(
                conn,
                "UPDATE targets SET noise_floor = ?, updated = ? WHERE name = ?",
                (value, now_text(), target),
            )
            if cur.rowcount == 0:
                raise LetiError(f"unknown target {target!r}", "target")

    def get_target(self, name: str) -> TargetRecord | None:
        rows = self._read(f"SELECT {', '.join(_TARGET_COLS)} FROM targets WHERE name = ?", (name,))
        return self._target(rows[0]) if rows else None

    def list_targets(self) -> list[TargetRecord]:
        return [
            self._target(r)
            for r in self._read(f"SELECT {', '.join(_TARGET_COLS)} FROM targets ORDER BY name")
        ]

    @staticmethod
    def _target(row: tuple) -> TargetRecord:
        d = dict(zip(_TARGET_COLS, row, strict=True))
        d["versions"], d["info"] = json.loads(d["versions"]), json.loads(d["info"])
        return TargetRecord(**d)

    # -- measurements -------------------------------------------------------------------------------------

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
        values = measurement_values(arch_id, target, settings_key, m, source)
        with self.transaction() as conn:
            if self._missing_archs(conn, [arch_id]):
                raise self._unknown_arch_error([arch_id])
            self._ensure_target_names(conn, [target])
            return self._insert_measurement(conn, values, replace)

    def add_measurements_bulk(self, rows: Iterable[Mapping]) -> int:
        """Fast path for imported data; returns how many rows were new.

        Each row is a mapping with arch_id, target, latency_ms and optionally settings_key (default
        ``"import"``), source and measured_at. Existing rows are kept, and within ``rows`` the first wins.
        """
        return self.import_measurements(rows, on_conflict="keep-first").new

    def import_measurements(self, rows: Iterable[Mapping], on_conflict: str = "keep-first") -> BulkResult:
        """Insert measurement rows (mappings with any of the export columns; arch_id, target and latency_ms at
        least), all or nothing, and say how many were new, duplicates or conflicts.

        A row repeating a stored (arch, target, settings_key) with the same latency is a duplicate and is skipped.
        With another latency it is a conflict: ``keep-first`` skips it, ``keep-both`` stores it as a repeat
        measurement (the next ``rep``), ``reject`` raises a LetiError and writes nothing. A row with an explicit
        ``rep`` (from an export) keeps it.
        """
        if on_conflict not in ON_CONFLICT:
            raise LetiError(f"must be one of {', '.join(ON_CONFLICT)}, got {on_conflict!r}", "on_conflict")
        now, targets = now_text(), set()
        values = [_row_values(r, f"rows[{i}]", now, targets) for i, r in enumerate(rows)]
        res = BulkResult()
        with self.transaction() as conn:
            missing = self._missing_archs(conn, (v[0] for v in values))
            if missing:
                raise self._unknown_arch_error(missing)
            targets = list(dict.fromkeys(v[1] for v in values))
            self._ensure_target_names(conn, targets)
            stored: dict[tuple, dict[int, float]] = {}
            for i in range(0, len(targets), 500):
                chunk = targets[i : i + 500]
                for a, t, k, rep, lat in self._x(
                    conn,
                    "SELECT arch_id, target, settings_key, rep, latency_ms FROM measurements"
                    f" WHERE target IN ({', '.join('?' * len(chunk))})",
                    chunk,
                ):
                    stored.setdefault((a, t, k), {})[rep] = lat
            inserts = []
            for i, v in enumerate(values):
                reps = stored.setdefault(v[:3], {})
                rep, lat = v[3], v[4]
                if (rep is None and lat in reps.values()) or (rep is not None and reps.get(rep) == lat):
                    res.duplicates += 1
                    continue
                if rep is None and not reps:
                    rep = 0
                elif rep is None or rep in reps:  # another value for a measured key
                    res.conflicts += 1
                    if len(res.examples) < 3:
                        res.examples.append(f"rows[{i}]: arch {v[0][:12]} on {v[1]} ({v[2]}): stored "
                                            f"{sorted(reps.values())[0]!r} ms, new {lat!r} ms")  # fmt: skip
                    if on_conflict != "keep-both":
                        continue
                    rep = max(reps) + 1
                reps[rep] = lat
                inserts.append((*v[:3], rep, *v[4:]))
            if res.conflicts and on_conflict == "reject":
                raise LetiError(f"{res.conflicts} rows conflict with stored measurements (first: {res.examples[0]}); "
                                "nothing was imported", "on_conflict")  # fmt: skip
            # only the columns this batch fills: an exchange CSV fills 7 of 20, and binding fewer is twice as fast
            used = [i for i, c in enumerate(MEAS_COLS) if any(v[i] is not None for v in inserts)]
            res.new = self._many(
                conn,
                f"INSERT INTO measurements ({', '.join(MEAS_COLS[i] for i in used)}) VALUES ({', '.join('?' * len(used))})"
                " ON CONFLICT (arch_id, target, settings_key, rep) DO NOTHING",
                [tuple(v[i] for i in used) for v in inserts],
            )
            res.duplicates += len(inserts) - res.new  # lost a race with a concurrent writer
        return res

    # -- kernel measurements ------------------------------------------------------------------------------

    def add_kernel_measurements(self, rows: Iterable[Mapping]) -> int:
        """Store kernel times; returns how many rows were new.

        Each row is a mapping with arch_id, target, node (the graph node heading the kernel), latency_ms (>= 0)
        and optionally settings_key (default ``"import"``), runtime_kernel, source and created. Like the bulk
        measurement import: stored rows are kept and within ``rows`` the first wins, so adding rows twice adds
        nothing; an unknown arch is one LetiError and nothing is written; an unknown target is added by name.
        """
        now = now_text()
        values = [_kernel_values(r, f"rows[{i}]", now) for i, r in enumerate(rows)]
        # one lock order for concurrent writers; the sort is stable, so within ``rows`` the first still wins
        values.sort(key=lambda v: v[:4])
        with self.transaction() as conn:
            missing = self._missing_archs(conn, (v[0] for v in values))
            if missing:
                raise self._unknown_arch_error(missing)
            self._ensure_target_names(conn, sorted({v[1] for v in values}))
            return self._many(conn, _KERNEL_INSERT, values)

    def kernel_measurements(self, target: str | None = None, settings_key: str | None = None) -> pd.DataFrame:
        """Kernel times joined with their archs, one row each (columns: KERNEL_FRAME_COLUMNS), ordered by target,
        settings key, arch and node."""
        import pandas as pd

        cols = KERNEL_FRAME_COLUMNS
        rows = self._rows(cols, target, None, settings_key, kernels=True)
        return pd.DataFrame.from_records(rows, columns=list(cols)).astype(cols)

    def has_measurement(self, arch_id: str, target: str, settings_key: str) -> bool:
        return bool(
            self._read(
                "SELECT 1 FROM measurements WHERE arch_id = ? AND target = ? AND settings_key = ?",
                (arch_id, target, settings_key),
            )
        )

    def get_measurement(self, arch_id: str, target: str, settings_key: str, rep: int = 0) -> dict | None:
        """One stored row as a dict (JSON columns decoded), or None."""
        rows = self._read(
            f"SELECT {', '.join(MEAS_COLS)} FROM measurements WHERE arch_id = ? AND target = ? AND settings_key = ?"
            " AND rep = ?",
            (arch_id, target, settings_key, rep),
        )
        if not rows:
            return None
        d = dict(zip(MEAS_COLS, rows[0], strict=True))
        for k in ("stats", "tool_versions"):
            d[k] = json.loads(d[k]) if d[k] is not None else None
        return d

    # -- queries ----------------------------------------------------------------------------------------

    def _rows(self, columns, target, space, settings_key, kernels: bool = False) -> list[tuple]:
        """``columns`` of the measurements (``kernels``: the kernel measurements) joined with their archs, in a
        stable order. A column the table lacks reads as NULL; ``kernel_node`` names a kernel row's node."""
        own, table, last = (
            (KERNEL_COLS, "kernel_measurements", "node") if kernels else (MEAS_COLS, "measurements", "rep")
        )
        cols = []
        for c in columns:
            c = "node" if kernels and c == "kernel_node" else c
            cols.append(f"a.{c}" if c in ARCH_COLS else f"m.{c}" if c in own else "NULL")
        sql = f"SELECT {', '.join(cols)} FROM {table} m JOIN archs a ON a.arch_id = m.arch_id WHERE 1 = 1"
        params: list = []
        if target is not None:
            sql, params = sql + " AND m.target = ?", params + [target]
        if space is not None:
            sql, params = sql + " AND a.space = ?", params + [canonical_space(space)]
        if settings_key is not None:
            sql, params = sql + " AND m.settings_key = ?", params + [settings_key]
        return self._read(sql + f" ORDER BY m.target, m.settings_key, a.space, m.arch_id, m.{last}", params)

    def measurements(
        self, target: str | None = None, space: str | None = None, settings_key: str | None = None
    ) -> pd.DataFrame:
        """All measurements joined with their archs, one row each, in a stable order.

        Columns: see FRAME_COLUMNS (arch_id, hash, space, arch_text, spec_json, macs, ..., target,
        settings_key, rep, latency_ms, the stats, source, measured_at; JSON columns stay JSON text).
        """
        import pandas as pd  # late: workers and the job queue should not pay for pandas

        rows = self._rows(FRAME_COLUMNS, target, space, settings_key)
        return pd.DataFrame.from_records(rows, columns=list(FRAME_COLUMNS)).astype(FRAME_COLUMNS)

    to_pandas = measurements

    def export_rows(self, target: str | None = None) -> list[tuple]:
        """Every measurement with its arch, then every kernel measurement with its arch, in EXPORT_COLUMNS order
        (what `leti dataset export` writes)."""
        return self._rows(EXPORT_COLUMNS, target, None, None) + self._rows(
            EXPORT_COLUMNS, target, None, None, kernels=True
        )

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
            "kernel_measurements": self._read("SELECT COUNT(*) FROM kernel_measurements")[0][0],
            "targets": len(per_target),
            "per_target": per_target,
            "per_target_space": per_target_space,
        }


_KERNEL_INSERT = (
    f"INSERT INTO kernel_measurements ({', '.join(KERNEL_COLS)}) VALUES ({', '.join('?' * len(KERNEL_COLS))})"
    " ON CONFLICT (arch_id, target, settings_key, node) DO NOTHING"
)
_BASIC = frozenset({"arch_id", "target", "settings_key", "latency_ms", "source"})
_OPTIONAL_JSON = ("stats", "tool_versions")


def _row_values(r: Mapping, where: str, now: str, targets: set) -> tuple:
    """A measurements row (MEAS_COLS order, ``rep`` None when the row does not fix it) from an import mapping."""
    if not isinstance(r, Mapping):
        raise LetiError(f"must be a mapping, got {type(r).__name__}", where)
    try:
        arch_id, target, lat = r["arch_id"], r["target"], r["latency_ms"]
    except KeyError as e:
        raise LetiError(f"missing key {e.args[0]!r}", where) from None
    if target not in targets:
        targets.add(validate_name(target))
    out = dict.fromkeys(MEAS_COLS)
    out["arch_id"] = (
        text(arch_id, f"{where}.arch_id") if not (isinstance(arch_id, str) and arch_id) else arch_id
    )
    out["target"] = target
    out["settings_key"] = text(r.get("settings_key") or "import", f"{where}.settings_key")
    out["latency_ms"] = latency(lat, f"{where}.latency_ms")
    out["source"] = str(_none(r.get("source")) or "")
    out["created"] = now
    for k in r.keys() - _BASIC:  # the export format's further columns
        v = _none(r[k])
        if v is None or k not in out:
            continue
        if k in ("rep", "n_runs"):
            out[k] = opt_int(v, f"{where}.{k}")
        elif k in STAT_FLOATS:
            out[k] = opt_float(v, f"{where}.{k}")
        elif k in NULLABLE_TEXT or k == "created":
            out[k] = opt_text(v) or out[k]
    for k in _OPTIONAL_JSON:
        if out[k] is not None:
            try:
                json.loads(out[k])
            except ValueError:
                raise LetiError("is not JSON text", f"{where}.{k}") from None
    return tuple(out.values())


def _kernel_values(r: Mapping, where: str, now: str) -> tuple:
    """A kernel_measurements row (KERNEL_COLS order) from a mapping."""
    if not isinstance(r, Mapping):
        raise LetiError(f"must be a mapping, got {type(r).__name__}", where)
    try:
        arch_id, target, node, ms = r["arch_id"], r["target"], r["node"], r["latency_ms"]
    except KeyError as e:
        raise LetiError(f"missing key {e.args[0]!r}", where) from None
    x = None if isinstance(ms, bool) else opt_float(ms, f"{where}.latency_ms")
    if x is None or x < 0:
        raise LetiError(f"must be a non-negative number of milliseconds, got {ms!r}", f"{where}.latency_ms")
    node = opt_int(node, f"{where}.node")
    if node is None:
        raise LetiError("must be a non-negative integer, got None", f"{where}.node")
    return (
        text(arch_id, f"{where}.arch_id"),
        validate_name(target),
        text(_none(r.get("settings_key")) or "import", f"{where}.settings_key"),
        node,
        x,
        str(_none(r.get("runtime_kernel")) or ""),
        str(_none(r.get("source")) or ""),
        opt_text(_none(r.get("created"))) or now,
    )


def _none(v):
    """pandas' missing values (NaN, NA, NaT) as None."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or type(v).__name__ in ("NAType", "NaTType"):
        return None
    return v
