"""The loopback phone's file system: device paths mapped into a host directory; only /data/local/tmp is
writable."""

from __future__ import annotations

import fnmatch
import os
import posixpath
import re
from collections.abc import Callable
from pathlib import Path

WRITABLE = "/data/local/tmp"


class DeviceFS:
    """Device paths mapped into a host directory; only /data/local/tmp is writable."""

    def __init__(self, root: Path, virtual: Callable[[str], bytes | None]):
        self.root = root
        self._virtual = virtual

    @staticmethod
    def norm(path: str) -> str:
        full = posixpath.normpath(posixpath.join("/", path))
        return "/" + full.lstrip("/")  # normpath keeps a leading '//' and may leave '/..'

    def host(self, dpath: str) -> Path:
        return self.root / self.norm(dpath).lstrip("/")

    @staticmethod
    def writable(dpath: str) -> bool:
        return dpath == WRITABLE or dpath.startswith(WRITABLE + "/")

    def exists(self, dpath: str) -> bool:
        return self.host(dpath).exists()

    def isdir(self, dpath: str) -> bool:
        return self.host(dpath).is_dir()

    def read(self, dpath: str) -> bytes:
        dpath = self.norm(dpath)
        virtual = self._virtual(dpath)
        if virtual is not None:
            return virtual
        host = self.host(dpath)
        if host.is_dir():
            raise IsADirectoryError(dpath)
        return host.read_bytes()

    def write(self, dpath: str, data: bytes, *, append: bool = False, mode: int | None = None) -> None:
        dpath = self.norm(dpath)
        parent = posixpath.dirname(dpath)
        if not self.writable(parent):
            raise PermissionError(dpath)
        if not self.isdir(parent):
            raise FileNotFoundError(dpath)
        host = self.host(dpath)
        if host.is_dir():
            raise IsADirectoryError(dpath)
        with open(host, "ab" if append else "wb") as fh:
            fh.write(data)
        if mode is not None:
            os.chmod(host, mode & 0o777)

    def glob(self, pattern: str) -> list[str]:
        absolute = pattern.startswith("/")
        paths = ["/"]
        for comp in [c for c in pattern.split("/") if c]:
            found = []
            for p in paths:
                host = self.host(p)
                if not host.is_dir():
                    continue
                for name in sorted(os.listdir(host)):
                    if name.startswith(".") and not comp.startswith("."):
                        continue
                    if fnmatch.fnmatchcase(name, comp):
                        found.append(posixpath.join(p, name))
            paths = found
        return [p if absolute else p.lstrip("/") for p in paths]


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)
