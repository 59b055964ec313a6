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
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from leti.errors import LetiError, PredictorError, excerpt, missing_extra
from leti.importers.bounded_json import loads, read_bytes
from leti.paths import default_predictor_dir
from leti.predictors.base import META_FILE, Predictor, finite, read_meta
from leti.predictors.families import FAMILIES, FAMILY_CLASSES
from leti.predictors.schema import check_params
from leti.zoo import ZOO_DIR


# ---- families -------------------------------------------------------------------------------------------------
def family_class(family: str) -> type[Predictor]:
    if not isinstance(family, str) or family not in FAMILY_CLASSES:
        raise PredictorError(f"unknown predictor family {family!r} (known: {', '.join(FAMILIES)})", "family")
    module, cls = FAMILY_CLASSES[family]
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        err = missing_extra(e, f"the {family} family")
        raise PredictorError(
            err.reason if err else f"the {family} family is not available ({e})", "family"
        ) from None
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
# Layout: ``<root>/<target>/<family>/v<N>/``, one sealed predictor directory per version. Saving never replaces a
# version: it adds ``v<N+1>``, which becomes the family's current one; ``remove`` drops a version (the previous one
# answers again). The package's pretrained zoo (``leti/zoo``) has the same layout and answers for a target only
# when the user has trained nothing for it.
TRAINED, PRETRAINED = "trained", "pretrained"
SELECTION_FILE = "selection.json"
_VERSION_RE = re.compile(r"^v([1-9][0-9]{0,5})$")


def _root(root) -> Path:
    return Path(root) if root is not None else default_predictor_dir()


def zoo_root() -> Path | None:
    """The pretrained predictors: the package's zoo, or ``$LETI_ZOO`` (a directory; ``off`` for none)."""
    env = os.environ.get("LETI_ZOO")
    if env is not None and env.strip():
        return None if env.strip().lower() == "off" else Path(env).expanduser()

    return ZOO_DIR


def _safe_part(value: str, what: str) -> str:
    """``value`` as one directory name: not empty, no separators or NUL, not '.' or '..', at most 200 characters."""
    if (not isinstance(value, str) or not value or value in (".", "..") or len(value) > 200
            or any(c in value for c in "/\\\0")):  # fmt: skip
        raise LetiError(f"{excerpt(repr(value), 80)} cannot name a predictor directory", what)
    return value


def predictor_dir(target: str, family: str, root=None) -> Path:
    """The directory holding every saved version of ``target``'s ``family`` predictor."""
    return _root(root) / _safe_part(target, "target") / _safe_part(family, "family")


@dataclass
class Saved:
    """One saved predictor version: where it is, what its meta.json says, and whether it answers by default."""

    target: str
    family: str
    version: int
    path: Path
    meta: dict
    source: str = TRAINED  # or PRETRAINED: shipped in the package's zoo
    current: bool = False  # the family's newest version: what ``load(target, family)`` gives
    answers: bool = False  # what ``load(target)`` gives

    def summary(self) -> dict:
        m = self.meta.get("metrics")
        return {"target": self.target, "family": self.family, "version": self.version, "path": str(self.path),
                "source": self.source, "current": self.current, "answers": self.answers,
                "n_train": self.meta.get("n_train"), "metrics": m if isinstance(m, dict) else {},
                "trained_at": self.meta.get("trained_at")}  # fmt: skip


def _versions(fam_dir: Path) -> list[tuple[int, Path]]:
    """(version, directory) of a family directory's versions, oldest first; directories being saved (no meta.json
    yet) are left out."""
    if not fam_dir.is_dir():
        return []
    out = []
    for d in fam_dir.iterdir():
        m = _VERSION_RE.match(d.name)
        if m and d.is_dir() and (d / META_FILE).exists():
            out.append((int(m.group(1)), d))
    return sorted(out)


def _subdirs(d: Path) -> list[Path]:
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.is_dir() and p.name[:1] not in "._")


def _scan(target: str, root: Path, source: str, problems: dict | None) -> list[Saved]:
    """Every readable version of ``target``'s predictors under ``root``; ``problems`` gets why others are not."""
    out = []
    for fam_dir in _subdirs(root / _safe_part(target, "target")):
        versions = _versions(fam_dir)
        for i, (v, d) in enumerate(versions):
            try:
                info = read_meta(d)
            except PredictorError as e:
                if problems is not None:
                    problems[f"{fam_dir.name} v{v}"] = e.reason
                continue
            out.append(Saved(target, fam_dir.name, v, d, info, source, current=i == len(versions) - 1))
    return out


def _targets(root: Path | None) -> list[str]:
    return [d.name for d in _subdirs(root)] if root is not None else []


def saved(
    target: str | None = None, root=None, pretrained: bool = True, problems: dict | None = None
) -> list[Saved]:
    """Every saved version (of ``target``, or of all targets): the user's, then the zoo's, with ``current`` and
    ``answers`` marked."""
    mine, zoo = _root(root), zoo_root() if pretrained else None
    targets = [target] if target is not None else sorted(set(_targets(mine)) | set(_targets(zoo)))
    out: list[Saved] = []
    for t in targets:
        rows = _scan(t, mine, TRAINED, problems)
        if zoo is not None:
            rows += _scan(t, zoo, PRETRAINED, problems)
        pick = _default(t, rows, mine)
        for r in rows:
            r.answers = pick is not None and r.path == pick.path
        out += rows
    return out


def _current_of(rows: list[Saved], source: str) -> dict[str, Saved]:
    return {r.family: r for r in rows if r.current and r.source == source}


def _default(target: str, rows: list[Saved], mine: Path) -> Saved | None:
    """What ``load(target)`` gives: the best of the user's current versions, else the best pretrained one."""
    for source in (TRAINED, PRETRAINED):
        cur = _current_of(rows, source)
        if cur:
            sel = read_selection(target, mine) if source == TRAINED else None
            return cur[best_family({f: r.meta for f, r in cur.items()}, sel)]
    return None


def read_selection(target: str, root=None) -> dict | None:
    """The last recorded choice among ``target``'s trained predictors (``record_selection``), or None."""
    f = _root(root) / _safe_part(target, "target") / SELECTION_FILE
    if not f.is_file():
        return None
    try:
        sel = json.loads(f.read_bytes()[: 1 << 20])
    except (OSError, ValueError):
        return None
    return sel if isinstance(sel, dict) else None


def record_selection(target: str, selection: dict, root=None) -> None:
    """Record which family answers for ``target`` and on what comparison (``selection["scores"]``: family ->
    ``{"version", ...metrics}``); it holds only while those versions are the families' current ones."""
    d = _root(root) / _safe_part(target, "target")
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{SELECTION_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(selection, indent=2, sort_keys=True, default=str))
    os.replace(tmp, d / SELECTION_FILE)


def _test_acc10(info: dict) -> float:
    m = info.get("metrics")
    v = m.get("acc10") if isinstance(m, dict) else None
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else -1.0


def best_family(families: dict[str, dict], selection: dict | None = None) -> str:
    """The family ``load(target)`` picks among ``{family: meta}``.

    The recorded ``selection`` (every candidate scored on the same held-out archs, see
    ``leti.predictors.evaluate.select``) decides while it covers exactly the current versions; otherwise the best
    test acc@10 in each meta.json, ties by name.
    """
    if selection is not None:
        scores = selection.get("scores")
        chosen = selection.get("family")
        if isinstance(scores, dict) and chosen in families and set(scores) == set(families):
            versions = {f: (s.get("version") if isinstance(s, dict) else None) for f, s in scores.items()}
            if all(versions[f] == families[f].get("version") for f in families):
                return chosen
    return min(families, key=lambda f: (-_test_acc10(families[f]), f))


def current_dir(target: str, family: str, root=None) -> Path:
    """The directory of the current (newest) saved version of ``target``'s ``family`` predictor."""
    versions = _versions(predictor_dir(target, family, root))
    if not versions:
        raise PredictorError(f"no saved {family} predictor for target {target!r}", "predictor")
    return versions[-1][1]


def next_version_dir(target: str, family: str, root=None) -> Path:
    """A new, empty version directory (``v<N+1>``), reserved atomically so that two trainings never share it."""
    fam = predictor_dir(target, family, root)
    fam.mkdir(parents=True, exist_ok=True)
    taken = [int(m.group(1)) for d in fam.iterdir() if (m := _VERSION_RE.match(d.name))]
    v = max(taken, default=0) + 1
    while True:
        try:
            (fam / f"v{v}").mkdir()
            return fam / f"v{v}"
        except FileExistsError:
            v += 1


def save_trained(
    pred: Predictor, target: str, meta: dict | None = None, root=None, into: Path | None = None
) -> Path:
    """Save ``pred`` as a new version of ``target``'s predictor of its family (in ``into``, a directory reserved
    by ``next_version_dir``, or a new one); earlier versions are kept."""
    d = into if into is not None else next_version_dir(target, pred.family, root)
    version = int(d.name[1:])
    info = {**(meta or {}), "target": target, "version": version}
    try:
        return pred.save(d, info)
    except BaseException:
        shutil.rmtree(d, ignore_errors=True)
        raise


def load_dir(path) -> Predictor:
    """Load whatever family the directory holds."""
    d = Path(path)
    info = read_meta(d)
    return family_class(info["family"]).load(d)


def resolve(target: str, family: str | None = None, root=None, version: int | None = None) -> Saved:
    """The saved predictor that answers for ``target``: of ``family`` (its current version, or ``version``) or
    the default pick; the user's own before the pretrained zoo's."""
    problems: dict[str, str] = {}
    try:
        rows = saved(target, root, problems=problems)
    except LetiError:  # a name that cannot be a directory: no predictor has it
        rows = []
    if not rows:
        known = sorted(set(_targets(_root(root))) | set(_targets(zoo_root())))
        why = "".join(f"; {k}: {v}" for k, v in sorted(problems.items())[:1])
        raise PredictorError(f"no trained predictor for target {target!r}{why} (known: {', '.join(known) or 'none'});"
                             " train one with leti train", "target")  # fmt: skip
    if family is None and version is None:
        return next(r for r in rows if r.answers)
    if family is None:
        raise PredictorError("give the family of the version", "version")
    mine = [r for r in rows if r.family == family and r.source == TRAINED]
    pool = mine or [r for r in rows if r.family == family]
    if version is None:
        hit = next((r for r in pool if r.current), None)
    else:
        hit = next((r for r in pool if r.version == version), None)
    if hit is None:
        have = sorted(
            {f"{r.family} v{r.version}" + (" (pretrained)" if r.source == PRETRAINED else "") for r in rows}
        )
        what = f"{family} v{version}" if version is not None else family
        why = "".join(f"; {k}: {v}" for k, v in sorted(problems.items()) if k.startswith(f"{family} "))
        raise PredictorError(
            f"no trained {what} predictor for target {target!r} (trained: {', '.join(have) or 'none'}){why}",
            "predictor",
        )
    return hit


def load(target: str, family: str | None = None, root=None, version: int | None = None) -> Predictor:
    """The predictor that answers for ``target`` (see ``resolve``), loaded."""
    hit = resolve(target, family, root, version)
    return family_class(hit.family).load(hit.path)


def remove(target: str, family: str, version: int | None = None, root=None) -> list[Path]:
    """Delete one version of the user's ``target``/``family`` predictor (or, ``version=None``, all of them);
    returns what was removed. Pretrained predictors are part of the package and cannot be removed."""
    fam = predictor_dir(target, family, root)
    versions = dict(_versions(fam))
    if version is not None and version not in versions:
        have = ", ".join(f"v{v}" for v in versions) or "none"
        raise PredictorError(f"no saved {family} v{version} for target {target!r} (saved: {have})", "version")
    if not versions:
        pre = [r for r in saved(target, root) if r.family == family and r.source == PRETRAINED]
        if pre:
            raise PredictorError(f"the {family} predictor for {target!r} is pretrained (shipped with leti) and cannot be "
                                 "removed; a predictor you train takes precedence", "predictor")  # fmt: skip
        raise PredictorError(f"no saved {family} predictor for target {target!r}", "predictor")
    gone = [versions[version]] if version is not None else [d for _, d in sorted(versions.items())]
    for d in gone:
        shutil.rmtree(d)
    if not _versions(fam):
        shutil.rmtree(fam, ignore_errors=True)
    return gone


def list_trained(root=None, pretrained: bool = True) -> list[dict]:
    """The current version of every saved predictor (the user's, then pretrained ones): target, family, version,
    source, path, n_train, test metrics, and whether it answers by default."""
    return [r.summary() for r in saved(None, root, pretrained) if r.current]


# ---- reading a family's files ---------------------------------------------------------------------------------
# The directory's manifest was checked before a family's ``_load`` runs; these only bound what is read.
MAX_MODEL_BYTES = 1 << 30
MAX_MODEL_JSON_BYTES = 256 << 20


GZ_SUFFIX = ".gz"  # the zoo ships large model files gzipped; they are read as if they were not
MAX_UNZIPPED_BYTES = 1 << 30


def _gunzip(data: bytes, where: str) -> bytes:
    """Inflate a gzip member, refusing more than ``MAX_UNZIPPED_BYTES`` (a small file must not fill the memory)."""
    import zlib

    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(data, MAX_UNZIPPED_BYTES + 1)
    except zlib.error as e:
        raise PredictorError(f"not a valid gzip file ({e})", where) from None
    if len(out) > MAX_UNZIPPED_BYTES or d.unconsumed_tail:
        raise PredictorError(f"inflates to more than {MAX_UNZIPPED_BYTES} bytes", where)
    if not d.eof:
        raise PredictorError("gzip file is truncated", where)
    return out


def read_checked(path) -> bytes:
    """The bytes of a model file, or of its gzipped copy ``<name>.gz`` (the zoo ships large files so), inflated;
    PredictorError when it is missing or too large. The directory's manifest was checked before."""
    p = Path(path)
    gz = p.with_name(p.name + GZ_SUFFIX)
    if not p.is_file() and gz.is_file():
        try:
            raw = read_bytes(gz, str(gz), MAX_MODEL_BYTES)
        except LetiError as e:
            raise PredictorError(e.reason, str(gz)) from None
        return _gunzip(raw, str(gz))

    try:
        return read_bytes(path, str(path), MAX_MODEL_BYTES)
    except LetiError as e:
        raise PredictorError(e.reason, str(path)) from None


def read_json_checked(path) -> dict:
    """A model's JSON object file, read through the bounded JSON reader."""
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
    "GZ_SUFFIX",
    "FAMILIES",
    "FAMILY_CLASSES",
    "PRETRAINED",
    "TRAINED",
    "Saved",
    "available_families",
    "best_family",
    "family_class",
    "list_trained",
    "load",
    "load_dir",
    "make",
    "current_dir",
    "next_version_dir",
    "predictor_dir",
    "read_checked",
    "read_json_checked",
    "read_selection",
    "record_selection",
    "remove",
    "resolve",
    "save_trained",
    "saved",
    "write_json_checked",
    "zoo_root",
]
