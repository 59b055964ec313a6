"""The predictor interface: scikit-learn-like estimators over LayerGraphs.

Hyper-parameters go in ``__init__`` (stored as attributes of the same name, nothing computed there); ``fit`` learns
(``groups``, e.g. canonical arch hashes, keeps isomorphic archs together wherever a family splits its training
rows: the auto family's folds, the GCN's early-stopping split); ``predict`` returns milliseconds; ``save(dir)``
writes the library's own portable format plus ``meta.json`` and seals the directory (``leti.predictors.manifest``);
``load(dir)`` checks the seal, then ``meta.json`` against its schema (``leti.predictors.schema``), before anything
else is read. Nothing is ever pickled.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import platform
import shutil
import uuid
from pathlib import Path
from typing import ClassVar

import numpy as np

from leti.errors import LetiError, PredictorError
from leti.graph.layergraph import LayerGraph
from leti.importers.bounded_json import load_file
from leti.predictors import manifest
from leti.predictors.schema import check_meta, check_params

META_FILE = "meta.json"
MAX_META_BYTES = 32 << 20  # train_hashes of 100k archs take ~7 MB
MAX_META_DEPTH = 16
FEATURE_VERSION = 2  # bump when features change meaning: saved predictors then refuse to load


def library_versions() -> dict:
    import sklearn

    return {"python": platform.python_version(), "numpy": np.__version__, "sklearn": sklearn.__version__}


class Predictor:
    """Base class. Subclasses set ``family`` and implement ``_fit``, ``_predict``, ``_save`` and ``_load``."""

    family: ClassVar[str] = ""
    # name -> (low, high) for numeric hyper-parameters (leti.predictors.schema checks them)
    param_ranges: ClassVar[dict[str, tuple]] = {}

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

    def clone(self) -> Predictor:
        """An unfitted predictor of the same family with the same hyper-parameters (cross-validation refits it)."""
        return type(self)(**self.get_params())

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
        """Write the model, ``meta.json`` (family, hyper-parameters, feature version, caller's metadata) and the
        manifest sealing them. The directory is built aside and swapped in whole: an earlier predictor there is
        replaced, leaving none of its files, and a reader never sees half of one."""
        if not hasattr(self, "n_train_"):
            raise PredictorError("cannot save an unfitted predictor", "predictor")
        d = Path(path)
        d.parent.mkdir(parents=True, exist_ok=True)
        tmp = d.with_name(f".{d.name}.{uuid.uuid4().hex[:12]}.tmp")
        info = {
            "family": self.family,
            "params": self.get_params(),
            "feature_version": FEATURE_VERSION,
            "n_train": self.n_train_,
            "versions": library_versions(),
            **(meta or {}),
        }
        try:
            tmp.mkdir()
            self._save(tmp)
            text = json.dumps(finite(info), indent=2, sort_keys=True, default=str, allow_nan=False)
            (tmp / META_FILE).write_text(text)
            manifest.seal(tmp)
            _swap_in(tmp, d)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self.meta_ = json.loads(text)
        return d

    @classmethod
    def load(cls, path) -> Predictor:
        d = Path(path)
        manifest.verify(d)  # every file against its SHA-256, before anything is parsed
        info = read_meta(d)
        if cls.family and info.get("family") != cls.family:
            raise PredictorError(f"holds a {info.get('family')!r} predictor, not {cls.family!r}", str(d))
        try:
            params = check_params(cls, info.get("params", {}))
        except LetiError as e:
            raise PredictorError(f"meta.json params.{e.field}: {e.reason}", str(d)) from None
        obj = cls(**params)
        try:
            obj._load(d)
        except PredictorError:
            raise
        except Exception as e:  # corrupt files must give one clear line, never a traceback
            raise PredictorError(
                f"cannot read the {cls.family} model ({type(e).__name__}: {e})", str(d)
            ) from None
        obj.n_train_ = int(info.get("n_train", 0))
        obj.meta_ = info
        obj.path_ = d  # where it was loaded from: files saved beside it later (trust data) are found there
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


def finite(obj):
    """``obj`` with NaN and infinities as None: strict JSON, which the bounded reader accepts."""
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def _swap_in(new: Path, d: Path) -> None:
    """Replace directory ``d`` by ``new`` (two renames; the old one is deleted after)."""
    if not d.exists():
        os.replace(new, d)
        return
    if d.is_symlink() or not d.is_dir():
        raise PredictorError("exists and is not a predictor directory; remove it first", str(d))
    old = d.with_name(f".{d.name}.{uuid.uuid4().hex[:12]}.old")
    os.replace(d, old)
    os.replace(new, d)
    shutil.rmtree(old, ignore_errors=True)


def read_meta(d: Path) -> dict:
    """``meta.json`` of a saved predictor, once it matches its SHA-256 in the manifest and fits the schema."""
    d = Path(d)
    f = d / META_FILE
    if not f.is_file():
        raise PredictorError("no meta.json: not a saved predictor", str(d))
    manifest.verify(d, only=META_FILE)
    try:
        info = load_file(f, str(f), MAX_META_BYTES, MAX_META_DEPTH)
    except LetiError as e:
        raise PredictorError(e.reason, str(f)) from None
    check_meta(info, str(f))
    if info.get("feature_version") != FEATURE_VERSION:
        raise PredictorError(
            f"was saved with feature version {info.get('feature_version')}, this leti uses {FEATURE_VERSION}; "
            "retrain it",
            str(f),
        )
    return info
