"""The predictor interface: scikit-learn-like estimators over LayerGraphs.

Hyper-parameters go in ``__init__`` (stored as attributes of the same name, nothing computed there); ``fit`` learns
(``groups``, e.g. canonical arch hashes, keeps isomorphic archs together wherever a family splits its training
rows: the auto family's folds, the GCN's early-stopping split); ``predict`` returns milliseconds; ``save(dir)``
writes the library's own portable format plus ``meta.json``; ``load(dir)`` reads them back. Nothing is ever
pickled.
"""

from __future__ import annotations

import inspect
import json
import platform
from pathlib import Path
from typing import ClassVar

import numpy as np

from leti.errors import PredictorError
from leti.graph.layergraph import LayerGraph

META_FILE = "meta.json"
FEATURE_VERSION = 2  # bump when features change meaning: saved predictors then refuse to load


def library_versions() -> dict:
    import sklearn

    return {"python": platform.python_version(), "numpy": np.__version__, "sklearn": sklearn.__version__}


class Predictor:
    """Base class. Subclasses set ``family`` and implement ``_fit``, ``_predict``, ``_save`` and ``_load``."""

    family: ClassVar[str] = ""

    # ---- scikit-learn style parameters -------------------------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [
            p
            for p in sig.parameters
            if p != "self" and sig.parameters[p].kind == inspect.Parameter.POSITIONAL_OR_KEYWORD
        ]

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params) -> Predictor:
        for k, v in params.items():
            if k not in self._param_names():
                raise PredictorError(f"unknown hyper-parameter for {self.family}", k)
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ---- the interface -----------------------------------------------------------------------------------------
    def fit(self, graphs: list[LayerGraph], latencies_ms, groups=None) -> Predictor:
        """Learn from ``graphs`` and their latencies (ms); ``groups`` (one label per graph, or None) is kept in
        ``self._groups`` while ``_fit`` runs, for families that split their training rows."""
        graphs = list(graphs)
        y = np.asarray(latencies_ms, dtype=float).ravel()
        if len(graphs) != y.size:
            raise PredictorError(f"{len(graphs)} graphs but {y.size} latencies", "latencies_ms")
        if y.size == 0:
            raise PredictorError("cannot fit on zero archs", "graphs")
        if (y <= 0).any() or not np.isfinite(y).all():
            raise PredictorError("latencies must be positive and finite", "latencies_ms")
        if groups is not None:
            groups = np.asarray(list(groups), dtype=object)
            if groups.ndim != 1 or groups.size != len(graphs):
                raise PredictorError(f"{groups.size} groups but {len(graphs)} graphs", "groups")
        self._groups = groups
        try:
            self._fit(graphs, y)
        finally:
            self._groups = None
        self.n_train_ = int(y.size)
        return self

    def store_inputs(self, store, target: str, arch_ids) -> dict:
        """Extra ``fit`` keyword arguments this family reads from the store for ``target``'s training archs
        ``arch_ids`` (the kernel family takes the target and its kernel measurements). None by default."""
        return {}

    def predict(self, graphs: list[LayerGraph]) -> np.ndarray:
        if not hasattr(self, "n_train_"):
            raise PredictorError(f"this {self.family} predictor is not fitted yet", "predictor")
        graphs = list(graphs)
        if not graphs:
            return np.zeros(0)
        return np.asarray(self._predict(graphs), dtype=float)

    def save(self, path, meta: dict | None = None) -> Path:
        """Write the model and ``meta.json`` (family, hyper-parameters, feature version, caller's metadata)."""
        if not hasattr(self, "n_train_"):
            raise PredictorError("cannot save an unfitted predictor", "predictor")
        d = Path(path)
        d.mkdir(parents=True, exist_ok=True)
        self._save(d)
        info = {
            "family": self.family,
            "params": self.get_params(),
            "feature_version": FEATURE_VERSION,
            "n_train": self.n_train_,
            "versions": library_versions(),
            **(meta or {}),
        }
        (d / META_FILE).write_text(json.dumps(info, indent=2, sort_keys=True, default=str))
        self.meta_ = info
        return d

    @classmethod
    def load(cls, path) -> Predictor:
        d = Path(path)
        info = read_meta(d)
        if cls.family and info.get("family") != cls.family:
            raise PredictorError(f"holds a {info.get('family')!r} predictor, not {cls.family!r}", str(d))
        try:
            obj = cls(**info.get("params", {}))
        except TypeError as e:
            raise PredictorError(f"meta.json has bad hyper-parameters ({e})", str(d / META_FILE)) from None
        try:
            obj._load(d)
        except PredictorError:
            raise
        except Exception as e:  # corrupt or tampered files must give one clear line, never a traceback
            raise PredictorError(
                f"cannot read the {cls.family} model ({type(e).__name__}: {e})", str(d)
            ) from None
        obj.n_train_ = int(info.get("n_train", 0))
        obj.meta_ = info
        return obj

    # ---- for subclasses ----------------------------------------------------------------------------------------
    def _fit(self, graphs: list[LayerGraph], y: np.ndarray) -> None:
        raise NotImplementedError

    def _predict(self, graphs: list[LayerGraph]) -> np.ndarray:
        raise NotImplementedError

    def _save(self, d: Path) -> None:
        raise NotImplementedError

    def _load(self, d: Path) -> None:
        raise NotImplementedError


def read_meta(d: Path) -> dict:
    f = Path(d) / META_FILE
    if not f.is_file():
        raise PredictorError("no meta.json: not a saved predictor", str(d))
    try:
        info = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise PredictorError(f"meta.json is not valid JSON ({e})", str(f)) from None
    if not isinstance(info, dict) or not isinstance(info.get("family"), str):
        raise PredictorError("meta.json lacks a 'family'", str(f))
    if info.get("feature_version") != FEATURE_VERSION:
        raise PredictorError(
            f"was saved with feature version {info.get('feature_version')}, this leti uses {FEATURE_VERSION}; "
            "retrain it",
            str(f),
        )
    return info
