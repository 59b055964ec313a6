"""Predictor families by name (their table: ``leti.predictors.families``), and trained predictors on disk:
``$LETI_HOME/predictors/<target>/<family>/``.

Every file of a saved predictor, ``meta.json`` included, is sealed by the directory's manifest and checked before
anything is parsed (``leti.predictors.manifest``), so an edited or truncated file gives one clear ``PredictorError``
line instead of a parser's traceback or, worse, a silently different model. Nothing here (or in any family)
unpickles.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from leti.errors import LetiError, PredictorError, excerpt
from leti.paths import default_predictor_dir
from leti.predictors.base import META_FILE, Predictor, finite, read_meta
from leti.predictors.families import FAMILIES, FAMILY_CLASSES
from leti.predictors.schema import check_params


# ---- families -------------------------------------------------------------------------------------------------
def family_class(family: str) -> type[Predictor]:
    if not isinstance(family, str) or family not in FAMILY_CLASSES:
        raise PredictorError(f"unknown predictor family {family!r} (known: {', '.join(FAMILIES)})", "family")
    module, cls = FAMILY_CLASSES[family]
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise PredictorError(f"the {family} family is not available ({e})", "family") from None
    try:
        return getattr(mod, cls)
    except AttributeError:
        raise PredictorError(
            f"the {family} family is not available ({module} has no {cls})", "family"
        ) from None


def available_families() -> list[str]:
    """The families whose modules import on this installation."""
    out = []
    for f in FAMILIES:
        try:
            family_class(f)
        except PredictorError:
            continue
        out.append(f)
    return out


def make(family: str, **params) -> Predictor:
    """A new, unfitted predictor of ``family`` with the given hyper-parameters."""
    cls = family_class(family)
    try:
        params = check_params(cls, params)
    except LetiError as e:
        raise PredictorError(e.reason, f"params.{e.field}") from None
    return cls(**params)


# ---- trained predictors on disk --------------------------------------------------------------------------------
def _root(root) -> Path:
    return Path(root) if root is not None else default_predictor_dir()


def _safe_part(value: str, what: str) -> str:
    """``value`` as one directory name: not empty, no separators or NUL, not '.' or '..', at most 200 characters."""
    if (not isinstance(value, str) or not value or value in (".", "..") or len(value) > 200
            or any(c in value for c in "/\\\0")):  # fmt: skip
        raise LetiError(f"{excerpt(repr(value), 80)} cannot name a predictor directory", what)
    return value


def predictor_dir(target: str, family: str, root=None) -> Path:
    return _root(root) / _safe_part(target, "target") / _safe_part(family, "family")


def save_trained(pred: Predictor, target: str, meta: dict | None = None, root=None) -> Path:
    """Save ``pred`` as the ``target``'s predictor of its family (replacing an earlier one)."""
    d = predictor_dir(target, pred.family, root)
    info = {**(meta or {}), "target": target}
    return pred.save(d, info)


def load_dir(path) -> Predictor:
    """Load whatever family the directory holds."""
    d = Path(path)
    info = read_meta(d)
    return family_class(info["family"]).load(d)


def _trained(target: str, root, problems: dict | None = None) -> list[tuple[str, Path, dict]]:
    """(family, dir, meta) of each usable predictor of ``target``; ``problems`` collects why others are not."""
    base = _root(root) / _safe_part(target, "target")
    out = []
    if not base.is_dir():
        return out
    for d in sorted(
        p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")
    ):  # .tmp: being saved
        try:
            info = read_meta(d)
        except PredictorError as e:
            if problems is not None and (d / META_FILE).exists():
                problems[d.name] = e.reason
            continue
        out.append((d.name, d, info))
    return out


def problems(target: str, root=None) -> dict[str, str]:
    """family -> why its saved predictor for ``target`` cannot be used (edited after it was saved, …)."""
    found: dict[str, str] = {}
    _trained(target, root, found)
    return found


def _test_acc10(info: dict) -> float:
    m = info.get("metrics")
    v = m.get("acc10") if isinstance(m, dict) else None
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else -1.0


def best_family(families: dict[str, dict]) -> str:
    """The family ``load(target)`` picks among ``{family: meta}``: best test acc@10 in its meta, ties by name."""
    return min(families, key=lambda f: (-_test_acc10(families[f]), f))


def load(target: str, family: str | None = None, root=None) -> Predictor:
    """The trained predictor of ``target``: of ``family``, or (None) the one with the best test acc@10 in its meta."""
    if family is not None:
        d = predictor_dir(target, family, root)
        if not (d / META_FILE).is_file():
            have = ", ".join(f for f, _, _ in _trained(target, root)) or "none"
            raise PredictorError(
                f"no trained {family} predictor for target {target!r} (trained: {have})", "target"
            )
        pred = family_class(family).load(d)
        return pred
    bad: dict[str, str] = {}
    found = _trained(target, root, bad)
    if not found:
        why = "".join(f"; {f}: {reason}" for f, reason in sorted(bad.items())[:1])
        raise PredictorError(f"no trained predictor for target {target!r}{why}; train one first", "target")
    name = best_family({name: info for name, _, info in found})
    return family_class(name).load(next(d for f, d, _ in found if f == name))


def list_trained(root=None) -> list[dict]:
    """Every saved predictor: target, family, path, n_train, test metrics (when recorded)."""
    base = _root(root)
    out = []
    if not base.is_dir():
        return out
    for t in sorted(p for p in base.iterdir() if p.is_dir()):
        for fam, d, info in _trained(t.name, root):
            out.append(
                {
                    "target": t.name,
                    "family": fam,
                    "path": str(d),
                    "n_train": info.get("n_train"),
                    "metrics": info.get("metrics", {}),
                    "trained_at": info.get("trained_at"),
                }
            )
    return out


# ---- reading a family's files ---------------------------------------------------------------------------------
# The directory's manifest was checked before a family's ``_load`` runs; these only bound what is read.
MAX_MODEL_BYTES = 1 << 30
MAX_MODEL_JSON_BYTES = 256 << 20


def read_checked(path) -> bytes:
    """The bytes of a model file; PredictorError when it is missing or too large."""
    from leti.importers.bounded_json import read_bytes

    try:
        return read_bytes(path, str(path), MAX_MODEL_BYTES)
    except LetiError as e:
        raise PredictorError(e.reason, str(path)) from None


def read_json_checked(path) -> dict:
    """A model's JSON object file, read through the bounded JSON reader."""
    from leti.importers.bounded_json import loads

    try:
        obj = loads(read_checked(path), str(path), MAX_MODEL_JSON_BYTES, max_depth=16)
    except PredictorError:
        raise
    except LetiError as e:
        raise PredictorError(e.reason, str(path)) from None
    if not isinstance(obj, dict):
        raise PredictorError("not a JSON object", str(path))
    return obj


def write_json_checked(path, obj) -> None:
    """Write a model's JSON file (sealed with the rest of the directory when ``save`` finishes)."""
    Path(path).write_text(json.dumps(finite(obj), sort_keys=True, allow_nan=False))  # NaN -> null


__all__ = [
    "FAMILIES",
    "FAMILY_CLASSES",
    "available_families",
    "best_family",
    "family_class",
    "list_trained",
    "load",
    "load_dir",
    "make",
    "predictor_dir",
    "problems",
    "read_checked",
    "read_json_checked",
    "save_trained",
    "write_json_checked",
]
