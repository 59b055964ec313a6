"""What measuring means, shared by the runners, the store and the workflows: the Settings of one benchmark run,
the Measurement record it yields, and the Settings a target name implies."""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, field

from leti.errors import LetiError
from leti.targets import parse_target

# Timed runs and warm-up runs per measurement: the one default of every command and workflow that measures
DEFAULT_RUNS = 30
DEFAULT_WARMUP = 3


@dataclass(frozen=True)
class Settings:
    """How to run one benchmark. Defaults suit a quick but stable host measurement."""

    threads: int = 1
    warmup: int = DEFAULT_WARMUP
    runs: int = DEFAULT_RUNS
    min_time_s: float = 0.0  # keep running past ``runs`` until this much time has passed
    xnnpack: bool = True
    delegate: str = "cpu"  # cpu | gpu | nnapi
    affinity: tuple[int, ...] | str | None = None  # host: CPU ids; adb: 'big', 'little' or a hex mask
    gpu_precision_loss_allowed: bool = True
    op_profiling: bool = False

    def __post_init__(self):
        if not isinstance(self.threads, int) or not 1 <= self.threads <= 64:
            raise LetiError(f"must be an integer in 1..64, got {self.threads!r}", "settings.threads")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise LetiError(f"must be a non-negative integer, got {self.warmup!r}", "settings.warmup")
        if not isinstance(self.runs, int) or self.runs < 1:
            raise LetiError(f"must be a positive integer, got {self.runs!r}", "settings.runs")
        if self.min_time_s < 0:
            raise LetiError(f"must be >= 0, got {self.min_time_s!r}", "settings.min_time_s")
        if self.delegate not in ("cpu", "gpu", "nnapi"):
            raise LetiError(f"must be cpu, gpu or nnapi, got {self.delegate!r}", "settings.delegate")

    def key(self) -> str:
        """A stable string for the store's uniqueness key."""
        parts = [f"t{self.threads}", f"w{self.warmup}", f"r{self.runs}", f"d{self.delegate}"]
        if self.min_time_s:
            parts.append(f"min{self.min_time_s:g}")
        if not self.xnnpack:
            parts.append("noxnn")
        if self.affinity is not None:
            aff = self.affinity if isinstance(self.affinity, str) else ".".join(map(str, self.affinity))
            parts.append(f"a{aff}")
        return "-".join(parts)

    def to_dict(self) -> dict:
        d = asdict(self)
        if isinstance(self.affinity, tuple):
            d["affinity"] = list(self.affinity)
        return d


@dataclass
class Measurement:
    """Latency statistics of one model on one target, in milliseconds."""

    mean_ms: float
    median_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    p90_ms: float
    n_runs: int
    init_ms: float | None = None
    first_ms: float | None = None
    warmup_ms: float | None = None
    model_bytes: int = 0
    memory: dict = field(default_factory=dict)  # e.g. peak_rss_delta_mb, init_footprint_mb
    raw: str = ""  # the tool's own output (benchmark_model text) or a JSON summary of the samples
    raw_unit: str = "ms"  # unit the raw numbers were reported in ('us' for benchmark_model)
    op_profile: list[dict] | None = None
    versions: dict = field(default_factory=dict)
    when: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))

    @classmethod
    def from_samples(cls, samples_ms, **extra) -> Measurement:
        import numpy as np  # here: the command line reads this module's defaults without numpy

        a = np.asarray(samples_ms, dtype=float)
        if a.size == 0:
            raise LetiError("no timing samples", "measurement")
        return cls(
            mean_ms=float(a.mean()),
            median_ms=float(np.median(a)),
            std_ms=float(a.std()),
            min_ms=float(a.min()),
            max_ms=float(a.max()),
            p90_ms=float(np.percentile(a, 90)),
            n_runs=int(a.size),
            **extra,
        )

    @property
    def latency_ms(self) -> float:
        """The figure predictors train on: the median (robust to the odd slow run)."""
        return self.median_ms

    def to_dict(self) -> dict:
        return asdict(self)


def target_settings(target: str, **overrides) -> Settings:
    """The Settings a target name implies (threads, XNNPACK, delegate, core affinity), with ``overrides`` applied
    (warmup, runs, min_time_s, ...)."""
    spec = parse_target(target)
    fields = {
        "threads": spec.threads,
        "xnnpack": spec.xnnpack,
        "delegate": spec.unit if spec.unit in ("gpu", "nnapi") else "cpu",
        "affinity": spec.affinity,
    }
    fields.update(overrides)
    try:
        return Settings(**fields)
    except TypeError as e:
        raise LetiError(f"unknown setting ({e})", "settings") from None
