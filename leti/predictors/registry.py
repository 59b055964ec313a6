"""Predictor families by name (their table: ``leti.predictors.families``), and trained predictors on disk:
``$LETI_HOME/predictors/<target>/<family>/``.

Every model file a family writes is sealed with a SHA-256 sidecar (``<file>.sha256``) and checked before it is
parsed, so an edited or truncated file gives one clear ``PredictorError`` line instead of a parser's traceback or,
worse, a silently different model. Nothing here (or in any family) unpickles.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path

from leti.errors import LetiError, PredictorError
from leti.paths import default_predictor_dir
from leti.predictors.base import META_FILE, Predictor, read_meta
from leti.predictors.families import FAMILIES, FAMILY_CLASSES


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
        return cls(**params)
    except TypeError as e:
        raise PredictorError(f"bad hyper-parameters for {family} ({e})", "params") from None


# ---- trained predictors on disk --------------------------------------------------------------------------------
def _root(root) -> Path:
    return Path(root) if root is not None else default_predictor_dir()


def _safe_part(value: str, what: str) -> str:
    if not isinstance(value, str) or not value or value in (".", "..") or any(c in value for c in "/\\\0"):
        raise LetiError(f"{value!r} cannot name a predictor directory", what)
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


def _trained(target: str, root) -> list[tuple[str, Path, dict]]:
    base = _root(root) / _safe_part(target, "target")
    out = []
    if not base.is_dir():
        return out
    for d in sorted(p for p in base.iterdir() if p.is_dir()):
        try:
            info = read_meta(d)
        except PredictorError:
            continue
        out.append((d.name, d, info))
    return out


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
    found = _trained(target, root)
    if not found:
        raise PredictorError(f"no trained predictor for target {target!r}; train one first", "target")
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


# ---- file integrity -------------------------------------------------------------------------------------------
def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def seal(path) -> None:
    """Record the SHA-256 of a model file next to it."""
    p = Path(path)
    p.with_name(p.name + ".sha256").write_text(hashlib.sha256(p.read_bytes()).hexdigest() + "\n")


def read_checked(path) -> bytes:
    """The bytes of a sealed model file; PredictorError when it is missing or differs from its seal."""
    p = Path(path)
    if not p.is_file():
        raise PredictorError("model file is missing", str(p))
    side = _sidecar(p)
    if not side.is_file():
        raise PredictorError("model file has no checksum (.sha256); it was not saved by leti", str(p))
    data = p.read_bytes()
    if hashlib.sha256(data).hexdigest() != side.read_text().strip():
        raise PredictorError("model file does not match its checksum: it was edited or truncated", str(p))
    return data


def write_json_checked(path, obj) -> None:
    p = Path(path)
    p.write_text(json.dumps(obj, sort_keys=True))
    seal(p)


def read_json_checked(path) -> dict:
    data = read_checked(path)
    try:
        obj = json.loads(data)
    except ValueError as e:
        raise PredictorError(f"not valid JSON ({e})", str(path)) from None
    if not isinstance(obj, dict):
        raise PredictorError("not a JSON object", str(path))
    return obj


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
    "read_checked",
    "read_json_checked",
    "save_trained",
    "seal",
    "write_json_checked",
]
