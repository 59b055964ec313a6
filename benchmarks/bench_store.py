"""Store speed on both engines: importing the whole NB201 space (15,625 rows of the exchange CSV), exporting it
(every column), and importing that export into the other engine. Prints seconds per step.

The arch parser is a stand-in (a hash of the text) so that the figures are the store's, not the graph builder's.

    .venv/bin/python benchmarks/bench_store.py [--rows 15625] [--fast]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path


def standin(space: str, text: str):
    from leti.datasets.records import ArchRecord

    h = hashlib.sha1(f"{space}:{text}".encode()).hexdigest()
    return ArchRecord(h, h[:16], space, text, json.dumps({"text": text}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=15_625)
    ap.add_argument("--fast", action="store_true", help="PostgreSQL without fsync")
    args = ap.parse_args()
    from leti.datasets.csvio import import_csv, write_measurement_csv
    from leti.datasets.export import export_measurements
    from leti.datasets.store import Store
    from leti.testing.postgres import TempPostgres

    with tempfile.TemporaryDirectory() as tmp, TempPostgres(fast=args.fast) as pg:
        d = Path(tmp)
        src = d / "nb201.csv"
        write_measurement_csv(
            src, [("nb201", f"|arch{i}~0|", "dev-cpu", 1.0 + i / 7, "gen") for i in range(args.rows)]
        )
        print(f"store: {args.rows} rows (PostgreSQL {'without' if args.fast else 'with'} fsync)")
        pairs = (("sqlite", str(d / "a.db"), pg.create_database("bench_b")),
                 ("postgresql", pg.create_database("bench_a"), str(d / "b.db")))  # fmt: skip
        for name, loc, other in pairs:
            with Store.open(loc) as s:
                t = time.perf_counter()
                rep = import_csv(s, src, standin)
                t_import = time.perf_counter() - t
                assert rep.measurements_new == args.rows
                out = d / f"{name}.csv"
                t = time.perf_counter()
                export_measurements(s, out)
                t_export = time.perf_counter() - t
            with Store.open(other) as o:
                t = time.perf_counter()
                import_csv(o, out, standin)
                t_back = time.perf_counter() - t
            print(f"  {name:10s} import {t_import:6.2f} s   export {t_export:6.2f} s   "
                  f"its export into the other engine {t_back:6.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
