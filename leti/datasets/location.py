"""Where a store lives: a file path or ``sqlite:///PATH`` (SQLite, the default ``$LETI_HOME/leti.db``), or
``postgresql://USER@HOST:PORT/DB`` (PostgreSQL, shared by many hosts). ``LETI_STORE`` sets it for every command.

A location carries two spellings: ``url`` (what is passed to the driver, password included) and ``display``
(what may be printed: never the password). Errors name the store by its display form only.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from leti.errors import StoreError
from leti.paths import default_store_path

ENV_VAR = "LETI_STORE"
_FORMS = "a path, sqlite:///PATH or postgresql://USER@HOST:PORT/DB"
_PARAM = re.compile(r"^[a-z_]+=[^&]*$")


@dataclass(frozen=True)
class StoreLocation:
    kind: str  # "sqlite" | "postgresql"
    display: str
    path: Path | None = None  # sqlite
    url: str = field(default="", repr=False)  # postgresql, password included: never print it
    host: str = ""
    port: int = 0
    password: str = field(default="", repr=False)

    def __str__(self) -> str:
        return self.display

    def redact(self, text: str) -> str:
        """``text`` with the password (also URL-encoded) masked: for driver messages that might echo it."""
        if self.password:
            for secret in {self.password, unquote(self.password)}:
                text = text.replace(secret, "***")
        return text


def resolve(spec: str | os.PathLike | StoreLocation | None = None) -> StoreLocation:
    """Parse ``spec`` (None: ``$LETI_STORE``, else the default SQLite file). Malformed: a one-line StoreError."""
    if isinstance(spec, StoreLocation):
        return spec
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        spec = os.environ.get(ENV_VAR, "").strip() or default_store_path()
    if isinstance(spec, os.PathLike):
        path = Path(spec).expanduser()
        return StoreLocation("sqlite", str(path), path=path)
    if not isinstance(spec, str):
        raise StoreError(f"must be {_FORMS}, got {type(spec).__name__}", "store")
    text = spec.strip()
    scheme, sep, _ = text.partition("://")
    if not sep:
        path = Path(text).expanduser()
        return StoreLocation("sqlite", str(path), path=path)
    scheme = scheme.lower()
    if scheme == "sqlite":
        rest = text[len("sqlite://") :]
        if not rest.startswith("/") or rest == "/":
            raise StoreError(f"malformed SQLite URL {text!r}: use sqlite:///ABSOLUTE/PATH", "store")
        path = Path(unquote(rest))
        return StoreLocation("sqlite", str(path), path=path)
    if scheme in ("postgresql", "postgres"):
        return _postgres(text)
    shown = scheme if len(scheme) <= 20 else scheme[:20] + "…"
    raise StoreError(f"unknown store URL scheme {shown!r}: use {_FORMS}", "store")


def _postgres(text: str) -> StoreLocation:
    try:
        parts = urlsplit(text)
        host, user, password = parts.hostname or "", parts.username or "", parts.password or ""
    except ValueError:
        raise StoreError("malformed PostgreSQL URL: use postgresql://USER@HOST:PORT/DB", "store") from None
    try:
        port = parts.port or 5432  # raises ValueError for a non-numeric or out-of-range port
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise StoreError("malformed PostgreSQL URL: the port must be a number in 1..65535", "store")
    db = unquote(parts.path.lstrip("/"))
    display = f"postgresql://{user + '@' if user else ''}{host}:{port}/{db}"
    problems = []
    if not host:
        problems.append("no host")
    if not db or "/" in db:
        problems.append("name one database after the host (…/DB)")
    if parts.fragment:
        problems.append("a '#' fragment")
    if parts.query and not all(_PARAM.match(p) for p in parts.query.split("&")):
        problems.append("query parameters must be key=value pairs joined by '&'")
    if problems:
        raise StoreError(f"malformed PostgreSQL URL {display!r}: {'; '.join(problems)}", "store")
    url = text if parts.scheme == "postgresql" else "postgresql" + text[len(parts.scheme) :]
    return StoreLocation("postgresql", display, url=url, host=host, port=port, password=password)
