"""leti.datasets: the measurement store (SQLite) and the measurement CSV exchange format."""

from leti.datasets.csvio import (
    CSV_COLUMNS,
    SPACE_ALIASES,
    SPACES,
    CsvRow,
    ImportReport,
    canonical_space,
    import_csv,
    read_measurement_csv,
    write_measurement_csv,
)
from leti.datasets.store import JOB_STATES, SCHEMA_VERSION, ArchRecord, Job, Store, TargetRecord

__all__ = [
    "CSV_COLUMNS",
    "JOB_STATES",
    "SCHEMA_VERSION",
    "SPACES",
    "SPACE_ALIASES",
    "ArchRecord",
    "CsvRow",
    "ImportReport",
    "Job",
    "Store",
    "TargetRecord",
    "canonical_space",
    "import_csv",
    "read_measurement_csv",
    "write_measurement_csv",
]
