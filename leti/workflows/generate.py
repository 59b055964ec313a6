"""``leti generate``: sample archs, build .tflite models, measure them on targets, store the results.

A run is identified by its parameters (space, n, seed, constraints, targets, settings), so running the same command
again resumes it: archs already measured are skipped and jobs left running by a crash are requeued.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from leti.datasets.archs import arch_record
from leti.datasets.queue import DEFAULT_LEASE_S, DEFAULT_MAX_ATTEMPTS
from leti.datasets.store import Store, TargetRecord
from leti.device_runner.bindings import Binding, make_runner
from leti.errors import LetiError
from leti.measurement import DEFAULT_RUNS, DEFAULT_WARMUP, Settings, target_settings
from leti.paths import default_models_dir
from leti.space import Arch, canonical_space, sample
from leti.space.hashing import digest
from leti.targets import parse_target
from leti.workflows.farm import HOST, Farm, WorkerReport, noise_floor, pick_repeat, pid_alive
from leti.workflows.models import ModelCache


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
    enqueued: int = 0  # jobs this call added to the queue
    retried: int = 0  # failed jobs put back by retry_failed

    def to_dict(self) -> dict:
        d = asdict(self)
        d["workers"] = [w.to_dict() for w in self.workers]
        return d


def run_id_for(space: str, n: int, seed: int, constraints: dict | None, settings: dict[str, Settings],
               picked: list[str] | None = None) -> str:  # fmt: skip
    key = {
        "space": space,
        "n": n,
        "seed": seed,
        "constraints": constraints or {},
        "targets": {t: s.key() for t, s in sorted(settings.items())},
    }
    if picked is not None:  # given archs (``leti generate --suggest``): the run is those archs
        key["archs"] = sorted(picked)
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
    *,
    enqueue_only: bool = False,
    retry_failed: bool = False,
    lease_s: float = DEFAULT_LEASE_S,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    archs: list[tuple[Arch, str]] | None = None,
) -> GenerateReport:
    """Sample, build, measure and store; resumable. ``progress(worker, done)`` is called after each measurement;
    ``on_start(run_id, jobs_per_worker)`` once the queue is known. ``archs`` ((Arch, native text) pairs, e.g. from
    ``suggest_archs``) measures exactly those instead of sampling ``n``.

    ``enqueue_only`` fills the queue and returns: farm workers (``leti farm worker``, on any host sharing the
    store) measure it. ``retry_failed`` gives the run's failed jobs a fresh retry budget first. Several identical
    commands may run at once: they share the run's queue, and each returns when every job is done or failed.
    """
    t0 = time.perf_counter()
    space = canonical_space(space)
    if not bindings:
        raise LetiError("give at least one --target", "target")
    settings = {
        b.target: target_settings(b.target, runs=runs, warmup=warmup, min_time_s=min_time_s) for b in bindings
    }
    given = archs is not None
    if not given:
        archs = sample(space, n, seed, constraints)
    else:
        archs, n = list(archs), len(archs)
        if not archs:
            raise LetiError("no archs to measure", "archs")
    by_id = {a.full_hash: a for a, _ in archs}
    store.upsert_archs(arch_record(a, text) for a, text in archs)
    sample_s = time.perf_counter() - t0

    picked = [a.full_hash for a, _ in archs] if given else None
    run_id = run_id_for(space, n, seed, constraints, settings, picked)
    params = {"space": space, "n": n, "seed": seed, "constraints": constraints or {},
              "bindings": [b.worker for b in bindings], "settings": {t: s.to_dict() for t, s in settings.items()}}  # fmt: skip
    resumed = not store.create_run(run_id, params)
    for target in settings:
        if store.get_target(target) is None:
            store.upsert_target(TargetRecord.from_name(target))
    enqueued = store.add_jobs(
        run_id,
        [(aid, t, s.key()) for aid in by_id for t, s in settings.items()],
        skip_measured=True,
        max_attempts=max_attempts,
    )
    retried = store.retry_failed(run_id) if retry_failed else 0
    store.requeue_dead(HOST, pid_alive)  # jobs in flight when an earlier command on this machine died
    if enqueue_only:
        return GenerateReport(run_id=run_id, space=space, n=n, resumed=resumed, progress=store.run_progress(run_id),
                              workers=[], wall_s=time.perf_counter() - t0, sample_s=sample_s, enqueued=enqueued,
                              retried=retried)  # fmt: skip
    if on_start:
        pending = {t: sum(1 for j in store.jobs(run_id, "pending") if j.target == t) for t in settings}
        # a worker's bar counts its target's whole queue: devices of one target share it
        on_start(run_id, {**{b.worker: pending[b.target] for b in bindings}, "_total": sum(pending.values())})

    cache = ModelCache(by_id, Path(model_dir) if model_dir else default_models_dir())
    farm = Farm(
        store,
        run_id,
        bindings,
        lambda b: make_runner(b, benchmark_binary, **(adb_options or {})),
        cache,
        settings,
        max_failures=max_failures,
        progress=progress,
        lease_s=lease_s,
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
        enqueued=enqueued,
        retried=retried,
    )
    store.set_run_report(run_id, report.to_dict())
    return report


def _repeat_check(store, bindings, settings, cache, k, seed, benchmark_binary, adb_options) -> dict:
    """Re-measure k random archs per target; the median |Δ|/latency becomes the target's noise floor."""
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
