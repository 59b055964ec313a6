"""Bridges between the store and the IR: Arch -> ArchRecord, and a target's measurements -> graphs + latencies."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from leti.datasets.store import ArchRecord, Store
from leti.errors import LetiError
from leti.graph.layergraph import LayerGraph
from leti.importers.inputs import layergraph_json, stored_graph
from leti.space import MODEL_SPACE, SPACES, Arch, leti_space, native_text, parse_arch
from leti.space.hashing import digest


def arch_record(arch: Arch, text: str | None = None) -> ArchRecord:
    """The store row of an arch: both hashes, its native text, spec JSON and graph totals."""
    g = arch.to_graph()
    return ArchRecord(
        arch_id=arch.full_hash,
        hash=arch.hash,
        space=arch.space if arch.space in SPACES else leti_space.NAME,
        arch_text=text if text is not None else native_text(arch),
        spec_json=arch.to_json(),
        macs=g.total_macs,
        params=g.total_params,
        peak_bytes=g.peak_bytes(),
        n_nodes=g.n_nodes,
    )


def model_text(graph: LayerGraph) -> str:
    """The arch text of an imported model (space ``model``): its LayerGraph as compact, key-sorted JSON."""
    return json.dumps(graph.to_dict(), sort_keys=True, separators=(",", ":"))


def model_record(graph: LayerGraph, text: str | None = None) -> ArchRecord:
    """The store row of an imported model. Its id and hash are the digest of its text: a model is its own class."""
    text = model_text(graph) if text is None else text
    h = digest(text)
    return ArchRecord(
        arch_id=h,
        hash=h,
        space=MODEL_SPACE,
        arch_text=text,
        spec_json=json.dumps({"space": MODEL_SPACE, "model": graph.meta.get("model", "")}),
        macs=graph.total_macs,
        params=graph.total_params,
        peak_bytes=graph.peak_bytes(),
        n_nodes=graph.n_nodes,
    )


def record_from_text(space: str, text: str) -> ArchRecord:
    """The ``parse_arch`` callback of ``import_csv``: native text -> ArchRecord."""
    if space == MODEL_SPACE:
        return model_record(layergraph_json(text), text)
    return arch_record(parse_arch(space, text), text)


@dataclass
class TargetData:
    """One target's measured archs, in store order."""

    target: str
    arch_ids: np.ndarray
    hashes: np.ndarray
    spaces: np.ndarray
    texts: np.ndarray
    latency_ms: np.ndarray

    def __len__(self) -> int:
        return int(self.latency_ms.size)

    def graphs(self, idx=None) -> list[LayerGraph]:
        idx = range(len(self)) if idx is None else idx
        return [stored_graph(self.spaces[i], self.texts[i]) for i in idx]

    def subset(self, idx) -> TargetData:
        idx = np.asarray(idx, dtype=int)
        return TargetData(
            self.target,
            self.arch_ids[idx],
            self.hashes[idx],
            self.spaces[idx],
            self.texts[idx],
            self.latency_ms[idx],
        )


def target_data(store: Store, target: str, space: str | None = None) -> TargetData:
    """Every measured arch of ``target`` (one row per arch; the first settings key wins when there are several)."""
    df = store.measurements(target=target, space=space)
    if df.empty:
        known = ", ".join(sorted(store.stats().get("per_target", {}))) or "none"
        raise LetiError(f"no measurements for target {target!r} (measured targets: {known})", "target")
    df = df.drop_duplicates("arch_id", keep="first")
    return TargetData(
        target=target,
        arch_ids=df["arch_id"].to_numpy(dtype=object),
        hashes=df["hash"].to_numpy(dtype=object),
        spaces=df["space"].to_numpy(dtype=object),
        texts=df["arch_text"].to_numpy(dtype=object),
        latency_ms=df["latency_ms"].to_numpy(dtype=float),
    )
