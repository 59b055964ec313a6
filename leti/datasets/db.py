"""Connections, transactions and schema upgrades for the two store engines: SQLite (one file, WAL) and
PostgreSQL (psycopg 3, shared by many hosts). Everything above this module writes SQL once, with ``?``
placeholders, in the dialect both engines share; a ``Dialect`` supplies the few pieces that differ.

Concurrency: every thread gets its own connection, and so does a forked child. A write transaction on SQLite
starts with ``BEGIN IMMEDIATE`` (the file's single write lock, taken up front, with a busy timeout), on
PostgreSQL with ``BEGIN`` (row locks; the job queue claims with ``FOR UPDATE SKIP LOCKED``).

Errors become one-line ``StoreError``s naming the store by its display form (never the password).
``StoreUnavailable`` marks the transient kind (server down, connection cut, SQLite busy): retrying later
may succeed, and the farm's workers back off and do so.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import lru_cache
from typing import Any

from leti.datasets.location import StoreLocation, resolve
from leti.datasets.schema import SCHEMA_VERSION, statements
from leti.errors import StoreError

BUSY_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 10
_SCHEMA_LOCK = 7_347_110  # PostgreSQL advisory lock id: one process at a time creates or upgrades the schema


class StoreUnavailable(StoreError):
    """The store cannot be reached right now (server down, connection lost, busy); a retry may succeed."""


class StoreCorrupt(StoreError):
    """The SQLite file is damaged."""


class Dialect:
    """What differs between the engines. ``now`` is an SQL expression: the database's clock, in epoch seconds."""

    name = ""
    now = ""
    skip_locked = ""
    begin = "BEGIN"

    def connect(self, loc: StoreLocation):
        raise NotImplementedError

    def in_transaction(self, conn) -> bool:
        raise NotImplementedError

    def table_exists(self, conn, table: str) -> bool:
        raise NotImplementedError

    def lock_schema(self, conn) -> None:
        """Serialise schema creation and upgrades among concurrent openers (inside the transaction)."""

    def kind(self, e: BaseException) -> str | None:
        """'unavailable', 'integrity', 'corrupt', 'error' for the engine's exceptions; None for anything else."""
        raise NotImplementedError


class SqliteDialect(Dialect):
    name = "sqlite"
    now = "((julianday('now') - 2440587.5) * 86400.0)"
    begin = "BEGIN IMMEDIATE"

    def connect(self, loc: StoreLocation):
        conn = sqlite3.connect(
            str(loc.path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            for _ in range(
                50
            ):  # a new file's first openers race to switch it; the loser gets the old mode back
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() == "wal":
                    break
                time.sleep(0.05)
            conn.execute("PRAGMA synchronous = NORMAL")  # in WAL this survives a process crash
            conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            conn.close()
            raise
        if str(mode).lower() != "wal":
            conn.close()
            raise StoreError(f"cannot use WAL mode for {loc.display} (got {mode!r})", "store")
        return conn

    def in_transaction(self, conn) -> bool:
        return conn.in_transaction

    def table_exists(self, conn, table: str) -> bool:
        return (
            conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
            is not None
        )

    def kind(self, e: BaseException) -> str | None:
        if not isinstance(e, sqlite3.Error):
            return None
        if isinstance(e, sqlite3.IntegrityError):
            return "integrity"
        text = str(e).lower()
        if "malformed" in text or "not a database" in text or "corrupt" in text:
            return "corrupt"
        if isinstance(e, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
            return "unavailable"
        return "error"


class PostgresDialect(Dialect):
    name = "postgresql"
    now = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self):
        try:
            import psycopg
        except ImportError:
            raise StoreError(
                "a postgresql:// store needs the PostgreSQL client: pip install 'psycopg[binary]'", "store"
            ) from None
        self.psycopg = psycopg

    def connect(self, loc: StoreLocation):
        return self.psycopg.connect(
            loc.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, application_name="leti"
        )

    def in_transaction(self, conn) -> bool:
        return conn.info.transaction_status != self.psycopg.pq.TransactionStatus.IDLE

    def table_exists(self, conn, table: str) -> bool:
        # a plain catalog query: to_regclass() may answer from a stale cache after another session's CREATE TABLE
        sql = ("SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
               " WHERE c.relname = %s AND n.nspname = current_schema()")  # fmt: skip
        return conn.execute(sql, (table,)).fetchone() is not None

    def lock_schema(self, conn) -> None:
        conn.execute(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")

    def kind(self, e: BaseException) -> str | None:
        pg = self.psycopg
        if not isinstance(e, pg.Error):
            return None
        if isinstance(e, pg.IntegrityError):
            return "integrity"
        # OperationalError covers refused and cut connections, admin shutdown, deadlocks and serialisation failures
        if isinstance(e, pg.OperationalError | pg.InterfaceError):
            return "unavailable"
        return "error"


@lru_cache(maxsize=1024)
def _pg_sql(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


class Database:
    """The connection layer of a Store: ``transaction()``, ``_x`` (execute), ``_many``, ``_read`` and the schema."""

    def __init__(self, location: str | os.PathLike | StoreLocation | None = None, create: bool = True):
        self.location = resolve(location)
        self.dialect: Dialect = SqliteDialect() if self.location.kind == "sqlite" else PostgresDialect()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list = []
        self._pid = os.getpid()
        self._closed = False
        if self.location.kind == "sqlite":
            self._check_sqlite_path(create)
        self._init_schema(create)

    @property
    def path(self):
        """The SQLite file (None for PostgreSQL)."""
        return self.location.path

    @property
    def is_postgres(self) -> bool:
        return self.location.kind == "postgresql"

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location.display!r})"

    def close(self) -> None:
        """Close every connection this store opened (in all threads)."""
        with self._lock:
            self._closed = True
            conns, self._conns = self._conns, []
        for conn in conns:
            with suppress(Exception):
                conn.close()
        self._local = threading.local()

    # -- errors -----------------------------------------------------------------------------------------

    def _error(self, action: str, e: BaseException) -> StoreError:
        """A one-line StoreError for an engine exception (password redacted)."""
        kind = self.dialect.kind(e)
        where = self.location.display
        if self.is_postgres:
            where = f"PostgreSQL at {self.location.host}:{self.location.port} ({self.location.display})"
        reason = self.location.redact(_one_line(e))
        if kind == "unavailable":
            return StoreUnavailable(f"cannot {action} {where}: {reason}", "store")
        if kind == "corrupt":
            return StoreCorrupt(self._corruption_message(reason), "store")
        return StoreError(f"cannot {action} {where}: {reason}", "store")

    def _corruption_message(self, reason: str, damage: list[str] | None = None) -> str:
        if damage is None:
            damage = []
            with suppress(Exception):
                conn = sqlite3.connect(str(self.path), timeout=5)
                try:
                    damage = [str(r[0]) for r in conn.execute("PRAGMA quick_check(3)").fetchall()]
                finally:
                    conn.close()
        check = f"; quick_check: {' | '.join(damage)}" if damage else ""
        p = self.path
        return (f"{p} is corrupt ({reason}{check}). Nothing was written. Recover the readable rows with "
                f"`sqlite3 {p} .recover | sqlite3 {p}.recovered` and use that file, or restore a backup")  # fmt: skip

    def check_integrity(self) -> None:
        """Refuse a damaged SQLite file before a bulk write (``PRAGMA quick_check``: a damaged page can go unnoticed
        by the writes themselves). PostgreSQL checks its own pages."""
        if self.is_postgres:
            return
        damage = [str(r[0]) for r in self._read("PRAGMA quick_check(3)")]
        if damage != ["ok"]:
            raise StoreCorrupt(self._corruption_message("quick_check failed", damage), "store")

    def _check_sqlite_path(self, create: bool) -> None:
        p = self.path
        try:
            is_dir, exists = p.is_dir(), p.exists()
        except (OSError, ValueError) as e:  # not a possible path: a name too long, a NUL byte
            raise StoreError(f"cannot open {p}: {getattr(e, 'strerror', None) or e}", "store") from None
        if is_dir:
            raise StoreError(f"cannot open {p}: is a directory", "store")
        if not create and not exists:
            raise StoreError(
                f"no store at {p} (create one with leti import or leti generate, or pass --store)", "store"
            )
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create {p.parent}: {e.strerror or e}", "store") from None

    # -- connections and transactions ---------------------------------------------------------------------

    def _conn(self, queue: bool = False):
        """This thread's connection. On PostgreSQL the job queue's transitions use a second one whose commits
        do not wait for the disk (``synchronous_commit = off``): a transition lost in a server crash only
        returns its job to an earlier state (a claim to the queue, a result and its job's completion together),
        so the job is measured again, never twice and never lost. Everything else commits durably."""
        if self._closed:
            raise StoreError(f"{self.location.display} is closed", "store")
        if os.getpid() != self._pid:  # forked: a parent's connection must not be used in the child
            self._pid, self._local, self._conns = os.getpid(), threading.local(), []
        slot = "qconn" if queue and self.is_postgres else "conn"
        conn = getattr(self._local, slot, None)
        if conn is not None:
            return conn
        try:
            conn = self.dialect.connect(self.location)
            if slot == "qconn":
                conn.execute("SET synchronous_commit = off")
        except StoreError:
            raise
        except Exception as e:
            if self.dialect.kind(e) is None:
                raise
            raise self._error("connect to" if self.is_postgres else "open", e) from None
        setattr(self._local, slot, conn)
        with self._lock:
            self._conns.append(conn)
        return conn

    def _drop_conn(self, queue: bool = False) -> None:
        """Forget this thread's connection (after the server went away); the next call reconnects."""
        slot = "qconn" if queue and self.is_postgres else "conn"
        conn = getattr(self._local, slot, None)
        setattr(self._local, slot, None)
        if conn is not None:
            with self._lock:
                if conn in self._conns:
                    self._conns.remove(conn)
            with suppress(Exception):
                conn.close()

    def _fail(self, action: str, e: BaseException, queue: bool = False) -> StoreError:
        err = self._error(action, e)
        if isinstance(err, StoreUnavailable) and self.is_postgres:
            self._drop_conn(queue)
        return err

    @contextmanager
    def transaction(self, queue: bool = False) -> Iterator[Any]:
        """One write transaction. Store calls made inside it join it, so they commit or roll back together.
        ``queue``: a job-queue transition (see ``_conn``)."""
        conn = self._conn(queue)
        d = self.dialect
        if d.in_transaction(conn):
            yield conn
            return
        try:
            conn.execute(d.begin)
        except Exception as e:
            if d.kind(e) is None:
                raise
            raise self._fail("write to", e, queue) from None
        try:
            yield conn
        except BaseException as exc:
            with suppress(Exception):
                if d.in_transaction(conn):
                    conn.execute("ROLLBACK")
            if d.kind(exc) is not None:
                raise self._fail("write to", exc, queue) from None
            raise
        try:
            conn.execute("COMMIT")
        except Exception as e:
            with suppress(Exception):
                if d.in_transaction(conn):
                    conn.execute("ROLLBACK")
            if d.kind(e) is None:
                raise
            raise self._fail("write to", e, queue) from None

    def _x(self, conn, sql: str, params: Sequence = ()):
        """Execute one statement written with ``?`` placeholders; returns the cursor."""
        if self.is_postgres:
            return conn.execute(_pg_sql(sql), tuple(params))
        return conn.execute(sql, tuple(params))

    def _many(self, conn, sql: str, rows: Iterable[Sequence]) -> int:
        """executemany; returns the number of rows changed."""
        rows = [tuple(r) for r in rows]
        if not rows:
            return 0
        if self.is_postgres:
            cur = conn.cursor()
            cur.executemany(_pg_sql(sql), rows)
            return max(cur.rowcount, 0)
        return max(conn.executemany(sql, rows).rowcount, 0)

    def _read(self, sql: str, params: Iterable = ()) -> list[tuple]:
        conn = self._conn()
        try:
            return self._x(conn, sql, tuple(params)).fetchall()
        except Exception as e:
            if self.dialect.kind(e) is None:
                raise
            raise self._fail("read", e) from None

    def _write(self, sql: str, params: Iterable = (), queue: bool = False) -> list[tuple]:
        """One statement in its own transaction (autocommit); returns the rows of a RETURNING clause."""
        conn = self._conn(queue)
        if self.dialect.in_transaction(conn):
            cur = self._x(conn, sql, tuple(params))
            return cur.fetchall() if cur.description else []
        try:
            cur = self._x(conn, sql, tuple(params))
            return cur.fetchall() if cur.description else []
        except Exception as e:
            if self.dialect.kind(e) is None:
                raise
            raise self._fail("write to", e, queue) from None

    def db_now(self) -> float:
        """The database's clock (epoch seconds): leases are measured on it, never on a worker's own clock."""
        return float(self._read(f"SELECT {self.dialect.now}")[0][0])

    # -- schema ---------------------------------------------------------------------------------------------

    def _version(self, conn) -> int:
        if not self.dialect.table_exists(conn, "meta"):
            return 0
        row = self._x(conn, "SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def _init_schema(self, create: bool) -> None:
        conn = self._conn()
        try:  # a quick look first: an up-to-date store needs no write lock
            version = self._version(conn)
        except Exception as e:
            if self.dialect.kind(e) is None:
                raise
            raise self._fail("open", e) from None
        if version == SCHEMA_VERSION:
            return
        self._check_version(version, create)
        with self.transaction() as conn:
            self.dialect.lock_schema(conn)
            version = self._version(conn)  # another process may have upgraded it meanwhile
            self._check_version(version, create)
            for v in range(version + 1, SCHEMA_VERSION + 1):
                for stmt in statements(v, self.dialect.name):
                    self._x(conn, stmt)
            self._x(
                conn,
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )

    def _check_version(self, version: int, create: bool) -> None:
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.location.display} has schema version {version}, newer than this leti supports "
                f"({SCHEMA_VERSION}); upgrade leti",
                "store",
            )
        if version == 0 and not create:
            raise StoreError(
                f"no leti store in {self.location.display} (create one with leti import or leti generate)",
                "store",
            )

    def schema_version(self) -> int:
        return int(self._read("SELECT value FROM meta WHERE key = 'schema_version'")[0][0])


def _one_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[0] if lines else type(e).__name__
    # psycopg: 'connection failed: connection to server at "h", port p failed: Connection refused' -> the reason
    if "failed: " in text:
        text = text.rsplit("failed: ", 1)[1]
    return text.replace("FATAL:  ", "").strip() or type(e).__name__
