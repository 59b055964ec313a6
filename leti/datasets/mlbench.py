"""``leti import --format mobile-ml-benchmark DIR``: mobile-ml-benchmark's models, latencies and GPU kernel times into
the store.

* every model becomes an arch of space ``model`` (its op-list LayerGraph as JSON; see leti.importers.mlbench);
* every device x setting x precision column becomes a target, its mean time a measurement (settings key
  ``import``, source ``mobile-ml-benchmark``);
* every per-op GPU time becomes a kernel measurement of the ``<device>-tflite-gpu`` target, keyed by the graph node
  of the op it timed, with the GPU kernel's name.

Everything is written in one transaction, so a bad file leaves the store unchanged; importing again adds nothing.
A model time stored with another value is handled as ``on_conflict`` says (``Store.import_measurements``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from leti.datasets.archs import model_record
from leti.datasets.store import Store, TargetRecord
from leti.importers.mlbench import SOURCE, read_mlbench

SETTINGS_KEY = "import"


@dataclass
class MLBenchImport:
    models: int
    targets: list[str]
    measurements: int  # new whole-model rows
    kernel_measurements: int  # new per-kernel rows
    skipped: int = 0  # rows already in the store

    def to_dict(self) -> dict:
        return {
            "models": self.models,
            "targets": self.targets,
            "measurements": self.measurements,
            "kernel_measurements": self.kernel_measurements,
            "skipped": self.skipped,
        }


def import_mlbench(
    store: Store, directory: str | Path, precisions=("float",), on_conflict: str = "keep-first"
) -> MLBenchImport:
    """Read ``directory`` (``tflite_cnn_ops_gpu.csv`` and ``tflite_cnn_e2e.csv``) and add it to ``store``."""
    models = read_mlbench(directory, tuple(precisions))
    recs, rows, krows, targets = [], [], [], {}
    for m in models:
        rec = model_record(m.graph)
        recs.append(rec)
        for target, ms in m.latency_ms.items():
            targets[target] = None
            rows.append({"arch_id": rec.arch_id, "target": target, "latency_ms": ms,
                         "settings_key": SETTINGS_KEY, "source": SOURCE})  # fmt: skip
        for target, times in m.gpu_ms.items():
            targets[target] = None
            for node, ms, name in zip(m.op_nodes, times, m.gpu_kernel[target], strict=True):
                krows.append({"arch_id": rec.arch_id, "target": target, "node": node, "latency_ms": ms,
                              "settings_key": SETTINGS_KEY, "runtime_kernel": name, "source": SOURCE})  # fmt: skip
    with store.transaction():
        for t in targets:
            if store.get_target(t) is None:
                store.upsert_target(TargetRecord.from_name(t))
        store.upsert_archs(recs)
        new = store.import_measurements(rows, on_conflict=on_conflict).new
        knew = store.add_kernel_measurements(krows)
    return MLBenchImport(len(models), sorted(targets), new, knew, len(rows) + len(krows) - new - knew)


__all__ = ["MLBenchImport", "SETTINGS_KEY", "import_mlbench"]
