"""``leti farm worker``: one host's share of a farm. It measures queued jobs of the targets its devices serve, from
any run, until told to stop; many such workers on many hosts share one PostgreSQL store.

The jobs come from ``leti generate --enqueue-only`` (or any ``Store.add_jobs``): the arch is built from the store's
spec JSON, and the measurement settings are the ones the run recorded for the job's target.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from leti.datasets.queue import DEFAULT_LEASE_S
from leti.datasets.store import Job, Store
from leti.device_runner.bindings import Binding, make_runner
from leti.errors import LetiError
from leti.measurement import Settings, target_settings
from leti.paths import leti_home
from leti.workflows.farm import HOST, Farm, Progress, WorkerReport, pid_alive
from leti.workflows.models import ModelCache, store_archs


@dataclass
class WorkerRun:
    """What one ``farm worker`` process did."""

    host: str
    pid: int
    workers: list[WorkerReport]
    heartbeat_s: float = 0.0
    heartbeats: int = 0
    skipped: list[str] = field(default_factory=list)  # bindings it could not serve, with the reason

    def to_dict(self) -> dict:
        return {"host": self.host, "pid": self.pid, "workers": [w.to_dict() for w in self.workers],
                "heartbeat_s": self.heartbeat_s, "heartbeats": self.heartbeats, "skipped": self.skipped}  # fmt: skip


def label(binding: Binding) -> str:
    """A binding's worker name in the store: unique across hosts (``host/target@device``)."""
    return f"{HOST}/{binding.worker}"


def settings_from_runs(store: Store) -> Callable[[Job], Settings]:
    """The Settings each job was queued with (from its run's recorded parameters)."""
    cache: dict[tuple[str, str], Settings | None] = {}

    def settings_for(job: Job) -> Settings:
        key = (job.run_id, job.target)
        if key not in cache:
            run = store.get_run(job.run_id) or {}
            d = (run.get("params") or {}).get("settings", {}).get(job.target)
            cache[key] = _settings(d) if isinstance(d, dict) else None
        s = cache[key]
        if s is None or s.key() != job.settings_key:
            s = target_settings(job.target)  # a job queued by hand with the target's defaults
            if s.key() != job.settings_key:
                raise LetiError(
                    f"run {job.run_id} records no settings {job.settings_key!r} for {job.target}", "settings"
                )
        return s

    return settings_for


def _settings(d: dict) -> Settings:
    d = dict(d)
    if isinstance(d.get("affinity"), list):
        d["affinity"] = tuple(d["affinity"])
    try:
        return Settings(**d)
    except TypeError as e:
        raise LetiError(f"unreadable run settings ({e})", "settings") from None


def run_worker(
    store: Store,
    bindings: list[Binding],
    *,
    benchmark_binary: str | None = None,
    adb_options: dict | None = None,
    lease_s: float = DEFAULT_LEASE_S,
    drain: bool = False,
    stop: threading.Event | None = None,
    max_failures: int = 3,
    progress: Progress | None = None,
    model_dir: Path | None = None,
    poll_s: float = 1.0,
    runner_factory: Callable[[Binding], object] | None = None,
) -> WorkerRun:
    """Serve ``bindings`` until ``stop`` is set (or, with ``drain``, until their targets' queues are empty).

    Bad input is a LetiError before anything runs: no binding, a device bound twice, a device another worker
    process of this host already serves, or no binding this worker can serve (e.g. an Android target without
    ``benchmark_binary``).
    """
    if not bindings:
        raise LetiError("give at least one --target TARGET@DEVICE this worker can serve", "target")
    devices = [b.device or "local" for b in bindings]
    twice = sorted({d for d in devices if devices.count(d) > 1})
    if twice:
        raise LetiError(
            f"device {twice[0]} is bound twice; one device measures one thing at a time", "target"
        )
    factory = runner_factory or (lambda b: make_runner(b, benchmark_binary, **(adb_options or {})))
    usable, skipped = [], []
    for b in bindings:
        try:
            factory(b).close()  # the runner contacts its device on first use only
            usable.append(b)
        except LetiError as e:
            skipped.append(f"{b.worker}: {e}")
    if not usable:
        raise LetiError(f"no target this worker can serve ({'; '.join(skipped)})", "target")
    pid = os.getpid()
    store.requeue_dead(HOST, pid_alive)  # jobs of a worker of this host that died: back at once
    store.register_workers(
        HOST, pid, [(label(b), b.target, b.device or "local") for b in usable], pid_alive, lease_s
    )
    farm = Farm(
        store, None, usable, factory, ModelCache(store_archs(store), Path(model_dir or leti_home() / "models")),
        settings_from_runs(store), max_failures, progress, "leti farm worker", lease_s=lease_s, drain=drain,
        stop=stop, label=label, poll_s=poll_s,
    )  # fmt: skip
    reports: list[WorkerReport] = []
    try:
        reports = farm.run()
    finally:
        quarantined = [r.worker for r in reports if r.quarantined]
        try:
            store.set_worker_state(quarantined, "quarantined", pid=pid)
            store.set_worker_state(
                [label(b) for b in usable if label(b) not in quarantined], "stopped", pid=pid
            )
        except LetiError:
            pass  # the store is away: `farm status` will show these workers as lost
    return WorkerRun(HOST, pid, reports, farm.heartbeat_s, farm.heartbeats, skipped)
