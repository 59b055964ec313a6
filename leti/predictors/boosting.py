"""The gradient-boosting families ``xgboost``, ``lightgbm`` and ``catboost`` on the IR features.

The model learns log-latency (errors that matter are relative). With ``base="lut"`` (the default) it learns the
log-ratio of the latency to a per-layer lookup table fitted by NNLS on the same training archs, and that table's
estimate is also a feature: the table carries what is additive (each layer's own cost, and it extrapolates to
unseen combinations of layers) and the trees learn what is not (fusion, caches, runtime quirks). docs/accuracy.md
compares the parts on the phone data.

``objective``: ``l2``, ``l1``, ``huber`` (``alpha`` = delta in log units) or ``quantile`` (``alpha`` = level).
``topology``: which topology column groups to read besides the features (``none``, ``all`` or names joined by '+',
see ``leti.predictors.topology``). LightGBM's ``monotone`` keeps the prediction from falling as the columns that
count work (and the LUT's estimate) grow.
Noisy targets whose bad measurements are one-sided (a share of runs much slower or faster than the rest) are
predicted best by the typical value, not the mean: ``quantile`` or ``l1`` there.

Models are saved in each library's own text format (XGBoost JSON, LightGBM text, CatBoost JSON), sealed by the
manifest, and predicted from without the library (``leti.predictors.trees``) unless a batch is large.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np

from leti.errors import PredictorError, excerpt
from leti.predictors.base import Predictor
from leti.predictors.features import (
    FEATURES_ID,
    TOPOLOGY_ID,
    design,
    design_columns,
    monotone_signs,
)
from leti.predictors.lut import LUTPredictor
from leti.predictors.registry import read_checked, read_json_checked, write_json_checked
from leti.predictors.schema import n_threads
from leti.predictors.trees import from_catboost_json, from_lightgbm_text, from_xgboost_json

OBJECTIVES = ("l2", "l1", "huber", "quantile")
BASES = ("lut", "none")
INFO_FILE = "boosting.json"
BASE_DIR = "base"
# Batches from this size go to the boosting library when it is loaded, and from LIBRARY_BATCH also when it is not
# yet: below, walking the trees in numpy beats the library's call overhead or its import.
SMALL_BATCH = 32
LIBRARY_BATCH = 4096


class BoostingPredictor(Predictor):
    """Shared pipeline: features -> (optional LUT base) -> a library's trees on log-latency."""

    model_file = ""
    param_ranges = {"n_estimators": (1, 100_000), "learning_rate": (1e-6, 10.0), "subsample": (1e-3, 1.0),
                    "colsample": (1e-3, 1.0), "reg_lambda": (0.0, 1e6), "alpha": (0.0, 1e6),
                    "base_robust": (0.0, 100.0), "n_jobs": (1, 1_000_000), "num_leaves": (2, 131_072),
                    "min_child_samples": (1, 1_000_000), "max_depth": (1, 64), "min_child_weight": (0.0, 1e6),
                    "depth": (1, 16), "l2_leaf_reg": (0.0, 1e6)}  # fmt: skip

    # ---- the pipeline ---------------------------------------------------------------------------------------
    def _check(self) -> None:
        if self.objective not in OBJECTIVES:
            raise PredictorError(
                f"must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}", "objective"
            )
        if self.base not in BASES:
            raise PredictorError(f"must be one of {', '.join(BASES)}, got {self.base!r}", "base")
        design_columns(self.topology)  # an unknown topology group fails here
        if self.objective == "quantile" and not 0 < float(self.alpha) < 1:
            raise PredictorError(f"a quantile level must lie in (0, 1), got {self.alpha!r}", "alpha")
        if self.objective == "huber" and not float(self.alpha) > 0:
            raise PredictorError(f"the Huber delta must be positive, got {self.alpha!r}", "alpha")

    def _design(self, graphs, base_ms: np.ndarray | None) -> np.ndarray:
        X = design(graphs, self.topology)[:, self.columns_]
        if base_ms is not None:
            X = np.hstack([X, np.log(base_ms)[:, None]])
        return X

    def _base_predict(self, graphs) -> np.ndarray | None:
        if self.base_ is None:
            return None
        return np.maximum(self.base_.predict(graphs), self.base_floor_)

    def _fit(self, graphs, y):
        self._check()
        X = design(graphs, self.topology)
        # constant columns carry nothing for this training set; dropping them keeps models small and fast
        allowed = design_columns(self.topology)
        self.columns_ = allowed[np.ptp(X[:, allowed], axis=0) > 0] if len(graphs) > 1 else allowed
        target = np.log(y)
        self.base_ = None
        self.base_floor_ = 0.0
        if self.base == "lut":
            self.base_ = LUTPredictor(states=self.base_states, robust=self.base_robust).fit(graphs, y)
            self.base_floor_ = float(0.5 * y.min())
        b = self._base_predict(graphs)
        if b is not None:
            target = target - np.log(b)
        self.forest_ = self.model_bytes_ = None
        try:
            self._train(self._design(graphs, b), target)
        except (
            Exception
        ) as e:  # the library refusing this data or these settings (too few archs, constant targets)
            raise PredictorError(f"{self.family} cannot train on these {len(graphs)} archs "
                                 f"({excerpt(f'{type(e).__name__}: {e}', 200)})", "graphs") from None  # fmt: skip

    def _predict(self, graphs):
        b = self._base_predict(graphs)
        f = self._raw_predict(self._design(graphs, b))
        return np.exp(f) if b is None else b * np.exp(f)

    # ---- persistence ----------------------------------------------------------------------------------------
    def _save(self, d: Path) -> None:
        base = None
        if self.base_ is not None:
            base = {
                "states": self.base_.states,
                "fold_constant": bool(self.base_.fold_constant),
                "floor_ms": self.base_floor_,
            }
        info = {"features_id": FEATURES_ID, "topology_id": TOPOLOGY_ID, "columns": self.columns_.tolist(), "base": base,
                "model_file": self.model_file}  # fmt: skip
        if self.base_ is not None:
            (d / BASE_DIR).mkdir(exist_ok=True)
            self.base_._save(d / BASE_DIR)
        (d / self.model_file).write_bytes(self._model_bytes())
        write_json_checked(d / INFO_FILE, info)

    def _load(self, d: Path) -> None:
        self._check()
        info = read_json_checked(d / INFO_FILE)
        if info.get("features_id") != FEATURES_ID or (
            self.topology != "none" and info.get("topology_id") != TOPOLOGY_ID
        ):
            raise PredictorError("was trained on other features than this leti computes; retrain it", str(d))
        cols = np.asarray(info["columns"], dtype=np.int64)
        if cols.ndim != 1 or not np.isin(cols, design_columns(self.topology)).all():
            raise PredictorError("feature columns out of range", str(d / INFO_FILE))
        self.columns_ = cols
        base = info.get("base")
        self.base_, self.base_floor_ = None, 0.0
        if base is not None:
            lut = LUTPredictor(
                states=str(base["states"]), fold_constant=bool(base.get("fold_constant", True))
            )
            lut._load(d / BASE_DIR)
            lut.n_train_ = 0
            self.base_, self.base_floor_ = lut, float(base["floor_ms"])
        if (self.base_ is None) != (self.base == "none"):
            raise PredictorError("the saved model and its meta.json disagree about the LUT base", str(d))
        self._read(d / self.model_file, read_checked(d / self.model_file))
        n_in = cols.size + (1 if self.base_ is not None else 0)
        if self._n_model_features() != n_in:
            raise PredictorError(
                f"the model expects {self._n_model_features()} features, its files describe {n_in}", str(d)
            )

    # ---- the trees: numpy for small batches, the library for large ones ---------------------------------------
    def _raw_predict(self, X: np.ndarray) -> np.ndarray:
        if self._use_library(len(X)):
            return self._library_predict(X)
        return self._forest().predict(X)

    def _use_library(self, n: int) -> bool:
        """The library pays off for large batches, and as soon as it is loaded anyway (both give the same numbers);
        otherwise its import (1-3 s) costs more than walking the trees in numpy."""
        if getattr(self, "model_", None) is not None or self.library in sys.modules:
            return n >= SMALL_BATCH
        return n >= LIBRARY_BATCH and importlib.util.find_spec(self.library) is not None

    def _forest(self):
        if getattr(self, "forest_", None) is None:
            self.forest_ = self._parse(self._model_bytes())
        return self.forest_

    def _model_bytes(self) -> bytes:
        if getattr(self, "model_bytes_", None) is None:
            with tempfile.TemporaryDirectory() as tmp:
                p = Path(tmp) / self.model_file
                self._write(p)
                self.model_bytes_ = p.read_bytes()
        return self.model_bytes_

    def _library_predict(self, X: np.ndarray) -> np.ndarray:
        if getattr(self, "model_", None) is None:
            self.model_ = self._library_model(self._model_bytes())
        return self._predict_with(self.model_, X)

    def _read(self, path: Path, data: bytes) -> None:
        self.model_, self.model_bytes_ = None, data
        self.forest_ = self._parse(data)  # a damaged file fails here, at load

    def _n_model_features(self) -> int:
        return int(self._forest().n_features)

    # ---- for subclasses -------------------------------------------------------------------------------------
    library = ""  # the module that trains (and, for large batches, predicts)

    def _train(self, X: np.ndarray, t: np.ndarray) -> None:
        """Fit ``self.model_`` (a library model) on ``X`` and ``t``."""
        raise NotImplementedError

    def _predict_with(self, model, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _write(self, path: Path) -> None:
        """Save ``self.model_`` in the library's own format."""
        raise NotImplementedError

    def _parse(self, data: bytes):
        """The saved model as a numpy forest (``leti.predictors.trees``)."""
        raise NotImplementedError

    def _library_model(self, data: bytes):
        raise NotImplementedError


# ---- LightGBM -------------------------------------------------------------------------------------------------
class LightGBMPredictor(BoostingPredictor):
    family = "lightgbm"
    model_file = "model.txt"

    def __init__(
        self,
        n_estimators: int = 1000,
        learning_rate: float = 0.03,
        num_leaves: int = 15,
        min_child_samples: int = 5,
        subsample: float = 0.8,
        colsample: float = 0.5,
        reg_lambda: float = 1.0,
        objective: str = "l2",
        alpha: float = 0.6,
        base: str = "lut",
        base_states: str = "separate",
        base_robust: float = 0.0,
        monotone: bool = False,
        topology: str = "none",
        seed: int = 0,
        n_jobs: int = 1,
    ):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample = colsample
        self.reg_lambda = reg_lambda
        self.objective = objective
        self.alpha = alpha
        self.base = base
        self.base_states = base_states
        self.base_robust = base_robust
        self.monotone = monotone
        self.topology = topology
        self.seed = seed
        self.n_jobs = n_jobs

    def _params(self) -> dict:
        obj = {"l2": "regression", "l1": "regression_l1", "huber": "huber", "quantile": "quantile"}[
            self.objective
        ]
        return {
            "objective": obj,
            "alpha": float(self.alpha),
            "learning_rate": float(self.learning_rate),
            "num_leaves": int(self.num_leaves),
            "min_child_samples": int(self.min_child_samples),
            "min_child_weight": 1e-3,
            "bagging_fraction": float(self.subsample),
            "bagging_freq": 1 if self.subsample < 1 else 0,
            "feature_fraction": float(self.colsample),
            "lambda_l2": float(self.reg_lambda),
            "seed": int(self.seed),
            "deterministic": True,
            "num_threads": n_threads(self.n_jobs),
            "verbose": -1,
        }

    def _train(self, X, t):
        import lightgbm as lgb

        params = self._params()
        if self.monotone:
            # more work never makes a network faster: the columns that count work (and the LUT's estimate) may
            # only raise the prediction, which keeps the trees from fitting noise against them
            signs = monotone_signs()[self.columns_].tolist() + ([1] if self.base_ is not None else [])
            params.update(monotone_constraints=signs, monotone_constraints_method="advanced")
        ds = lgb.Dataset(X, t, params={"verbose": -1, "min_data_in_bin": 1})
        self.model_ = lgb.train(params, ds, num_boost_round=int(self.n_estimators))

    library = "lightgbm"

    def _predict_with(self, model, X):
        return model.predict(X, num_threads=n_threads(self.n_jobs))

    def _write(self, path):
        self.model_.save_model(str(path))

    def _parse(self, data):
        return from_lightgbm_text(data.decode("utf-8"))

    def _library_model(self, data):
        import lightgbm as lgb

        text = data.decode("utf-8")
        check_lightgbm_text(text)  # LightGBM's own parser aborts the process on some malformed files
        return lgb.Booster(model_str=text)


def check_lightgbm_text(text: str) -> None:
    """Structural checks of a LightGBM text model: the header, each tree's arrays and child links, and the
    ``tree_sizes`` byte counts, so that a damaged file is refused with a PredictorError."""

    def bad(why: str):
        raise PredictorError(f"not a valid LightGBM model ({why})", "model.txt")

    head, sep, rest = text.partition("\n\n")
    lines = head.split("\n")
    if not sep or lines[0] != "tree":
        bad("no header")
    kv = dict(line.split("=", 1) for line in lines[1:] if "=" in line)
    try:
        n_feat = int(kv["max_feature_idx"]) + 1
        sizes = [int(v) for v in kv["tree_sizes"].split()]
    except (KeyError, ValueError):
        bad("header lacks max_feature_idx or tree_sizes")
    body = rest.encode("utf-8")
    pos = 0
    for i, size in enumerate(sizes):
        block = body[pos : pos + size].decode("utf-8", errors="replace")
        pos += size
        if len(block.encode("utf-8")) != size or not block.startswith(f"Tree={i}\n"):
            bad(f"tree {i} is truncated or misplaced")
        t = dict(line.split("=", 1) for line in block.split("\n")[1:] if "=" in line)
        try:
            leaves = int(t["num_leaves"])
            if leaves < 1:
                bad(f"tree {i} has no leaves")
            leaf_value = [float(v) for v in t["leaf_value"].split()]
            if len(leaf_value) != leaves:
                bad(f"tree {i} has {len(leaf_value)} leaf values for {leaves} leaves")
            if leaves > 1:
                feat = [int(v) for v in t["split_feature"].split()]
                thr = [float(v) for v in t["threshold"].split()]
                kids = [int(v) for key in ("left_child", "right_child") for v in t[key].split()]
                if not (len(feat) == len(thr) == leaves - 1 and len(kids) == 2 * (leaves - 1)):
                    bad(f"tree {i} has arrays of the wrong length")
                if any(not 0 <= f < n_feat for f in feat):
                    bad(f"tree {i} splits on a feature out of range")
                if any(not (-leaves <= k < leaves - 1) for k in kids):
                    bad(f"tree {i} links to a node out of range")
        except (KeyError, ValueError):
            bad(f"tree {i} lacks or mangles its arrays")
    if not body[pos:].startswith(b"end of trees"):
        bad("the tree list does not end where tree_sizes says")


# ---- XGBoost --------------------------------------------------------------------------------------------------
class XGBoostPredictor(BoostingPredictor):
    family = "xgboost"
    model_file = "model.json"

    def __init__(
        self,
        n_estimators: int = 1000,
        learning_rate: float = 0.03,
        max_depth: int = 5,
        min_child_weight: float = 1.0,
        subsample: float = 0.8,
        colsample: float = 0.5,
        reg_lambda: float = 1.0,
        objective: str = "l2",
        alpha: float = 0.6,
        base: str = "lut",
        base_states: str = "separate",
        base_robust: float = 0.0,
        topology: str = "none",
        seed: int = 0,
        n_jobs: int = 1,
    ):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.min_child_weight = min_child_weight
        self.subsample = subsample
        self.colsample = colsample
        self.reg_lambda = reg_lambda
        self.objective = objective
        self.alpha = alpha
        self.base = base
        self.base_states = base_states
        self.base_robust = base_robust
        self.topology = topology
        self.seed = seed
        self.n_jobs = n_jobs

    def _params(self) -> dict:
        p = {
            "objective": {
                "l2": "reg:squarederror",
                "l1": "reg:absoluteerror",
                "huber": "reg:pseudohubererror",
                "quantile": "reg:quantileerror",
            }[self.objective],  # fmt: skip
            "eta": float(self.learning_rate),
            "max_depth": int(self.max_depth),
            "min_child_weight": float(self.min_child_weight),
            "subsample": float(self.subsample),
            "colsample_bytree": float(self.colsample),
            "lambda": float(self.reg_lambda),
            "tree_method": "hist",
            "seed": int(self.seed),
            "nthread": n_threads(self.n_jobs),
            "base_score": 0.0,
        }
        if self.objective == "quantile":
            p["quantile_alpha"] = float(self.alpha)
        if self.objective == "huber":
            p["huber_slope"] = float(self.alpha)
        return p

    def _train(self, X, t):
        import xgboost as xgb

        self.model_ = xgb.train(self._params(), xgb.DMatrix(X, t), num_boost_round=int(self.n_estimators))

    library = "xgboost"

    def _predict_with(self, model, X):
        return model.inplace_predict(X)

    def _write(self, path):
        self.model_.save_model(str(path))  # the .json suffix selects XGBoost's JSON format

    def _parse(self, data):
        return from_xgboost_json(data)

    def _library_model(self, data):
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(bytearray(data))
        booster.set_param({"nthread": n_threads(self.n_jobs)})
        return booster


# ---- CatBoost -------------------------------------------------------------------------------------------------
class CatBoostPredictor(BoostingPredictor):
    family = "catboost"
    model_file = "model.json"  # CatBoost's JSON export: readable without CatBoost (leti.predictors.trees)

    def __init__(
        self,
        n_estimators: int = 1500,
        learning_rate: float = 0.05,
        depth: int = 6,
        l2_leaf_reg: float = 3.0,
        subsample: float = 0.8,
        colsample: float = 0.5,
        objective: str = "l2",
        alpha: float = 0.6,
        base: str = "lut",
        base_states: str = "separate",
        base_robust: float = 0.0,
        topology: str = "none",
        seed: int = 0,
        n_jobs: int = 1,
    ):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.depth = depth
        self.l2_leaf_reg = l2_leaf_reg
        self.subsample = subsample
        self.colsample = colsample
        self.objective = objective
        self.alpha = alpha
        self.base = base
        self.base_states = base_states
        self.base_robust = base_robust
        self.topology = topology
        self.seed = seed
        self.n_jobs = n_jobs

    def _loss(self) -> str:
        a = float(self.alpha)
        return {"l2": "RMSE", "l1": "MAE", "huber": f"Huber:delta={a}", "quantile": f"Quantile:alpha={a}"}[
            self.objective
        ]

    def _train(self, X, t):
        from catboost import CatBoostRegressor

        self.model_ = CatBoostRegressor(
            iterations=int(self.n_estimators),
            learning_rate=float(self.learning_rate),
            depth=int(self.depth),
            l2_leaf_reg=float(self.l2_leaf_reg),
            subsample=float(self.subsample),
            bootstrap_type="Bernoulli",
            rsm=float(self.colsample),
            loss_function=self._loss(),
            random_seed=int(self.seed),
            thread_count=n_threads(self.n_jobs),
            allow_writing_files=False,
            verbose=False,
        )
        self.model_.fit(X, t)

    library = "catboost"

    def _predict_with(self, model, X):
        return model.predict(X, thread_count=n_threads(self.n_jobs))

    def _write(self, path):
        self.model_.save_model(str(path), format="json")

    def _parse(self, data):
        return from_catboost_json(data)

    def _library_model(self, data):
        from catboost import CatBoostRegressor

        # CatBoost reads from a path; hand it the checked bytes, not the file that might change in between
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / self.model_file
            p.write_bytes(data)
            m = CatBoostRegressor()
            m.load_model(str(p), format="json")
        return m


__all__ = ["BoostingPredictor", "CatBoostPredictor", "LightGBMPredictor", "XGBoostPredictor"]
