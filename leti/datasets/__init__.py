"""leti.datasets: the measurement store (SQLite or PostgreSQL), its job queue, and the exchange formats."""

from leti.datasets.csvio import (
    CSV_COLUMNS,
    CsvRow,
    ImportReport,
    import_csv,
    read_measurement_csv,
    write_measurement_csv,
)
from leti.datasets.store import JOB_STATES, SCHEMA_VERSION, ArchRecord, Job, Store, TargetRecord

__all__ = [
    "CSV_COLUMNS",
    "JOB_STATES",
    "SCHEMA_VERSION",
    "ArchRecord",
    "CsvRow",
    "ImportReport",
    "Job",
    "Store",
    "TargetRecord",
    "import_csv",
    "read_measurement_csv",
    "write_measurement_csv",
]
