"""``benchmark_model`` on the loopback phone: real LiteRT timings of the pushed model on the host, printed
as recent ``benchmark_model`` versions print them; ``make_fake_elf`` makes the binary it accepts."""

from __future__ import annotations

import random
import re
import resource
import statistics
import struct
import time

import numpy as np

from leti.device_runner.adb import ABI_ELF
from leti.errors import LetiError
from leti.testing.loopback.wire import Dropped


def make_fake_elf(abi: str = "arm64-v8a") -> bytes:
    """A 64-byte ELF header for ``abi``: what the loopback device accepts as a benchmark_model binary."""
    if abi not in ABI_ELF:
        raise LetiError(f"unknown ABI {abi!r}; known: {sorted(ABI_ELF)}", "abi")
    bits, machine = ABI_ELF[abi]
    ident = b"\x7fELF" + bytes([2 if bits == 64 else 1, 1, 1]) + bytes(9)
    header = ident + struct.pack("<HHI", 2, machine, 1)  # ET_EXEC, e_machine, EV_CURRENT
    return header.ljust(64, b"\0")


_BOOL = {"true": True, "1": True, "false": False, "0": False}
_KNOWN_FLAGS = {
    "graph": str,
    "num_threads": int,
    "num_runs": int,
    "warmup_runs": int,
    "min_secs": float,
    "max_secs": float,
    "warmup_min_secs": float,
    "run_delay": float,
    "use_xnnpack": bool,
    "use_gpu": bool,
    "use_nnapi": bool,
    "gpu_precision_loss_allowed": bool,
    "enable_op_profiling": bool,
    "verbose": bool,
}


def _us_stats(samples: list[int]) -> str:
    """A ``count=…`` line like recent benchmark_model versions print."""
    s = sorted(samples)

    def pct(p: float) -> int:
        return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]

    tail = f"p5={pct(5)} median={pct(50)} p95={pct(95)}"
    if len(samples) == 1:
        return f"count=1 curr={samples[0]} {tail}"
    std = int(round(statistics.pstdev(samples)))
    avg = sum(samples) / len(samples)
    return (
        f"count={len(samples)} first={samples[0]} curr={samples[-1]} min={s[0]} max={s[-1]} "
        f"avg={avg:.6g} std={std} {tail}"
    )


def _op_cost(op: dict, shapes: dict[int, tuple[int, ...]]) -> float:
    """Rough multiply-accumulate count of one operator, used to split the measured time per op."""

    def size(idx: int) -> int:
        return int(np.prod(shapes.get(int(idx), (1,)))) if idx >= 0 else 0

    outs = [size(i) for i in op["outputs"]] or [1]
    ins = [size(i) for i in op["inputs"]] or [1]
    name = op["op_name"]
    weights = shapes.get(int(op["inputs"][1]), ()) if len(op["inputs"]) > 1 else ()
    if name in ("CONV_2D", "TRANSPOSE_CONV") and len(weights) == 4:
        return outs[0] * weights[1] * weights[2] * weights[3]
    if name == "DEPTHWISE_CONV_2D" and len(weights) == 4:
        return outs[0] * weights[1] * weights[2]
    if name == "FULLY_CONNECTED" and len(weights) == 2:
        return outs[0] * weights[1]
    return max(max(outs), max(ins))


class BenchmarkModel:
    """``benchmark_model`` as run on the loopback device: real LiteRT timings on the host.

    ``shell`` is the ``shell.Shell`` that runs it (not imported here: the shell imports this module).
    """

    def __init__(self, shell, argv: list[str], out, affinity: int | None):
        self.shell = shell
        self.dev = shell.dev
        self.argv = argv
        self.out = out
        self.affinity = affinity

    def say(self, text: str) -> None:
        self.out(f"INFO: {text}\n")

    def fail(self, text: str) -> int:
        self.out(f"ERROR: {text}\nERROR: Benchmarking failed.\n")
        return 1

    def run(self) -> int:
        flags, unknown = {}, []
        for arg in self.argv[1:]:
            m = re.fullmatch(r"--([A-Za-z0-9_]+)=(.*)", arg, re.S)
            if not m or m[1] not in _KNOWN_FLAGS:
                unknown.append(arg)
                continue
            kind = _KNOWN_FLAGS[m[1]]
            try:
                flags[m[1]] = _BOOL[m[2].lower()] if kind is bool else kind(m[2])
            except (KeyError, ValueError):
                return self.fail(f"Invalid value for flag {arg!r}")
        self.dev.benchmark_runs.append(
            {"argv": tuple(self.argv), "flags": dict(flags), "affinity": self.affinity}
        )
        threads = flags.get("num_threads", 1)
        runs, warmups = flags.get("num_runs", 50), flags.get("warmup_runs", 1)
        self.say("STARTING!")
        self.say("Log parameter values verbosely: [0]")
        self.say(f"Min num runs: [{runs}]")
        self.say(f"Num threads: [{threads}]")
        self.say(f"Min warmup runs: [{warmups}]")
        self.say(f"Graph: [{flags.get('graph', '')}]")
        if flags.get("enable_op_profiling"):
            self.say("Enable op profiling: [1]")
        self.say(f"#threads used for CPU inference: [{threads}]")
        if "use_xnnpack" in flags:
            self.say(f"Use xnnpack: [{int(flags['use_xnnpack'])}]")
        for arg in unknown:
            self.out(f"WARNING: Unconsumed cmdline flags: {arg}\n")
        if self.dev.faults.take("garbage"):
            self.dev.events.append("garbage")
            rng = random.Random(self.dev.seed + len(self.dev.benchmark_runs))
            for _ in range(6):
                self.out("".join(chr(rng.randrange(33, 127)) for _ in range(rng.randrange(8, 60))) + "\n")
            return 0
        if "graph" not in flags or not flags["graph"]:
            return self.fail("Please specify the name of your TF Lite input file with --graph")
        try:
            model = self.shell.fs.read(flags["graph"])
        except OSError:
            return self.fail(
                f"Could not open '{flags['graph']}'.\nERROR: Failed to mmap model {flags['graph']}"
            )
        delegate = "gpu" if flags.get("use_gpu") else "nnapi" if flags.get("use_nnapi") else None
        if delegate and not getattr(self.dev.profile, delegate):
            return self.fail(f"Failed to apply {delegate.upper()} delegate.")
        return self._measure(model, flags, delegate, threads, runs, warmups)

    def _measure(
        self, model: bytes, flags: dict, delegate: str | None, threads: int, runs: int, warmups: int
    ):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        self.say(f"Loaded model {flags['graph']}")
        resolver = OpResolverType.AUTO if flags.get("use_xnnpack", True) else None
        t0 = time.perf_counter()
        try:
            kwargs = {"model_content": model, "num_threads": threads}
            if resolver is None:
                kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            interp = Interpreter(**kwargs)
            t_alloc = time.perf_counter()
            interp.allocate_tensors()
            alloc_ms = (time.perf_counter() - t_alloc) * 1000
        except (ValueError, RuntimeError) as exc:
            return self.fail(
                f"Failed to construct interpreter: {str(exc).splitlines()[0] if str(exc) else exc}"
            )
        init_us = int((time.perf_counter() - t0) * 1e6)
        if delegate:
            self.say(
                f"Created TensorFlow Lite delegate for {delegate.upper()} (loopback: runs on the host CPU)."
            )
        elif resolver is not None:
            self.say("Created TensorFlow Lite XNNPACK delegate for CPU.")
        self.say(f"The input model file size (MB): {len(model) / 1e6:.6g}")
        self.say(f"Initialized session in {init_us / 1000:.6g}ms.")
        rss_init = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        if self.dev.faults.take("drop_mid_run"):
            self.dev.events.append("drop_mid_run")
            if self.shell.conn is not None:
                self.shell.conn.abort()
            raise Dropped("drop_mid_run")
        rng = np.random.default_rng(self.dev.seed + len(self.dev.benchmark_runs))
        for detail in interp.get_input_details():
            dtype, shape = np.dtype(detail["dtype"]), tuple(detail["shape"])
            if np.issubdtype(dtype, np.floating):
                data = rng.standard_normal(shape).astype(dtype)
            elif dtype == np.bool_:
                data = rng.integers(0, 2, shape).astype(dtype)
            else:
                info = np.iinfo(dtype)
                data = rng.integers(max(info.min, -128), min(info.max, 127) + 1, shape).astype(dtype)
            interp.set_tensor(detail["index"], data)
        max_secs = flags.get("max_secs", 150.0)
        warm_secs, run_secs = flags.get("warmup_min_secs", 0.5), flags.get("min_secs", 1.0)
        self.say(
            f"Running benchmark for at least {warmups} iterations and at least {warm_secs:g} seconds "
            f"but terminate if exceeding {max_secs:g} seconds."
        )
        try:
            warm = self._loop(interp, max(warmups, 1), warm_secs, max_secs)
        except RuntimeError as exc:
            return self.fail(f"Failed to invoke the interpreter: {exc}")
        self.say(_us_stats(warm))
        self.out("\n")
        self.say(
            f"Running benchmark for at least {runs} iterations and at least {run_secs:g} seconds "
            f"but terminate if exceeding {max_secs:g} seconds."
        )
        timed = self._loop(interp, max(runs, 1), run_secs, max_secs)
        self.say(_us_stats(timed))
        self.out("\n")
        avg = sum(timed) / len(timed)
        self.say(
            f"Inference timings in us: Init: {init_us}, First inference: {warm[0]}, "
            f"Warmup (avg): {sum(warm) / len(warm):.6g}, Inference (avg): {avg:.6g}"
        )
        rss_end = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        self.say(
            "Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE "
            "to the actual memory footprint of the model at runtime. Take the information at your discretion."
        )
        self.say(
            f"Memory footprint delta from the start of the tool (MB): init={rss_init - rss0:.6g} "
            f"overall={rss_end - rss0:.6g}"
        )
        self.say(f"Overall peak memory footprint (MB) via periodic monitoring: {rss_end:.6g}")
        if flags.get("enable_op_profiling"):
            self._op_profile(interp, timed, alloc_ms)
        return 0

    @staticmethod
    def _loop(interp, min_runs: int, min_secs: float, max_secs: float) -> list[int]:
        samples: list[int] = []
        start = time.perf_counter()
        while True:
            t = time.perf_counter_ns()
            interp.invoke()
            samples.append(max(1, (time.perf_counter_ns() - t) // 1000))
            elapsed = time.perf_counter() - start
            if (len(samples) >= min_runs and elapsed >= min_secs) or elapsed >= max_secs:
                return samples

    def _op_profile(self, interp, timed: list[int], alloc_ms: float) -> None:
        header = (
            "\t             [node type]\t          [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]"
            "\t  [mem KB]\t[times called]\t[Name]\n"
        )
        rule = "============================== {} ==============================\n"
        self.out("Profiling Info for Benchmark Initialization:\n" + rule.format("Run Order") + header)
        self.out(
            f"\t{'AllocateTensors':>24}\t{0.0:17.3f}\t{alloc_ms:9.3f}\t{alloc_ms:9.3f}\t{100.0:7.3f}%"
            f"\t{100.0:7.3f}%\t{0.0:10.3f}\t{1:9d}\tAllocateTensors/0\n\n"
        )
        shapes = {t["index"]: tuple(int(d) for d in t["shape"]) for t in interp.get_tensor_details()}
        names = {t["index"]: t["name"] for t in interp.get_tensor_details()}
        ops = [op for op in interp._get_ops_details() if op["op_name"] != "DELEGATE"]
        costs = [float(_op_cost(op, shapes)) for op in ops]
        total = sum(costs) or 1.0
        avg_ms, first_ms = sum(timed) / len(timed) / 1000, timed[0] / 1000
        self.out(
            "\n\nOperator-wise Profiling Info for Regular Benchmark Runs:\n"
            + rule.format("Run Order")
            + header
        )
        start = cdf = 0.0
        by_type: dict[str, list[float]] = {}
        for op, cost in zip(ops, costs, strict=False):
            share = cost / total
            cdf += share * 100
            name = names.get(int(op["outputs"][0]), "") if len(op["outputs"]) else ""
            self.out(
                f"\t{op['op_name']:>24}\t{start:17.3f}\t{first_ms * share:9.3f}\t{avg_ms * share:9.3f}"
                f"\t{share * 100:7.3f}%\t{min(cdf, 100.0):7.3f}%\t{0.0:10.3f}\t{1:9d}\t[{name}]:{op['index']}\n"
            )
            start += avg_ms * share
            by_type.setdefault(op["op_name"], []).append(share)
        self.out(f"\nNumber of nodes executed: {len(ops)}\n" + rule.format("Summary by node type"))
        self.out(
            "\t             [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]\n"
        )
        cdf = 0.0
        for kind, shares in sorted(by_type.items(), key=lambda kv: -sum(kv[1])):
            cdf += sum(shares) * 100
            self.out(
                f"\t{kind:>24}\t{len(shares):9d}\t{avg_ms * sum(shares):10.3f}\t{sum(shares) * 100:10.3f}%"
                f"\t{min(cdf, 100.0):10.3f}%\t{0.0:10.3f}\t{len(shares):9d}\n"
            )
        stats = _us_stats(timed).split(" p5=")[0]
        self.out(f"\nTimings (microseconds): {stats}\nMemory (bytes): count=0\n{len(ops)} nodes observed\n\n")
