"""Where leti keeps its files: ``$LETI_HOME`` (default ``~/.leti``), created private to its owner (0700): it holds
the ADB private key, the measurement store and the trained predictors."""

from __future__ import annotations

import os
from pathlib import Path


def leti_home() -> Path:
    return Path(os.environ.get("LETI_HOME") or Path.home() / ".leti").expanduser()


def ensure_home() -> Path:
    """``leti_home()``, created with mode 0700 when it does not exist (an existing one is left as its owner set it).
    A home that cannot be created is returned as is: whatever then writes there reports the error."""
    home = leti_home()
    if not home.is_dir():
        try:
            home.parent.mkdir(parents=True, exist_ok=True)
            home.mkdir(mode=0o700)
            os.chmod(home, 0o700)  # mkdir's mode is narrowed by the umask, never widened; this makes it exact
        except OSError:  # made by another process meanwhile, or not writable
            pass
    return home


# The default locations below are all under the home, which they create first, private: whichever of them writes
# first (a store, a predictor, the ADB key) must not create it world-readable.
def is_file(path) -> bool:
    """Whether ``path`` names an existing file; False, not an error, for text that cannot be a path at all (too
    long a name, a NUL byte): command-line arguments are tried as paths and as archs alike."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError, TypeError):
        return False


def is_dir(path) -> bool:
    """As ``is_file``, for a directory."""
    try:
        return Path(path).is_dir()
    except (OSError, ValueError, TypeError):
        return False


def default_store_path() -> Path:
    return ensure_home() / "leti.db"


def default_predictor_dir() -> Path:
    return ensure_home() / "predictors"


def default_models_dir() -> Path:
    """Converted .tflite models cached by ``leti generate``."""
    return ensure_home() / "models"
