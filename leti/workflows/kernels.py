"""``leti kernels build``: measure single kernels on a target, adding samples where the kernel regressor errs most.

Following nn-Meter's adaptive sampling (MobiSys'21):

1. *Prior.* The kernel configurations real models use: every kernel of the imported models in the store (space
   ``model``, e.g. mobile-ml-benchmark's 102 CNNs) or of the graphs given as ``prior`` (model files), split by the
   target's fusion rules. Without either, ``builtin_prior`` (typical CNN layers: 3-2048 channels, 7-224 px, kernels
   1-7). Round 1 draws from it: half exact configurations, half with channels and size scaled between neighbours.
2. *Adaptive rounds.* After each round the kernel regressor is cross-validated on everything measured so far; the
   configurations it predicts worst seed the next round, which samples around them (channels x0.6-1.6, the
   neighbouring sizes).

Each configuration becomes a one-kernel LayerGraph (input -> kernel), is written as .tflite by the fast FlatBuffer
path and timed; a trivial model is timed each round for the runtime's invocation overhead, which the predictor adds
back once per network. Every kernel graph goes into the store (space ``model``) and every time into its kernel
measurements, one transaction per kernel: a killed run loses at most the kernel in flight, and running the same
command again recomputes the same rounds from the stored times and measures only what is missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from leti.datasets.archs import model_record
from leti.datasets.store import Store, TargetRecord
from leti.device_runner.bindings import Binding, make_runner
from leti.errors import GraphError, LetiError
from leti.graph.builder import GraphBuilder
from leti.graph.layergraph import ACTS, OPS, A, LayerGraph
from leti.importers.inputs import stored_graph
from leti.measurement import DEFAULT_RUNS, DEFAULT_WARMUP, target_settings
from leti.predictors import fusion as FU
from leti.predictors.kernel import KernelPredictor, KernelRegressor, KernelSamples, kernels_of
from leti.predictors.registry import save_trained
from leti.space import MODEL_SPACE
from leti.targets import parse_target
from leti.workflows.lut_build import overhead_graph

SOURCE = "leti kernels build"
DEFAULT_MAX_MACS = 400_000_000  # one kernel above this takes seconds to time 20 times on a phone core
_CLAMP = ("none", "relu", "relu6")


@dataclass(frozen=True)
class KernelConfig:
    """One kernel to measure: ``op`` (an IR op), input size ``h`` x ``h`` x ``cin``, output channels, window (``kw``
    when it is not square: a CP factor's (k, 1) depthwise conv), stride, groups, activation and number of inputs
    (add, concat). A ``pad`` grows each side by ``k`` in total (zeros, split as converters split SAME padding);
    a ``resize`` scales by ``s`` with ``k`` taps per axis (1 nearest, 2 bilinear); a ``reshape`` flattens."""

    op: str
    h: int
    cin: int
    cout: int = 0
    k: int = 1
    s: int = 1
    groups: int = 1
    act: str = "none"
    n_in: int = 1
    kw: int = 0

    def key(self) -> str:
        key = f"{self.op}|h{self.h}|c{self.cin}>{self.cout}|k{self.k}|s{self.s}|g{self.groups}|{self.act}|n{self.n_in}"
        return key + (f"|kw{self.kw}" if self.kw else "")  # square windows keep the keys stored before kw

    def graph(self) -> LayerGraph:
        """input -> this kernel, SAME padding."""
        b = GraphBuilder(block=f"kernel:{self.op}")
        x = b.input((self.h, self.h, self.cin))
        op, kw = self.op, self.kw or None
        if op == "conv":
            b.conv(x, self.cout, self.k, kw, sh=self.s, groups=self.groups, act=self.act, bias=True)
        elif op == "dwconv":
            b.dwconv(x, self.k, kw, sh=self.s, act=self.act, bias=True)
        elif op == "dense":
            b.dense(x, self.cout, act=self.act)
        elif op in ("maxpool", "avgpool"):
            b.pool(op, x, self.k, self.s)
        elif op == "gap":
            b.gap(x)
        elif op == "concat":
            b.concat([x] * max(self.n_in, 2))
        elif op == "add":
            b.add([x] * max(self.n_in, 2))
        elif op == "mul":
            b.mul(x, x)
        elif op == "act":
            b.act(x, self.act)
        elif op == "bn":
            b.bn(x)
        elif op == "pad":
            b.pad(x, self.k // 2, self.k // 2, self.k - self.k // 2, self.k - self.k // 2)
        elif op == "resize":
            b.resize(x, self.h * self.s, self.h * self.s, "bilinear" if self.k == 2 else "nearest")
        elif op == "reshape":
            b.reshape(x, (1, 1, self.h * self.h * self.cin), flat=True)
        else:
            raise GraphError(f"no single-kernel graph for op {op!r}", "kernel")
        return b.finish({"kernel": self.key()})

    @property
    def macs(self) -> int:
        try:
            return self.graph().total_macs
        except GraphError:
            return 0


def config_of(g: LayerGraph, nodes: list[int]) -> KernelConfig | None:
    """The KernelConfig of a kernel (its head node) of any graph; None for ops not measured alone."""
    h = nodes[0]
    op = OPS[int(g.op[h])]
    a = g.attr[h]
    k, s = int(a[A["kh"]]), max(int(a[A["sh"]]), 1)
    kw = int(a[A["kw"]]) if op in ("conv", "dwconv") and int(a[A["kw"]]) != k else 0
    cin, cout = int(g.in_shape[h, 2]), int(g.out_shape[h, 2])
    size = int(g.in_shape[h, 0])
    if op in ("conv", "dwconv", "maxpool", "avgpool") and int(a[A["pad"]]) == 1 and k > 1:
        size = max(size - 2 * (k // 2), 1)  # an explicitly padded input: the unpadded size (SAME)
    act = ACTS[int(a[A["act"]])]
    if op == "conv":
        if size == 1 and k == 1:
            return KernelConfig("dense", 1, cin, cout, act=act if act in _CLAMP else "none")
        return KernelConfig("conv", size, cin, cout, k, s, max(int(a[A["groups"]]), 1),
                            act if act in _CLAMP else "none", kw=kw)  # fmt: skip
    if op == "dwconv":
        return KernelConfig("dwconv", size, cin, cin, k, s, act=act if act in _CLAMP else "none", kw=kw)
    if op == "dense":
        return KernelConfig(
            "dense", 1, int(np.prod(g.in_shape[h])), cout, act=act if act in _CLAMP else "none"
        )
    if op in ("maxpool", "avgpool"):
        return KernelConfig(op, size, cin, cin, k, s)
    if op == "gap":
        return KernelConfig("gap", size, cin, cin)
    if op == "concat":
        n = len(g.inputs_of(h))
        return KernelConfig("concat", size, cin, cin * n, n_in=n)
    if op == "add":
        return KernelConfig("add", size, cin, cin, n_in=max(len(g.inputs_of(h)), 2))
    if op in ("mul", "bn"):
        return KernelConfig(op, size, cin, cin)
    if op == "act":
        return KernelConfig("act", size, cin, cin, act=act)
    if op == "pad":
        top, left, bottom, right = (int(a[A[f]]) for f in ("kh", "kw", "sh", "sw"))
        if int(a[A["extra"]]) != 0 or min(top, left, bottom, right) < 0:
            return None  # mirror pads and crops are not sampled
        return KernelConfig("pad", size, cin, cin, max(top + bottom, left + right))
    if op == "resize":
        out = int(g.out_shape[h, 0])
        if out % size:
            return None  # only whole upsampling factors are sampled
        return KernelConfig("resize", size, cin, cin, 2 if int(a[A["extra"]]) == 1 else 1, out // size)
    if op == "reshape":
        return KernelConfig("reshape", size, cin, cin)
    return None


def prior_configs(graphs, ruleset: str) -> list[KernelConfig]:
    """Every distinct kernel configuration of ``graphs`` under ``ruleset`` (plus the non-clamp activations that
    ``conv(act=...)`` runs as their own kernels), in first-seen order."""
    seen: dict[str, KernelConfig] = {}
    for g in graphs:
        k = kernels_of(g, ruleset)
        for nodes in k.nodes:
            c = config_of(g, nodes)
            if c is not None:
                seen.setdefault(c.key(), c)
            act = ACTS[int(g.attr[nodes[0], A["act"]])]
            if act not in _CLAMP and OPS[int(g.op[nodes[0]])] in ("conv", "dwconv", "dense"):
                h = int(g.out_shape[nodes[0], 0])
                c2 = KernelConfig(
                    "act", h, int(g.out_shape[nodes[0], 2]), int(g.out_shape[nodes[0], 2]), act=act
                )
                seen.setdefault(c2.key(), c2)
    return list(seen.values())


def builtin_prior() -> list[KernelConfig]:
    """Typical CNN kernels when no real models are at hand, over the ranges of real models (3-2,048 channels, 7-224
    px, windows 1-7): stems, 1x1 / 3x3 / 5x5 convs, 3x3-7x7 depthwise convs and wide 1x1 expansions per stage,
    squeeze-excite (global pool, two small dense layers, the broadcast scale), DenseNet-style concats, hard-swish
    and swish, pools, explicit pads, resizes, reshapes and classifier heads."""
    out = [KernelConfig("conv", 224, 3, c, k, 2, act="relu") for c in (16, 32, 64) for k in (3, 7)]
    for h, cs in ((112, (16, 32, 64)), (56, (24, 64, 128, 256)), (28, (40, 128, 256, 512)),
                  (14, (80, 256, 512, 1024)), (7, (160, 512, 1024, 2048))):  # fmt: skip
        for c in cs:
            out += [KernelConfig("conv", h, c, c * 4, 1, act="relu"), KernelConfig("conv", h, c * 4, c, 1),
                    KernelConfig("conv", h, c, c, 3, act="relu"), KernelConfig("dwconv", h, c * 4, c * 4, 3, act="relu"),
                    KernelConfig("dwconv", h, c * 4, c * 4, 5, act="relu"), KernelConfig("add", h, c, c, n_in=2),
                    KernelConfig("act", h, c * 4, c * 4, act="hswish"), KernelConfig("concat", h, c, 2 * c, n_in=2)]  # fmt: skip
        c = cs[len(cs) // 2]
        out += [KernelConfig("maxpool", h, cs[0], cs[0], 3, 2), KernelConfig("gap", h, cs[-1], cs[-1]),
                KernelConfig("avgpool", h, c, c, 2, 2), KernelConfig("conv", h, c, c, 5, act="relu"),
                KernelConfig("dwconv", h, c * 6, c * 6, 7), KernelConfig("dwconv", h, c * 6, c * 6, 3, 2),
                KernelConfig("act", h, c * 6, c * 6, act="swish"), KernelConfig("act", h, c, c, act="sigmoid"),
                KernelConfig("mul", h, c * 6, c * 6), KernelConfig("dense", 1, c * 6, max(8, c // 4), act="relu"),
                KernelConfig("dense", 1, max(8, c // 4), c * 6), KernelConfig("concat", h, c, 4 * c, n_in=4),
                KernelConfig("pad", h, c, c, 1), KernelConfig("pad", h, c, c, 2),
                KernelConfig("resize", h, c, c, 1, 2), KernelConfig("resize", h, c, c, 2, 2),
                KernelConfig("reshape", h, c, c)]  # fmt: skip
    out += [
        KernelConfig("dense", 1, c, u) for c, u in ((1024, 1000), (1280, 1000), (2048, 1000), (576, 1024))
    ]
    return out


# ---- sampling ----------------------------------------------------------------------------------------------------
_SIZES = (7, 14, 28, 56, 112, 224)


def _round8(x: float) -> int:
    return max(8, int(round(x / 8)) * 8) if x >= 8 else max(1, int(round(x)))


def _jitter(c: KernelConfig, rng: np.random.Generator, lo: float, hi: float) -> KernelConfig:
    """``c`` with its channels scaled by a factor in [lo, hi] (kept consistent for groups, depthwise and concat)
    and, half the time, a neighbouring input size."""
    f = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    h = c.h
    if c.op not in ("dense",) and rng.random() < 0.5:
        i = int(np.argmin([abs(s - c.h) for s in _SIZES]))
        h = _SIZES[int(np.clip(i + rng.choice((-1, 1)), 0, len(_SIZES) - 1))]
    g = c.groups
    cin = _round8(c.cin * f) if c.cin > 4 else c.cin  # an RGB stem keeps its 3 channels
    if g > 1:
        cin = max(g, cin // g * g)
    if c.op in ("dwconv", "maxpool", "avgpool", "gap", "add", "mul", "act", "bn", "pad", "resize", "reshape"):
        cout = cin
    elif c.op == "concat":
        cout = cin * c.n_in
    else:
        cout = _round8(c.cout * f)
        if g > 1:
            cout = max(g, cout // g * g)
    return KernelConfig(c.op, h, cin, cout, c.k, c.s, g, c.act, c.n_in, c.kw)


def _valid(c: KernelConfig, max_macs: int) -> bool:
    try:
        return 0 <= c.graph().total_macs <= max_macs
    except GraphError:
        return False


def sample_round(pool: list[KernelConfig], n: int, rng: np.random.Generator, seen: set[str], max_macs: int,
                 lo: float, hi: float, exact: float) -> list[KernelConfig]:  # fmt: skip
    """``n`` new configurations drawn from ``pool``: exact ones with probability ``exact``, else jittered."""
    out: list[KernelConfig] = []
    for _ in range(50 * n + 100):
        if len(out) >= n or not pool:
            break
        base = pool[int(rng.integers(len(pool)))]
        c = base if rng.random() < exact else _jitter(base, rng, lo, hi)
        if c.key() in seen or not _valid(c, max_macs):
            continue
        seen.add(c.key())
        out.append(c)
    return out


# ---- the flow ----------------------------------------------------------------------------------------------------
@dataclass
class KernelsBuildReport:
    target: str
    rules: str
    n_configs: int  # kernels of this run (all rounds)
    n_measured: int  # measured by this call (the rest were in the store)
    rounds: list[dict] = field(default_factory=list)  # per round: new configs, measured, CV error
    overhead_ms: float = 0.0
    seconds: float = 0.0
    measure_seconds: float = 0.0
    kernels_per_s: float = 0.0
    prior: str = ""
    path: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _cv_errors(samples: KernelSamples, seed: int, folds: int = 5) -> np.ndarray:
    """Relative error of each measured kernel when the regressor is fitted without its fold."""
    n = len(samples)
    err = np.zeros(n)
    if n < 2 * folds:
        return err
    f = np.random.default_rng(seed).permutation(n) % folds
    for k in range(folds):
        te = f == k
        tr = KernelSamples(samples.types[~te], samples.rows[~te], samples.ms[~te])
        p = KernelRegressor("lightgbm", seed).fit(tr).predict(samples.types[te], samples.rows[te])
        err[te] = np.where(p > 0, np.abs(p - samples.ms[te]) / np.maximum(samples.ms[te], 1e-6), 1.0)
    return err


def build_kernels(
    store: Store,
    binding: Binding,
    n: int = 200,
    seed: int = 0,
    rounds: int = 3,
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    prior: list[LayerGraph] | None = None,
    max_macs: int = DEFAULT_MAX_MACS,
    benchmark_binary: str | None = None,
    root=None,
    save: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> KernelsBuildReport:
    """Sample, build, measure and store ``n`` kernels of ``binding.target`` in ``rounds`` rounds; fit and (``save``)
    store the target's ``kernel`` predictor from them."""
    from leti.tflite.convert import build_tflite  # deferred: loads LiteRT

    for name, v, lo in (("n", n, 1), ("rounds", rounds, 1), ("runs", runs, 1), ("seed", seed, 0),
                        ("max_macs", max_macs, 1), ("warmup", warmup, 0)):  # fmt: skip
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise LetiError(f"must be an integer >= {lo}, got {v!r}", name)
    t0 = time.perf_counter()
    target = binding.target
    rules = FU.ruleset_for_target(target)
    precision = parse_target(target).precision
    settings = target_settings(target, runs=runs, warmup=warmup)
    key = settings.key()
    if prior:
        pool, prior_name = prior_configs(prior, rules), f"{len(prior)} given models"
    else:
        df = store.measurements(space=MODEL_SPACE)
        texts = [t for t in dict.fromkeys(df["arch_text"]) if '"kernel"' not in t] if not df.empty else []
        if texts:
            graphs = [stored_graph(MODEL_SPACE, t) for t in texts]
            pool, prior_name = prior_configs(graphs, rules), f"{len(graphs)} imported models"
        else:
            pool, prior_name = builtin_prior(), "built-in CNN layers"
    pool = [c for c in pool if _valid(c, max_macs)]
    if not pool:
        raise LetiError("no kernel configuration of the prior fits under max_macs", "max_macs")
    if store.get_target(target) is None:
        store.upsert_target(TargetRecord.from_name(target))

    runner = None
    over = overhead_graph()
    over_rec = model_record(over)
    store.upsert_archs([over_rec])
    seen: set[str] = set()
    configs: list[KernelConfig] = []
    report = KernelsBuildReport(target, rules, 0, 0, prior=prior_name)
    per_round = [n // rounds + (1 if r < n % rounds else 0) for r in range(rounds)]
    measured_new, measure_s = 0, 0.0
    done, total = 0, n + rounds
    try:
        for r in range(rounds):
            rng = np.random.default_rng([seed, r])
            if r == 0:
                new = sample_round(pool, per_round[0], rng, seen, max_macs, 0.5, 2.0, 0.5)
                err = None
            else:
                samples, _ = _samples(store, target, key, configs, rules)
                err = _cv_errors(samples, seed)
                worst = [configs[i] for i in np.argsort(-err)[: max(1, len(configs) // 5)]]
                new = sample_round(worst, per_round[r], rng, seen, max_macs, 0.6, 1.6, 0.0)
                if len(new) < per_round[r]:  # the neighbourhoods ran dry: fill from the prior
                    new += sample_round(pool, per_round[r] - len(new), rng, seen, max_macs, 0.5, 2.0, 0.5)
            graphs = [c.graph() for c in new]
            recs = [model_record(g) for g in graphs]
            store.upsert_archs(recs)
            have = _measured(store, target, key)
            todo = [
                (c, g, rec) for c, g, rec in zip(new, graphs, recs, strict=True) if rec.arch_id not in have
            ]
            done += len(new) - len(todo)
            if todo and over_rec.arch_id not in have:
                runner = runner or make_runner(binding, benchmark_binary)
                m = runner.measure(build_tflite(over, precision), settings)
                store.add_kernel_measurements([{"arch_id": over_rec.arch_id, "target": target, "node": 1,
                                                "latency_ms": m.latency_ms, "settings_key": key, "source": SOURCE}])  # fmt: skip
            runner = runner or (make_runner(binding, benchmark_binary) if todo else None)
            done += 1
            if progress:
                progress(done, total)
            t1 = time.perf_counter()
            for c, g, rec in todo:
                m = runner.measure(build_tflite(g, precision, seed=seed), settings)
                store.add_kernel_measurements([{"arch_id": rec.arch_id, "target": target, "node": 1,
                                                "latency_ms": m.latency_ms, "settings_key": key, "source": SOURCE,
                                                "runtime_kernel": c.key()}])  # fmt: skip
                measured_new += 1
                done += 1
                if progress:
                    progress(done, total)
            measure_s += time.perf_counter() - t1
            configs += new
            report.rounds.append({"round": r + 1, "new": len(new), "measured": len(todo),
                                  "cv_mape_before": None if err is None else round(float(np.mean(err)), 4)})  # fmt: skip
    finally:
        close = getattr(runner, "close", None)
        if close:
            close()
    samples, overheads = _samples(store, target, key, configs, rules)
    overhead = float(np.median(overheads)) if overheads else 0.0
    samples.ms = np.maximum(samples.ms - overhead, 1e-4)  # a kernel's own share, never nothing
    report.n_configs, report.n_measured, report.overhead_ms = len(configs), measured_new, overhead
    report.seconds = time.perf_counter() - t0
    report.measure_seconds = measure_s
    report.kernels_per_s = measured_new / measure_s if measure_s > 0 else 0.0
    if save and len(samples):
        pred = KernelPredictor.from_kernels(samples, rules, overhead, kernel_model="lightgbm", seed=seed)
        meta = {"target": target, "source": "single-kernel runs", "n_kernels": len(samples), "rounds": rounds,
                "seed": seed, "prior": prior_name, "overhead_ms": overhead, "settings_key": key}  # fmt: skip
        report.path = str(save_trained(pred, target, meta, root=root))
    return report


def _measured(store: Store, target: str, key: str) -> set[str]:
    df = store.kernel_measurements(target=target, settings_key=key)
    return set(df["arch_id"]) if not df.empty else set()


def _samples(store: Store, target: str, key: str, configs: list[KernelConfig], rules: str):
    """(KernelSamples of ``configs`` measured so far, the overhead times) from the store."""
    df = store.kernel_measurements(target=target, settings_key=key)
    times = {
        (a, int(nd)): float(ms) for a, nd, ms in zip(df["arch_id"], df["node"], df["latency_ms"], strict=True)
    }
    over_id = model_record(overhead_graph()).arch_id
    overheads = [ms for (a, _), ms in times.items() if a == over_id]
    graphs, node_ms = [], []
    text_of = dict(zip(df["arch_id"], df["arch_text"], strict=True))
    for c in configs:
        rec = model_record(c.graph())
        ms = times.get((rec.arch_id, 1))
        if ms is not None:
            graphs.append(stored_graph(MODEL_SPACE, text_of[rec.arch_id]))
            node_ms.append({1: ms})
    return KernelSamples.from_node_times(graphs, node_ms, rules), overheads


__all__ = [
    "KernelConfig",
    "KernelsBuildReport",
    "build_kernels",
    "builtin_prior",
    "config_of",
    "prior_configs",
]
