"""A throwaway PostgreSQL server for tests and benchmarks: ``initdb`` + ``pg_ctl`` in a temporary directory,
listening on a free port of 127.0.0.1, gone when stopped.

The server binaries come from the Debian ``postgresql`` package (on PATH, or in its versioned directory
``/usr/lib/postgresql/<N>/bin``). PostgreSQL refuses to run as root, so under root the server runs as the
``postgres`` system user the package creates (or ``nobody``), through ``subprocess``'s ``user=``: no sudo.

    with TempPostgres() as pg:
        store = Store.open(pg.url())          # postgresql://leti:…@127.0.0.1:PORT/leti
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from leti.errors import LetiError

INSTALL_HINT = "install the server with: sudo apt-get install postgresql (Debian/Ubuntu)"
_TOOLS = ("initdb", "pg_ctl", "postgres")


def find_server_bin() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres, or None when the server is not installed."""
    on_path = shutil.which("initdb")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    versioned = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True
    )
    candidates += [Path(p) for p in versioned]
    for d in candidates:
        if all((d / t).is_file() and os.access(d / t, os.X_OK) for t in _TOOLS):
            return d
    return None


def _memory_dir() -> str | None:
    """/dev/shm when it has room: a throwaway server on tmpfs starts, writes and is deleted much faster."""
    try:
        return (
            "/dev/shm"
            if shutil.disk_usage("/dev/shm").free > 2**30 and os.access("/dev/shm", os.W_OK)
            else None
        )
    except OSError:
        return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TempPostgres:
    """One private PostgreSQL server. ``user``/``password`` own database ``dbname``; TCP logins need the password
    (scram-sha-256), so tests see real authentication."""

    def __init__(
        self, dbname: str = "leti", user: str = "leti", password: str = "leti-secret-pw", fast: bool = True
    ):
        self.dbname, self.user, self.password = dbname, user, password
        self.fast = (
            fast  # fsync off, data in memory when possible: a throwaway server need not survive a power cut
        )
        self.port = 0
        self.dir: Path | None = None
        self._bin = find_server_bin()
        self._run_as: pwd.struct_passwd | None = None

    # -- lifecycle
    def start(self) -> TempPostgres:
        if self._bin is None:
            raise LetiError(
                f"PostgreSQL server binaries (initdb, pg_ctl) not found; {INSTALL_HINT}", "postgres"
            )
        first = self.dir is None
        if first:
            self._init()
        # the port may be taken between free_port() and the bind; a restart keeps its port (clients hold URLs)
        for _ in range(5 if first else 1):
            self.port = self.port or free_port()
            if self._pg_ctl("start", check=False).returncode == 0:
                break
            self.port = 0 if first else self.port
        else:
            raise LetiError(f"could not start PostgreSQL; see {self.dir / 'server.log'}", "postgres")
        if first:  # the cluster's own database is 'postgres'; create ours through the local socket (trust)
            psql = shutil.which("psql") or str(self._bin / "psql")
            self._run([psql, "-h", str(self.dir), "-p", str(self.port), "-U", self.user, "-d", "postgres", "-q",
                       "-c", f'CREATE DATABASE "{self.dbname}" OWNER "{self.user}"'])  # fmt: skip
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (the data stays: ``start()`` brings it back on the same port)."""
        if self.dir is not None and (self.dir / "data" / "postmaster.pid").exists():
            self._pg_ctl("stop", "-m", mode, check=False)

    def kill(self) -> None:
        """Stop for good and delete the data directory."""
        self.stop("immediate")
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> TempPostgres:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()

    # -- use
    def url(self, dbname: str | None = None, password: bool = True) -> str:
        cred = f"{self.user}:{self.password}" if password else self.user
        return f"postgresql://{cred}@127.0.0.1:{self.port}/{dbname or self.dbname}"

    def create_database(self, name: str) -> str:
        """A fresh empty database owned by ``user``; returns its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" OWNER "{self.user}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, closing its sessions."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # -- internals
    def _init(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="leti-pg-", dir=_memory_dir() if self.fast else None))
        if os.geteuid() == 0:  # initdb refuses root: hand the directory to an unprivileged account
            for name in ("postgres", "nobody"):
                with contextlib.suppress(KeyError):
                    self._run_as = pwd.getpwnam(name)
                    break
            os.chown(self.dir, self._run_as.pw_uid, self._run_as.pw_gid)
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        if self._run_as:
            os.chown(pwfile, self._run_as.pw_uid, self._run_as.pw_gid)
        pwfile.chmod(0o600)
        self._run(
            [
                str(self._bin / "initdb"),
                "-D",
                str(self.dir / "data"),
                "-U",
                self.user,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]  # fmt: skip
        )
        pwfile.unlink()
        settings = {"listen_addresses": "'127.0.0.1'", "unix_socket_directories": f"'{self.dir}'",
                    "max_connections": "200", "shared_buffers": "64MB"}  # fmt: skip
        if self.fast:
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        with open(self.dir / "data" / "postgresql.conf", "a") as f:
            f.writelines(f"{k} = {v}\n" for k, v in settings.items())

    def _pg_ctl(self, action: str, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
        argv = [str(self._bin / "pg_ctl"), action, "-D", str(self.dir / "data"), "-w", "-t", "60", *extra]
        if action == "start":
            argv += ["-l", str(self.dir / "server.log"), "-o", f"-p {self.port}"]
        return self._run(argv, check=check)

    def _run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
        kw = {}
        if self._run_as is not None:
            kw = {"user": self._run_as.pw_uid, "group": self._run_as.pw_gid, "extra_groups": []}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGPASSWORD"] = self.password
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=self.dir, **kw)
        if check and proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise LetiError(f"{Path(argv[0]).name} failed: {tail[0]}", "postgres")
        return proc


def wait_until_accepting(url: str, timeout_s: float = 30.0) -> None:
    import psycopg

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
