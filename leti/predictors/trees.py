"""Tree ensembles evaluated in numpy, read from the boosting libraries' own saved models.

Loading a predictor must not cost the boosting library's import (1-3 s with the scipy, pandas and scikit-learn it
pulls in), so saved XGBoost JSON, LightGBM text and CatBoost JSON models are parsed here into flat node arrays and
walked with numpy. The decisions follow each library's rules exactly (XGBoost: float32 ``x < threshold``, float32
sums; LightGBM: double ``x <= threshold`` with its missing-value types; CatBoost: float32 ``x > border`` on oblivious
trees), so the numbers match the library's own predictions (tests compare them). Large batches are faster in the
libraries (``boosting.LIBRARY_BATCH``); small ones, which dominate NAS loops and the command line, stay here.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain

import numpy as np

from leti.errors import PredictorError


@dataclass
class Forest:
    """Binary trees as flat arrays over all nodes of all trees. A leaf points to itself on both sides, so walking
    ``depth`` steps from every tree's root lands on a leaf whatever the tree's own depth."""

    feature: np.ndarray  # int32, per node
    threshold: np.ndarray  # per node (float32 for XGBoost, float64 for LightGBM)
    left: np.ndarray  # int64 global node index
    right: np.ndarray
    default_left: np.ndarray  # bool: where a missing value goes
    missing: np.ndarray  # uint8: 0 NaN only (XGBoost), LightGBM's missing type (0 none, 1 zero, 2 NaN)
    value: np.ndarray  # leaf value per node (0 for inner nodes)
    roots: np.ndarray  # int64, one per tree, in tree order
    depth: int
    n_features: int
    base: float
    kind: str  # "xgboost" or "lightgbm"
    # LightGBM's categorical splits: per node, where its category bitset starts in ``cat_bits`` and how many
    # 32-bit words it has (0 words: a numerical split)
    cat_start: np.ndarray | None = None
    cat_words: np.ndarray | None = None
    cat_bits: np.ndarray | None = None

    def predict(self, X: np.ndarray, num_threads: int | None = None) -> np.ndarray:
        """Raw scores (the sum of the leaves), one per row; ``num_threads`` is accepted for the libraries' call
        signature and ignored."""
        X = np.asarray(X, dtype=np.float32 if self.kind == "xgboost" else np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise PredictorError(f"expects {self.n_features} features, got {X.shape}", "X")
        n = X.shape[0]
        node = np.broadcast_to(self.roots, (n, self.roots.size)).copy()
        rows = np.arange(n)[:, None]
        for _ in range(self.depth):
            x = X[rows, self.feature[node]]
            nan = np.isnan(x)
            if self.kind == "xgboost":
                left = np.where(nan, self.default_left[node], x < self.threshold[node])
            else:
                left = _lightgbm_left(
                    x, nan, self.threshold[node], self.missing[node], self.default_left[node]
                )
                if self.cat_words is not None:
                    left = self._categorical(x, nan, node, left)
            node = np.where(left, self.left[node], self.right[node])
        leaves = self.value[node]
        if self.kind == "xgboost":  # float32 running sum in tree order, as XGBoost adds its trees
            start = np.full((n, 1), self.base, dtype=np.float32)
            return np.cumsum(np.hstack([start, leaves.astype(np.float32)]), axis=1, dtype=np.float32)[:, -1]
        return np.cumsum(np.hstack([np.full((n, 1), self.base), leaves]), axis=1)[:, -1]

    def _categorical(self, x, nan, node, left):
        """LightGBM's CategoricalDecision: NaN and negative values go right; category int(x) goes left when its bit
        is set in the node's bitset."""
        words = self.cat_words[node]
        cat = words > 0
        if not cat.any():
            return left
        v = np.where(nan | ~np.isfinite(x), -1.0, np.trunc(np.clip(x, -1.0, 2.0**31 - 1)))
        k = v.astype(np.int64)
        word = np.where(k >= 0, k // 32, 0)
        ok = (k >= 0) & (word < words)
        bits = self.cat_bits[np.where(ok, self.cat_start[node] + word, 0)] if self.cat_bits.size else 0
        hit = ok & (((bits >> np.where(ok, k % 32, 0)) & 1) == 1)
        return np.where(cat, hit, left)


def _lightgbm_left(x, nan, thr, missing, default_left):
    # LightGBM's NumericalDecision: NaN counts as 0 unless the missing type is NaN; a missing value (zero for type 1,
    # NaN for type 2) follows the default side; otherwise x <= threshold goes left.
    x = np.where(nan & (missing != 2), 0.0, x)
    is_missing = ((missing == 1) & (np.abs(x) <= 1e-35)) | ((missing == 2) & nan)
    return np.where(is_missing, default_left, x <= thr)


class _Nodes:
    """Collects trees into one flat node list: per-tree Python lists, joined into arrays once (parsing a thousand
    trees with small numpy calls each would cost more than the prediction)."""

    def __init__(self):
        self.feature, self.threshold, self.left, self.right = [], [], [], []
        self.default_left, self.missing, self.value, self.is_leaf = [], [], [], []
        self.roots: list[int] = []
        self.n = 0

    def add_tree(self, feature, threshold, left, right, default_left, missing, value, is_leaf) -> None:
        """One tree; ``left``/``right`` are tree-local node numbers (anything for leaves)."""
        self.roots.append(self.n)
        for name, seq in (("feature", feature), ("threshold", threshold), ("left", left), ("right", right),
                          ("default_left", default_left), ("missing", missing), ("value", value),
                          ("is_leaf", is_leaf)):  # fmt: skip
            getattr(self, name).append(seq)
        self.n += len(is_leaf)

    def forest(self, n_features: int, base: float, kind: str, thr_dtype) -> Forest:
        def join(name, dtype):
            flat = list(chain.from_iterable(getattr(self, name)))
            if flat and isinstance(flat[0], str) and dtype is not np.float64 and dtype is not np.float32:
                return np.array(flat, dtype=np.float64).astype(dtype)  # numbers as text (LightGBM)
            return np.array(flat, dtype=dtype)

        is_leaf = join("is_leaf", bool)
        roots = np.asarray(self.roots, dtype=np.int64)
        offset = np.repeat(roots, np.diff(np.append(roots, self.n)))
        own = np.arange(self.n)
        left = np.where(is_leaf, own, join("left", np.int64) + offset)
        right = np.where(is_leaf, own, join("right", np.int64) + offset)
        feature = np.where(is_leaf, 0, join("feature", np.int64)).astype(np.int32)
        if feature.size and (feature.min() < 0 or feature.max() >= n_features):
            raise PredictorError("a tree splits on a feature out of range", kind)
        depth = _depth(left, right, is_leaf, roots, offset)
        return Forest(feature, join("threshold", thr_dtype), left, right, join("default_left", bool),
                      join("missing", np.uint8), np.where(is_leaf, join("value", np.float64), 0.0), roots, depth,
                      n_features, base, kind)  # fmt: skip


def _depth(
    left: np.ndarray, right: np.ndarray, is_leaf: np.ndarray, roots: np.ndarray, offset: np.ndarray
) -> int:
    """Longest root-to-leaf path over all trees; refuses links out of their tree and cycles (a damaged file)."""
    n = left.size
    end = np.append(roots, n)[np.searchsorted(roots, np.arange(n), side="right")] if n else left
    for kid in (left, right):
        if n and ((kid < offset) | (kid >= end)).any():
            raise PredictorError("a tree links to a node out of range", "model")
    depth, frontier, seen = 0, roots, roots.size
    while True:
        inner = frontier[~is_leaf[frontier]]
        if inner.size == 0:
            return depth
        frontier = np.concatenate([left[inner], right[inner]])
        depth += 1
        seen += frontier.size
        if seen > n:  # more visits than nodes: some node is reached twice
            raise PredictorError("a tree is not a tree (a node is reached twice)", "model")


@contextmanager
def _reading(what: str, file: str):
    """A malformed model file (missing keys, wrong types, bad numbers) becomes one PredictorError line."""
    try:
        yield
    except PredictorError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise PredictorError(f"not a {what} model this leti reads ({type(e).__name__}: {e})", file) from None


# ---- XGBoost JSON ----------------------------------------------------------------------------------------------
def from_xgboost_json(data: bytes) -> Forest:
    with _reading("XGBoost JSON", "model.json"):
        learner = json.loads(data)["learner"]
        booster = learner["gradient_booster"]
        if booster.get("name") != "gbtree":
            raise PredictorError(f"only gbtree boosters are read, not {booster.get('name')!r}", "model.json")
        params = learner["learner_model_param"]
        n_features = int(params["num_feature"])
        base = float(str(params.get("base_score", "0")).strip("[]") or 0)
        if int(params.get("num_target", "1") or 1) != 1 or int(params.get("num_class", "0") or 0) > 1:
            raise PredictorError("only single-output regression models are read", "model.json")
        nodes = _Nodes()
        for t in booster["model"]["trees"]:
            if any(t.get("split_type") or ()):
                raise PredictorError("categorical splits are not read", "model.json")
            left = t["left_children"]
            cond = t["split_conditions"]
            nodes.add_tree(t["split_indices"], cond, left, t["right_children"], t["default_left"], [0] * len(left),
                           cond, [c == -1 for c in left])  # fmt: skip
    return nodes.forest(n_features, base, "xgboost", np.float32)


# ---- LightGBM text ---------------------------------------------------------------------------------------------
_LGB_FIELDS = ("num_leaves", "num_cat", "is_linear", "split_feature", "threshold", "decision_type", "left_child",
               "right_child", "leaf_value")  # fmt: skip


def _within(counts: np.ndarray) -> np.ndarray:
    """0, 1, …, c-1 for each count c, concatenated."""
    return np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)


def from_lightgbm_text(text: str) -> Forest:
    """Every tree's arrays are read field by field over the whole text (one regex and one numpy conversion per
    field: a thousand trees parse in milliseconds)."""
    head, _, rest = text.partition("\n\n")
    kv = dict(line.split("=", 1) for line in head.split("\n")[1:] if "=" in line)
    body = rest.split("\nend of trees", 1)[0]
    with _reading("LightGBM", "model.txt"):
        n_features = int(kv["max_feature_idx"]) + 1
        if int(kv.get("num_tree_per_iteration", "1")) != 1:
            raise PredictorError("only single-output models are read", "model.txt")
        f: dict[str, list[str]] = {k: [] for k in _LGB_FIELDS}
        cats: dict[int, dict[str, str]] = {}  # tree -> its cat_boundaries and cat_threshold
        n_trees = 0
        for line in body.split("\n"):  # one pass over the lines (a regex per field is ten times slower)
            key, _, value = line.partition("=")
            if key in f:
                f[key].append(value)
            elif key == "Tree":
                n_trees += 1
            elif key in ("cat_boundaries", "cat_threshold"):
                cats.setdefault(n_trees - 1, {})[key] = value
        if any(len(v) != n_trees for v in f.values()):
            raise PredictorError("trees lack some of their arrays", "model.txt")

        def flat(key, dtype):
            return np.array(" ".join(f[key]).split(), dtype=dtype)

        leaves = flat("num_leaves", np.int64)
        if leaves.size != n_trees or (leaves < 1).any() or flat("is_linear", np.int64).any():
            raise PredictorError("linear trees are not read", "model.txt")
        n_cat = flat("num_cat", np.int64)
        inner = leaves - 1
        feat, thr = flat("split_feature", np.int64), flat("threshold", np.float64)
        dt, kids = flat("decision_type", np.int64), [flat(k, np.int64) for k in ("left_child", "right_child")]
        value = flat("leaf_value", np.float64)
        if (
            not (feat.size == thr.size == dt.size == kids[0].size == kids[1].size == inner.sum())
            or value.size != leaves.sum()
        ):
            raise PredictorError("a tree's arrays do not match its number of leaves", "model.txt")
    # Each tree becomes L-1 inner nodes then L leaves; a child link c >= 0 is inner node c, c < 0 is leaf -c-1.
    size = 2 * leaves - 1
    roots = np.cumsum(size) - size
    n = int(size.sum())
    at_inner = np.repeat(roots, inner) + _within(inner)
    at_leaf = np.repeat(roots + inner, leaves) + _within(leaves)
    base, n_inner = np.repeat(roots, inner), np.repeat(inner, inner)
    is_leaf = np.ones(n, dtype=bool)
    is_leaf[at_inner] = False
    left, right = np.arange(n), np.arange(n)  # leaves point to themselves
    for arr, c in ((left, kids[0]), (right, kids[1])):
        arr[at_inner] = base + np.where(c >= 0, c, n_inner - c - 1)
    node = np.zeros(n, dtype=np.int64)
    feature, threshold, values = node.astype(np.int32), node.astype(np.float64), node.astype(np.float64)
    default_left, missing = np.zeros(n, dtype=bool), np.zeros(n, dtype=np.uint8)
    feature[at_inner], threshold[at_inner], values[at_leaf] = feat, thr, value
    default_left[at_inner], missing[at_inner] = (dt & 2) > 0, (dt >> 2) & 3
    if feat.size and (feat.min() < 0 or feat.max() >= n_features):
        raise PredictorError("a tree splits on a feature out of range", "model.txt")
    offset = np.repeat(roots, size)
    depth = _depth(left, right, is_leaf, roots, offset)
    forest = Forest(feature, threshold, left, right, default_left, missing, values, roots, depth, n_features, 0.0,
                    "lightgbm")  # fmt: skip
    if n_cat.any():
        _categorical_splits(forest, dt, at_inner, np.repeat(np.arange(n_trees), inner), thr, cats)
    return forest


def _categorical_splits(forest: Forest, dt, at_inner, tree_of, thr, cats: dict) -> None:
    """Attach the bitsets of LightGBM's categorical splits (decision type bit 0) to ``forest``."""
    n = forest.left.size
    start, words = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    bits, base = [], 0
    bounds: dict[int, np.ndarray] = {}
    try:
        for t in sorted(cats):
            b = np.array(cats[t]["cat_boundaries"].split(), dtype=np.int64)
            words_t = np.array(cats[t]["cat_threshold"].split(), dtype=np.uint64).astype(np.uint32)
            if b.size < 2 or b[0] != 0 or (np.diff(b) < 0).any() or b[-1] != words_t.size:
                raise PredictorError(f"tree {t} has inconsistent category bitsets", "model.txt")
            bounds[t] = b + base
            bits.append(words_t)
            base += words_t.size
        for j in np.flatnonzero(dt & 1):
            b = bounds[int(tree_of[j])]
            idx = int(thr[j])
            if not 0 <= idx < b.size - 1:
                raise PredictorError("a categorical split names a bitset out of range", "model.txt")
            start[at_inner[j]], words[at_inner[j]] = b[idx], b[idx + 1] - b[idx]
    except KeyError:
        raise PredictorError("a tree with categorical splits lacks its bitsets", "model.txt") from None
    except ValueError as e:
        raise PredictorError(f"malformed category bitsets ({e})", "model.txt") from None
    forest.cat_start, forest.cat_words = start, words
    forest.cat_bits = np.concatenate(bits) if bits else np.zeros(0, dtype=np.uint32)


# ---- CatBoost JSON (oblivious trees) ---------------------------------------------------------------------------
@dataclass
class ObliviousForest:
    """CatBoost's symmetric trees: every level of a tree splits on one (feature, border); the leaf index is the
    bit pattern of ``x > border`` over the levels."""

    feature: np.ndarray  # (n_trees, depth) int32, -1 for padding levels
    border: np.ndarray  # (n_trees, depth) float32
    leaves: np.ndarray  # (n_trees, 2**depth) float64
    n_features: int
    scale: float
    bias: float

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise PredictorError(f"expects {self.n_features} features, got {X.shape}", "X")
        n, (t, d) = X.shape[0], self.feature.shape
        idx = np.zeros((n, t), dtype=np.int64)
        for j in range(d):
            f = self.feature[:, j]
            bit = (X[:, np.maximum(f, 0)] > self.border[:, j]) & (f >= 0)
            idx |= bit.astype(np.int64) << j
        vals = self.leaves[np.arange(t), idx]
        return self.scale * np.cumsum(vals, axis=1)[:, -1] + self.bias if t else np.full(n, self.bias)


def from_catboost_json(data: bytes) -> ObliviousForest:
    with _reading("CatBoost JSON", "model.json"):
        m = json.loads(data)
        floats = m["features_info"]["float_features"]
        if m["features_info"].get("categorical_features"):
            raise PredictorError("categorical features are not read", "model.json")
        flat = {int(f["feature_index"]): int(f["flat_feature_index"]) for f in floats}
        n_features = max(flat.values(), default=-1) + 1
        trees = m["oblivious_trees"]
        depth = max((len(t["splits"]) for t in trees), default=0)
        feat = np.full((len(trees), depth), -1, dtype=np.int32)
        border = np.zeros((len(trees), depth), dtype=np.float32)
        leaves = np.zeros((len(trees), 2**depth))
        for i, t in enumerate(trees):
            splits = t["splits"]
            if any(s.get("split_type") != "FloatFeature" for s in splits):
                raise PredictorError("only float-feature splits are read", "model.json")
            if len(t["leaf_values"]) != 2 ** len(splits):
                raise PredictorError(
                    f"tree {i} has {len(t['leaf_values'])} leaves for {len(splits)} levels", "model.json"
                )
            for j, s in enumerate(splits):
                feat[i, j] = flat[int(s["float_feature_index"])]
                border[i, j] = s["border"]
            leaves[i, : len(t["leaf_values"])] = t["leaf_values"]
        scale, bias = m.get("scale_and_bias", [1.0, [0.0]])
        bias = bias[0] if isinstance(bias, list) else bias
    return ObliviousForest(feat, border, leaves, n_features, float(scale), float(bias))


__all__ = ["Forest", "ObliviousForest", "from_catboost_json", "from_lightgbm_text", "from_xgboost_json"]
