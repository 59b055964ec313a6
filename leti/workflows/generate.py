"""``leti generate``: sample archs, build .tflite models, measure them on targets, store the results.

A run is identified by its parameters (space, n, seed, constraints, targets, settings), so running the same command
again resumes it: archs already measured are skipped and jobs left running by a crash are requeued.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from leti.datasets.archs import arch_record
from leti.datasets.store import Store, TargetRecord
from leti.device_runner.bindings import Binding, make_runner
from leti.errors import LetiError
from leti.measurement import DEFAULT_RUNS, DEFAULT_WARMUP, Settings, target_settings
from leti.paths import leti_home
from leti.space import Arch, canonical_space, sample
from leti.space.hashing import digest
from leti.workflows.farm import Farm, WorkerReport, noise_floor, pick_repeat


@dataclass
class GenerateReport:
    run_id: str
    space: str
    n: int
    resumed: bool
    progress: dict
    workers: list[WorkerReport]
    wall_s: float
    sample_s: float
    noise_floor: dict = field(default_factory=dict)
    failed: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["workers"] = [w.to_dict() for w in self.workers]
        return d


class ModelCache:
    """.tflite bytes per (arch, precision), built once and kept on disk so resumed runs and farms reuse them."""

    def __init__(self, archs: dict[str, Arch], directory: Path, builder: str = "auto"):
        self.archs = archs
        self.directory = Path(directory)
        self.builder = builder
        self._lock = (
            threading.Lock()
        )  # TensorFlow's converter is not safe to run from several threads at once

    def __call__(self, arch_id: str, precision: str) -> bytes:
        path = self.directory / f"{arch_id}-{precision}.tflite"
        if path.is_file():
            return path.read_bytes()
        arch = self.archs.get(arch_id)
        if arch is None:
            raise LetiError(f"arch {arch_id[:12]} is not part of this run", "arch_id")
        with self._lock:
            if path.is_file():
                return path.read_bytes()
            from leti.tflite.convert import build_tflite

            data = build_tflite(arch.to_graph(), precision=precision)
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_bytes(data)
            os.replace(tmp, path)  # atomic: a crash never leaves a truncated model behind
        return data


def run_id_for(space: str, n: int, seed: int, constraints: dict | None, settings: dict[str, Settings]) -> str:
    key = {
        "space": space,
        "n": n,
        "seed": seed,
        "constraints": constraints or {},
        "targets": {t: s.key() for t, s in sorted(settings.items())},
    }
    return "run-" + digest(json.dumps(key, sort_keys=True))[:16]


def generate(
    store: Store,
    space: str,
    n: int,
    seed: int,
    bindings: list[Binding],
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    min_time_s: float = 0.0,
    constraints: dict | None = None,
    repeat_check: int = 0,
    model_dir: Path | None = None,
    benchmark_binary: str | None = None,
    adb_options: dict | None = None,
    max_failures: int = 3,
    progress=None,
    on_start=None,
) -> GenerateReport:
    """Sample, build, measure and store; resumable. ``progress(worker, done)`` is called after each measurement;
    ``on_start(run_id, jobs_per_worker)`` once the queue is known."""
    t0 = time.perf_counter()
    space = canonical_space(space)
    if not bindings:
        raise LetiError("give at least one --target", "target")
    settings = {
        b.target: target_settings(b.target, runs=runs, warmup=warmup, min_time_s=min_time_s) for b in bindings
    }
    archs = sample(space, n, seed, constraints)
    by_id = {a.full_hash: a for a, _ in archs}
    store.upsert_archs(arch_record(a, text) for a, text in archs)
    sample_s = time.perf_counter() - t0

    run_id = run_id_for(space, n, seed, constraints, settings)
    params = {"space": space, "n": n, "seed": seed, "constraints": constraints or {},
              "bindings": [b.worker for b in bindings], "settings": {t: s.to_dict() for t, s in settings.items()}}  # fmt: skip
    resumed = not store.create_run(run_id, params)
    for target in settings:
        if store.get_target(target) is None:
            store.upsert_target(TargetRecord.from_name(target))
    store.add_jobs(
        run_id, [(aid, t, s.key()) for aid in by_id for t, s in settings.items()], skip_measured=True
    )
    store.requeue_running(run_id)  # jobs in flight when a previous run of this command died
    if on_start:
        pending = {t: sum(1 for j in store.jobs(run_id, "pending") if j.target == t) for t in settings}
        # a worker's bar counts its target's whole queue: devices of one target share it
        on_start(run_id, {**{b.worker: pending[b.target] for b in bindings}, "_total": sum(pending.values())})

    cache = ModelCache(by_id, Path(model_dir) if model_dir else leti_home() / "models")
    farm = Farm(
        store,
        run_id,
        bindings,
        lambda b: make_runner(b, benchmark_binary, **(adb_options or {})),
        cache,
        settings,
        max_failures=max_failures,
        progress=progress,
    )
    reports = farm.run()
    for r in reports:
        if r.versions:
            rec = store.get_target(r.target) or TargetRecord.from_name(r.target)
            rec.versions = {**rec.versions, **r.versions}
            store.upsert_target(rec)

    floors = {}
    if repeat_check > 0:
        floors = _repeat_check(
            store, bindings, settings, cache, repeat_check, seed, benchmark_binary, adb_options
        )
    failed = [
        {"arch_id": j.arch_id, "target": j.target, "error": j.error} for j in store.jobs(run_id, "failed")
    ]
    report = GenerateReport(
        run_id=run_id,
        space=space,
        n=n,
        resumed=resumed,
        progress=store.run_progress(run_id),
        workers=reports,
        wall_s=time.perf_counter() - t0,
        sample_s=sample_s,
        noise_floor=floors,
        failed=failed,
    )
    store.set_run_report(run_id, report.to_dict())
    return report


def _repeat_check(store, bindings, settings, cache, k, seed, benchmark_binary, adb_options) -> dict:
    """Re-measure k random archs per target; the median |Δ|/latency becomes the target's noise floor."""
    from leti.targets import parse_target

    floors = {}
    for target, s in settings.items():
        binding = next(b for b in bindings if b.target == target)
        df = store.measurements(target=target, settings_key=s.key())
        if df.empty:
            continue
        chosen = pick_repeat(list(df["arch_id"]), k, seed)
        first = df.set_index("arch_id").loc[chosen, "latency_ms"].to_numpy()
        precision = parse_target(target).precision
        with make_runner(binding, benchmark_binary, **(adb_options or {})) as runner:
            second = [runner.measure(cache(aid, precision), s).latency_ms for aid in chosen]
        floors[target] = noise_floor(first, second)
        store.set_noise_floor(target, floors[target])
    return floors
