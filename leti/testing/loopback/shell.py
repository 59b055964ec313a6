"""The loopback phone's ``sh -c``: it runs a few commands itself (never anything on the host) and logs every
argv."""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from leti.device_runner.adb import ABI_ELF, elf_arch
from leti.errors import LetiError
from leti.testing.loopback.benchmark_model import BenchmarkModel
from leti.testing.loopback.fs import WRITABLE, glob_escape
from leti.testing.loopback.shell_syntax import Part, ShellSyntax, Simple, parse, tokenize

SH = "/system/bin/sh"


@dataclass
class ShellRecord:
    """One ``shell:`` command as received, and every argv it executed (nested ``$(…)`` included)."""

    command: str
    argvs: list[tuple[str, ...]] = field(default_factory=list)
    exit_code: int | None = None


class Shell:
    """One ``sh -c`` invocation on the loopback device.

    ``device`` is the ``LoopbackAdbDevice`` and ``conn`` the ``connection.Connection`` it came on (None when
    run directly); neither is imported here, as both import this module.
    """

    ENV = {
        "PATH": "/product/bin:/apex/com.android.runtime/bin:/system/bin:/system/xbin:/vendor/bin",
        "HOME": "/",
        "TMPDIR": WRITABLE,
        "SHELL": SH,
        "USER": "shell",
    }

    def __init__(self, device, record: ShellRecord, conn):
        self.dev = device
        self.fs = device._fs
        self.record = record
        self.conn = conn
        self.last_rc = 0

    def run(self, src: str, out: Callable[[str], None], err: Callable[[str], None], depth: int = 0) -> int:
        try:
            items = parse(tokenize(src))
        except ShellSyntax as exc:
            err(f"{SH}: {exc}\n")
            return 2
        rc = 0
        for connector, pipeline in items:
            if (connector == "&&" and rc != 0) or (connector == "||" and rc == 0):
                continue
            rc = self._pipeline(pipeline, out, err, depth)
            self.last_rc = rc
        return rc

    def _pipeline(self, pipeline: list[Simple], out, err, depth: int) -> int:
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

    def _expand(self, word: list[Part], err, depth: int) -> list[str]:
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
                    err(f"{SH}: command substitution nested too deeply\n")
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
                pattern = "".join(t if globbable else glob_escape(t) for t, globbable in segs)
                result.extend(self.fs.glob(pattern) or [text])
            else:
                result.append(text)
        return result

    def _simple(self, cmd: Simple, stdin: bytes, out, err, depth: int) -> int:
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
                err(f"{SH}: {' '.join(target)}: ambiguous redirect\n")
                return 1
            path = self.fs.norm(target[0]) if target[0] else ""
            if op == "<":
                try:
                    stdin = b"" if path == "/dev/null" else self.fs.read(path)
                except OSError:
                    err(f"{SH}: can't open {target[0]}: No such file or directory\n")
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
                err(f"{SH}: can't create {path}: {reason}\n")
                rc = 1
        return rc

    def _exec(self, argv: list[str], stdin: bytes, out, err, affinity: int | None = None) -> int:
        name = argv[0]
        if "/" in name:
            return self._exec_file(argv, out, err, affinity)
        builtin = getattr(self, "_cmd_" + name, None) if re.fullmatch(r"[a-z]+", name) else None
        if builtin is None:
            err(f"{SH}: {name}: inaccessible or not found\n")
            return 127
        if name == "taskset":
            return self._cmd_taskset(argv, stdin, out, err)
        return builtin(argv, stdin, out, err)

    def _exec_file(self, argv: list[str], out, err, affinity: int | None) -> int:
        path = self.fs.norm(argv[0])
        host = self.fs.host(path)
        if not host.exists():
            err(f"{SH}: {argv[0]}: inaccessible or not found\n")
            return 127
        if host.is_dir() or not os.access(host, os.X_OK) or not host.stat().st_mode & 0o111:
            err(f"{SH}: {argv[0]}: can't execute: Permission denied\n")
            return 126
        try:
            bits, machine = elf_arch(host.read_bytes()[:64])
        except LetiError:
            err(f"{SH}: {argv[0]}: can't execute: Exec format error\n")
            return 126
        if (bits, machine) != ABI_ELF.get(self.dev.profile.abi):
            err(f"{SH}: {argv[0]}: not executable: {bits}-bit ELF file, machine {machine}\n")
            return 126
        return BenchmarkModel(self, argv, out, affinity).run()

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
