"""LocalRunner: measure .tflite models with LiteRT on this machine (the host targets, no phone needed).

How a measurement runs, in the spirit of TFLite's ``benchmark_model``:

1. CPU affinity (``settings.affinity``: CPU ids, or a hex mask such as ``"0x3"``) is set on the calling thread
   *before* the interpreter exists, so the threads LiteRT starts inherit it; it is restored afterwards.
2. The interpreter is built with ``num_threads`` and, for ``xnnpack=False``, the
   ``BUILTIN_WITHOUT_DEFAULT_DELEGATES`` op resolver (LiteRT's Python API applies XNNPACK as a default delegate
   otherwise). ``init_ms`` covers construction and ``allocate_tensors`` (where the delegate is applied).
3. Inputs are seeded random values of each input's dtype (standard normal floats, full-range integers), set once.
4. ``warmup`` runs (the first is also reported as ``first_ms``), then timed runs: at least ``runs`` and, with
   ``min_time_s``, until the timed runs add up to that long. Only ``invoke()`` is timed.
5. Memory: the peak-RSS counter is reset (``/proc/self/clear_refs``) before loading, and
   ``peak_rss_delta_mb`` = peak RSS during the measurement - RSS before it. Where the counter cannot be reset,
   the process-lifetime ``ru_maxrss`` is used instead (then a model smaller than an earlier one reads 0) and
   ``memory['peak_source']`` says which.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.metadata
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np

from leti.errors import LetiError, ModelFileError, TargetError
from leti.measurement import Measurement, Settings, target_settings
from leti.targets import host_targets, is_host_target, parse_target
from leti.tflite.convert import silenced
from leti.tflite.reader import check_tflite_bytes


# ---- targets ----------------------------------------------------------------------------------------------------
def settings_for_target(target: str, **overrides) -> tuple[Settings, str]:
    """(Settings, precision) for a host target such as ``host-litert-cpu-2t-int8`` (threads=2, an int8 model).

    ``overrides`` replace Settings fields (warmup, runs, min_time_s, ...). A CPU mask token (``-m3``) becomes
    the affinity; ``big`` / ``little`` have no meaning on the host and are refused.
    """
    if not is_host_target(target):
        raise TargetError(
            f"{target!r} is not a host target (host-litert-cpu-<N>t[-fp16|-int8][-noxnn])", "target"
        )
    spec = parse_target(target)
    if spec.affinity in ("big", "little"):
        raise TargetError(
            f"{spec.affinity!r} cores are not defined on the host; use a mask such as -m3", "target"
        )
    return target_settings(target, **overrides), spec.precision


def resolve_affinity(affinity) -> tuple[int, ...] | None:
    """CPU ids from a tuple/list of ids or a hex mask string; LetiError when they are not all usable here."""
    if affinity is None:
        return None
    field = "settings.affinity"
    if isinstance(affinity, str):
        s = affinity.strip().lower()
        if s in ("big", "little"):
            raise LetiError(f"{s!r} cores are not defined on the host; give CPU ids or a hex mask", field)
        try:
            mask = int(s, 16)
        except ValueError:
            raise LetiError(f"must be CPU ids or a hex mask such as '0x3', got {affinity!r}", field) from None
        cpus = tuple(i for i in range(mask.bit_length()) if mask >> i & 1)
    else:
        try:
            cpus = tuple(sorted({int(c) for c in affinity}))
        except (TypeError, ValueError):
            raise LetiError(f"must be CPU ids or a hex mask, got {affinity!r}", field) from None
    if not cpus:
        raise LetiError("selects no CPU", field)
    available = os.sched_getaffinity(0)
    missing = [c for c in cpus if c not in available]
    if missing:
        raise LetiError(f"CPUs {missing} are not available here (available: {sorted(available)})", field)
    return cpus


# ---- environment ------------------------------------------------------------------------------------------------
def _dist_version(*names: str) -> str:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return ""


@functools.lru_cache(maxsize=1)
def host_versions() -> dict:
    """Tool and machine versions recorded with every local measurement (TensorFlow is not imported)."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "litert": _dist_version("ai-edge-litert"),
        "tensorflow": _dist_version("tensorflow-cpu", "tensorflow"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu": cpu,
        "cpu_count": os.cpu_count() or 0,
        "machine": platform.machine(),
        "os": platform.platform(),
    }


def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # 5 resets the peak RSS (VmHWM) of the process, Linux >= 4.0
        return True
    except OSError:
        return False


def random_inputs(details: list[dict], seed: int = 0) -> list[np.ndarray]:
    """Seeded random arrays matching the interpreter's input details (dtype and shape)."""
    rng = np.random.default_rng(seed)
    out = []
    for d in details:
        dtype, shape = np.dtype(d["dtype"]), tuple(int(s) for s in d["shape"])
        if dtype.kind == "f":
            out.append(rng.standard_normal(shape).astype(dtype))
        elif dtype.kind in "iu":
            info = np.iinfo(dtype)
            out.append(rng.integers(info.min, int(info.max) + 1, size=shape, dtype=dtype))
        elif dtype.kind == "b":
            out.append(rng.integers(0, 2, size=shape).astype(bool))
        else:
            raise ModelFileError(f"input {d.get('name', '')!r} has unsupported dtype {dtype}", "model")
    return out


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[0][:300] if lines else "unknown error"


def load_interpreter(data: bytes, threads: int = 1, xnnpack: bool = True):
    """A LiteRT interpreter with tensors allocated; ModelFileError (one line, no C++ chatter) when it fails."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    check_tflite_bytes(data)
    # LiteRT's Python API applies XNNPACK as a default delegate unless the resolver says otherwise
    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with silenced() as log:
        try:
            interp = Interpreter(
                model_content=data, num_threads=threads, experimental_op_resolver_type=resolver
            )
            interp.allocate_tensors()
            return interp
        except Exception as e:  # noqa: BLE001 - LiteRT raises ValueError/RuntimeError with C++ text
            err = e
    detail = log.last_line() or _one_line(str(err))
    raise ModelFileError(f"LiteRT cannot load the model ({_one_line(detail)})", "model")


def run_model(data: bytes, inputs: list[np.ndarray] | None = None, seed: int = 0, threads: int = 1,
              xnnpack: bool = True) -> list[np.ndarray]:  # fmt: skip
    """One inference: the outputs for ``inputs`` (default: seeded random inputs of the right dtypes)."""
    interp = load_interpreter(bytes(data), threads, xnnpack)
    details = interp.get_input_details()
    xs = random_inputs(details, seed) if inputs is None else list(inputs)
    if len(xs) != len(details):
        raise LetiError(f"the model has {len(details)} inputs, got {len(xs)}", "inputs")
    arrays = []
    for k, (d, x) in enumerate(zip(details, xs, strict=True)):
        a = np.asarray(x, dtype=d["dtype"])
        if a.size != int(np.prod(d["shape"])):
            raise LetiError(f"has shape {a.shape}, the model wants {tuple(d['shape'])}", f"inputs[{k}]")
        arrays.append(a.reshape(d["shape"]))
    err = None
    with silenced() as log:
        try:
            for d, a in zip(details, arrays, strict=True):
                interp.set_tensor(d["index"], a)
            interp.invoke()
        except Exception as e:  # noqa: BLE001 - LiteRT raises ValueError/RuntimeError with C++ text
            err = e
    if err is not None:
        raise LetiError(f"LiteRT failed to run the model ({_one_line(log.last_line() or str(err))})", "model")
    return [interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()]


def _trim_heap() -> None:
    # not glibc: nothing to trim, and the RSS figures may read low for models smaller than an earlier one
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# ---- the runner -------------------------------------------------------------------------------------------------
class LocalRunner:
    """Runs .tflite models with LiteRT in this process."""

    name = "local"

    def targets(self) -> list[str]:
        return host_targets()

    def close(self) -> None:
        """Nothing to release: each ``measure`` loads and drops its own interpreter."""

    def __enter__(self) -> LocalRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def measure_file(self, path, settings: Settings, seed: int = 0) -> Measurement:
        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as e:
            raise ModelFileError(f"cannot read {p} ({e.strerror or e})", "model") from None
        return self.measure(data, settings, seed=seed)

    def measure(self, model_bytes: bytes, settings: Settings, seed: int = 0) -> Measurement:
        """Latency statistics of ``model_bytes`` under ``settings`` (see the module docstring)."""
        if not isinstance(model_bytes, bytes | bytearray | memoryview):
            raise ModelFileError(f"expected .tflite bytes, got {type(model_bytes).__name__}", "model")
        model_bytes = bytes(model_bytes)
        check_tflite_bytes(model_bytes)
        if settings.delegate != "cpu":
            raise LetiError(
                f"the local runner runs on the CPU, not {settings.delegate!r}", "settings.delegate"
            )
        if settings.op_profiling:
            raise LetiError(
                "the local runner cannot profile single ops; use the adb runner", "settings.op_profiling"
            )
        cpus = resolve_affinity(settings.affinity)
        saved = os.sched_getaffinity(0) if cpus is not None else None
        try:
            if cpus is not None:
                os.sched_setaffinity(0, cpus)
                cpus = tuple(sorted(os.sched_getaffinity(0)))  # what the kernel applied, recorded in raw
            return self._measure(model_bytes, settings, seed, cpus)
        finally:
            if saved is not None:
                os.sched_setaffinity(0, saved)

    def _measure(self, data: bytes, settings: Settings, seed: int, cpus) -> Measurement:
        _trim_heap()  # hand freed memory back first, so that the RSS figures see this model's allocations
        peak_source = "VmHWM" if _reset_peak_rss() else "ru_maxrss"
        rss0 = _status_kb("VmRSS") or 0
        maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        interp = load_interpreter(data, settings.threads, settings.xnnpack)
        init_ms = (time.perf_counter() - t0) * 1e3
        rss_init = _status_kb("VmRSS") or 0
        try:
            for d, x in zip(
                interp.get_input_details(), random_inputs(interp.get_input_details(), seed), strict=True
            ):
                interp.set_tensor(d["index"], x)
            invoke = interp.invoke
            clock = time.perf_counter_ns
            first_ms = warmup_ms = err = None
            warm: list[float] = []
            samples: list[float] = []
            with silenced() as log:
                try:
                    for _ in range(settings.warmup):
                        t = clock()
                        invoke()
                        warm.append((clock() - t) / 1e6)
                    total_ns, min_ns = 0, int(settings.min_time_s * 1e9)
                    while len(samples) < settings.runs or total_ns < min_ns:
                        t = clock()
                        invoke()
                        dt = clock() - t
                        total_ns += dt
                        samples.append(dt / 1e6)
                except Exception as e:  # noqa: BLE001 - LiteRT raises RuntimeError with C++ text
                    err = e
            if err is not None:  # the captured output is complete only after the block
                detail = _one_line(log.last_line() or str(err))
                raise LetiError(f"LiteRT failed to run the model ({detail})", "model")
            if warm:
                first_ms, warmup_ms = warm[0], float(np.mean(warm))
            else:
                first_ms = samples[0]
        finally:
            del interp
        peak_kb = _status_kb("VmHWM") if peak_source == "VmHWM" else None
        if peak_kb is None:
            peak_source = "ru_maxrss"
            peak_delta_kb = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - maxrss0)
        else:
            peak_delta_kb = max(0, peak_kb - rss0)
        memory = {
            "peak_rss_delta_mb": round(peak_delta_kb / 1024, 3),
            "init_footprint_mb": round(max(0, rss_init - rss0) / 1024, 3),
            "peak_source": peak_source,
        }
        raw = json.dumps(
            {
                "runner": "local",
                "settings": settings.key(),
                "affinity": list(cpus) if cpus is not None else None,
                "seed": seed,
                "warmup_ms": [round(v, 4) for v in warm],
                "samples_ms": [round(v, 4) for v in samples],
            }
        )
        versions = dict(host_versions())
        return Measurement.from_samples(
            samples,
            init_ms=init_ms,
            first_ms=first_ms,
            warmup_ms=warmup_ms,
            model_bytes=len(data),
            memory=memory,
            raw=raw,
            raw_unit="ms",
            versions=versions,
        )


__all__ = [
    "LocalRunner",
    "host_versions",
    "load_interpreter",
    "random_inputs",
    "resolve_affinity",
    "run_model",
    "settings_for_target",
]
