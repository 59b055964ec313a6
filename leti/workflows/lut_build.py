"""``leti lut build``: measure every distinct layer of a space alone on a target and save the table as a ``lut``
predictor.

Each layer signature becomes a one-layer model (input -> layer). Its time still includes the runtime's fixed cost of
one invocation, so that cost is measured once on the smallest model we can build and subtracted from every layer; the
LUT adds it back once per network (``overhead_ms``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from leti.device_runner.bindings import Binding
from leti.errors import GraphError, LetiError
from leti.graph.builder import GraphBuilder
from leti.measurement import target_settings
from leti.space import canonical_space, sample
from leti.targets import parse_target


@dataclass
class LutBuildReport:
    target: str
    space: str
    n_archs: int
    n_layers: int
    overhead_ms: float
    seconds: float
    path: str
    unbuilt: tuple[str, ...] = ()  # signatures no single-layer model could be built for


KEEP_BYTES = 256 << 20  # beyond this, later rounds convert a layer's model again rather than hold it


def _overhead_graph():
    b = GraphBuilder()
    b.act(b.input((1, 1, 1)), "relu")  # one trivial op: what remains is the cost of an invocation
    return b.finish()


def collect_signatures(space: str, n: int, seed: int) -> tuple[list[str], int]:
    from leti.predictors.lut import layer_signatures

    sigs: set[str] = set()
    archs = sample(space, n, seed)
    for arch, _ in archs:
        sigs.update(layer_signatures(arch.to_graph(), states="skip"))
    return sorted(sigs), len(archs)


def build_lut(
    binding: Binding,
    space: str,
    n_archs: int = 50,
    seed: int = 0,
    runs: int = 30,
    warmup: int = 3,
    benchmark_binary: str | None = None,
    root=None,
    rounds: int = 3,
    progress: Callable[[int, int], None] | None = None,
) -> LutBuildReport:
    from leti.device_runner.bindings import make_runner
    from leti.predictors.lut import LUTPredictor, signature_graph
    from leti.predictors.registry import save_trained
    from leti.tflite.convert import build_tflite

    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise LetiError(f"must be a positive integer, got {rounds!r}", "rounds")
    space = canonical_space(space)
    t0 = time.perf_counter()
    precision = parse_target(binding.target).precision
    settings = target_settings(binding.target, runs=runs, warmup=warmup)
    sigs, n = collect_signatures(space, n_archs, seed)
    if not sigs:
        raise LetiError(f"no layers found in {n_archs} archs of {space}", "space")
    graphs, unbuilt = {}, []
    for sig in sigs:
        try:
            graphs[sig] = signature_graph(sig)
        except GraphError:  # e.g. a concat of unevenly split inputs: priced by the nearest entry instead
            unbuilt.append(sig)
    overhead_model = build_tflite(_overhead_graph(), precision)
    # Round-robin over the layers, ``rounds`` times, each layer's median kept: a layer's time then comes from
    # several moments, so a passing slowdown of the device (another process, a thermal step) does not bias a
    # whole stretch of the table.
    times: dict[str, list[float]] = {sig: [] for sig in graphs}
    overheads: list[float] = []
    done, total = 0, rounds * (len(graphs) + 1)
    kept: dict[str, bytes] = {}  # converted models reused by later rounds, up to KEEP_BYTES
    held = 0
    with make_runner(binding, benchmark_binary) as runner:
        for _ in range(rounds):
            overheads.append(runner.measure(overhead_model, settings).median_ms)
            done += 1
            for sig, graph in graphs.items():
                model = kept.get(sig) or build_tflite(graph, precision)
                if sig not in kept and held + len(model) <= KEEP_BYTES:
                    kept[sig], held = model, held + len(model)
                times[sig].append(runner.measure(model, settings).median_ms)
                done += 1
                if progress:
                    progress(done, total)
    overhead = float(np.median(overheads))
    table = {sig: max(0.0, float(np.median(ms)) - overhead) for sig, ms in times.items()}
    pred = LUTPredictor.from_table(table, states="skip", overhead_ms=overhead)
    meta = {
        "target": binding.target,
        "source": "single-layer runs",
        "space": space,
        "n_archs": n,
        "seed": seed,
        "n_layers": len(table),
        "rounds": rounds,
        "unbuilt": unbuilt,
        "overhead_ms": overhead,
        "median_layer_ms": float(np.median(list(table.values()))),
    }
    path = save_trained(pred, binding.target, meta, root=root)
    return LutBuildReport(binding.target, space, n, len(table), overhead, time.perf_counter() - t0, str(path),
                          tuple(unbuilt))  # fmt: skip
