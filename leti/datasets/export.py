"""The export format: every measurement with its arch, all columns (EXPORT_COLUMNS), as CSV or Parquet; then every
kernel measurement with its arch (rows with a ``kernel_node``: one kernel's time, not the whole model's).

`leti dataset export` writes it and `leti import` reads it back into an identical store: the same measurements,
kernel measurements, statistics, raw tool output, sources and times. The CSV is written by hand rather than by pandas so that it is
exact and stable: floats as their shortest round-trip ``repr``, missing values as empty fields, so export ->
import -> export gives the same bytes.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from leti.datasets.records import ARCH_COLS, EXPORT_COLUMNS, FLOAT_COLUMNS, INT_COLUMNS, NULLABLE_TEXT
from leti.errors import LetiError, StoreError

if TYPE_CHECKING:  # type only: leti.datasets.store imports this module
    from leti.datasets.store import Store

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
REQUIRED = (*ARCH_COLS, "target", "latency_ms")
_FIELD_LIMIT = 64 * 2**20  # raw benchmark output can be long; bounded all the same


def file_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise LetiError(
            f"cannot export to {path}: unknown suffix {path.suffix!r} (use .csv or .parquet)", "output"
        )
    return fmt


def export_measurements(store: Store, path: str | os.PathLike, target: str | None = None) -> int:
    """Write the store's measurements and kernel measurements (of ``target`` if given) to ``path`` (.csv or
    .parquet); returns the number of rows.

    The file appears whole or not at all (written aside, then renamed). An unknown target, or a folder that does
    not exist, is a LetiError.
    """
    path = Path(path)
    fmt = file_format(path)
    if not path.parent.is_dir():
        raise LetiError(f"cannot write {path}: folder {path.parent} does not exist", "output")
    rows = store.export_rows(target)
    if target is not None and not rows:
        known = ", ".join(t for t, n in store.stats()["per_target"].items() if n) or "none"
        raise LetiError(f"no measurements for {target!r} (measured targets: {known})", "target")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        if fmt == "csv":
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f, lineterminator="\n")
                w.writerow(EXPORT_COLUMNS)
                w.writerows([_cell(v) for v in row] for row in rows)
        else:
            _frame(rows).to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except OSError as e:
        raise StoreError(f"cannot write {path}: {e.strerror or e}", "output") from None
    except ImportError as e:
        raise LetiError(f"parquet export needs pyarrow ({e})", "output") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return len(rows)


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _frame(rows):
    import pandas as pd

    return pd.DataFrame.from_records(rows, columns=list(EXPORT_COLUMNS)).astype(EXPORT_COLUMNS)


def is_export_header(names) -> bool:
    """Does a header name the export format's columns (rather than the 5-column exchange CSV)?"""
    return {"arch_id", "spec_json"} <= {str(n).strip() for n in names}


def sniff(path: Path) -> str:
    """'export' for a Parquet file or a CSV with the export header, else 'exchange'."""
    if FORMATS.get(path.suffix.lower()) == "parquet":
        return "export"
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            for record in csv.reader(f):
                if record and any(c.strip() for c in record):
                    return "export" if is_export_header(record) else "exchange"
    except (OSError, csv.Error, UnicodeDecodeError):
        pass  # the exchange reader reports it with its line
    return "exchange"


def read_export(path: str | os.PathLike) -> Iterator[tuple[str, dict]]:
    """Yield (where, row) for each row of an export file, values typed (int, float, str or None)."""
    path = Path(path)
    if FORMATS.get(path.suffix.lower()) == "parquet":
        yield from _read_parquet(path)
        return
    csv.field_size_limit(_FIELD_LIMIT)
    try:
        f = open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115 - opened outside `with` to report OSError alone
    except OSError as e:
        raise LetiError(f"cannot read {path}: {e.strerror or e}", "path") from None
    with f:
        reader = csv.reader(f)
        header: list[str] | None = None
        line_end = 0
        while True:
            try:
                record = next(reader)
            except StopIteration:
                break
            except (csv.Error, UnicodeDecodeError) as e:
                raise LetiError(f"unreadable ({e})", f"line {line_end + 1}") from None
            line, line_end = line_end + 1, reader.line_num
            if not record or (len(record) == 1 and not record[0].strip()):
                continue
            if header is None:
                header = [h.strip() for h in record]
                missing = [c for c in REQUIRED if c not in header]
                if missing:
                    raise LetiError(f"the export header lacks {', '.join(missing)}", f"line {line}")
                continue
            if len(record) != len(header):
                raise LetiError(f"{len(record)} fields but the header has {len(header)}", f"line {line}")
            where = f"line {line}"
            yield where, {name: _typed(name, value, where) for name, value in zip(header, record, strict=True)
                          if name in EXPORT_COLUMNS}  # fmt: skip


def _typed(name: str, value: str, where: str):
    if name in INT_COLUMNS or name in FLOAT_COLUMNS:
        if value == "":
            return None
        try:
            return int(value) if name in INT_COLUMNS else float(value)
        except ValueError:
            kind = "an integer" if name in INT_COLUMNS else "a number"
            raise LetiError(f"{value[:40]!r} is not {kind}", f"{where}, column {name}") from None
    if value == "" and (name in NULLABLE_TEXT or name in ARCH_COLS):
        return None
    return value


def _read_parquet(path: Path) -> Iterator[tuple[str, dict]]:
    try:
        import pandas as pd

        df = pd.read_parquet(path)
    except ImportError as e:
        raise LetiError(f"reading parquet needs pyarrow ({e})", "path") from None
    except Exception as e:  # pyarrow raises its own types for a damaged or foreign file
        raise LetiError(f"cannot read {path} as Parquet: {str(e).splitlines()[0][:200]}", "path") from None
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise LetiError(f"the export columns lack {', '.join(missing)}", "path")
    cols = [c for c in df.columns if c in EXPORT_COLUMNS]
    for i, rec in enumerate(df[cols].astype(object).where(df[cols].notna(), None).itertuples(index=False)):
        yield f"row {i + 1}", dict(zip(cols, rec, strict=True))
