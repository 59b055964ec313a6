"""Measure a run's jobs on many devices at once: one worker thread per (target, device) binding.

Bindings (``leti generate --target …``, one per device) are described in ``leti.device_runner.bindings``.

Several devices may serve one target (two identical phones): they share the target's queue. A worker claims a job
from the store, builds (or reuses) the model, measures, and stores the result and the job's completion in one
transaction, so a crash at any point loses at most the job in flight, which the next run requeues. A device that
fails ``max_failures`` jobs in a row is quarantined: its in-flight job goes back to the queue and the run report
names it with its fault counts.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from leti.datasets.store import Store
from leti.device_runner.base import Runner
from leti.device_runner.bindings import Binding
from leti.errors import DeviceError, GraphError, LetiError, ModelFileError
from leti.measurement import Measurement, Settings
from leti.targets import parse_target


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
    store_s: float = 0.0
    versions: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


RunnerFactory = Callable[[Binding], Runner]
ModelSource = Callable[[str, str], bytes]  # (arch_id, precision) -> .tflite bytes
Progress = Callable[[str, int], None]  # (worker, jobs finished so far by it)


class Farm:
    """Drain a run's job queue with one worker per binding. Construct, then ``run()``."""

    def __init__(
        self,
        store: Store,
        run_id: str,
        bindings: list[Binding],
        make_runner: RunnerFactory,
        model_for: ModelSource,
        settings: dict[str, Settings],
        max_failures: int = 3,
        max_attempts: int = 5,
        progress: Progress | None = None,
        source: str = "leti generate",
    ):
        self.store = store
        self.run_id = run_id
        self.bindings = bindings
        self.make_runner = make_runner
        self.model_for = model_for
        self.settings = settings
        self.max_failures = max_failures
        self.max_attempts = max_attempts
        self.progress = progress
        self.source = source

    def run(self) -> list[WorkerReport]:
        reports = [WorkerReport(b.worker, b.target, b.device) for b in self.bindings]
        threads = [
            threading.Thread(target=self._work, args=(b, r), name=b.worker, daemon=True)
            for b, r in zip(self.bindings, reports, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return reports

    def _work(self, b: Binding, report: WorkerReport) -> None:
        t0 = time.perf_counter()
        precision = parse_target(b.target).precision
        settings = self.settings[b.target]
        runner = None
        failures = 0
        try:
            runner = self.make_runner(b)
            while True:
                t = time.perf_counter()
                job = self.store.claim_job(self.run_id, b.worker, b.target)
                report.store_s += time.perf_counter() - t
                if job is None:
                    break
                t = time.perf_counter()
                try:
                    model = self.model_for(job.arch_id, precision)
                except (
                    GraphError,
                    ModelFileError,
                ) as e:  # the model cannot be built: no device will do better
                    self.store.fail_job(job.id, str(e), requeue=False)
                    report.failed_jobs += 1
                    report.errors.append(f"{job.arch_id[:12]}: {e}")
                    continue
                finally:
                    report.build_s += time.perf_counter() - t
                t = time.perf_counter()
                try:
                    m: Measurement = runner.measure(model, settings)
                except (DeviceError, LetiError, OSError) as e:
                    failures += 1
                    state = self.store.fail_job(job.id, f"{b.worker}: {e}", True, self.max_attempts)
                    report.errors.append(f"{job.arch_id[:12]}: {e}")
                    if state == "failed":
                        report.failed_jobs += 1
                    if failures >= self.max_failures:
                        report.quarantined = True
                        self.store.requeue_running(self.run_id, b.worker)
                        break
                    continue
                finally:
                    report.measure_s += time.perf_counter() - t
                t = time.perf_counter()
                self.store.complete_job(job.id, m, source=f"{self.source} ({b.worker})")
                report.store_s += time.perf_counter() - t
                report.versions = m.versions
                failures = 0
                report.measured += 1
                if self.progress:
                    self.progress(b.worker, report.measured)
        except LetiError as e:  # e.g. the device cannot be reached at all
            report.quarantined = True
            report.errors.append(str(e))
            self.store.requeue_running(self.run_id, b.worker)
        finally:
            if runner is not None:
                report.faults = dict(getattr(runner, "fault_counts", {}) or {})
                runner.close()
            report.seconds = time.perf_counter() - t0


def noise_floor(first_ms, second_ms) -> float:
    """Median relative difference between two measurements of the same models."""
    import numpy as np

    a, b = np.asarray(first_ms, float), np.asarray(second_ms, float)
    return float(np.median(np.abs(b - a) / a))


def pick_repeat(arch_ids: list[str], k: int, seed: int) -> list[str]:
    return random.Random(seed).sample(sorted(arch_ids), min(k, len(arch_ids)))
