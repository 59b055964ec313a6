"""Per-layer latency tables measured on a device: every distinct layer alone, in round-robin passes.

Each layer signature (``leti.predictors.lut``) becomes a one-layer model (input -> layer) that is converted and
timed. ``round_robin`` is the one measuring loop: every model ``rounds`` times, each pass over all of them, so that a
passing slowdown of the device (another process, a thermal step) spreads over all entries instead of biasing a
stretch of the table. Two flows use it, and both give a ``LUTPredictor``:

* ``leti lut build`` (``build_lut``): every layer of N sampled archs of a space, on any target (this machine or a
  phone). A layer's time still includes the runtime's fixed cost of one invocation, so that cost is measured once
  on the smallest model we can build and subtracted from every layer; the LUT adds it back once per network
  (``overhead_ms``). The table is saved as the target's ``lut`` predictor.
* ``leti lut calibrate`` (``calibrate_lut``): the target's saved ``lut`` predictor scaled so that it matches the
  whole models measured on that target in the store (single-layer times need not add up to a network's).
* ``LayerLUT``: a table on this machine that fills itself on demand (``prepare``), measures whole models in the same
  passes as layers, and is calibrated on them (``scale``, ``per_layer_ms``). ``leti compress`` wires it in as the
  predictor of a host target that has no trained one; ``to_lut_predictor()`` gives the ``lut`` family predictor.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from leti.device_runner.base import Runner
from leti.device_runner.bindings import Binding, make_runner
from leti.device_runner.local import LocalRunner, settings_for_target
from leti.errors import GraphError, LetiError, PredictorError
from leti.graph.builder import GraphBuilder
from leti.graph.layergraph import LayerGraph
from leti.measurement import DEFAULT_RUNS, DEFAULT_WARMUP, Settings, target_settings
from leti.predictors.lut import LUTPredictor, layer_signatures, signature_graph
from leti.predictors.registry import save_trained
from leti.space import canonical_space, sample
from leti.targets import parse_target
from leti.tflite.convert import build_tflite

KEEP_BYTES = 256 << 20  # beyond this, later passes convert a layer's model again rather than hold it
STATS = ("median", "min", "mean")
_PICK = {"median": np.median, "min": np.min, "mean": np.mean}

Model = (
    bytes | Callable[[], bytes]
)  # a .tflite, or how to build it (called again when it was too big to keep)


def round_robin(
    runner: Runner,
    settings: Settings,
    models: Sequence[Model],
    rounds: int,
    stat: str = "median",
    progress: Callable[[int, int], None] | None = None,
) -> list[float]:
    """Measure every model ``rounds`` times, one pass over all of them per round; per model, ``stat`` of its
    measurements' ``stat`` (the median of medians, the least of minima, the mean of means)."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise LetiError(f"must be a positive integer, got {rounds!r}", "rounds")
    if stat not in STATS:
        raise LetiError(f"must be one of {', '.join(STATS)}, got {stat!r}", "stat")
    seen: list[list[float]] = [[] for _ in models]
    kept: dict[int, bytes] = {}  # built models reused by later passes, up to KEEP_BYTES
    held, done, total = 0, 0, rounds * len(models)
    for _ in range(rounds):
        for k, model in enumerate(models):
            data = kept.get(k) or (model if isinstance(model, bytes) else model())
            if k not in kept and held + len(data) <= KEEP_BYTES:
                kept[k], held = data, held + len(data)
            seen[k].append(float(getattr(runner.measure(data, settings), f"{stat}_ms")))
            done += 1
            if progress:
                progress(done, total)
    return [float(_PICK[stat](v)) for v in seen]


def layer_model(sig: str, precision: str) -> bytes:
    """The .tflite of one layer alone; PredictorError when that layer cannot stand alone."""
    try:
        return build_tflite(signature_graph(sig), precision)
    except GraphError as e:
        raise PredictorError(f"cannot measure layer {sig!r} on its own ({e.reason})", "lut") from None


# ---- leti lut build ------------------------------------------------------------------------------------------------
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


def overhead_graph() -> LayerGraph:
    b = GraphBuilder()
    b.act(b.input((1, 1, 1)), "relu")  # one trivial op: what remains is the cost of an invocation
    return b.finish()


def collect_signatures(space: str, n: int, seed: int) -> tuple[list[str], int]:
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
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    benchmark_binary: str | None = None,
    root=None,
    rounds: int = 3,
    progress: Callable[[int, int], None] | None = None,
) -> LutBuildReport:
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
    models: list[Model] = [build_tflite(overhead_graph(), precision)]
    models += [lambda g=g: build_tflite(g, precision) for g in graphs.values()]
    with make_runner(binding, benchmark_binary) as runner:
        overhead, *times = round_robin(runner, settings, models, rounds, "median", progress)
    table = {sig: max(0.0, ms - overhead) for sig, ms in zip(graphs, times, strict=True)}
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


# ---- leti lut calibrate ---------------------------------------------------------------------------------------------
@dataclass
class LutCalibrateReport:
    target: str
    n_models: int
    scale_before: float
    scale: float
    mape_before: float  # on the calibration models
    mape_after: float
    path: str


def calibrate_lut(store, target: str, space: str | None = None, n: int | None = None, seed: int = 0,
                  root=None) -> LutCalibrateReport:  # fmt: skip
    """Scale the ``target``'s saved lut predictor to the whole models measured on ``target`` in ``store`` (of
    ``space`` only, ``n`` of them drawn with ``seed``; each arch's median over its measurements) and save it back."""
    from leti.importers.inputs import stored_graph
    from leti.predictors.registry import load

    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise LetiError(f"must be a positive integer, got {n!r}", "n")
    pred = load(target, "lut", root=root)
    df = store.measurements(target=target, space=canonical_space(space) if space else None)
    if df.empty:
        where = f" of space {space}" if space else ""
        raise LetiError(
            f"no whole-model measurements{where} on {target} in the store to calibrate on", "target"
        )
    per = df.groupby("arch_id", sort=True).agg(space=("space", "first"), text=("arch_text", "first"),
                                               ms=("latency_ms", "median"))  # fmt: skip
    per = per[per["ms"] > 0]
    if n is not None and n < len(per):
        per = per.iloc[np.sort(np.random.default_rng(seed).choice(len(per), n, replace=False))]
    graphs = [stored_graph(sp, t) for sp, t in zip(per["space"], per["text"], strict=True)]
    y = per["ms"].to_numpy(dtype=float)
    before = float(pred.scale_)
    mape_before = float(np.mean(np.abs(pred.predict(graphs) - y) / y))
    pred.calibrate(graphs, y)
    mape_after = float(np.mean(np.abs(pred.predict(graphs) - y) / y))
    # save() writes these afresh
    own = ("family", "target", "params", "feature_version", "n_train", "versions")
    meta = {k: v for k, v in (getattr(pred, "meta_", None) or {}).items() if k not in own}
    meta["calibration"] = {"n_models": len(graphs), "space": space, "seed": seed, "scale": pred.scale_,
                           "mape_before": mape_before, "mape_after": mape_after}  # fmt: skip
    path = save_trained(pred, target, meta, root=root)
    return LutCalibrateReport(
        target, len(graphs), before, float(pred.scale_), mape_before, mape_after, str(path)
    )


# ---- a table filled on demand on this machine ----------------------------------------------------------------------
def _signatures(graph: LayerGraph) -> list[str]:
    return layer_signatures(graph, "skip")


class LayerLUT:
    """Additive latency model: ``scale * sum(layer latencies measured alone) + per_layer_ms * layers``.

    ``target``: a host target to measure missing layers on (``prepare``); ``stat``: which statistic of each
    measurement is kept ('min' suits a busy machine: the least disturbed run); ``repeats``: measurements per layer,
    spread over time (round-robin over all layers to measure), so that one busy moment does not set an entry.
    ``calibrate`` fits ``scale`` and ``per_layer_ms`` on whole-model measurements: a layer timed alone reads the
    model input and writes the model output, which costs it a few microseconds more than inside a network (seen
    on XNNPACK), so small layers are over-counted; ``per_layer_ms`` (usually slightly negative) takes that back.
    """

    family = "layer_lut"
    additive = True

    def __init__(
        self,
        target: str | None = None,
        runs: int = DEFAULT_RUNS,
        warmup: int = DEFAULT_WARMUP,
        stat: str = "median",
        repeats: int = 1,
    ):
        if stat not in STATS:
            raise LetiError(f"must be one of {', '.join(STATS)}, got {stat!r}", "stat")
        if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
            raise LetiError(f"must be an integer >= 1, got {repeats!r}", "repeats")
        self.target, self.runs, self.warmup, self.stat, self.repeats = target, runs, warmup, stat, repeats
        self.entries: dict[str, float] = {}
        self.scale, self.per_layer_ms = 1.0, 0.0
        self.n_measured = 0

    def __repr__(self) -> str:
        return (
            f"LayerLUT(target={self.target!r}, entries={len(self.entries)}, scale={self.scale:.4g}, "
            f"per_layer_ms={self.per_layer_ms:.4g})"
        )

    def _host(self) -> tuple[Settings, str]:
        if self.target is None:
            raise PredictorError("has no target to measure on", "predictor")
        return settings_for_target(self.target, warmup=self.warmup, runs=self.runs)

    def missing(self, graphs: Sequence[LayerGraph]) -> list[str]:
        """Signatures of the layers of ``graphs`` that have no entry yet (each once)."""
        out: dict[str, None] = {}
        for g in graphs:
            for sig in _signatures(g):
                if sig not in self.entries:
                    out[sig] = None
        return list(out)

    def measure(self, model_bytes: bytes) -> float:
        """One model on ``target`` with this LUT's settings and statistic (``repeats`` measurements)."""
        return self.measure_many([model_bytes])[0]

    def measure_many(self, blobs: Sequence[Model]) -> list[float]:
        """Several models, each measured ``repeats`` times round-robin so that all see the machine in the same
        states; per model the statistic over its measurements (min of mins, median of medians, mean of means)."""
        settings, _ = self._host()
        with LocalRunner() as runner:
            return round_robin(runner, settings, blobs, self.repeats, self.stat)

    def prepare(self, graphs: Sequence[LayerGraph]) -> int:
        """Measure every layer of ``graphs`` not yet in the table; returns how many were measured."""
        todo = self.missing(graphs)
        if todo:
            if self.target is None:
                raise PredictorError(
                    f"{len(todo)} layers have no entry and no target to measure them on", "lut"
                )
            self.measure_with_layers(graphs, [])
        return len(todo)

    def measure_with_layers(self, graphs: Sequence[LayerGraph], blobs: Sequence[bytes]) -> list[float]:
        """Measure the missing layers of ``graphs`` and the whole models ``blobs`` (.tflite) in the same round-robin
        passes, so that both see the machine in the same states; keeps the layers, returns the models' latencies."""
        _, precision = self._host()
        todo = self.missing(graphs)
        ms = self.measure_many([layer_model(sig, precision) for sig in todo] + list(blobs))
        self.entries.update(zip(todo, ms[: len(todo)], strict=True))
        self.n_measured += len(todo)
        return ms[len(todo) :]

    def layer_sum(self, graph: LayerGraph) -> float:
        total = 0.0
        for sig in _signatures(graph):
            if sig not in self.entries:
                raise PredictorError(f"no entry for layer {sig!r}; call prepare() on a host target", "lut")
            total += self.entries[sig]
        return total

    def predict(self, graphs: Sequence[LayerGraph]) -> np.ndarray:
        return np.array(
            [self.scale * self.layer_sum(g) + self.per_layer_ms * len(_signatures(g)) for g in graphs],
            dtype=float,
        )

    def calibrate_on_host(self, graphs: Sequence[LayerGraph], blobs: Sequence[bytes] | None = None) -> float:
        """``calibrate`` on the whole models of ``graphs`` (``blobs``, their .tflite; default: built from the
        graphs, as latency does not depend on the weights), measured together with the layers."""
        if blobs is None:
            _, precision = self._host()
            blobs = [build_tflite(g, precision) for g in graphs]
        if len(graphs) != len(blobs) or not blobs:
            raise LetiError(f"needs one model per graph, got {len(blobs)} for {len(graphs)}", "blobs")
        return self.calibrate(graphs, self.measure_with_layers(graphs, blobs))

    def calibrate(self, graphs: Sequence[LayerGraph], latencies_ms) -> float:
        """Fit ``scale`` (and, given 3 or more models, ``per_layer_ms``) to whole-model measurements by least
        squares; returns the scale. A fit whose scale leaves [0.5, 2] (noisy measurements) falls back to the scale
        alone."""
        y = np.asarray(latencies_ms, dtype=float).ravel()
        if len(graphs) != y.size or y.size == 0 or np.any(y <= 0):
            raise LetiError(
                f"needs one positive latency per graph, got {y.size} for {len(graphs)}", "latencies_ms"
            )
        self.prepare(graphs)
        s = np.array([self.layer_sum(g) for g in graphs])
        n = np.array([len(_signatures(g)) for g in graphs], dtype=float)
        self.scale, self.per_layer_ms = float(s @ y / (s @ s)), 0.0
        if y.size >= 3 and np.ptp(n) > 0:
            (a, b), *_ = np.linalg.lstsq(np.stack([s, n], axis=1), y, rcond=None)
            if 0.5 <= a <= 2:
                self.scale, self.per_layer_ms = float(a), float(b)
        return self.scale

    def to_lut_predictor(self) -> LUTPredictor:
        """The table as a ``leti.predictors.lut.LUTPredictor`` (times scaled), e.g. to save in the registry."""
        table = {sig: max(0.0, ms * self.scale + self.per_layer_ms) for sig, ms in self.entries.items()}
        return LUTPredictor.from_table(table, states="skip")

    def to_dict(self) -> dict:
        return {"family": self.family, "target": self.target, "runs": self.runs, "warmup": self.warmup,
                "stat": self.stat, "repeats": self.repeats, "scale": self.scale, "per_layer_ms": self.per_layer_ms,
                "entries": self.entries}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> LayerLUT:
        try:
            lut = cls(d.get("target"), int(d["runs"]), int(d["warmup"]), d["stat"], int(d.get("repeats", 1)))
            lut.entries = {str(k): float(v) for k, v in d["entries"].items()}
            lut.scale, lut.per_layer_ms = float(d["scale"]), float(d["per_layer_ms"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise PredictorError(f"malformed layer LUT ({e})", "lut") from None
        return lut
