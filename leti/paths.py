"""Where leti keeps its files: ``$LETI_HOME`` (default ``~/.leti``)."""

from __future__ import annotations

import os
from pathlib import Path


def leti_home() -> Path:
    return Path(os.environ.get("LETI_HOME") or Path.home() / ".leti").expanduser()


def default_store_path() -> Path:
    return leti_home() / "leti.db"


def default_predictor_dir() -> Path:
    return leti_home() / "predictors"
