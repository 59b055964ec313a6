"""The ``kernel`` family: a network's latency as the sum of the kernels its runtime launches, plus an overhead.

``leti.predictors.fusion`` splits a graph into kernels under the target's rule set (XNNPACK on the CPU, the GPU
delegate on Android or iOS); each kernel is a configuration (input and output shapes, kernel size, stride, groups,
activation, linked ops) with its work terms (MACs, MACs rounded up to the runtime's channel tiles, elements read
and written, weights). Kernels are grouped by how they compute (``group_of``): 1x1 / 3x3 / larger / grouped conv,
3x3 / larger depthwise conv, dense (a 1x1 conv on a 1x1 map is one), pooling, global pooling, concat, and every
other memory-bound op (add, mul, BatchNorm, activations, pads, resizes, reshapes, moves) as ``elementwise``.

Each group has a linear cost in its work terms with non-negative coefficients (``FEATURE_SETS``), so the model
extrapolates to layers wider or larger than any it saw. With whole-model times only, the per-kernel costs are
latent: non-negative least squares over the per-group sums of the work terms, weighted for relative error (what
acc@10 counts). With kernel measurements (a GPU profiler's per-op times, or single kernels timed alone by ``leti
kernels build``), a kernel regressor learns each measured kernel type's time from its configuration, and the
model-level fit weighs its per-model sum against the latent terms. The intercept is the per-model overhead.

``features="auto"`` picks the work terms by grouped cross-validation on the training set (``groups``: model
families or canonical hashes), never by looking at a test set. Files are JSON and LightGBM text, sealed by the manifest; nothing
is pickled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from weakref import WeakKeyDictionary

import numpy as np

from leti.errors import PredictorError
from leti.graph.layergraph import LayerGraph
from leti.importers.inputs import stored_graph
from leti.predictors import fusion as FU
from leti.predictors.base import Predictor
from leti.predictors.metrics import acc_within
from leti.predictors.registry import read_checked, read_json_checked, write_json_checked
from leti.predictors.trees import from_lightgbm_text

MODEL_FILE = "kernel.json"
KERNEL_MODEL_FILE = "kernel_model.txt"
KERNEL_MODELS = ("lightgbm", "linear", "none")
FEATURE_CHOICES = ("auto", "full", "small")
_CONVS = ("conv1x1", "conv3x3", "convkxk", "gconv")
_MEMORY = ("add", "mul", "bn", "act", "pad", "move", "resize", "reshape")
GROUPS: tuple[str, ...] = (*_CONVS, "dwconv3x3", "dwconvkxk", "dense", "pool", "gap", "concat", "elementwise")

# work terms per group ("count" = one per kernel: its launch cost)
FEATURE_SETS: dict[str, dict[str, tuple[str, ...]]] = {
    "full": {
        **{g: ("tile_macs", "in_elems", "out_elems", "weights", "count") for g in _CONVS},
        "dwconv3x3": ("tile_macs", "out_elems", "count"),
        "dwconvkxk": ("tile_macs", "out_elems", "count"),
        "dense": ("weights", "count"),
        **{g: ("in_elems", "out_elems", "count") for g in ("pool", "gap", "concat", "elementwise")},
    },
    "small": {
        **{g: ("tile_macs", "out_elems", "count") for g in _CONVS},
        "dwconv3x3": ("tile_macs", "count"),
        "dwconvkxk": ("tile_macs", "count"),
        "dense": ("weights", "count"),
        **{g: ("out_elems", "count") for g in ("pool", "gap", "concat", "elementwise")},
    },
}
FLOOR_MS = 1e-4  # a kernel's linear estimate never goes below this (a launch costs something)
MIN_KERNEL_SAMPLES = 3
TREES, TREE_RATE = (
    100,
    0.15,
)  # the kernel regressor's LightGBM correction: rounds and learning rate (speed: predict)
SHARED_TERMS = ("tile_macs", "out_elems", "count")  # terms every kernel also pays through the shared columns
MAX_FOLDS = 40
RIDGES = (
    0.0,
    1e-3,
    1e-2,
    1e-1,
)  # shrinkage of the per-group terms toward the shared ones, chosen by grouped CV  # a kernel type the kernel regressor saw fewer times than this stays latent
_C = FU.COL


_SPLITS: WeakKeyDictionary = WeakKeyDictionary()  # graph -> {rule set: Kernels}; graphs are immutable


def kernels_of(graph: LayerGraph, ruleset: str) -> FU.Kernels:
    """``fusion.split`` memoised for as long as the graph lives."""
    per = _SPLITS.get(graph)
    if per is None:
        per = _SPLITS[graph] = {}
    k = per.get(ruleset)
    if k is None:
        k = per[ruleset] = FU.split(graph, ruleset)
    return k


def group_of(type_code: int, row: np.ndarray) -> str:
    t = FU.TYPES[int(type_code)]
    if t in _CONVS and row[_C["h_in"]] == 1 and row[_C["w_in"]] == 1:
        return "dense"  # a 1x1 conv on a 1x1 map is a matrix-vector product, whatever op the file names
    return "elementwise" if t in _MEMORY else t


RANGE_TERMS = ("h_in", "c_in", "c_out", "macs", "out_elems")  # what ``outside_ranges`` checks


def kernel_ranges(parts) -> dict[str, dict[str, tuple[float, float]]]:
    """group -> term -> (min, max) over the kernels of ``parts`` (pairs of types and rows)."""
    types = np.concatenate([t for t, _ in parts]) if parts else np.zeros(0, dtype=np.int64)
    if not types.size:
        return {}
    rows = np.vstack([r for _, r in parts])
    grp = _groups(types, rows)
    out = {}
    for g in sorted(set(grp)):
        m = grp == g
        out[str(g)] = {t: (float(rows[m, _C[t]].min()), float(rows[m, _C[t]].max())) for t in RANGE_TERMS}
    return out


def _terms(rows: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    return np.column_stack([np.ones(len(rows)) if n == "count" else rows[:, _C[n]] for n in names])


@dataclass
class KernelSamples:
    """Measured kernels: ``types`` (codes into fusion.TYPES), ``rows`` (fusion.COLUMNS) and ``ms``."""

    types: np.ndarray
    rows: np.ndarray
    ms: np.ndarray

    def __len__(self) -> int:
        return int(self.ms.size)

    @classmethod
    def empty(cls) -> KernelSamples:
        return cls(np.zeros(0, dtype=np.int64), np.zeros((0, len(FU.COLUMNS))), np.zeros(0))

    @classmethod
    def from_node_times(cls, graphs, node_ms, ruleset: str) -> KernelSamples:
        """Kernel samples from per-node times: ``node_ms[i]`` maps nodes of ``graphs[i]`` to ms (a profiler's per-op
        times). A node's time goes to the kernel that runs it; a kernel timed through several nodes (ops the runtime
        merged) gets their sum; kernels with no timed node are left out."""
        types, rows, ms = [], [], []
        for g, times in zip(graphs, node_ms, strict=True):
            k = kernels_of(g, ruleset)
            owner: dict[int, int] = {}
            for i, ns in enumerate(
                k.nodes
            ):  # a node's own kernel comes first; extra pad/activation kernels after
                for n in ns:
                    owner.setdefault(n, i)
            acc: dict[int, float] = {}
            for node, t in times.items():
                i = owner.get(int(node))
                if i is not None and np.isfinite(t) and t >= 0:
                    acc[i] = acc.get(i, 0.0) + float(t)
            for i, t in acc.items():
                types.append(k.types[i])
                rows.append(k.rows[i])
                ms.append(t)
        if not ms:
            return cls.empty()
        return cls(np.asarray(types, dtype=np.int64), np.vstack(rows), np.asarray(ms, dtype=float))


# ---- the kernel regressor: a kernel's time from its configuration -----------------------------------------------
def kernel_x(types: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Log-scale configuration features of kernels for the kernel regressor (type first, as a category)."""
    lg = np.log1p
    r = rows
    return np.column_stack([
        types, lg(r[:, _C["tile_macs"]]), lg(r[:, _C["macs"]]), lg(r[:, _C["in_elems"]]), lg(r[:, _C["out_elems"]]),
        lg(r[:, _C["weights"]]), lg(r[:, _C["linked_elems"]]), r[:, _C["k"]], r[:, _C["stride"]],
        lg(r[:, _C["groups"]]), r[:, _C["act"]], r[:, _C["n_ops"]], lg(r[:, _C["c_in"]]), lg(r[:, _C["c_out"]]),
        lg(r[:, _C["h_out"]]),
    ])  # fmt: skip


def nnls_relative(
    A: np.ndarray, y: np.ndarray, relative: bool, ridge: float = 0.0, penalize=None
) -> np.ndarray:
    """Non-negative least squares of ``A @ c = y``, in relative error (``relative``), with an optional ridge penalty
    on the columns ``penalize`` (a boolean mask), in units where each weighted column's largest value is 1."""
    w = 1.0 / y if relative else np.ones_like(y)
    Aw = A * w[:, None]
    scale = np.maximum(np.abs(Aw).max(axis=0), 1e-12)  # column scaling keeps NNLS well conditioned
    As, b = Aw / scale, y * w
    if ridge > 0 and penalize is not None and np.any(penalize):
        idx = np.flatnonzero(penalize)
        P = np.zeros((idx.size, A.shape[1]))
        P[np.arange(idx.size), idx] = np.sqrt(ridge)
        As, b = np.vstack([As, P]), np.concatenate([b, np.zeros(idx.size)])
    from scipy.optimize import nnls  # fitting only: loading and predicting must not pay for scipy

    coef, _ = nnls(As, b, maxiter=50 * A.shape[1] + 500)
    return coef / scale


_GROUP_OF_TYPE = np.array(["elementwise" if t in _MEMORY else t for t in FU.TYPES], dtype=object)
_IS_CONV = np.array([t in _CONVS for t in FU.TYPES])


def _groups(types: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``group_of`` of every kernel, vectorised."""
    types = np.asarray(types, dtype=np.int64)
    out = _GROUP_OF_TYPE[types].copy()
    if types.size:
        out[_IS_CONV[types] & (rows[:, _C["h_in"]] == 1) & (rows[:, _C["w_in"]] == 1)] = "dense"
    return out


class KernelRegressor:
    """Per-kernel time from configuration: per kernel group, relative NNLS over the group's work terms (``linear``,
    extrapolates), times LightGBM's correction learnt on log features (``lightgbm``). Kernel groups it saw fewer than
    MIN_KERNEL_SAMPLES times are predicted 0: their cost stays with the latent terms."""

    def __init__(self, kind: str, seed: int):
        self.kind, self.seed = kind, seed
        self.groups_: list[str] = []
        self.linear_: dict[str, np.ndarray] = {}
        self.booster_ = None

    def fit(self, s: KernelSamples) -> KernelRegressor:
        ok = (s.ms > 0) & np.isfinite(s.ms)
        types, rows, ms = s.types[ok], s.rows[ok], s.ms[ok]
        grp = _groups(types, rows)
        names, counts = np.unique(grp, return_counts=True) if grp.size else (np.zeros(0), np.zeros(0))
        self.groups_ = sorted(str(g) for g, c in zip(names, counts, strict=True) if c >= MIN_KERNEL_SAMPLES)
        keep = np.isin(grp, self.groups_)
        types, rows, ms, grp = types[keep], rows[keep], ms[keep], grp[keep]
        for g in self.groups_:
            m = grp == g
            self.linear_[g] = nnls_relative(_terms(rows[m], FEATURE_SETS["full"][g]), ms[m], True)
        if self.kind == "linear" or not self.groups_:
            return self
        import lightgbm as lgb

        # the trees learn the log-ratio to the linear model: inside the measured range they correct it (GPU
        # occupancy, tiling), outside it the linear part still scales with the work
        base = self._linear(grp, rows)
        params = {"objective": "l2", "learning_rate": TREE_RATE, "num_leaves": 15, "min_data_in_leaf": 10,
                  "seed": int(self.seed), "deterministic": True, "num_threads": 1, "verbose": -1}  # fmt: skip
        ds = lgb.Dataset(kernel_x(types, rows), np.log(ms) - np.log(base), categorical_feature=[0],
                         params={"verbose": -1, "min_data_in_bin": 1})  # fmt: skip
        self.booster_ = lgb.train(params, ds, num_boost_round=TREES)
        return self

    def _linear(self, grp: np.ndarray, rows: np.ndarray) -> np.ndarray:
        out = np.zeros(len(grp))
        for g in set(grp):
            m = grp == g
            out[m] = _terms(rows[m], FEATURE_SETS["full"][g]) @ self.linear_[g]
        return np.maximum(out, FLOOR_MS)

    def predict(self, types: np.ndarray, rows: np.ndarray) -> np.ndarray:
        out = np.zeros(types.size)
        if not types.size:
            return out
        grp = _groups(types, rows)
        known = np.isin(grp, self.groups_)
        if not known.any():
            return out
        out[known] = self._linear(grp[known], rows[known])
        if self.booster_ is not None:
            # networks repeat their blocks: the trees see each distinct kernel once
            x = kernel_x(types[known], rows[known])
            uniq, inverse = np.unique(x, axis=0, return_inverse=True)
            out[known] *= np.exp(self.booster_.predict(uniq, num_threads=1))[inverse.ravel()]
        return out

    def to_json(self) -> dict:
        return {"kind": self.kind, "groups": self.groups_,
                "linear": {g: c.tolist() for g, c in self.linear_.items()}}  # fmt: skip


# ---- the predictor ---------------------------------------------------------------------------------------------
class KernelPredictor(Predictor):
    """Sum of kernels plus overhead (see the module doc).

    ``rules``: the fusion rule set (``cpu``, ``gpu``, ``metal``) or ``auto`` (from the ``target`` given to ``fit``;
    ``cpu`` without one). ``features``: ``full``, ``small`` or ``auto`` (grouped CV). ``kernel_model``: the kernel
    regressor used when ``fit`` gets kernel measurements. ``relative``: fit relative rather than absolute error.
    """

    family = "kernel"

    def __init__(
        self,
        rules: str = "auto",
        features: str = "auto",
        ridge="auto",
        kernel_model: str = "lightgbm",
        relative: bool = True,
        seed: int = 0,
    ):
        self.rules = rules
        self.features = features
        self.ridge = ridge
        self.kernel_model = kernel_model
        self.relative = relative
        self.seed = seed

    def _check(self) -> None:
        if self.rules != "auto":
            FU.check_ruleset(self.rules)
        if self.features not in FEATURE_CHOICES:
            raise PredictorError(
                f"must be one of {', '.join(FEATURE_CHOICES)}, got {self.features!r}", "features"
            )
        if self.ridge != "auto" and (isinstance(self.ridge, bool) or not isinstance(self.ridge, int | float)
                                     or not np.isfinite(self.ridge) or self.ridge < 0):  # fmt: skip
            raise PredictorError(f"must be 'auto' or a non-negative number, got {self.ridge!r}", "ridge")
        if self.kernel_model not in KERNEL_MODELS:
            raise PredictorError(
                f"must be one of {', '.join(KERNEL_MODELS)}, got {self.kernel_model!r}", "kernel_model"
            )

    # ---- kernels of graphs (memoised per graph: graphs are immutable) -----------------------------------------
    def kernels(self, graph: LayerGraph) -> FU.Kernels:
        return kernels_of(graph, self.rules_)

    @staticmethod
    def _columns(fset: str) -> list[tuple[str, str]]:
        """Per-kernel cost terms: one set per group, then the same terms shared by every kernel (``all``), which the
        ridge penalty leaves free: a group with little data falls back on what all kernels share."""
        return [(g, n) for g in GROUPS for n in FEATURE_SETS[fset][g]] + [("all", n) for n in SHARED_TERMS]

    def _kernel_matrix(self, k: FU.Kernels, fset: str) -> np.ndarray:
        """One row per kernel: its cost terms laid out as ``_columns`` (the rest zero)."""
        cols = self._columns(fset)
        index = {c: i for i, c in enumerate(cols)}
        K = np.zeros((len(k), len(cols)))
        if not len(k):
            return K
        grp = _groups(k.types, k.rows)
        for g in set(grp):
            m = grp == g
            names = FEATURE_SETS[fset][g]
            K[np.ix_(m, [index[(g, n)] for n in names])] = _terms(k.rows[m], names)
        K[:, [index[("all", n)] for n in SHARED_TERMS]] = _terms(k.rows, SHARED_TERMS)
        return K

    def _design(self, graphs, fset: str, with_kernel: bool) -> np.ndarray:
        """Per graph: the summed kernel terms, the kernel regressor's sum (``with_kernel``), 1 (the overhead)."""
        n = len(self._columns(fset))
        X = np.zeros((len(graphs), n + int(with_kernel) + 1))
        X[:, -1] = 1.0
        for gi, g in enumerate(graphs):
            k = self.kernels(g)
            X[gi, :n] = self._kernel_matrix(k, fset).sum(axis=0)
            if with_kernel:
                X[gi, n] = float(self.kreg_.predict(k.types, k.rows).sum())
        return X

    def _penalized(self, fset: str, with_kernel: bool) -> np.ndarray:
        cols = self._columns(fset)
        return np.array([g != "all" for g, _ in cols] + [False] * (int(with_kernel) + 1))

    # ---- fitting ---------------------------------------------------------------------------------------------
    def fit(
        self,
        graphs,
        latencies_ms,
        groups=None,
        kernels: KernelSamples | None = None,
        target: str | None = None,
    ):
        """Fit on whole-model latencies; ``groups`` (families or hashes) drive the feature choice, ``kernels`` are
        measured kernels of this target, ``target`` picks the rule set when ``rules='auto'``."""
        self._check()
        self.rules_ = (
            self.rules if self.rules != "auto" else (FU.ruleset_for_target(target) if target else "cpu")
        )
        self._samples = kernels
        try:
            return super().fit(graphs, latencies_ms, groups)
        finally:
            self._samples = None

    def store_inputs(self, store, target: str, arch_ids) -> dict:
        """The target (for the rule set) and its kernel measurements of the archs ``arch_ids``."""
        out: dict = {"target": target}
        if self.kernel_model == "none":
            return out
        df = store.kernel_measurements(target=target)
        if df.empty:
            return out
        df = df[df["arch_id"].isin(set(arch_ids))].drop_duplicates(["arch_id", "node"])
        if df.empty:
            return out

        rules = self.rules if self.rules != "auto" else FU.ruleset_for_target(target)
        graphs, times = [], []
        for _, part in df.groupby("arch_id", sort=True):
            graphs.append(stored_graph(str(part["space"].iloc[0]), str(part["arch_text"].iloc[0])))
            times.append(dict(zip(part["node"].astype(int), part["latency_ms"].astype(float), strict=True)))
        out["kernels"] = KernelSamples.from_node_times(graphs, times, rules)
        return out

    def _fit(self, graphs, y):
        s = self._samples
        self.kreg_ = None
        if s is not None and len(s) and self.kernel_model != "none":
            self.kreg_ = KernelRegressor(self.kernel_model, int(self.seed)).fit(s)
            if not self.kreg_.groups_:
                self.kreg_ = None
        with_kernel = self.kreg_ is not None
        fsets = ("small", "full") if self.features == "auto" else (self.features,)
        ridges = RIDGES if self.ridge == "auto" else (float(self.ridge),)
        self.cv_ = {}
        fset, ridge = fsets[-1], ridges[0]
        if len(fsets) * len(ridges) > 1:
            (fset, ridge), self.cv_ = self._choose(graphs, y, with_kernel, fsets, ridges)
        X = self._design(graphs, fset, with_kernel)
        self.features_, self.ridge_ = fset, ridge
        self.coef_ = nnls_relative(X, y, bool(self.relative), ridge, self._penalized(fset, with_kernel))
        ks = [self.kernels(g) for g in graphs]
        extra = [(s.types, s.rows)] if s is not None and len(s) else []
        self.ranges_ = kernel_ranges([(k.types, k.rows) for k in ks] + extra)

    def _choose(self, graphs, y, with_kernel: bool, fsets, ridges) -> tuple[tuple[str, float], dict]:
        """The (feature set, ridge) with the best acc@10 (then the lowest MAPE) in grouped CV on the training set.

        Folds hold out whole groups (families, or canonical hashes): one group each, or MAX_FOLDS folds."""
        groups = self._groups if self._groups is not None else np.arange(y.size).astype(object)
        uniq = np.unique(groups)
        if uniq.size < 3:
            return (fsets[-1], ridges[-1]), {}
        # one group per fold (the outer protocol, leave-one-family-out) up to MAX_FOLDS groups, else MAX_FOLDS folds
        folds = np.random.default_rng(int(self.seed)).permutation(uniq.size) % min(uniq.size, MAX_FOLDS)
        fold_of = dict(zip(uniq, folds, strict=True))
        f = np.array([fold_of[g] for g in groups])
        scores = {}
        for fset in fsets:
            X = self._design(graphs, fset, with_kernel)
            pen = self._penalized(fset, with_kernel)
            for ridge in ridges:
                p = np.zeros_like(y)
                for k in np.unique(f):
                    te = f == k
                    p[te] = X[te] @ nnls_relative(X[~te], y[~te], bool(self.relative), ridge, pen)
                p = np.maximum(p, 1e-9)
                scores[(fset, ridge)] = (acc_within(y, p, 0.10), -float(np.mean(np.abs(p - y) / y)))
        # a ridge must earn its place: it wins only when it puts at least two more training models within 10%
        margin = 2.0 / y.size
        best = max(scores, key=lambda c: (scores[c][0] - (margin if c[1] > 0 else 0.0), scores[c][1], -c[1]))
        return best, {f"{a}/{b:g}": round(v[0], 4) for (a, b), v in scores.items()}

    @classmethod
    def from_kernels(cls, kernels: KernelSamples, rules: str, overhead_ms: float = 0.0, kernel_model: str = "linear",
                     seed: int = 0) -> KernelPredictor:  # fmt: skip
        """A predictor from kernel measurements alone: the sum of its kernel regressor over a graph's kernels plus
        ``overhead_ms`` (the runtime's fixed cost of one invocation)."""
        obj = cls(rules=rules, features="small", kernel_model=kernel_model, seed=seed)
        obj._check()
        FU.check_ruleset(rules)
        if not np.isfinite(overhead_ms) or overhead_ms < 0:
            raise PredictorError("must be finite and non-negative", "overhead_ms")
        obj.rules_, obj.features_, obj.ridge_, obj.cv_ = rules, "small", 0.0, {}
        obj.kreg_ = KernelRegressor(kernel_model, seed).fit(kernels)
        if not obj.kreg_.groups_:
            raise PredictorError(f"no kernel type has {MIN_KERNEL_SAMPLES} measurements", "kernels")
        n = len(obj._columns("small"))
        obj.coef_ = np.zeros(n + 2)
        obj.coef_[-2], obj.coef_[-1] = 1.0, float(overhead_ms)
        obj.ranges_ = kernel_ranges([(kernels.types, kernels.rows)])
        obj.n_train_ = 0
        return obj

    # ---- prediction -----------------------------------------------------------------------------------------
    def _predict(self, graphs):
        for i, g in enumerate(graphs):
            if not len(self.kernels(g)):
                raise PredictorError("the model runs no kernels (it has no layers)", f"graphs[{i}]")
        X = self._design(graphs, self.features_, self.kreg_ is not None)
        return np.maximum(X @ self.coef_, 1e-6)

    def explain(self, graph: LayerGraph) -> dict:
        """Each kernel's predicted ms (its work terms priced by its group's coefficients, plus the kernel
        regressor's share), the overhead, and the total (= ``predict``)."""
        if not hasattr(self, "coef_"):
            raise PredictorError("this kernel predictor is not fitted yet", "predictor")
        k = self.kernels(graph)
        if not len(k):
            raise PredictorError("the model runs no kernels (it has no layers)", "graph")
        K = self._kernel_matrix(k, self.features_)
        n = K.shape[1]
        kpred = self.kreg_.predict(k.types, k.rows) if self.kreg_ is not None else np.zeros(len(k))
        kcoef = float(self.coef_[n]) if self.kreg_ is not None else 0.0
        ms = K @ self.coef_[:n] + kcoef * kpred
        outside = self.outside_ranges(k)
        rows = []
        for i in range(len(k)):
            cfg = {c: int(k.rows[i, _C[c]]) for c in FU.CONFIG}
            rows.append({"kernel": i, "type": FU.TYPES[k.types[i]], "group": group_of(k.types[i], k.rows[i]),
                         "nodes": [int(v) for v in k.nodes[i]], "ops": [graph.op_name(v) for v in k.nodes[i]],
                         "config": cfg, "ms": float(ms[i]), "outside": outside[i]})  # fmt: skip
        overhead = float(self.coef_[-1])
        total = max(sum(r["ms"] for r in rows) + overhead, 1e-6)
        n_out = sum(1 for o in outside if o)
        return {"rules": self.rules_, "kernels": rows, "overhead_ms": overhead, "total_ms": total,
                "kernels_outside_training_ranges": n_out}  # fmt: skip

    def outside_ranges(self, k: FU.Kernels) -> list[list[str]]:
        """Per kernel, the configuration terms outside what its group spanned in training (``[]``: inside): a
        kernel there is extrapolated, which the linear terms do, but nothing vouches for it."""
        ranges = getattr(self, "ranges_", {}) or {}
        grp = _groups(k.types, k.rows)
        out: list[list[str]] = []
        for i in range(len(k)):
            r = ranges.get(str(grp[i]))
            if r is None:
                out.append(["group"])
                continue
            out.append([t for t, (lo, hi) in r.items() if not lo <= k.rows[i, _C[t]] <= hi])
        return out

    # ---- persistence ----------------------------------------------------------------------------------------
    def _save(self, d: Path) -> None:
        info = {
            "rules": self.rules_,
            "features": self.features_,
            "ridge": self.ridge_,
            "columns": [list(c) for c in self._columns(self.features_)],
            "coef": self.coef_.tolist(),
            "cv": self.cv_,
            "kernel_regressor": self.kreg_.to_json() if self.kreg_ is not None else None,
            "ranges": getattr(self, "ranges_", {}),
        }
        if self.kreg_ is not None and self.kreg_.booster_ is not None:
            self.kreg_.booster_.save_model(str(d / KERNEL_MODEL_FILE))
        write_json_checked(d / MODEL_FILE, info)

    def _load(self, d: Path) -> None:
        self._check()
        info = read_json_checked(d / MODEL_FILE)
        where = str(d / MODEL_FILE)
        rules, fset = info.get("rules"), info.get("features")
        if rules not in FU.RULESETS or fset not in FEATURE_SETS:
            raise PredictorError("unknown rule set or feature set", where)
        self.rules_, self.features_, self.cv_ = rules, fset, dict(info.get("cv") or {})
        self.ridge_ = float(info.get("ridge", 0.0))
        if [tuple(c) for c in info.get("columns", [])] != self._columns(fset):
            raise PredictorError("the saved columns differ from this leti's; retrain it", where)
        kr = info.get("kernel_regressor")
        self.kreg_ = None
        if kr is not None:
            self.kreg_ = self._load_regressor(kr, d, where)
        coef = np.asarray(info["coef"], dtype=float)
        n = len(self._columns(fset)) + int(self.kreg_ is not None) + 1
        if coef.shape != (n,) or not np.isfinite(coef).all() or (coef < 0).any():
            raise PredictorError(f"expected {n} finite non-negative coefficients", where)
        self.coef_ = coef
        ranges = info.get("ranges") or {}
        try:
            self.ranges_ = {str(g): {str(t): (float(lo), float(hi)) for t, (lo, hi) in r.items() if t in RANGE_TERMS}
                            for g, r in ranges.items() if g in GROUPS}  # fmt: skip
        except (TypeError, ValueError, AttributeError):
            raise PredictorError("malformed kernel ranges", where) from None

    def _load_regressor(self, kr: dict, d: Path, where: str) -> KernelRegressor:
        kind = kr.get("kind")
        if kind not in ("lightgbm", "linear"):
            raise PredictorError(f"unknown kernel regressor {kind!r}", where)
        reg = KernelRegressor(kind, int(self.seed))
        reg.groups_ = [str(g) for g in kr.get("groups", [])]
        if any(g not in GROUPS for g in reg.groups_):
            raise PredictorError("unknown kernel group", where)
        for g in reg.groups_:
            c = np.asarray(kr["linear"].get(g, []), dtype=float)
            if c.shape != (len(FEATURE_SETS["full"][g]),) or not np.isfinite(c).all():
                raise PredictorError(f"bad linear kernel coefficients for {g!r}", where)
            reg.linear_[g] = c
        if kind == "linear" or not reg.groups_:
            return reg

        # walked in numpy: loading must not cost LightGBM's import, and a network has few distinct kernels
        reg.booster_ = from_lightgbm_text(read_checked(d / KERNEL_MODEL_FILE).decode("utf-8"))
        if reg.booster_.n_features != kernel_x(np.zeros(1), np.zeros((1, len(FU.COLUMNS)))).shape[1]:
            raise PredictorError("the kernel regressor expects other features", str(d / KERNEL_MODEL_FILE))
        return reg


__all__ = [
    "FEATURE_SETS",
    "GROUPS",
    "KernelPredictor",
    "KernelRegressor",
    "KernelSamples",
    "kernels_of",
    "nnls_relative",
    "group_of",
    "kernel_x",
]
