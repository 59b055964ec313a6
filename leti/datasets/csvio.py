"""The measurement CSV exchange format: ``space,arch,target,latency_ms,source``, one row per measured arch.

Reading is strict so that a bad file fails with the line and the column that are wrong, before anything
reaches the store. The leti space's arch is JSON (it has commas), so it travels quoted; the csv module
handles that both ways.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from leti.datasets.export import read_export, sniff
from leti.datasets.records import ArchRecord
from leti.errors import LetiError
from leti.space import canonical_space
from leti.targets import validate_name

if TYPE_CHECKING:  # type only: leti.datasets.store imports this module
    from leti.datasets.store import Store

CSV_COLUMNS = ("space", "arch", "target", "latency_ms", "source")
REQUIRED_COLUMNS = ("space", "arch", "target", "latency_ms")  # a missing 'source' column means "the file"
IMPORT_SETTINGS_KEY = "import"
_PROGRESS_EVERY = 1000
_ROWS = re.compile(r"rows\[(\d+)\]")


@dataclass(frozen=True)
class CsvRow:
    """One validated row. ``line`` is the 1-based line the row starts on (0 for rows built in code)."""

    space: str
    arch: str
    target: str
    latency_ms: float
    source: str = ""
    line: int = 0


def _check(space, arch, target, latency, source, where: str, line: int = 0) -> CsvRow:
    """Validate one row's values; errors name ``<where>, column <col>``."""

    def col(name: str) -> str:
        return f"{where}, column {name}"

    space = canonical_space(space if isinstance(space, str) else str(space), col("space"))
    if not isinstance(arch, str) or not arch.strip():
        raise LetiError("is empty", col("arch"))
    target = target.strip() if isinstance(target, str) else target
    try:
        validate_name(target)
    except LetiError as e:
        raise LetiError(e.reason, col("target")) from None
    value = _positive_number(latency)
    if value is None:
        raise LetiError(f"{latency!r} is not a positive number", col("latency_ms"))
    source = "" if source is None else str(source).strip()
    return CsvRow(space, arch.strip(), target, value, source, line)


def _positive_number(value) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        x = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) and x > 0 else None


def _header_index(header: list[str], path: Path, line: int) -> dict[str, int]:
    names = [h.strip() for h in header]
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in CSV_COLUMNS:
            if name in index:
                raise LetiError("appears twice in the header", f"line {line}, column {name}")
            index[name] = i
    for name in REQUIRED_COLUMNS:
        if name not in index:
            raise LetiError(
                f"missing from the header of {path} (expected {','.join(CSV_COLUMNS)})",
                f"line {line}, column {name}",
            )
    return index


def read_measurement_csv(path: str | os.PathLike) -> Iterator[CsvRow]:
    """Yield validated rows of a measurement CSV; the first bad row raises a LetiError naming line and column.

    The header must hold the columns space, arch, target, latency_ms (and usually source), in any order;
    other columns are ignored. Blank lines are skipped.
    """
    path = Path(path)
    try:
        # utf-8-sig: tolerate a BOM from spreadsheet tools. Opened outside `with` to report OSError alone.
        f = open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115
    except OSError as e:
        raise LetiError(f"cannot read {path}: {e.strerror or e}", "path") from None
    with f:
        reader = csv.reader(f)
        line_end = 0  # physical line the previous record ended on; quoted fields may span lines
        index: dict[str, int] | None = None
        n_cols = 0
        while True:
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                raise LetiError(str(e), f"line {line_end + 1}") from None
            except UnicodeDecodeError as e:
                raise LetiError(f"not UTF-8 text ({e.reason})", f"line {line_end + 1}") from None
            line, line_end = line_end + 1, reader.line_num
            if not record or (len(record) == 1 and not record[0].strip()):
                continue
            if index is None:
                index, n_cols = _header_index(record, path, line), len(record)
                continue
            if len(record) > n_cols:
                raise LetiError(
                    f"{len(record)} fields but the header has {n_cols} (quote fields that contain commas)",
                    f"line {line}, column {n_cols + 1}",
                )
            values = {}
            for name, i in index.items():
                if i >= len(record):
                    raise LetiError(
                        f"missing ({len(record)} fields, header has {n_cols})", f"line {line}, column {name}"
                    )
                values[name] = record[i]
            yield _check(
                values["space"],
                values["arch"],
                values["target"],
                values["latency_ms"],
                values.get("source", ""),
                f"line {line}",
                line,
            )
        if index is None:
            raise LetiError(f"{path} is empty (expected the header {','.join(CSV_COLUMNS)})", "path")


def _as_values(row) -> tuple:
    if isinstance(row, CsvRow):
        return row.space, row.arch, row.target, row.latency_ms, row.source
    if isinstance(row, Mapping):
        return tuple(row.get(c, "" if c == "source" else None) for c in CSV_COLUMNS)
    values = tuple(row)
    if len(values) == 4:
        values += ("",)
    if len(values) != 5:
        raise LetiError(
            f"expected {len(CSV_COLUMNS)} values ({','.join(CSV_COLUMNS)}), got {len(values)}", "rows"
        )
    return values


def write_measurement_csv(path: str | os.PathLike, rows: Iterable[CsvRow | Mapping | tuple]) -> int:
    """Write rows (CsvRow, dicts or tuples in column order) as a measurement CSV; returns the row count.

    Rows are validated like the reader does, so whatever is written can be read back.
    """
    path = Path(path)
    checked = [_check(*_as_values(r), where=f"row {i}") for i, r in enumerate(rows)]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")  # QUOTE_MINIMAL quotes JSON archs with commas and quotes
            w.writerow(CSV_COLUMNS)
            for r in checked:
                w.writerow((r.space, r.arch, r.target, repr(r.latency_ms), r.source))
    except OSError as e:
        raise LetiError(f"cannot write {path}: {e.strerror or e}", "path") from None
    return len(checked)


@dataclass
class ImportReport:
    """What one import did. ``duplicates``: rows that repeat a stored value (or an earlier row); ``conflicts``: rows
    whose (arch, target, settings) is stored with another latency (see ``on_conflict``)."""

    path: str
    rows: int = 0
    archs: int = 0  # distinct arch_ids in the file
    archs_new: int = 0
    targets_new: int = 0
    measurements_new: int = 0
    kernel_measurements_new: int = 0  # export files only: per-kernel rows (their ``kernel_node`` is set)
    duplicates: int = 0
    conflicts: int = 0
    on_conflict: str = "keep-first"
    format: str = "exchange"  # or "export": every column, as `leti dataset export` writes
    conflict_examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        text = (
            f"{self.path}: {self.rows} rows, {self.archs} archs ({self.archs_new} new), "
            f"{self.measurements_new} measurements new, {self.duplicates} duplicates skipped"
        )
        if self.kernel_measurements_new:
            text += f", {self.kernel_measurements_new} kernel measurements new"
        if self.conflicts:
            done = {"keep-first": "kept the stored values", "keep-both": "kept both values"}[self.on_conflict]
            text += (f", {self.conflicts} conflicts ({done}; --on-conflict keep-both|reject to change); "
                     f"first: {self.conflict_examples[0]}")  # fmt: skip
        return text


def import_csv(
    store: Store,
    path: str | os.PathLike,
    parse_arch: Callable[[str, str], ArchRecord],
    progress: Callable[[int, int], None] | None = None,
    on_conflict: str = "keep-first",
) -> ImportReport:
    """Import a measurement file into ``store``; importing twice adds nothing.

    Two formats are read: the exchange CSV (space,arch,target,latency_ms,source; stored under settings_key
    ``"import"``) and the export format of ``leti dataset export`` (CSV or Parquet, every column kept).
    ``parse_arch(space, arch_text)`` turns a row's arch into an ArchRecord (the space module's importer); each
    distinct (space, arch_text) is parsed once, and an export row's arch_id must match it. Everything is
    validated before anything is written, and the writes happen in one transaction, so a bad file leaves the
    store untouched (and a damaged SQLite file is refused first). Rows that conflict with stored ones are handled
    as ``on_conflict`` says (see ``Store.import_measurements``); an export's kernel rows (``kernel_node`` set) go
    to the kernel measurements, where a stored row is always kept. ``progress(done, total)`` is called while
    parsing, every 1000 rows and at the end.
    """
    path = Path(path)
    fmt = sniff(path)
    if fmt == "export":
        raw = list(read_export(path))
        rows = [(where, d["space"], d["arch_text"], d) for where, d in raw]
    else:
        rows = [(f"line {r.line}", r.space, r.arch, r) for r in read_measurement_csv(path)]
    total = len(rows)
    parsed: dict[tuple[str, str], ArchRecord] = {}
    archs: dict[str, ArchRecord] = {}  # by arch_id; first record wins
    bulk, wheres = [], []  # whole-model rows and their file positions
    kernels, kernel_wheres = [], []
    for i, (where, space, arch_text, row) in enumerate(rows, 1):
        key = (space, arch_text)
        rec = parsed.get(key)
        if rec is None:
            try:
                rec = parse_arch(space, arch_text)
            except LetiError as e:
                raise _with_where(e, f"{where}, column arch") from None
            if not isinstance(rec, ArchRecord):
                raise LetiError(
                    f"parse_arch returned {type(rec).__name__}, expected ArchRecord", "parse_arch"
                )
            parsed[key] = rec
        if fmt == "export":
            if row["arch_id"] != rec.arch_id:
                raise LetiError(
                    f"{row['arch_id']!r} is not the id of this arch ({rec.arch_id!r})",
                    f"{where}, column arch_id",
                )
            try:
                rec = ArchRecord(**{c: row.get(c) for c in ("arch_id", "hash", "space", "arch_text", "spec_json",
                                                           "macs", "params", "peak_bytes", "n_nodes")})  # fmt: skip
            except LetiError as e:
                raise _with_where(e, where) from None
            if row.get("kernel_node") is not None:
                kernels.append({**row, "node": row["kernel_node"]})
                kernel_wheres.append(where)
            else:
                bulk.append(row)
                wheres.append(where)
        else:
            bulk.append({"arch_id": rec.arch_id, "target": row.target, "settings_key": IMPORT_SETTINGS_KEY,
                         "latency_ms": row.latency_ms, "source": row.source or path.name})  # fmt: skip
            wheres.append(where)
        archs.setdefault(rec.arch_id, rec)
        if progress is not None and (i % _PROGRESS_EVERY == 0 or i == total):
            progress(i, total)
    report = ImportReport(str(path), rows=total, archs=len(archs), on_conflict=on_conflict, format=fmt)
    store.check_integrity()
    with store.transaction():
        report.archs_new = store.upsert_archs(archs.values())
        report.targets_new = store.ensure_targets(sorted({r["target"] for r in (*bulk, *kernels)}))
        try:
            res = store.import_measurements(bulk, on_conflict=on_conflict)
        except LetiError as e:
            raise _with_rows(e, wheres) from None
        try:
            report.kernel_measurements_new = store.add_kernel_measurements(kernels)
        except LetiError as e:
            raise _with_rows(e, kernel_wheres) from None
    report.measurements_new, report.conflicts = res.new, res.conflicts
    report.duplicates = res.duplicates + len(kernels) - report.kernel_measurements_new
    report.conflict_examples = _rows_to_lines(res.examples, wheres)
    return report


def _rows_to_lines(texts: list[str], wheres: list[str]) -> list[str]:
    """The store's 'rows[i]' as the file's position ('line N' or 'row N')."""

    def sub(m: re.Match) -> str:
        i = int(m[1])
        return wheres[i] if i < len(wheres) else m[0]

    return [_ROWS.sub(sub, t) for t in texts]


def _with_rows(e: LetiError, wheres: list[str]) -> LetiError:
    field, msg = _rows_to_lines([e.field or "", e.reason], wheres)
    field = field.replace(".", ", column ", 1) if field.startswith(("line ", "row ")) else field
    return _same_type(e, msg, field or None)


def _with_where(e: LetiError, where: str) -> LetiError:
    """The same error type, its message prefixed with the file position."""
    return _same_type(e, str(e), where)


def _same_type(e: LetiError, msg: str, field: str | None) -> LetiError:
    try:
        return type(e)(msg, field)
    except TypeError:  # a subclass with another constructor
        return LetiError(msg, field)
