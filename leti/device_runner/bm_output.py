"""Parse the text that TFLite's ``benchmark_model`` prints, across the formats it has had since TF 1.12.

The tool reports times in microseconds; :func:`to_measurement` turns a parse into a
:class:`~leti.device_runner.base.Measurement` in milliseconds and keeps the raw text.

Formats handled (all seen in real output):

* TF 1.x: ``Average inference timings in us: Warmup: W, Init: I, no stats: X``
* TF ~2.0-2.1: ``Average inference timings in us: Warmup: W, Init: I, Inference: X``
* TF 2.2+: ``Inference timings in us: Init: I, First inference: F, Warmup (avg): W, Inference (avg): X``
  with ``Peak memory footprint (MB): init=… overall=…`` (2.2-2.7) or
  ``Memory footprint delta from the start of the tool (MB): init=… overall=…`` (2.8+);
* newest: every line prefixed ``INFO:``, ``p5=… median=… p95=…`` on the ``count=`` lines, and
  ``Overall peak memory footprint (MB) via periodic monitoring: X``;
* logcat lines (``… I tflite  : …``) from the benchmark APK.

Numbers may be printed in C++ ``%g`` style (``avg=2.95034e+06``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from leti.errors import LetiError
from leti.measurement import Measurement

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
# Log prefixes the tool or its wrappers put before a message: "INFO: ", logcat "… I tflite  : ".
_PREFIX_RE = re.compile(r"^(?:(?:INFO|WARNING|ERROR|VERBOSE|DEBUG):\s+|.*?\btflite\s+:\s+)")
_COUNT_RE = re.compile(r"^count=(\d+)((?:\s+\w+=" + _NUM + r")*)\s*$")
_KV_RE = re.compile(r"(\w+)=(" + _NUM + r")")
_SUMMARY_RE = re.compile(
    r"^Inference timings in us: Init: (?P<init>" + _NUM + r"), First inference: (?P<first>" + _NUM + r"), "
    r"Warmup \(avg\): (?P<warmup>" + _NUM + r"), Inference \(avg\): (?P<inference>" + _NUM + r")"
)
_LEGACY_SUMMARY_RE = re.compile(
    r"^Average inference timings in us: Warmup: (?P<warmup>" + _NUM + r"), Init: (?P<init>" + _NUM + r"), "
    r"(?:Inference|no stats): (?P<inference>" + _NUM + r")"
)
_DELTA_MEM_RE = re.compile(
    r"^Memory footprint delta from the start of the tool \(MB\): init=(" + _NUM + r") overall=(" + _NUM + r")"
)
_PEAK_MEM_RE = re.compile(r"^Peak memory footprint \(MB\): init=(" + _NUM + r") overall=(" + _NUM + r")")
_MONITOR_MEM_RE = re.compile(
    r"^Overall peak memory footprint \(MB\) via periodic monitoring: (" + _NUM + r")"
)
_MODEL_SIZE_RE = re.compile(r"^The input model file size \(MB\): (" + _NUM + r")")
_THREADS_RE = re.compile(r"^(?:#threads used for CPU inference|Num threads): \[(\d+)\]")
_GRAPH_RE = re.compile(r"^Graph: \[(.*)\]$")
_FAILED_RE = re.compile(r"Benchmarking failed|Failed to (?:allocate tensors|apply|invoke|construct)")
_TIMINGS_RE = re.compile(r"^Timings \(microseconds\): (count=.*)$")
_HEADER_CELL_RE = re.compile(r"\[([^\]]+)\]")
_NAME_INDEX_RE = re.compile(r"^\[(?P<name>.*)\]:(?P<index>\d+)$")


class BenchmarkFailedError(LetiError):
    """benchmark_model ran but reported that it could not benchmark the model (e.g. a delegate refused it)."""


@dataclass(frozen=True)
class RunStats:
    """One ``count=… first=… curr=… min=… max=… avg=… std=…`` line, in microseconds."""

    count: int
    first: float | None = None
    curr: float | None = None
    min: float | None = None
    max: float | None = None
    avg: float | None = None
    std: float | None = None
    p5: float | None = None
    median: float | None = None
    p95: float | None = None


@dataclass(frozen=True)
class OpRow:
    """One row of the per-operator ``Run Order`` table (times in ms, as the tool prints them)."""

    node_type: str
    avg_ms: float
    percent: float | None
    name: str
    node_index: int | None = None
    start_ms: float | None = None
    first_ms: float | None = None
    cdf_percent: float | None = None
    mem_kb: float | None = None
    times_called: int | None = None

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class BenchmarkOutput:
    """Everything leti reads from one ``benchmark_model`` run. Times are microseconds."""

    inference_avg_us: float
    runs: RunStats
    warmup: RunStats | None = None
    init_us: float | None = None
    first_us: float | None = None
    warmup_avg_us: float | None = None
    memory_mb: dict = field(default_factory=dict)
    op_profile: tuple[OpRow, ...] | None = None
    model_size_mb: float | None = None
    num_threads: int | None = None
    graph: str | None = None
    summary_format: str = "modern"  # modern | legacy | legacy-no-stats | profile-only


def _strip(line: str) -> str:
    line = line.strip()
    return _PREFIX_RE.sub("", line, count=1).strip()


def _run_stats(count: str, rest: str) -> RunStats:
    values = {k: float(v) for k, v in _KV_RE.findall(rest)}
    known = {k: values.get(k) for k in ("first", "curr", "min", "max", "avg", "std", "p5", "median", "p95")}
    return RunStats(count=int(count), **known)


def _parse_table(lines: list[str], start: int) -> tuple[OpRow, ...]:
    """Rows of the table whose ``[node type] … [Name]`` header is at ``lines[start]``."""
    header = [c.strip().lower() for c in _HEADER_CELL_RE.findall(lines[start])]
    if not header or header[0] != "node type" or header[-1] != "name":
        raise LetiError(
            f"unexpected op profile header {lines[start].strip()!r}", "benchmark_model.op_profile"
        )
    numeric = header[1:-1]
    rows: list[OpRow] = []
    for line in lines[start + 1 :]:
        text = line.strip()
        if not text or text.startswith("="):
            break
        parts = text.split(None, len(numeric) + 1)
        if len(parts) < len(numeric) + 2:
            raise LetiError(f"op profile row has too few columns: {text!r}", "benchmark_model.op_profile")
        cells: dict[str, float] = {}
        for col, cell in zip(numeric, parts[1 : 1 + len(numeric)], strict=False):
            try:
                cells[col] = float(cell.rstrip("%"))
            except ValueError as exc:
                raise LetiError(
                    f"bad {col!r} value {cell!r} in op profile row", "benchmark_model.op_profile"
                ) from exc
        if "avg ms" not in cells:
            raise LetiError("op profile table has no [avg ms] column", "benchmark_model.op_profile")
        raw_name = parts[-1].strip()
        m = _NAME_INDEX_RE.match(raw_name)
        name, index = (m["name"], int(m["index"])) if m else (raw_name.strip("[]"), None)
        called = cells.get("times called")
        rows.append(
            OpRow(
                node_type=parts[0],
                avg_ms=cells["avg ms"],
                percent=cells.get("%"),
                name=name,
                node_index=index,
                start_ms=cells.get("start"),
                first_ms=cells.get("first"),
                cdf_percent=cells.get("cdf%"),
                mem_kb=cells.get("mem kb"),
                times_called=None if called is None else int(called),
            )
        )
    return tuple(rows)


def _op_profile(lines: list[str]) -> tuple[tuple[OpRow, ...] | None, RunStats | None]:
    """The per-operator table of the regular runs and its ``Timings`` line, if profiling was on.

    Since TF 2.3 the tool prints an initialization profile first; only the section after
    "Operator-wise Profiling Info for Regular Benchmark Runs:" describes inference.
    """
    begin = 0
    for i, line in enumerate(lines):
        if line.startswith("Operator-wise Profiling Info for Regular Benchmark Runs"):
            begin = i + 1
            break
        if line.startswith("Profiling Info for Benchmark Initialization"):
            begin = None  # keep looking for the regular section
    if begin is None:
        return None, None
    table = timings = None
    for i in range(begin, len(lines)):
        is_header = "Run Order" in lines[i] and lines[i].startswith("=") and i + 1 < len(lines)
        if table is None and is_header:
            table = _parse_table(lines, i + 1)
        m = _TIMINGS_RE.match(lines[i])
        if m and table is not None:
            cm = _COUNT_RE.match(m[1])
            timings = _run_stats(cm[1], cm[2]) if cm else None
            break
    return table, timings


def parse(text: str) -> BenchmarkOutput:
    """Parse ``benchmark_model`` stdout+stderr. Raises :class:`LetiError` naming what is missing."""
    if not isinstance(text, str) or not text.strip():
        raise LetiError("empty output", "benchmark_model.output")
    lines = [_strip(raw) for raw in text.splitlines()]
    failure = [ln for ln in lines if _FAILED_RE.search(ln)]
    counts: list[RunStats] = []
    summary: dict[str, float] = {}
    fmt = None
    memory: dict[str, float] = {}
    model_size = threads = graph = None
    for line in lines:
        if m := _COUNT_RE.match(line):
            counts.append(_run_stats(m[1], m[2]))
        elif m := _SUMMARY_RE.match(line):
            summary, fmt = {k: float(v) for k, v in m.groupdict().items()}, "modern"
        elif m := _LEGACY_SUMMARY_RE.match(line):
            summary = {k: float(v) for k, v in m.groupdict().items()}
            fmt = "legacy-no-stats" if "no stats" in line else "legacy"
        elif m := _DELTA_MEM_RE.match(line):
            memory.update(init_rss_delta_mb=float(m[1]), overall_rss_delta_mb=float(m[2]))
        elif m := _PEAK_MEM_RE.match(line):
            memory.update(init_peak_rss_mb=float(m[1]), overall_peak_rss_mb=float(m[2]))
        elif m := _MONITOR_MEM_RE.match(line):
            memory["peak_rss_mb"] = float(m[1])
        elif m := _MODEL_SIZE_RE.match(line):
            model_size = float(m[1])
        elif (m := _THREADS_RE.match(line)) and threads is None:
            threads = int(m[1])
        elif (m := _GRAPH_RE.match(line)) and graph is None:
            graph = m[1]
    ops, profile_timings = _op_profile(lines)
    if not summary and failure:
        # Only without a summary: some versions warn "Failed to apply … delegate" and still run on CPU.
        context = [ln.strip() for ln in text.splitlines() if "ERROR" in ln[:12] or _FAILED_RE.search(ln)]
        raise BenchmarkFailedError(
            f"benchmark_model reported failure: {' / '.join(context[-3:])}", "benchmark_model.output"
        )
    if not summary:
        what = "inference timing summary line ('Inference timings in us: …')"
        hint = " (output truncated?)" if counts else ""
        raise LetiError(f"missing {what}{hint}", "benchmark_model.output")
    runs = counts[-1] if counts else profile_timings
    warmup = counts[-2] if len(counts) >= 2 else None
    if runs is None:
        raise LetiError("missing run statistics line ('count=… min=… max=…')", "benchmark_model.output")
    if runs.count < 1 or (runs.min is None and runs.count > 1):
        raise LetiError(f"run statistics line has no min/max: {runs}", "benchmark_model.output")
    if fmt == "modern":
        first, warmup_avg = summary["first"], summary["warmup"]
    else:
        first = warmup.first if warmup and warmup.first is not None else (warmup.curr if warmup else None)
        warmup_avg = summary["warmup"]
        if not counts and profile_timings is not None:
            fmt = "profile-only" if fmt == "legacy" else fmt
    return BenchmarkOutput(
        inference_avg_us=summary["inference"],
        runs=runs,
        warmup=warmup,
        init_us=summary.get("init"),
        first_us=first,
        warmup_avg_us=warmup_avg,
        memory_mb=memory,
        op_profile=ops,
        model_size_mb=model_size,
        num_threads=threads,
        graph=graph,
        summary_format=fmt,
    )


def _ms(us: float | None) -> float | None:
    return None if us is None else us / 1000.0


def to_measurement(
    parsed: BenchmarkOutput, raw: str, *, model_bytes: int = 0, versions: dict | None = None
) -> Measurement:
    """A :class:`Measurement` in ms from a parse, keeping ``raw`` and ``raw_unit='us'``.

    benchmark_model reports mean, std, min and max (and, since ~TF 2.15, p5/median/p95) but not the
    samples. When it gives no median, ``median_ms`` is the mean; ``p90_ms`` is the smallest reported
    upper bound of the 90th percentile (p95, else max). ``versions['percentiles']`` says which.
    """
    r = parsed.runs
    mean = parsed.inference_avg_us if parsed.inference_avg_us is not None else r.avg
    lo = r.min if r.min is not None else (r.curr if r.count == 1 else None)
    hi = r.max if r.max is not None else lo
    if lo is None or hi is None:
        raise LetiError("run statistics have no min/max", "benchmark_model.output")
    median = r.median if r.median is not None else mean
    p90 = r.p95 if r.p95 is not None else hi
    info = dict(versions or {})
    info.setdefault("tool", "benchmark_model")
    info["percentiles"] = "reported" if r.median is not None else "approximate"
    memory = {k: v for k, v in parsed.memory_mb.items()}
    if parsed.model_size_mb is not None:
        memory["model_file_mb"] = parsed.model_size_mb
    return Measurement(
        mean_ms=mean / 1000.0,
        median_ms=median / 1000.0,
        std_ms=(r.std or 0.0) / 1000.0,
        min_ms=lo / 1000.0,
        max_ms=hi / 1000.0,
        p90_ms=p90 / 1000.0,
        n_runs=r.count,
        init_ms=_ms(parsed.init_us),
        first_ms=_ms(parsed.first_us),
        warmup_ms=_ms(parsed.warmup_avg_us),
        model_bytes=model_bytes,
        memory=memory,
        raw=raw,
        raw_unit="us",
        op_profile=None if parsed.op_profile is None else [row.to_dict() for row in parsed.op_profile],
        versions=info,
    )
