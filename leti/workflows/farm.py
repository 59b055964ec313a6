"""Measure queued jobs on many devices at once: one worker thread per (target, device) binding.

Bindings (``leti generate --target …``, ``leti farm worker --target …``) are described in
``leti.device_runner.bindings``. Several devices may serve one target (two identical phones), on this host or on
others sharing a PostgreSQL store: they share the target's queue.

A worker claims a job (a lease on the database clock), builds or reuses the model, measures, and stores the result
with the job's completion in one transaction. A ``LeaseKeeper`` thread renews the leases this process holds while
the phones work. So a crash at any point loses at most the jobs in flight, which come back when their leases
expire (at once, for a process of this host that is gone). When the store cannot be reached, workers back off and
retry; a measurement in hand is kept until the store takes it. A device that fails ``max_failures`` jobs in a
row is quarantined: its job goes back to the queue, it claims nothing more, and the report names it with its
fault counts. Setting ``stop`` (SIGTERM) lets each worker finish its current job, then return.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from leti.datasets.queue import DEFAULT_LEASE_S
from leti.datasets.store import Job, Store, StoreUnavailable
from leti.device_runner.base import Runner
from leti.device_runner.bindings import Binding
from leti.errors import DeviceError, GraphError, LetiError, ModelFileError
from leti.measurement import Measurement, Settings
from leti.targets import parse_target

HOST = socket.gethostname()


@dataclass
class WorkerReport:
    worker: str
    target: str
    device: str | None
    measured: int = 0
    failed_jobs: int = 0
    errors: list[str] = field(default_factory=list)
    faults: dict = field(default_factory=dict)
    quarantined: bool = False
    seconds: float = 0.0
    build_s: float = 0.0
    measure_s: float = 0.0
    store_s: float = 0.0  # every store call: claims (also the empty ones), completions, failures
    claim_s: float = 0.0  # the claims that returned a job
    complete_s: float = 0.0
    lost_leases: int = 0  # jobs whose lease expired while measured (their result is still offered)
    store_outages: int = 0  # store calls that failed and were retried
    versions: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


RunnerFactory = Callable[[Binding], Runner]
ModelSource = Callable[[str, str], bytes]  # (arch_id, precision) -> .tflite bytes
SettingsSource = Callable[[Job], Settings]
Progress = Callable[[str, int], None]  # (worker, jobs finished so far by it)


def pid_alive(pid: int) -> bool:
    """Is process ``pid`` of this host running (a zombie is not)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


class LeaseKeeper:
    """Renews, every ``lease_s / 3``, the leases of the jobs this process's workers hold, and notes the ones lost
    (taken over after an expiry, or finished by another worker). Also the workers' liveness for `farm status`."""

    def __init__(self, store: Store, names: list[str], lease_s: float):
        self.store, self.names, self.lease_s = store, names, lease_s
        self.seconds = 0.0  # time spent in heartbeat calls
        self.beats = 0
        self._held: dict[int, int] = {}  # job id -> attempt
        self._lost: set[tuple[int, int]] = set()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="leti-lease-keeper", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join(timeout=10)

    def hold(self, job: Job) -> None:
        with self._lock:
            self._held[job.id] = job.attempts

    def release(self, job: Job) -> bool:
        """Stop renewing ``job``; True if its lease was lost while held."""
        with self._lock:
            self._held.pop(job.id, None)
            lost = (job.id, job.attempts) in self._lost
            self._lost.discard((job.id, job.attempts))
        return lost

    def _loop(self) -> None:
        while not self._done.wait(self.lease_s / 3):
            t = time.perf_counter()
            try:
                still = self.store.heartbeat(self.names, self.lease_s)
            except StoreUnavailable:
                continue  # the next beat retries; a lease outlives a few missed beats
            finally:
                self.seconds += time.perf_counter() - t
                self.beats += 1
            with self._lock:
                self._lost.update(held for held in self._held.items() if held not in still)


class Farm:
    """Drain the job queue with one worker per binding. Construct, then ``run()``.

    ``run_id`` limits the workers to one run's jobs (``leti generate``); None serves every run (``farm worker``).
    ``settings`` maps a target to its Settings, or is a function of the job. With ``drain`` a worker returns
    once nothing is pending or leased for its target (it waits for other workers' leases, which may expire and
    come back); without, it polls until ``stop`` is set. ``label(binding)`` names a worker in the store.
    """

    def __init__(
        self,
        store: Store,
        run_id: str | None,
        bindings: list[Binding],
        make_runner: RunnerFactory,
        model_for: ModelSource,
        settings: Mapping[str, Settings] | SettingsSource,
        max_failures: int = 3,
        progress: Progress | None = None,
        source: str = "leti generate",
        *,
        lease_s: float = DEFAULT_LEASE_S,
        drain: bool = True,
        stop: threading.Event | None = None,
        label: Callable[[Binding], str] | None = None,
        poll_s: float = 1.0,
        store_wait_s: float = 600.0,
    ):
        self.store = store
        self.run_id = run_id
        self.bindings = bindings
        self.make_runner = make_runner
        self.model_for = model_for
        self.settings_for = settings if callable(settings) else (lambda job: settings[job.target])
        self.max_failures = max_failures
        self.progress = progress
        self.source = source
        self.lease_s = lease_s
        self.drain = drain
        self.stop = stop or threading.Event()
        self.label = label or (lambda b: b.worker)
        self.poll_s = poll_s
        self.store_wait_s = store_wait_s
        self.heartbeat_s = 0.0
        self.heartbeats = 0

    def run(self) -> list[WorkerReport]:
        reports = [WorkerReport(self.label(b), b.target, b.device) for b in self.bindings]
        with LeaseKeeper(self.store, [r.worker for r in reports], self.lease_s) as keeper:
            threads = [
                threading.Thread(target=self._work, args=(b, r, keeper), name=r.worker, daemon=True)
                for b, r in zip(self.bindings, reports, strict=True)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        self.heartbeat_s, self.heartbeats = keeper.seconds, keeper.beats
        return reports

    # -- store calls that survive outages ---------------------------------------------------------------------

    def _call(self, report: WorkerReport, fn: Callable, *, must_finish: bool = False, timed: bool = True):
        """``fn()``, retried with a growing pause while the store is unavailable. Gives up (re-raising) when
        ``stop`` is set, unless ``must_finish`` (a job in hand), or after ``store_wait_s``. ``timed``: count the
        time as the store's."""
        t0, pause = time.monotonic(), 0.2
        while True:
            t = time.perf_counter()
            try:
                return fn()
            except StoreUnavailable:
                report.store_outages += 1
                if (self.stop.is_set() and not must_finish) or time.monotonic() - t0 > self.store_wait_s:
                    raise
            finally:
                if timed:
                    report.store_s += time.perf_counter() - t
            time.sleep(pause * random.uniform(0.5, 1.0))  # jitter: many workers must not reconnect in step
            pause = min(pause * 2, 5.0)

    def _claim(self, b: Binding, report: WorkerReport) -> Job | None:
        t = time.perf_counter()
        job = self._call(
            report,
            lambda: self.store.claim_job(
                self.run_id, report.worker, targets=[b.target], lease_s=self.lease_s
            ),
        )
        if job is not None:
            report.claim_s += time.perf_counter() - t
        return job

    def _fail(self, job: Job, report: WorkerReport, error: str, requeue: bool = True) -> str:
        return self._call(
            report, lambda: self.store.fail_job(job.id, error, requeue=requeue, attempt=job.attempts)
        )

    def _nothing_left(self, b: Binding, report: WorkerReport) -> bool:
        pending, running = self._call(report, lambda: self.store.open_jobs([b.target], self.run_id))
        return pending == 0 and running == 0

    # -- one worker -----------------------------------------------------------------------------------------

    def _work(self, b: Binding, report: WorkerReport, keeper: LeaseKeeper) -> None:
        t0 = time.perf_counter()
        precision = parse_target(b.target).precision
        runner = None
        failures = 0
        try:
            runner = self.make_runner(b)
            while not self.stop.is_set():
                job = self._claim(b, report)
                if job is None:
                    if self.drain and self._nothing_left(b, report):
                        break
                    self.stop.wait(self.poll_s)  # others hold leases, or (no drain) the queue is empty
                    continue
                keeper.hold(job)
                try:
                    outcome = self._measure(job, b, runner, precision, report)
                finally:
                    if keeper.release(job):
                        report.lost_leases += 1
                if isinstance(outcome, Measurement):
                    outcome = self._complete(job, outcome, report)
                if outcome == "done":
                    failures = 0
                elif outcome == "device":
                    failures += 1
                    if failures >= self.max_failures:
                        report.quarantined = True
                        break
        except StoreUnavailable as e:
            report.errors.append(str(e))
        except LetiError as e:  # e.g. the device cannot be reached at all
            report.quarantined = True
            report.errors.append(str(e))
        finally:
            if runner is not None:
                report.faults = dict(getattr(runner, "fault_counts", {}) or {})
                runner.close()
            report.seconds = time.perf_counter() - t0

    def _measure(
        self, job: Job, b: Binding, runner, precision: str, report: WorkerReport
    ) -> Measurement | str:
        """Build and measure: a Measurement, or 'job' (the job failed for good) or 'device' (retried elsewhere)."""
        t = time.perf_counter()
        try:  # both may read the store (the arch's spec, the run's settings): ride out an outage
            model = self._call(
                report, lambda: self.model_for(job.arch_id, precision), must_finish=True, timed=False
            )
            settings = self._call(report, lambda: self.settings_for(job), must_finish=True, timed=False)
        except StoreUnavailable:
            raise
        except (GraphError, ModelFileError, LetiError) as e:  # no device will do better
            self._fail(job, report, str(e), requeue=False)
            report.failed_jobs += 1
            report.errors.append(f"{job.arch_id[:12]}: {e}")
            return "job"
        finally:
            report.build_s += time.perf_counter() - t
        t = time.perf_counter()
        try:
            return runner.measure(model, settings)
        except (DeviceError, LetiError, OSError) as e:
            state = self._fail(job, report, f"{report.worker}: {e}")
            report.errors.append(f"{job.arch_id[:12]}: {e}")
            if state == "failed":
                report.failed_jobs += 1
            return "device"
        finally:
            report.measure_s += time.perf_counter() - t

    def _complete(self, job: Job, m: Measurement, report: WorkerReport) -> str:
        """Store the result: 'done', 'device' (the device returned garbage), or 'dropped' (the store stayed away)."""
        t = time.perf_counter()
        try:
            self._call(
                report,
                lambda: self.store.complete_job(
                    job.id,
                    m,
                    source=f"{self.source} ({report.worker})",
                    attempt=job.attempts,
                    worker=report.worker,
                ),
                must_finish=True,
            )
        except (
            StoreUnavailable
        ) as e:  # gave up after store_wait_s: the lease will expire and the job come back
            report.errors.append(f"{job.arch_id[:12]}: result dropped, {e}")
            return "dropped"
        except LetiError as e:  # an impossible measurement (e.g. latency 0): the device's fault
            self._fail(job, report, f"{report.worker}: {e}")
            report.errors.append(f"{job.arch_id[:12]}: {e}")
            return "device"
        report.complete_s += time.perf_counter() - t
        report.versions = m.versions
        report.measured += 1
        if self.progress:
            self.progress(report.worker, report.measured)
        return "done"


def noise_floor(first_ms, second_ms) -> float:
    """Median relative difference between two measurements of the same models."""
    import numpy as np

    a, b = np.asarray(first_ms, float), np.asarray(second_ms, float)
    return float(np.median(np.abs(b - a) / a))


def pick_repeat(arch_ids: list[str], k: int, seed: int) -> list[str]:
    return random.Random(seed).sample(sorted(arch_ids), min(k, len(arch_ids)))
