""".tflite models for the farm's jobs, built once per (arch, precision) and kept on disk."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from leti.datasets.store import Store
from leti.errors import LetiError
from leti.space import Arch


class ModelCache:
    """.tflite bytes per (arch, precision), built once and kept on disk so resumed runs and farms reuse them.

    ``lookup(arch_id)`` gives the Arch to build (None: not known).
    """

    def __init__(self, lookup: Callable[[str], Arch | None] | dict, directory: Path, builder: str = "auto"):
        self.lookup = lookup.get if isinstance(lookup, dict) else lookup
        self.directory = Path(directory)
        self.builder = builder
        self._lock = (
            threading.Lock()
        )  # TensorFlow's converter is not safe to run from several threads at once

    def __call__(self, arch_id: str, precision: str) -> bytes:
        path = self.directory / f"{arch_id}-{precision}.tflite"
        if path.is_file():
            return path.read_bytes()
        arch = self.lookup(arch_id)
        if arch is None:
            raise LetiError(f"arch {arch_id[:12]} is not part of this run", "arch_id")
        with self._lock:
            if path.is_file():
                return path.read_bytes()
            from leti.tflite.convert import build_tflite  # deferred: loads LiteRT

            data = build_tflite(arch.to_graph(), precision=precision)
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}-{threading.get_ident()}")
            tmp.write_bytes(data)
            os.replace(tmp, path)  # atomic: a crash never leaves a truncated model behind
        return data


def store_archs(store: Store) -> Callable[[str], Arch | None]:
    """Arch lookup from the store's spec JSON: what a farm worker on another host builds its models from."""

    def lookup(arch_id: str) -> Arch | None:
        rec = store.get_arch(arch_id)
        return Arch.from_json(rec.spec_json) if rec is not None else None

    return lookup
