"""The seal of a saved predictor: ``manifest.json`` lists every file of its directory with its SHA-256.

``Predictor.save`` writes the manifest after the family's files and ``meta.json``; ``Predictor.load`` checks it
before anything is parsed. A file edited, truncated, added, removed or replaced by a link, ``meta.json`` included
(its hyper-parameters, metrics and target choose what runs and which family is "best"), stops the load with one
``PredictorError`` line. Nothing here knows the families: whatever a family or a later tool (calibration, trust)
writes into the directory is sealed alike; a tool that adds a file afterwards calls ``seal`` again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from leti.errors import PredictorError
from leti.importers.bounded_json import load_file

MANIFEST_FILE = "manifest.json"
FORMAT = 1
MAX_FILES = 10_000
MAX_MANIFEST_BYTES = 4 << 20


def _hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _files(d: Path) -> list[str]:
    """Relative POSIX paths of every file under ``d`` but the manifest; links and odd entries are refused."""
    out = []
    for root, dirs, files in os.walk(d):
        for name in dirs + files:
            p = Path(root) / name
            rel = p.relative_to(d).as_posix()
            if p.is_symlink():
                raise PredictorError(f"holds a link, {rel}; a saved predictor holds plain files only", str(d))
            if name in files and not p.is_file():
                raise PredictorError(f"holds {rel}, which is not a plain file", str(d))
            if name in files and rel != MANIFEST_FILE:
                out.append(rel)
        if len(out) > MAX_FILES:
            raise PredictorError(f"holds more than {MAX_FILES:,} files", str(d))
    return sorted(out)


def seal(d) -> Path:
    """Write ``d/manifest.json`` over every file now in ``d``; returns its path."""
    d = Path(d)
    files = {rel: _hash(d / rel) for rel in _files(d)}
    tmp = d / f".{MANIFEST_FILE}.tmp"
    tmp.write_text(json.dumps({"format": FORMAT, "files": files}, indent=1, sort_keys=True))
    os.replace(tmp, d / MANIFEST_FILE)
    return d / MANIFEST_FILE


def _read_manifest(d: Path) -> dict[str, str]:
    f = d / MANIFEST_FILE
    if f.is_symlink() or not f.is_file():
        raise PredictorError(
            f"has no {MANIFEST_FILE}: it was not saved by this leti (or was saved before predictors were sealed); "
            "retrain it",
            str(d),
        )
    try:
        m = load_file(f, str(f), MAX_MANIFEST_BYTES, max_depth=3)
    except PredictorError:
        raise
    except Exception as e:  # a LetiError from the bounded reader: the same line, as a predictor error
        raise PredictorError(getattr(e, "reason", str(e)), str(f)) from None
    files = m.get("files") if isinstance(m, dict) else None
    if not isinstance(m, dict) or m.get("format") != FORMAT or not isinstance(files, dict):
        raise PredictorError(f"is not a manifest of format {FORMAT}", str(f))
    for rel, digest in files.items():
        parts = rel.split("/")
        if rel.startswith("/") or "\\" in rel or any(p in ("", ".", "..") for p in parts):
            raise PredictorError(f"lists a path outside its directory, {rel!r}", str(f))
        if not (
            isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
        ):
            raise PredictorError(f"has no SHA-256 for {rel!r}", str(f))
    return files


def verify(d, only: str | None = None) -> None:
    """Check every file of ``d`` against its manifest, or just the file ``only`` (listing predictors reads their
    ``meta.json`` alone); ``PredictorError`` naming the first that differs."""
    d = Path(d)
    if not d.is_dir():
        raise PredictorError("is not a directory", str(d))
    listed = _read_manifest(d)
    if only is not None:
        p = d / only
        if only not in listed:
            raise PredictorError(f"{only} is not in {MANIFEST_FILE}", str(d))
        if p.is_symlink() or not p.is_file():
            raise PredictorError(f"{only} is missing or not a plain file", str(d))
        listed, present = {only: listed[only]}, [only]
    else:
        present = _files(d)
    extra = sorted(set(present) - set(listed))
    if extra:
        raise PredictorError(
            f"{extra[0]} is not in {MANIFEST_FILE}: the directory was changed after it was saved; retrain it",
            str(d),
        )
    for rel in sorted(listed):
        p = d / rel
        if rel not in present:
            raise PredictorError(f"{rel} is missing (listed in {MANIFEST_FILE})", str(d))
        if _hash(p) != listed[rel]:
            raise PredictorError(
                f"{rel} does not match its SHA-256 in {MANIFEST_FILE}: it was edited or truncated after it was "
                "saved; retrain it",
                str(d),
            )


__all__ = ["MANIFEST_FILE", "seal", "verify"]
