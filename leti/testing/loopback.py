"""A pretend Android phone on 127.0.0.1 that speaks the real ADB wire protocol.

``LoopbackAdbDevice`` lets leti's ADB runner, and the unmodified ``adb-shell`` client it uses, be
tested end to end without a phone: CNXN/AUTH handshake, OPEN/OKAY/WRTE/CLSE streams, the ``sync:``
service (SEND/DATA/DONE, RECV, STAT, LIST, QUIT) and a ``shell:`` service with a small POSIX shell.

The shell parses command lines the way ``sh`` does (quotes, backslashes, ``$VAR``, ``$(…)``,
backticks, globs, ``;`` ``&&`` ``||`` ``|`` and redirections) and runs only a few commands itself
(``getprop``, ``cat``, ``grep``, ``echo``, ``ls``, ``mkdir``, ``rm``, ``chmod``, ``touch``, ``taskset``,
``dumpsys battery``). It never runs anything on the host. Every argv it executes is logged, so a
test can tell a quoted hostile string (one inert argument) from an injection (extra commands).

The device's file system is a temporary directory; like the ``shell`` user on a phone, only
``/data/local/tmp`` is writable. An executable ELF file whose machine matches the device ABI runs as
``benchmark_model``: it loads the pushed ``.tflite`` with LiteRT on the host, times real
invocations and prints them in the format of recent ``benchmark_model`` versions. With
``--enable_op_profiling=true`` the per-operator split of the measured time is an *estimate* from
each operator's arithmetic cost (LiteRT's Python API exposes no per-op timer); the totals are real.

Faults (``device.faults``) make it misbehave on purpose: drop the connection mid-push or mid-run,
hang (never answer a command, or stall mid-push), print garbage instead of benchmark output, run hot, or report a low
battery. Counters are one-shot when set to ``True``/``1``, ``n`` for n times, ``ALWAYS`` for ever.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import os
import posixpath
import queue
import random
import re
import resource
import shutil
import socket
import statistics
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from leti.device_runner.adb import ABI_ELF, elf_arch
from leti.device_runner.adb_keys import public_key_from_android, verify_token
from leti.errors import DeviceError, LetiError

ALWAYS = -1

# --- ADB wire format: 24-byte little-endian header (cmd, arg0, arg1, length, checksum, magic) ---
_HEADER = struct.Struct("<6I")
_A_VERSION = 0x01000001
_AUTH_TOKEN, _AUTH_SIGNATURE, _AUTH_RSAPUBLICKEY = 1, 2, 3
_CMDS = {b"CNXN", b"AUTH", b"OPEN", b"OKAY", b"WRTE", b"CLSE", b"SYNC"}
_SYNC = struct.Struct("<4sI")
_WRITABLE = "/data/local/tmp"
_SH = "/system/bin/sh"


def _wire(cmd: bytes) -> int:
    return struct.unpack("<I", cmd)[0]


def _pack(cmd: bytes, arg0: int, arg1: int, data: bytes = b"") -> bytes:
    word = _wire(cmd)
    return _HEADER.pack(word, arg0, arg1, len(data), sum(data) & 0xFFFFFFFF, word ^ 0xFFFFFFFF) + data


class _Dropped(Exception):
    """The connection to the client is gone (or was cut on purpose)."""


class _ShellSyntax(Exception):
    pass


def make_fake_elf(abi: str = "arm64-v8a") -> bytes:
    """A 64-byte ELF header for ``abi``: what the loopback device accepts as a benchmark_model binary."""
    if abi not in ABI_ELF:
        raise LetiError(f"unknown ABI {abi!r}; known: {sorted(ABI_ELF)}", "abi")
    bits, machine = ABI_ELF[abi]
    ident = b"\x7fELF" + bytes([2 if bits == 64 else 1, 1, 1]) + bytes(9)
    header = ident + struct.pack("<HHI", 2, machine, 1)  # ET_EXEC, e_machine, EV_CURRENT
    return header.ljust(64, b"\0")


@dataclass
class DeviceProfile:
    """What the pretend phone reports about itself. Temperatures in m°C, battery temp in 0.1 °C."""

    model: str = "Pixel 4"
    manufacturer: str = "Google"
    device: str = "flame"
    serialno: str = "LOOPBACK0001"
    soc_model: str = "SM8150"
    board_platform: str = "msmnile"
    abi: str = "arm64-v8a"
    android_version: str = "11"
    sdk: int = 30
    cpu_max_khz: tuple[int, ...] = (1785600,) * 4 + (2419200,) * 3 + (2841600,)
    thermal_zones: tuple[tuple[str, int], ...] = (
        ("cpu-1-0-usr", 38500),
        ("gpu-usr", 36000),
        ("battery", 29000),
    )
    battery_level: int = 85
    battery_temp_dc: int = 290
    gpu: bool = True  # accept --use_gpu (emulated on the host CPU)
    nnapi: bool = True  # accept --use_nnapi (emulated on the host CPU)

    def props(self) -> dict[str, str]:
        return {
            "ro.product.model": self.model,
            "ro.product.manufacturer": self.manufacturer,
            "ro.product.device": self.device,
            "ro.product.name": self.device,
            "ro.serialno": self.serialno,
            "ro.soc.model": self.soc_model,
            "ro.board.platform": self.board_platform,
            "ro.hardware": self.board_platform,
            "ro.product.cpu.abi": self.abi,
            "ro.product.cpu.abilist": self.abi,
            "ro.build.version.release": self.android_version,
            "ro.build.version.sdk": str(self.sdk),
            "ro.build.type": "user",
        }


@dataclass
class Faults:
    """Switches that make the device misbehave. Counts: 0 off, n for the next n times, ALWAYS for ever."""

    drop_mid_push: int = 0  # cut the connection after the first DATA block of a push
    hang_mid_push: int = 0  # stop answering after the first DATA block of a push (until the client goes away)
    drop_mid_run: int = 0  # cut the connection while benchmark_model runs
    hang: int = 0  # accept a shell command but never answer it
    hang_match: str = ""  # only hang commands containing this text ("" = any)
    garbage: int = 0  # benchmark_model prints garbage instead of its report
    low_battery: int = 0  # battery capacity reads that report low_battery_level
    low_battery_level: int = 5
    hot_c: float | None = None  # thermal zone ``hot_zone`` reports this temperature (°C)...
    hot_zone: int = 0
    hot_reads: int = ALWAYS  # ...for this many reads of it (then back to normal)
    hot_cool_s: float | None = None  # ...or cooling linearly back to normal over this many s (see overheat())
    _hot_since: float = field(default=0.0, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def take(self, name: str) -> bool:
        """Consume one occurrence of fault ``name``; True when it fires."""
        with self._lock:
            left = int(getattr(self, name))
            if left == 0:
                return False
            if left > 0:
                setattr(self, name, left - 1)
            return True

    def overheat(self, temp_c: float = 70.0, *, reads: int = ALWAYS, cool_s: float | None = None) -> None:
        """Report ``temp_c`` on the hot zone for ``reads`` reads, or cooling down over ``cool_s`` seconds."""
        with self._lock:
            self.hot_c, self.hot_reads, self.hot_cool_s = float(temp_c), int(reads), cool_s
            self._hot_since = time.monotonic()


@dataclass
class ShellRecord:
    """One ``shell:`` command as received, and every argv it executed (nested ``$(…)`` included)."""

    command: str
    argvs: list[tuple[str, ...]] = field(default_factory=list)
    exit_code: int | None = None


# --------------------------------------------------------------------------------------- file system


class _DeviceFS:
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
        return dpath == _WRITABLE or dpath.startswith(_WRITABLE + "/")

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


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


# --------------------------------------------------------------------------------------- shell parser


@dataclass
class _Part:
    kind: str  # lit | var | cmd
    text: str
    quoted: bool


@dataclass
class _Simple:
    words: list[list[_Part]] = field(default_factory=list)
    redirs: list[tuple[str, list[_Part] | None]] = field(default_factory=list)

    def empty(self) -> bool:
        return not self.words and not self.redirs


def _dollar(src: str, i: int, quoted: bool) -> tuple[_Part, int]:
    """Parse the expansion starting at ``src[i] == '$'``."""
    if src.startswith("$(", i):
        depth, j = 1, i + 2
        while j < len(src):
            c = src[j]
            if c == "\\":
                j += 2
                continue
            if c == "'":
                end = src.find("'", j + 1)
                j = len(src) if end < 0 else end + 1
                continue
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
                if depth == 0:
                    return _Part("cmd", src[i + 2 : j], quoted), j + 1
            j += 1
        raise _ShellSyntax("syntax error: unmatched '('")
    if src.startswith("${", i):
        end = src.find("}", i)
        if end < 0:
            raise _ShellSyntax("syntax error: missing '}'")
        return _Part("var", src[i + 2 : end], quoted), end + 1
    m = re.match(r"[A-Za-z_][A-Za-z0-9_]*|[?$#!0-9@*-]", src[i + 1 :])
    if m:
        return _Part("var", m.group(), quoted), i + 1 + len(m.group())
    return _Part("lit", "$", quoted), i + 1


def _tokenize(src: str) -> list:
    """Words (lists of parts) and operator strings, following POSIX quoting rules."""
    toks: list = []
    word: list[_Part] | None = None

    def add(part: _Part) -> None:
        nonlocal word
        if word is None:
            word = []
        word.append(part)

    def flush() -> None:
        nonlocal word
        if word is not None:
            toks.append(word)
            word = None

    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c in " \t":
            flush()
            i += 1
        elif c in "\n;":
            flush()
            toks.append(";")
            i += 1
        elif c in "&|":
            flush()
            op = c * 2 if src.startswith(c * 2, i) else c
            toks.append(op)
            i += len(op)
        elif c == ">":
            flush()
            op = ">>" if src.startswith(">>", i) else ">"
            toks.append(op)
            i += len(op)
        elif c == "<":
            flush()
            toks.append("<")
            i += 1
        elif c == "2" and word is None and src.startswith("2>", i):
            op = "2>&1" if src.startswith("2>&1", i) else "2>"
            toks.append(op)
            i += len(op)
        elif c == "#" and word is None:
            end = src.find("\n", i)
            i = n if end < 0 else end
        elif c in "()":
            raise _ShellSyntax(f"syntax error: '{c}' unexpected")
        elif c == "'":
            end = src.find("'", i + 1)
            if end < 0:
                raise _ShellSyntax("syntax error: unterminated quoted string")
            add(_Part("lit", src[i + 1 : end], True))
            i = end + 1
        elif c == '"':
            buf: list[str] = []
            i += 1
            while True:
                if i >= n:
                    raise _ShellSyntax("syntax error: unterminated quoted string")
                c = src[i]
                if c == '"':
                    break
                if c == "\\" and i + 1 < n and src[i + 1] in '$`"\\\n':
                    if src[i + 1] != "\n":
                        buf.append(src[i + 1])
                    i += 2
                elif c in "$`":
                    add(_Part("lit", "".join(buf), True))
                    buf = []
                    if c == "$":
                        part, i = _dollar(src, i, True)
                    else:
                        end = src.find("`", i + 1)
                        if end < 0:
                            raise _ShellSyntax("syntax error: unterminated backquote")
                        part, i = _Part("cmd", src[i + 1 : end], True), end + 1
                    add(part)
                else:
                    buf.append(c)
                    i += 1
            add(_Part("lit", "".join(buf), True))
            i += 1
        elif c == "\\":
            if i + 1 < n and src[i + 1] != "\n":
                add(_Part("lit", src[i + 1], True))
            i += 2
        elif c == "$":
            part, i = _dollar(src, i, False)
            add(part)
        elif c == "`":
            end = src.find("`", i + 1)
            if end < 0:
                raise _ShellSyntax("syntax error: unterminated backquote")
            add(_Part("cmd", src[i + 1 : end], False))
            i = end + 1
        else:
            add(_Part("lit", c, False))
            i += 1
    flush()
    return toks


def _parse(toks: list) -> list[tuple[str, list[_Simple]]]:
    """Split tokens into (connector, pipeline) items; the connector says when the pipeline runs."""
    items: list[tuple[str, list[_Simple]]] = []
    cur = _Simple()
    pipeline = [cur]
    connector = ";"
    pending: str | None = None
    for tok in toks:
        if isinstance(tok, list):
            if pending:
                cur.redirs.append((pending, tok))
                pending = None
            else:
                cur.words.append(tok)
            continue
        if pending:
            raise _ShellSyntax(f"syntax error: '{tok}' unexpected")
        if tok in (">", ">>", "<", "2>"):
            pending = tok
        elif tok == "2>&1":
            cur.redirs.append((tok, None))
        elif tok == "|":
            if cur.empty():
                raise _ShellSyntax("syntax error: '|' unexpected")
            cur = _Simple()
            pipeline.append(cur)
        else:  # ; & && ||
            if cur.empty():
                if tok in ("&&", "||") or len(pipeline) > 1 or not items and tok in (";", "&"):
                    raise _ShellSyntax(f"syntax error: '{tok}' unexpected")
                continue
            items.append((connector, pipeline))
            connector = ";" if tok in (";", "&") else tok
            cur = _Simple()
            pipeline = [cur]
    if pending:
        raise _ShellSyntax("syntax error: unexpected end of file")
    if not cur.empty():
        items.append((connector, pipeline))
    elif len(pipeline) > 1 or connector in ("&&", "||"):
        raise _ShellSyntax("syntax error: unexpected end of file")
    return items


# --------------------------------------------------------------------------------------- shell


class _Shell:
    """One ``sh -c`` invocation on the loopback device."""

    ENV = {
        "PATH": "/product/bin:/apex/com.android.runtime/bin:/system/bin:/system/xbin:/vendor/bin",
        "HOME": "/",
        "TMPDIR": _WRITABLE,
        "SHELL": _SH,
        "USER": "shell",
    }

    def __init__(self, device: LoopbackAdbDevice, record: ShellRecord, conn: _Connection | None):
        self.dev = device
        self.fs = device._fs
        self.record = record
        self.conn = conn
        self.last_rc = 0

    def run(self, src: str, out: Callable[[str], None], err: Callable[[str], None], depth: int = 0) -> int:
        try:
            items = _parse(_tokenize(src))
        except _ShellSyntax as exc:
            err(f"{_SH}: {exc}\n")
            return 2
        rc = 0
        for connector, pipeline in items:
            if (connector == "&&" and rc != 0) or (connector == "||" and rc == 0):
                continue
            rc = self._pipeline(pipeline, out, err, depth)
            self.last_rc = rc
        return rc

    def _pipeline(self, pipeline: list[_Simple], out, err, depth: int) -> int:
        stdin = b""
        rc = 0
        for k, cmd in enumerate(pipeline):
            if k == len(pipeline) - 1:
                rc = self._simple(cmd, stdin, out, err, depth)
            else:
                buf: list[str] = []
                rc = self._simple(cmd, stdin, buf.append, err, depth)
                stdin = "".join(buf).encode()
        return rc

    def _var(self, name: str) -> str:
        if name == "?":
            return str(self.last_rc)
        if name == "$":
            return "4242"
        if name == "#":
            return "0"
        if name == "0":
            return "sh"
        return self.ENV.get(name, "")

    def _expand(self, word: list[_Part], err, depth: int) -> list[str]:
        fields: list[list[tuple[str, bool]]] = []
        cur: list[tuple[str, bool]] | None = None
        for part in word:
            if part.kind == "lit":
                if cur is None:
                    cur = []
                    fields.append(cur)
                cur.append((part.text, not part.quoted))
                continue
            if part.kind == "var":
                value = self._var(part.text)
            else:
                if depth > 8:
                    err(f"{_SH}: command substitution nested too deeply\n")
                    value = ""
                else:
                    buf: list[str] = []
                    self.last_rc = self.run(part.text, buf.append, err, depth + 1)
                    value = "".join(buf).rstrip("\n")
            if part.quoted:
                if cur is None:
                    cur = []
                    fields.append(cur)
                cur.append((value, False))
                continue
            for k, piece in enumerate(re.split(r"[ \t\n]+", value)):
                if k > 0:
                    cur = None  # unquoted expansions are split into fields, like sh does
                if piece:
                    if cur is None:
                        cur = []
                        fields.append(cur)
                    cur.append((piece, False))
        result: list[str] = []
        for segs in fields:
            text = "".join(t for t, _ in segs)
            if any(globbable and re.search(r"[*?\[]", t) for t, globbable in segs):
                pattern = "".join(t if globbable else _glob_escape(t) for t, globbable in segs)
                result.extend(self.fs.glob(pattern) or [text])
            else:
                result.append(text)
        return result

    def _simple(self, cmd: _Simple, stdin: bytes, out, err, depth: int) -> int:
        argv: list[str] = []
        for word in cmd.words:
            argv.extend(self._expand(word, err, depth))
        sinks: list[tuple[str, list[str], bool]] = []  # (device path, buffer, append)
        for op, word in cmd.redirs:
            if op == "2>&1":
                err = out
                continue
            target = self._expand(word, err, depth)
            if len(target) != 1:
                err(f"{_SH}: {' '.join(target)}: ambiguous redirect\n")
                return 1
            path = self.fs.norm(target[0]) if target[0] else ""
            if op == "<":
                try:
                    stdin = b"" if path == "/dev/null" else self.fs.read(path)
                except OSError:
                    err(f"{_SH}: can't open {target[0]}: No such file or directory\n")
                    return 1
                continue
            buf: list[str] = []
            if path != "/dev/null":
                sinks.append((path, buf, op == ">>"))
            if op == "2>":
                err = buf.append
            else:
                out = buf.append
        if argv:
            self.record.argvs.append(tuple(argv))
            self.dev.argv_log.append(tuple(argv))
            rc = self._exec(argv, stdin, out, err)
        else:
            rc = 0
        for path, buf, append in sinks:
            try:
                self.fs.write(path, "".join(buf).encode(), append=append)
            except (PermissionError, FileNotFoundError, IsADirectoryError) as exc:
                reason = (
                    "Permission denied" if isinstance(exc, PermissionError) else "No such file or directory"
                )
                err(f"{_SH}: can't create {path}: {reason}\n")
                rc = 1
        return rc

    def _exec(self, argv: list[str], stdin: bytes, out, err, affinity: int | None = None) -> int:
        name = argv[0]
        if "/" in name:
            return self._exec_file(argv, out, err, affinity)
        builtin = getattr(self, "_cmd_" + name, None) if re.fullmatch(r"[a-z]+", name) else None
        if builtin is None:
            err(f"{_SH}: {name}: inaccessible or not found\n")
            return 127
        if name == "taskset":
            return self._cmd_taskset(argv, stdin, out, err)
        return builtin(argv, stdin, out, err)

    def _exec_file(self, argv: list[str], out, err, affinity: int | None) -> int:
        path = self.fs.norm(argv[0])
        host = self.fs.host(path)
        if not host.exists():
            err(f"{_SH}: {argv[0]}: inaccessible or not found\n")
            return 127
        if host.is_dir() or not os.access(host, os.X_OK) or not host.stat().st_mode & 0o111:
            err(f"{_SH}: {argv[0]}: can't execute: Permission denied\n")
            return 126
        try:
            bits, machine = elf_arch(host.read_bytes()[:64])
        except LetiError:
            err(f"{_SH}: {argv[0]}: can't execute: Exec format error\n")
            return 126
        if (bits, machine) != ABI_ELF.get(self.dev.profile.abi):
            err(f"{_SH}: {argv[0]}: not executable: {bits}-bit ELF file, machine {machine}\n")
            return 126
        return _BenchmarkModel(self, argv, out, affinity).run()

    # ---- commands -------------------------------------------------------------------------------

    def _cmd_true(self, argv, stdin, out, err) -> int:
        return 0

    def _cmd_false(self, argv, stdin, out, err) -> int:
        return 1

    def _cmd_echo(self, argv, stdin, out, err) -> int:
        args = argv[1:]
        newline = True
        if args and args[0] == "-n":
            newline, args = False, args[1:]
        out(" ".join(args) + ("\n" if newline else ""))
        return 0

    def _cmd_getprop(self, argv, stdin, out, err) -> int:
        props = self.dev.profile.props()
        if len(argv) == 1:
            out("".join(f"[{k}]: [{v}]\n" for k, v in sorted(props.items())))
        else:
            out(props.get(argv[1], argv[2] if len(argv) > 2 else "") + "\n")
        return 0

    def _cmd_cat(self, argv, stdin, out, err) -> int:
        rc = 0
        for arg in argv[1:] or ["-"]:
            if arg == "-":
                out(stdin.decode("utf-8", "replace"))
                continue
            try:
                out(self.fs.read(arg).decode("utf-8", "replace"))
            except IsADirectoryError:
                err(f"cat: {arg}: Is a directory\n")
                rc = 1
            except OSError:
                err(f"cat: {arg}: No such file or directory\n")
                rc = 1
        return rc

    def _cmd_grep(self, argv, stdin, out, err) -> int:
        flags, args = set(), []
        for a in argv[1:]:
            if a.startswith("-") and len(a) > 1 and not args:
                flags.update(a[1:])
            else:
                args.append(a)
        if not args:
            err("grep: no pattern\n")
            return 2
        pattern, files = args[0], args[1:]
        try:
            regex = re.compile(re.escape(pattern) if "F" in flags else pattern, re.I if "i" in flags else 0)
        except re.error:
            err(f"grep: bad regex '{pattern}'\n")
            return 2
        label = ("H" in flags or len(files) > 1) and "h" not in flags
        matched, failed = False, False
        for name in files or ["-"]:
            try:
                data = stdin if name == "-" else self.fs.read(name)
            except OSError:
                failed = True
                if "s" not in flags:
                    err(f"grep: {name}: No such file or directory\n")
                continue
            for line in data.decode("utf-8", "replace").splitlines():
                if bool(regex.search(line)) != ("v" in flags):
                    matched = True
                    if "q" not in flags:
                        out(f"{name}:{line}\n" if label else line + "\n")
        return 2 if failed else (0 if matched else 1)

    def _cmd_mkdir(self, argv, stdin, out, err) -> int:
        parents = "-p" in argv[1:]
        rc = 0
        for arg in [a for a in argv[1:] if a != "-p"]:
            path = self.fs.norm(arg)
            chain = [path]
            while parents and not self.fs.exists(posixpath.dirname(chain[-1])):
                chain.append(posixpath.dirname(chain[-1]))
            for p in reversed(chain):
                if self.fs.exists(p):
                    if p == path and not (parents and self.fs.isdir(p)):
                        err(f"mkdir: '{arg}': File exists\n")
                        rc = 1
                    continue
                if not self.fs.exists(posixpath.dirname(p)):
                    err(f"mkdir: '{arg}': No such file or directory\n")
                    rc = 1
                    break
                if not self.fs.writable(posixpath.dirname(p)):
                    err(f"mkdir: '{arg}': Permission denied\n")
                    rc = 1
                    break
                self.fs.host(p).mkdir()
        return rc

    def _cmd_rm(self, argv, stdin, out, err) -> int:
        flags, paths = set(), []
        for a in argv[1:]:
            if a.startswith("-") and len(a) > 1 and not paths:
                flags.update(a[1:])
            else:
                paths.append(a)
        force, recursive = "f" in flags, bool({"r", "R"} & flags)
        rc = 0

        def remove(p: str) -> bool:
            host = self.fs.host(p)
            ok = True
            if host.is_dir():
                if not recursive:
                    err(f"rm: {p}: Is a directory\n")
                    return False
                for name in sorted(os.listdir(host)):
                    ok = remove(posixpath.join(p, name)) and ok
            if not self.fs.writable(posixpath.dirname(p)):
                err(f"rm: {p}: Permission denied\n")
                return False
            if host.is_dir():
                if ok:
                    host.rmdir()
            else:
                host.unlink()
            return ok

        for arg in paths:
            path = self.fs.norm(arg)
            if not self.fs.exists(path):
                if not force:
                    err(f"rm: {arg}: No such file or directory\n")
                    rc = 1
                continue
            if not remove(path):
                rc = 1
        return rc

    def _cmd_touch(self, argv, stdin, out, err) -> int:
        rc = 0
        for arg in argv[1:]:
            path = self.fs.norm(arg)
            try:
                if self.fs.exists(path):
                    if not self.fs.writable(posixpath.dirname(path)):
                        raise PermissionError(path)
                    os.utime(self.fs.host(path))
                else:
                    self.fs.write(path, b"")
            except PermissionError:
                err(f"touch: '{arg}': Permission denied\n")
                rc = 1
            except OSError:
                err(f"touch: '{arg}': No such file or directory\n")
                rc = 1
        return rc

    def _cmd_chmod(self, argv, stdin, out, err) -> int:
        if len(argv) < 3:
            err("chmod: Need 2 arguments\n")
            return 1
        mode = argv[1]
        rc = 0
        for arg in argv[2:]:
            path = self.fs.norm(arg)
            host = self.fs.host(path)
            if not host.exists():
                err(f"chmod: {arg}: No such file or directory\n")
                rc = 1
                continue
            if not self.fs.writable(posixpath.dirname(path)):
                err(f"chmod: {arg}: Operation not permitted\n")
                rc = 1
                continue
            new = _chmod_mode(mode, host.stat().st_mode & 0o7777)
            if new is None:
                err(f"chmod: bad mode '{mode}'\n")
                return 1
            os.chmod(host, new)
        return rc

    def _cmd_ls(self, argv, stdin, out, err) -> int:
        long = any(a.startswith("-") and "l" in a for a in argv[1:])
        paths = [a for a in argv[1:] if not a.startswith("-")] or ["."]
        rc = 0
        for arg in paths:
            host = self.fs.host(arg)
            if not host.exists():
                err(f"ls: {arg}: No such file or directory\n")
                rc = 1
                continue
            entries = sorted(os.listdir(host)) if host.is_dir() else [arg]
            for name in entries:
                target = host / name if host.is_dir() else host
                if long:
                    st = target.stat()
                    kind = "d" if target.is_dir() else "-"
                    perms = "".join(
                        c if st.st_mode & (1 << (8 - k)) else "-" for k, c in enumerate("rwxrwxrwx")
                    )
                    out(f"{kind}{perms} 1 shell shell {st.st_size:>8} 2024-01-01 00:00 {name}\n")
                else:
                    out(name + "\n")
        return rc

    def _cmd_dumpsys(self, argv, stdin, out, err) -> int:
        if argv[1:2] != ["battery"]:
            err(f"Can't find service: {' '.join(argv[1:2])}\n")
            return 1
        level = int(self.dev._battery_level())
        out(
            "Current Battery Service state:\n  AC powered: false\n  USB powered: true\n"
            f"  present: true\n  level: {level}\n  scale: 100\n"
            f"  temperature: {self.dev.profile.battery_temp_dc}\n"
        )
        return 0

    def _cmd_taskset(self, argv, stdin, out, err) -> int:
        if len(argv) < 3 or argv[1].startswith("-"):
            err("taskset: Need 2 arguments\n")
            return 1
        text = argv[1].lower()
        text = text[2:] if text.startswith("0x") else text
        ncpu = len(self.dev.profile.cpu_max_khz)
        if not re.fullmatch(r"[0-9a-f]{1,16}", text) or int(text, 16) & ((1 << ncpu) - 1) == 0:
            err("taskset: sched_setaffinity: Invalid argument\n")
            return 1
        mask = int(text, 16) & ((1 << ncpu) - 1)
        rest = argv[2:]
        if "/" in rest[0]:
            return self._exec_file(rest, out, err, mask)
        return self._exec(rest, stdin, out, err)


def _chmod_mode(spec: str, current: int) -> int | None:
    if re.fullmatch(r"[0-7]{1,4}", spec):
        return int(spec, 8)
    mode = current
    for clause in spec.split(","):
        m = re.fullmatch(r"([ugoa]*)([-+=])([rwx]*)", clause)
        if not m:
            return None
        who = m[1] or "a"
        bits = 0
        for perm, shift in (("r", 2), ("w", 1), ("x", 0)):
            if perm in m[3]:
                for w, base in (("u", 6), ("g", 3), ("o", 0)):
                    if w in who or "a" in who:
                        bits |= 1 << (base + shift)
        if m[2] == "+":
            mode |= bits
        elif m[2] == "-":
            mode &= ~bits
        else:
            mask = sum(0o7 << b for w, b in (("u", 6), ("g", 3), ("o", 0)) if w in who or "a" in who)
            mode = (mode & ~mask) | bits
    return mode


# --------------------------------------------------------------------------------------- benchmark_model


_BOOL = {"true": True, "1": True, "false": False, "0": False}
_KNOWN_FLAGS = {
    "graph": str,
    "num_threads": int,
    "num_runs": int,
    "warmup_runs": int,
    "min_secs": float,
    "max_secs": float,
    "warmup_min_secs": float,
    "run_delay": float,
    "use_xnnpack": bool,
    "use_gpu": bool,
    "use_nnapi": bool,
    "gpu_precision_loss_allowed": bool,
    "enable_op_profiling": bool,
    "verbose": bool,
}


def _us_stats(samples: list[int]) -> str:
    """A ``count=…`` line like recent benchmark_model versions print."""
    s = sorted(samples)

    def pct(p: float) -> int:
        return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]

    tail = f"p5={pct(5)} median={pct(50)} p95={pct(95)}"
    if len(samples) == 1:
        return f"count=1 curr={samples[0]} {tail}"
    std = int(round(statistics.pstdev(samples)))
    avg = sum(samples) / len(samples)
    return (
        f"count={len(samples)} first={samples[0]} curr={samples[-1]} min={s[0]} max={s[-1]} "
        f"avg={avg:.6g} std={std} {tail}"
    )


def _op_cost(op: dict, shapes: dict[int, tuple[int, ...]]) -> float:
    """Rough multiply-accumulate count of one operator, used to split the measured time per op."""

    def size(idx: int) -> int:
        return int(np.prod(shapes.get(int(idx), (1,)))) if idx >= 0 else 0

    outs = [size(i) for i in op["outputs"]] or [1]
    ins = [size(i) for i in op["inputs"]] or [1]
    name = op["op_name"]
    weights = shapes.get(int(op["inputs"][1]), ()) if len(op["inputs"]) > 1 else ()
    if name in ("CONV_2D", "TRANSPOSE_CONV") and len(weights) == 4:
        return outs[0] * weights[1] * weights[2] * weights[3]
    if name == "DEPTHWISE_CONV_2D" and len(weights) == 4:
        return outs[0] * weights[1] * weights[2]
    if name == "FULLY_CONNECTED" and len(weights) == 2:
        return outs[0] * weights[1]
    return max(max(outs), max(ins))


class _BenchmarkModel:
    """``benchmark_model`` as run on the loopback device: real LiteRT timings on the host."""

    def __init__(self, shell: _Shell, argv: list[str], out, affinity: int | None):
        self.shell = shell
        self.dev = shell.dev
        self.argv = argv
        self.out = out
        self.affinity = affinity

    def say(self, text: str) -> None:
        self.out(f"INFO: {text}\n")

    def fail(self, text: str) -> int:
        self.out(f"ERROR: {text}\nERROR: Benchmarking failed.\n")
        return 1

    def run(self) -> int:
        flags, unknown = {}, []
        for arg in self.argv[1:]:
            m = re.fullmatch(r"--([A-Za-z0-9_]+)=(.*)", arg, re.S)
            if not m or m[1] not in _KNOWN_FLAGS:
                unknown.append(arg)
                continue
            kind = _KNOWN_FLAGS[m[1]]
            try:
                flags[m[1]] = _BOOL[m[2].lower()] if kind is bool else kind(m[2])
            except (KeyError, ValueError):
                return self.fail(f"Invalid value for flag {arg!r}")
        self.dev.benchmark_runs.append(
            {"argv": tuple(self.argv), "flags": dict(flags), "affinity": self.affinity}
        )
        threads = flags.get("num_threads", 1)
        runs, warmups = flags.get("num_runs", 50), flags.get("warmup_runs", 1)
        self.say("STARTING!")
        self.say("Log parameter values verbosely: [0]")
        self.say(f"Min num runs: [{runs}]")
        self.say(f"Num threads: [{threads}]")
        self.say(f"Min warmup runs: [{warmups}]")
        self.say(f"Graph: [{flags.get('graph', '')}]")
        if flags.get("enable_op_profiling"):
            self.say("Enable op profiling: [1]")
        self.say(f"#threads used for CPU inference: [{threads}]")
        if "use_xnnpack" in flags:
            self.say(f"Use xnnpack: [{int(flags['use_xnnpack'])}]")
        for arg in unknown:
            self.out(f"WARNING: Unconsumed cmdline flags: {arg}\n")
        if self.dev.faults.take("garbage"):
            self.dev.events.append("garbage")
            rng = random.Random(self.dev.seed + len(self.dev.benchmark_runs))
            for _ in range(6):
                self.out("".join(chr(rng.randrange(33, 127)) for _ in range(rng.randrange(8, 60))) + "\n")
            return 0
        if "graph" not in flags or not flags["graph"]:
            return self.fail("Please specify the name of your TF Lite input file with --graph")
        try:
            model = self.shell.fs.read(flags["graph"])
        except OSError:
            return self.fail(
                f"Could not open '{flags['graph']}'.\nERROR: Failed to mmap model {flags['graph']}"
            )
        delegate = "gpu" if flags.get("use_gpu") else "nnapi" if flags.get("use_nnapi") else None
        if delegate and not getattr(self.dev.profile, delegate):
            return self.fail(f"Failed to apply {delegate.upper()} delegate.")
        return self._measure(model, flags, delegate, threads, runs, warmups)

    def _measure(
        self, model: bytes, flags: dict, delegate: str | None, threads: int, runs: int, warmups: int
    ):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        self.say(f"Loaded model {flags['graph']}")
        resolver = OpResolverType.AUTO if flags.get("use_xnnpack", True) else None
        t0 = time.perf_counter()
        try:
            kwargs = {"model_content": model, "num_threads": threads}
            if resolver is None:
                kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            interp = Interpreter(**kwargs)
            t_alloc = time.perf_counter()
            interp.allocate_tensors()
            alloc_ms = (time.perf_counter() - t_alloc) * 1000
        except (ValueError, RuntimeError) as exc:
            return self.fail(
                f"Failed to construct interpreter: {str(exc).splitlines()[0] if str(exc) else exc}"
            )
        init_us = int((time.perf_counter() - t0) * 1e6)
        if delegate:
            self.say(
                f"Created TensorFlow Lite delegate for {delegate.upper()} (loopback: runs on the host CPU)."
            )
        elif resolver is not None:
            self.say("Created TensorFlow Lite XNNPACK delegate for CPU.")
        self.say(f"The input model file size (MB): {len(model) / 1e6:.6g}")
        self.say(f"Initialized session in {init_us / 1000:.6g}ms.")
        rss_init = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        if self.dev.faults.take("drop_mid_run"):
            self.dev.events.append("drop_mid_run")
            if self.shell.conn is not None:
                self.shell.conn.abort()
            raise _Dropped("drop_mid_run")
        rng = np.random.default_rng(self.dev.seed + len(self.dev.benchmark_runs))
        for detail in interp.get_input_details():
            dtype, shape = np.dtype(detail["dtype"]), tuple(detail["shape"])
            if np.issubdtype(dtype, np.floating):
                data = rng.standard_normal(shape).astype(dtype)
            elif dtype == np.bool_:
                data = rng.integers(0, 2, shape).astype(dtype)
            else:
                info = np.iinfo(dtype)
                data = rng.integers(max(info.min, -128), min(info.max, 127) + 1, shape).astype(dtype)
            interp.set_tensor(detail["index"], data)
        max_secs = flags.get("max_secs", 150.0)
        warm_secs, run_secs = flags.get("warmup_min_secs", 0.5), flags.get("min_secs", 1.0)
        self.say(
            f"Running benchmark for at least {warmups} iterations and at least {warm_secs:g} seconds "
            f"but terminate if exceeding {max_secs:g} seconds."
        )
        try:
            warm = self._loop(interp, max(warmups, 1), warm_secs, max_secs)
        except RuntimeError as exc:
            return self.fail(f"Failed to invoke the interpreter: {exc}")
        self.say(_us_stats(warm))
        self.out("\n")
        self.say(
            f"Running benchmark for at least {runs} iterations and at least {run_secs:g} seconds "
            f"but terminate if exceeding {max_secs:g} seconds."
        )
        timed = self._loop(interp, max(runs, 1), run_secs, max_secs)
        self.say(_us_stats(timed))
        self.out("\n")
        avg = sum(timed) / len(timed)
        self.say(
            f"Inference timings in us: Init: {init_us}, First inference: {warm[0]}, "
            f"Warmup (avg): {sum(warm) / len(warm):.6g}, Inference (avg): {avg:.6g}"
        )
        rss_end = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        self.say(
            "Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE "
            "to the actual memory footprint of the model at runtime. Take the information at your discretion."
        )
        self.say(
            f"Memory footprint delta from the start of the tool (MB): init={rss_init - rss0:.6g} "
            f"overall={rss_end - rss0:.6g}"
        )
        self.say(f"Overall peak memory footprint (MB) via periodic monitoring: {rss_end:.6g}")
        if flags.get("enable_op_profiling"):
            self._op_profile(interp, timed, alloc_ms)
        return 0

    @staticmethod
    def _loop(interp, min_runs: int, min_secs: float, max_secs: float) -> list[int]:
        samples: list[int] = []
        start = time.perf_counter()
        while True:
            t = time.perf_counter_ns()
            interp.invoke()
            samples.append(max(1, (time.perf_counter_ns() - t) // 1000))
            elapsed = time.perf_counter() - start
            if (len(samples) >= min_runs and elapsed >= min_secs) or elapsed >= max_secs:
                return samples

    def _op_profile(self, interp, timed: list[int], alloc_ms: float) -> None:
        header = (
            "\t             [node type]\t          [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]"
            "\t  [mem KB]\t[times called]\t[Name]\n"
        )
        rule = "============================== {} ==============================\n"
        self.out("Profiling Info for Benchmark Initialization:\n" + rule.format("Run Order") + header)
        self.out(
            f"\t{'AllocateTensors':>24}\t{0.0:17.3f}\t{alloc_ms:9.3f}\t{alloc_ms:9.3f}\t{100.0:7.3f}%"
            f"\t{100.0:7.3f}%\t{0.0:10.3f}\t{1:9d}\tAllocateTensors/0\n\n"
        )
        shapes = {t["index"]: tuple(int(d) for d in t["shape"]) for t in interp.get_tensor_details()}
        names = {t["index"]: t["name"] for t in interp.get_tensor_details()}
        ops = [op for op in interp._get_ops_details() if op["op_name"] != "DELEGATE"]
        costs = [float(_op_cost(op, shapes)) for op in ops]
        total = sum(costs) or 1.0
        avg_ms, first_ms = sum(timed) / len(timed) / 1000, timed[0] / 1000
        self.out(
            "\n\nOperator-wise Profiling Info for Regular Benchmark Runs:\n"
            + rule.format("Run Order")
            + header
        )
        start = cdf = 0.0
        by_type: dict[str, list[float]] = {}
        for op, cost in zip(ops, costs, strict=False):
            share = cost / total
            cdf += share * 100
            name = names.get(int(op["outputs"][0]), "") if len(op["outputs"]) else ""
            self.out(
                f"\t{op['op_name']:>24}\t{start:17.3f}\t{first_ms * share:9.3f}\t{avg_ms * share:9.3f}"
                f"\t{share * 100:7.3f}%\t{min(cdf, 100.0):7.3f}%\t{0.0:10.3f}\t{1:9d}\t[{name}]:{op['index']}\n"
            )
            start += avg_ms * share
            by_type.setdefault(op["op_name"], []).append(share)
        self.out(f"\nNumber of nodes executed: {len(ops)}\n" + rule.format("Summary by node type"))
        self.out(
            "\t             [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]\n"
        )
        cdf = 0.0
        for kind, shares in sorted(by_type.items(), key=lambda kv: -sum(kv[1])):
            cdf += sum(shares) * 100
            self.out(
                f"\t{kind:>24}\t{len(shares):9d}\t{avg_ms * sum(shares):10.3f}\t{sum(shares) * 100:10.3f}%"
                f"\t{min(cdf, 100.0):10.3f}%\t{0.0:10.3f}\t{len(shares):9d}\n"
            )
        stats = _us_stats(timed).split(" p5=")[0]
        self.out(f"\nTimings (microseconds): {stats}\nMemory (bytes): count=0\n{len(ops)} nodes observed\n\n")


# --------------------------------------------------------------------------------------- connection


class _Stream:
    def __init__(self, local_id: int, remote_id: int):
        self.id = local_id
        self.remote = remote_id
        self.okay = threading.Event()
        self.inbox: queue.Queue[bytes | None] = queue.Queue()
        self.closed = False


class _Connection:
    """One client connection: handshake, then packets dispatched to per-stream service threads."""

    def __init__(self, device: LoopbackAdbDevice, sock: socket.socket):
        self.dev = device
        self.sock = sock
        self.alive = True
        self.client_maxdata = 4096
        self._wlock = threading.Lock()
        self._streams: dict[int, _Stream] = {}
        self._next_id = 1

    # -- raw packets
    def _recv(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise _Dropped("client closed the connection")
            buf += chunk
        return bytes(buf)

    def read_packet(self) -> tuple[bytes, int, int, bytes]:
        word, arg0, arg1, length, check, magic = _HEADER.unpack(self._recv(_HEADER.size))
        cmd = struct.pack("<I", word)
        if cmd not in _CMDS or magic != word ^ 0xFFFFFFFF:
            raise _Dropped(f"bad packet header {cmd!r}")
        data = self._recv(length) if length else b""
        if sum(data) & 0xFFFFFFFF != check:
            raise _Dropped("bad packet checksum")
        return cmd, arg0, arg1, data

    def send(self, cmd: bytes, arg0: int, arg1: int, data: bytes = b"") -> None:
        if not self.alive:
            raise _Dropped("connection closed")
        with self._wlock:
            try:
                self.sock.sendall(_pack(cmd, arg0, arg1, data))
            except OSError as exc:
                self.alive = False
                raise _Dropped(str(exc)) from exc

    def abort(self) -> None:
        self.alive = False
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for st in list(self._streams.values()):
            st.inbox.put(None)
            st.okay.set()

    # -- streams
    def write(self, st: _Stream, data: bytes) -> None:
        step = max(1, min(self.client_maxdata, self.dev.max_payload))
        for off in range(0, len(data), step):
            st.okay.clear()
            self.send(b"WRTE", st.id, st.remote, data[off : off + step])
            # Like adbd, wait for the client's OKAY before sending more on this stream.
            while not st.okay.wait(0.2):
                if not self.alive or st.closed:
                    raise _Dropped("stream closed while writing")
            if not self.alive or st.closed:
                raise _Dropped("stream closed while writing")

    def close_stream(self, st: _Stream) -> None:
        if not st.closed:
            st.closed = True
            self.send(b"CLSE", st.id, st.remote)

    # -- main loop
    def serve(self) -> None:
        try:
            self._handshake()
            while self.alive:
                self._dispatch(*self.read_packet())
        except (_Dropped, OSError, struct.error):
            pass
        finally:
            self.abort()

    def _handshake(self) -> None:
        while True:
            cmd, _arg0, maxdata, _data = self.read_packet()
            if cmd == b"CNXN":
                break
        self.client_maxdata = max(256, min(maxdata, 1 << 20))
        if self.dev.require_auth:
            token = self.dev._token()
            self.send(b"AUTH", _AUTH_TOKEN, 0, token)
            while True:
                cmd, arg0, _arg1, data = self.read_packet()
                if cmd != b"AUTH":
                    continue
                if arg0 == _AUTH_SIGNATURE:
                    if any(verify_token(key, token, data) for key in self.dev._authorized_keys()):
                        self.dev.events.append("auth:signature")
                        break
                    self.dev.events.append("auth:bad-signature")
                    token = self.dev._token()
                    self.send(b"AUTH", _AUTH_TOKEN, 0, token)
                elif arg0 == _AUTH_RSAPUBLICKEY:
                    if self.dev.accept_new_keys and self.dev._add_key(data):
                        self.dev.events.append("auth:new-key")
                        break
                    # A real phone would show an "Allow USB debugging?" dialog; nobody taps it here.
                    self.dev.events.append("auth:rejected")
        p = self.dev.profile
        banner = (
            f"device::ro.product.name={p.device};ro.product.model={p.model};ro.product.device={p.device};"
        )
        self.send(b"CNXN", _A_VERSION, self.dev.max_payload, banner.encode() + b"\0")

    def _dispatch(self, cmd: bytes, arg0: int, arg1: int, data: bytes) -> None:
        if cmd == b"OPEN":
            self._open(arg0, data.rstrip(b"\0").decode("utf-8", "replace"))
        elif cmd == b"OKAY":
            st = self._streams.get(arg1)
            if st is not None:
                st.okay.set()
        elif cmd == b"WRTE":
            st = self._streams.get(arg1)
            if st is None or st.closed:
                self.send(b"CLSE", arg1, arg0)
                return
            st.inbox.put(data)
            self.send(b"OKAY", st.id, st.remote)
        elif cmd == b"CLSE":
            st = self._streams.pop(arg1, None)
            if st is not None:
                if not st.closed:
                    st.closed = True
                    self.send(b"CLSE", st.id, st.remote)
                st.inbox.put(None)
                st.okay.set()

    def _open(self, remote_id: int, destination: str) -> None:
        service, _, arg = destination.partition(":")
        if service in ("shell", "exec") and arg:
            if (not self.dev.faults.hang_match or self.dev.faults.hang_match in arg) and self.dev.faults.take(
                "hang"
            ):
                self.dev.events.append("hang")
                return  # never answer: the client waits until its own timeout
            target = self._shell
        elif destination == "sync:":
            target = self._sync
        else:
            self.send(b"CLSE", 0, remote_id)
            return
        st = _Stream(self._next_id, remote_id)
        self._next_id += 1
        self._streams[st.id] = st
        open_now = sum(1 for s in self._streams.values() if not s.closed)
        self.dev.peak_streams = max(self.dev.peak_streams, open_now)
        self.send(b"OKAY", st.id, remote_id)
        threading.Thread(target=self._service, args=(target, st, arg), daemon=True).start()

    def _service(self, target, st: _Stream, arg: str) -> None:
        try:
            target(st, arg)
            self.close_stream(st)
        except _Dropped:
            pass
        except Exception as exc:  # a bug here must not leave the client waiting for ever
            try:
                self.write(st, f"{_SH}: loopback device error: {exc!r}\n".encode())
                self.close_stream(st)
            except _Dropped:
                pass

    def _shell(self, st: _Stream, command: str) -> None:
        record = ShellRecord(command)
        self.dev.shell_log.append(record)
        chunks: list[str] = []

        def emit(text: str) -> None:
            # Batch small writes into one WRTE per line ending, as a pty would.
            chunks.append(text)
            if "\n" in text:
                payload = "".join(chunks).encode()
                chunks.clear()
                self.write(st, payload)

        record.exit_code = _Shell(self.dev, record, self).run(command, emit, emit)
        if chunks:
            self.write(st, "".join(chunks).encode())

    def _sync(self, st: _Stream, _arg: str) -> None:
        buf = bytearray()

        def need(n: int) -> bytes:
            while len(buf) < n:
                data = st.inbox.get()
                if data is None:
                    raise _Dropped("sync stream closed")
                buf.extend(data)
            out = bytes(buf[:n])
            del buf[:n]
            return out

        def reply(ident: bytes, payload: bytes = b"", size: int | None = None) -> None:
            self.write(st, _SYNC.pack(ident, len(payload) if size is None else size) + payload)

        fs = self.dev._fs
        while True:
            ident, length = _SYNC.unpack(need(8))
            if ident == b"QUIT":
                return
            if ident not in (b"STAT", b"LIST", b"SEND", b"RECV"):
                reply(b"FAIL", f"unknown sync command {ident!r}".encode())
                return
            path = need(length).decode("utf-8", "replace")
            if ident == b"STAT":
                host = fs.host(path)
                if host.exists():
                    s = host.stat()
                    self.write(st, struct.pack("<4sIII", b"STAT", s.st_mode, s.st_size, int(s.st_mtime)))
                else:
                    self.write(st, struct.pack("<4sIII", b"STAT", 0, 0, 0))
            elif ident == b"LIST":
                host = fs.host(path)
                if host.is_dir():
                    for name in [".", ".."] + sorted(os.listdir(host)):
                        s = (host / name).stat()
                        raw = name.encode()
                        entry = struct.pack(
                            "<4sIIII", b"DENT", s.st_mode, s.st_size, int(s.st_mtime), len(raw)
                        )
                        self.write(st, entry + raw)
                self.write(st, struct.pack("<4sIIII", b"DONE", 0, 0, 0, 0))
            elif ident == b"RECV":
                try:
                    data = fs.read(path)
                except OSError:
                    reply(b"FAIL", b"remote object does not exist")
                    continue
                for off in range(0, len(data), 64 * 1024):
                    reply(b"DATA", data[off : off + 64 * 1024])
                reply(b"DONE", size=0)
            else:
                self._receive_file(fs, path, need, reply)

    def _receive_file(self, fs: _DeviceFS, spec: str, need, reply) -> None:
        dpath, _, mode_text = spec.rpartition(",")  # "path,mode"; a path may itself contain commas
        if not dpath:
            dpath, mode_text = spec, ""
        mode = int(mode_text) if mode_text.isdigit() else 0o100644
        data = io.BytesIO()
        first = True
        while True:
            ident, size = _SYNC.unpack(need(8))
            if ident == b"DATA":
                data.write(need(size))
                if first and self.dev.faults.take("drop_mid_push"):
                    self.dev.events.append("drop_mid_push")
                    self.abort()
                    raise _Dropped("drop_mid_push")
                if first and self.dev.faults.take("hang_mid_push"):
                    self.dev.events.append("hang_mid_push")
                    while self.alive and self.dev._sock is not None:  # the client is stuck mid-push
                        time.sleep(0.05)
                    raise _Dropped("hang_mid_push")
                first = False
            elif ident == b"DONE":
                break
            else:
                reply(b"FAIL", f"unexpected {ident!r} during push".encode())
                return
        dpath = fs.norm(dpath)
        parent = posixpath.dirname(dpath)
        try:
            if not fs.writable(parent):
                raise PermissionError(dpath)
            fs.host(parent).mkdir(parents=True, exist_ok=True)  # adbd creates missing directories
            fs.write(dpath, data.getvalue(), mode=mode)
        except (PermissionError, IsADirectoryError, FileNotFoundError) as exc:
            reason = "Permission denied" if isinstance(exc, PermissionError) else "Is a directory"
            reply(b"FAIL", f"couldn't create file: {reason}".encode())
            return
        reply(b"OKAY", size=0)


# --------------------------------------------------------------------------------------- the device


class LoopbackAdbDevice:
    """A pretend Android device serving the ADB protocol on ``host`` (an ephemeral port by default).

    ``authorized_keys`` are public key files' contents (``adbkey.pub``) the device trusts; with
    ``accept_new_keys`` it also trusts any key a client offers (as if the user tapped "Allow").
    """

    def __init__(
        self,
        profile: DeviceProfile | None = None,
        *,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        require_auth: bool = True,
        accept_new_keys: bool = True,
        authorized_keys: Iterable[bytes | str] = (),
        max_payload: int = 256 * 1024,
        seed: int = 0,
    ):
        self.profile = profile or DeviceProfile()
        self.faults = faults or Faults()
        self.require_auth = require_auth
        self.accept_new_keys = accept_new_keys
        self.max_payload = max_payload
        self.seed = seed
        self.shell_log: list[ShellRecord] = []
        self.argv_log: list[tuple[str, ...]] = []
        self.events: list[str] = []
        self.benchmark_runs: list[dict] = []
        self.connections = 0
        self.peak_streams = 0  # most streams open at once on one connection
        self._host, self._port = host, port
        self._key_texts = [k.encode() if isinstance(k, str) else bytes(k) for k in authorized_keys]
        self._keys: list = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._conns: list[_Connection] = []
        self._root: Path | None = None
        self._fs: _DeviceFS | None = None

    # -- lifecycle
    def start(self) -> LoopbackAdbDevice:
        if self._sock is not None:
            return self
        self._keys = [public_key_from_android(k) for k in self._key_texts]
        self._root = Path(tempfile.mkdtemp(prefix="leti-loopback-adb-"))
        self._fs = _DeviceFS(self._root, self._virtual_read)
        self._build_tree()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        sock.listen(8)
        sock.settimeout(0.05)
        self._sock = sock
        self._port = sock.getsockname()[1]
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"loopback-adbd:{self._port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        sock.close()
        for conn in list(self._conns):
            conn.abort()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> LoopbackAdbDevice:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def serial(self) -> str:
        if self._sock is None:
            raise DeviceError("loopback device is not started", "serial")
        return f"{self._host}:{self._port}"

    @property
    def root(self) -> Path:
        """The host directory that holds the device's file system."""
        if self._root is None:
            raise DeviceError("loopback device is not started", "root")
        return self._root

    def host_path(self, device_path: str) -> Path:
        """Where ``device_path`` lives on the host."""
        if self._fs is None:
            raise DeviceError("loopback device is not started", "root")
        return self._fs.host(device_path)

    def executed(self, program: str) -> list[tuple[str, ...]]:
        """Every argv run so far whose program (basename of argv[0]) is ``program``."""
        return [argv for argv in self.argv_log if posixpath.basename(argv[0]) == program]

    def drop_connections(self) -> None:
        """Cut every open connection now (as if the cable were pulled)."""
        for conn in list(self._conns):
            conn.abort()

    # -- internals
    def _accept_loop(self) -> None:
        while self._sock is not None:
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, client)
            with self._lock:
                self._conns.append(conn)
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: _Connection) -> None:
        try:
            conn.serve()
        finally:
            with self._lock:
                if conn in self._conns:
                    self._conns.remove(conn)

    def _token(self) -> bytes:
        with self._lock:
            return bytes(self._rng.getrandbits(8) for _ in range(20))

    def _authorized_keys(self) -> list:
        with self._lock:
            return list(self._keys)

    def _add_key(self, blob: bytes) -> bool:
        try:
            key = public_key_from_android(blob)
        except DeviceError:
            return False
        with self._lock:
            self._keys.append(key)
        return True

    def _build_tree(self) -> None:
        root, p = self._root, self.profile
        for d in ("data/local/tmp", "system/bin", "sdcard", "proc"):
            (root / d).mkdir(parents=True, exist_ok=True)
        ncpu = len(p.cpu_max_khz)
        cpu = root / "sys/devices/system/cpu"
        for i, khz in enumerate(p.cpu_max_khz):
            (cpu / f"cpu{i}/cpufreq").mkdir(parents=True)
            (cpu / f"cpu{i}/cpufreq/cpuinfo_max_freq").write_text(f"{khz}\n")
        (cpu / "possible").write_text(f"0-{ncpu - 1}\n")
        for i, (kind, _) in enumerate(p.thermal_zones):
            zone = root / f"sys/class/thermal/thermal_zone{i}"
            zone.mkdir(parents=True)
            (zone / "type").write_text(kind + "\n")
            (zone / "temp").write_text("0\n")  # the value is computed on read
        battery = root / "sys/class/power_supply/battery"
        battery.mkdir(parents=True)
        for name in ("capacity", "temp", "status"):
            (battery / name).write_text("0\n")

    def _battery_level(self) -> int:
        if self.faults.take("low_battery"):
            self.events.append("low_battery")
            return int(self.faults.low_battery_level)
        return int(self.profile.battery_level)

    def _zone_temp(self, index: int) -> int:
        base = self.profile.thermal_zones[index][1]
        f = self.faults
        with f._lock:
            if index != f.hot_zone or f.hot_c is None:
                return base
            temp = f.hot_c * 1000
            if f.hot_cool_s:
                frac = max(0.0, 1.0 - (time.monotonic() - f._hot_since) / f.hot_cool_s)
                temp = base + (temp - base) * frac
                if frac == 0.0:
                    f.hot_c = None
            if f.hot_reads > 0:
                f.hot_reads -= 1
                if f.hot_reads == 0:
                    f.hot_c = None
            self.events.append("hot")
            return int(max(temp, base))

    def _virtual_read(self, dpath: str) -> bytes | None:
        m = re.fullmatch(r"/sys/class/thermal/thermal_zone(\d+)/temp", dpath)
        if m and int(m[1]) < len(self.profile.thermal_zones):
            return f"{self._zone_temp(int(m[1]))}\n".encode()
        if dpath == "/sys/class/power_supply/battery/capacity":
            return f"{self._battery_level()}\n".encode()
        if dpath == "/sys/class/power_supply/battery/temp":
            return f"{self.profile.battery_temp_dc}\n".encode()
        if dpath == "/sys/class/power_supply/battery/status":
            return b"Discharging\n"
        return None
