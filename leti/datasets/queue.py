"""The job queue: runs, jobs with leases, the farm's workers and their status. Part of ``Store``.

A job is (arch, target, settings) within a run. Claiming one takes a lease: ``lease_until`` on the *database's*
clock (a worker's own clock never decides whether a lease is alive), renewed by ``heartbeat`` while the job runs.
A claim is one statement: ``UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED)`` on PostgreSQL, and the same
inside ``BEGIN IMMEDIATE`` on SQLite. ``(id, attempts)`` identifies a claim, so a worker whose lease expired and was
taken over can neither fail nor release a job it no longer holds.

A result is stored in the transaction that marks its job done, and only if the job is not done yet: a late
result (its worker's lease expired) is kept if it arrives first and ignored if it arrives second, so a job's
measurement is stored once, never twice. Expired leases return their jobs to the queue, or fail them once
``max_attempts`` claims were used up.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from leti.datasets.db import Database
from leti.datasets.records import (
    JOB_COLS,
    JOB_STATES,
    MEAS_COLS,
    Job,
    measurement_values,
    now_text,
    text,
    to_json,
)
from leti.errors import LetiError
from leti.measurement import Measurement
from leti.targets import validate_name

DEFAULT_LEASE_S = 60.0
DEFAULT_MAX_ATTEMPTS = 5
EXPIRE_EVERY_S = 1.0  # how often one store object looks for expired leases while jobs are pending
RATE_WINDOW_S = 300.0  # measurements/min in `farm status` is taken over this window
_HOST = socket.gethostname()


def _marks(n: int) -> str:
    return "(" + ", ".join("?" * n) + ")"


class JobQueue(Database):
    """Runs, jobs and workers (mixed into Store, which adds archs, targets and measurements)."""

    _last_expire = 0.0

    # -- runs -----------------------------------------------------------------------------------------------

    def create_run(self, run_id: str, params: Mapping | None = None) -> bool:
        """Start a run; False if it already existed (a resume: its params are left as they were)."""
        text(run_id, "run_id")
        with self.transaction() as conn:
            cur = self._x(
                conn,
                "INSERT INTO runs (run_id, params, created) VALUES (?, ?, ?) ON CONFLICT (run_id) DO NOTHING",
                (run_id, to_json(dict(params or {}), "params"), now_text()),
            )
            return cur.rowcount > 0

    def get_run(self, run_id: str) -> dict | None:
        """``{run_id, params, created, report, progress}`` or None."""
        rows = self._read("SELECT run_id, params, created, report FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            return None
        rid, params, created, report = rows[0]
        return {
            "run_id": rid,
            "params": json.loads(params),
            "created": created,
            "report": json.loads(report) if report is not None else None,
            "progress": self.run_progress(run_id),
        }

    def set_run_report(self, run_id: str, report: Mapping) -> None:
        with self.transaction() as conn:
            cur = self._x(
                conn, "UPDATE runs SET report = ? WHERE run_id = ?", (to_json(dict(report), "report"), run_id)
            )
            if cur.rowcount == 0:
                raise LetiError(f"unknown run {run_id!r}", "run_id")

    # -- filling the queue --------------------------------------------------------------------------------------

    def add_jobs(
        self,
        run_id: str,
        items: Iterable,
        skip_measured: bool = False,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> int:
        """Queue (arch_id, target, settings_key) items (tuples or mappings) for a run; returns how many are new.

        Idempotent: an item already queued for this run is left as it is. With ``skip_measured``, items
        that already have a measurement in the store are not queued. A job is claimed at most ``max_attempts``
        times; then it fails with its last error.
        """
        if (
            isinstance(max_attempts, bool)
            or not isinstance(max_attempts, int)
            or not 1 <= max_attempts <= 1000
        ):
            raise LetiError(f"must be an integer in 1..1000, got {max_attempts!r}", "max_attempts")
        now = now_text()
        values = []
        for i, it in enumerate(items):
            if isinstance(it, Mapping):
                it = (it.get("arch_id"), it.get("target"), it.get("settings_key"))
            it = tuple(it)
            if len(it) != 3:
                raise LetiError(f"expected (arch_id, target, settings_key), got {it!r}", f"items[{i}]")
            arch_id, target, key = it
            arch_id, key = text(arch_id, f"items[{i}].arch_id"), text(key, f"items[{i}].settings_key")
            values.append((run_id, arch_id, validate_name(target), key, now, max_attempts))
        if skip_measured:
            values = [v + (v[1], v[2], v[3]) for v in values]
        guard = (
            " WHERE NOT EXISTS (SELECT 1 FROM measurements m WHERE m.arch_id = ? AND m.target = ?"
            " AND m.settings_key = ?)"
            if skip_measured
            else ""
        )
        sql = (
            "INSERT INTO jobs (run_id, arch_id, target, settings_key, state, attempts, updated, max_attempts)"
            f" SELECT ?, ?, ?, ?, 'pending', 0, ?, ?{guard}"
            " ON CONFLICT (run_id, arch_id, target, settings_key) DO NOTHING"
        )
        with self.transaction() as conn:
            if self._x(conn, "SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
                raise LetiError(f"unknown run {run_id!r}; create_run it first", "run_id")
            missing = self._missing_archs(conn, (v[1] for v in values))
            if missing:
                raise self._unknown_arch_error(missing)
            self._ensure_target_names(conn, (v[2] for v in values))
            added = self._many(conn, sql, values)
        if added > 1000 and self.is_postgres:  # fresh statistics, so that claims plan on the partial indexes
            self._write("ANALYZE jobs")
        return added

    def retry_failed(self, run_id: str) -> int:
        """Put the run's failed jobs back in the queue with a fresh retry budget; returns how many."""
        with self.transaction() as conn:
            return self._x(
                conn,
                "UPDATE jobs SET state = 'pending', attempts = 0, lease_until = NULL, updated = ?"
                " WHERE run_id = ? AND state = 'failed'",
                (now_text(), run_id),
            ).rowcount

    # -- reading jobs ---------------------------------------------------------------------------------------------

    def get_job(self, job_id: int) -> Job | None:
        rows = self._read(f"SELECT {JOB_COLS} FROM jobs WHERE id = ?", (job_id,))
        return Job(*rows[0]) if rows else None

    def jobs(self, run_id: str, state: str | None = None) -> list[Job]:
        sql, params = f"SELECT {JOB_COLS} FROM jobs WHERE run_id = ?", [run_id]
        if state is not None:
            sql, params = sql + " AND state = ?", params + [self._state(state)]
        return [Job(*r) for r in self._read(sql + " ORDER BY id", params)]

    @staticmethod
    def _state(state: str) -> str:
        if state not in JOB_STATES:
            raise LetiError(f"must be one of {', '.join(JOB_STATES)}, got {state!r}", "state")
        return state

    def run_progress(self, run_id: str) -> dict[str, int]:
        """Job counts per state, plus ``total``."""
        counts = dict.fromkeys(JOB_STATES, 0)
        for state, n in self._read(
            "SELECT state, COUNT(*) FROM jobs WHERE run_id = ? GROUP BY state", (run_id,)
        ):
            counts[state] = n
        counts["total"] = sum(counts[s] for s in JOB_STATES)
        return counts

    def open_jobs(self, targets: Sequence[str], run_id: str | None = None) -> tuple[int, int]:
        """(pending, running) jobs of ``targets`` (of one run, if given): is there anything left to wait for?"""
        sql = f"SELECT state, COUNT(*) FROM jobs WHERE target IN {_marks(len(targets))} AND state IN ('pending', 'running')"
        params = list(targets)
        if run_id is not None:
            sql, params = sql + " AND run_id = ?", params + [run_id]
        counts = dict(self._read(sql + " GROUP BY state", params))
        return counts.get("pending", 0), counts.get("running", 0)

    # -- leases -------------------------------------------------------------------------------------------------

    def claim_job(
        self,
        run_id: str | None,
        worker: str,
        target: str | None = None,
        *,
        targets: Sequence[str] | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        host: str = "",
        pid: int | None = None,
    ) -> Job | None:
        """Lease the oldest pending job (of ``run_id`` unless None; of ``target`` or ``targets`` if given) to
        ``worker`` for ``lease_s`` seconds of the database clock; None when there is none. The lease records the
        claiming process (``host``/``pid``, default this one) so that ``requeue_dead`` can tell when it died."""
        text(worker, "worker")
        if not (isinstance(lease_s, int | float) and 0.1 <= lease_s <= 86400):
            raise LetiError(f"must be in 0.1..86400 seconds, got {lease_s!r}", "lease_s")
        wanted = list(targets or ()) + ([target] if target is not None else [])
        if time.monotonic() - self._last_expire > EXPIRE_EVERY_S:
            self.expire_leases()
        job = self._claim(run_id, worker, wanted, lease_s, host, pid)
        if job is None and self.expire_leases():  # nothing pending: maybe an expired lease frees one
            job = self._claim(run_id, worker, wanted, lease_s, host, pid)
        return job

    def _claim(self, run_id, worker, wanted, lease_s, host, pid) -> Job | None:
        where, params = "state = 'pending'", []
        if run_id is not None:
            where, params = where + " AND run_id = ?", params + [run_id]
        if wanted:
            where, params = where + f" AND target IN {_marks(len(wanted))}", params + wanted
        now = self.dialect.now
        sql = (
            f"UPDATE jobs SET state = 'running', worker = ?, attempts = attempts + 1, lease_until = {now} + ?,"
            f" heartbeat_at = {now}, lease_host = ?, lease_pid = ?, updated = ?"
            f" WHERE id = (SELECT id FROM jobs WHERE {where} ORDER BY id LIMIT 1{self.dialect.skip_locked})"
            f" RETURNING {JOB_COLS}"
        )
        rows = self._atomic(
            sql, [worker, float(lease_s), host or _HOST, pid or os.getpid(), now_text(), *params]
        )
        return Job(*rows[0]) if rows else None

    def _atomic(self, sql: str, params: Sequence) -> list[tuple]:
        """One read-modify-write statement. SQLite needs BEGIN IMMEDIATE for it to never fail on a stale snapshot;
        PostgreSQL runs it alone (its row locks suffice), saving two round trips."""
        if self.is_postgres:
            return self._write(sql, params, queue=True)
        with self.transaction() as conn:
            return self._x(conn, sql, params).fetchall()

    def heartbeat(
        self, workers: Sequence[str], lease_s: float = DEFAULT_LEASE_S, host: str = "", pid: int | None = None
    ) -> set[tuple[int, int]]:
        """Extend the leases ``workers`` of this process (or of ``host``/``pid``) hold; returns the (id, attempts) of the jobs
        still held. A job missing from it was taken over or finished by someone else."""
        if not workers:
            return set()
        now = self.dialect.now
        with self.transaction(queue=True) as conn:
            rows = self._x(
                conn,
                f"UPDATE jobs SET lease_until = {now} + ?, heartbeat_at = {now} WHERE state = 'running'"
                f" AND worker IN {_marks(len(workers))} AND lease_host = ? AND lease_pid = ? RETURNING id, attempts",
                [float(lease_s), *workers, host or _HOST, pid or os.getpid()],
            ).fetchall()
            self._x(
                conn,
                f"UPDATE workers SET heartbeat_at = {now} WHERE name IN {_marks(len(workers))}",
                list(workers),
            )
        return {(int(i), int(a)) for i, a in rows}

    def expire_leases(self) -> int:
        """Return jobs whose lease ran out to the queue (or fail them: no attempts left); returns how many."""
        self._last_expire = time.monotonic()
        return self._requeue("lease_until < " + self.dialect.now, [], "lease of {} expired")

    def requeue_dead(self, host: str, alive: Callable[[int], bool]) -> int:
        """Requeue the running jobs leased to processes of ``host`` that ``alive(pid)`` says are gone (a crashed
        worker or generate on this machine): they come back at once instead of when their lease expires."""
        pids = {
            p
            for (p,) in self._read(
                "SELECT DISTINCT lease_pid FROM jobs WHERE state = 'running' AND lease_host = ?", (host,)
            )
        }
        dead = sorted(p for p in pids if p is not None and not alive(int(p)))
        n = 0
        for p in dead:
            n += self._requeue("lease_host = ? AND lease_pid = ?", [host, p], "worker {} died")
        return n

    def requeue_running(self, run_id: str | None = None, worker: str | None = None) -> int:
        """Put running jobs (of ``run_id``, of ``worker``, if given) back in the queue; returns how many."""
        where, params = "1 = 1", []
        if run_id is not None:
            where, params = where + " AND run_id = ?", params + [run_id]
        if worker is not None:
            where, params = where + " AND worker = ?", params + [worker]
        return self._requeue(where, params, None)

    def _requeue(self, where: str, params: list, error: str | None) -> int:
        """Running jobs matching ``where`` go back to pending, or to failed once their claims are used up."""
        err, err_params = "error", []
        if error is not None:  # build the message in SQL: it names each job's own worker
            left, _, right = error.partition("{}")
            err, err_params = "? || COALESCE(worker, '-') || ?", [left, right]
        sql = (
            "UPDATE jobs SET state = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'pending' END,"
            f" error = {err}, lease_until = NULL, updated = ?"
            f" WHERE id IN (SELECT id FROM jobs WHERE state = 'running' AND {where}{self.dialect.skip_locked})"
        )
        with self.transaction(queue=True) as conn:
            return self._x(conn, sql, [*err_params, now_text(), *params]).rowcount

    def release_job(self, job_id: int, attempt: int) -> bool:
        """Give a held job back to the queue without an error (shutting down); False if no longer held."""
        with self.transaction(queue=True) as conn:
            return (
                self._x(
                    conn,
                    "UPDATE jobs SET state = 'pending', lease_until = NULL, updated = ?"
                    " WHERE id = ? AND attempts = ? AND state = 'running'",
                    (now_text(), job_id, attempt),
                ).rowcount
                > 0
            )

    # -- finishing jobs --------------------------------------------------------------------------------------------

    def _lock_job(self, conn, job_id: int) -> Job | None:
        lock = " FOR UPDATE" if self.is_postgres else ""
        row = self._x(conn, f"SELECT {JOB_COLS} FROM jobs WHERE id = ?{lock}", (job_id,)).fetchone()
        return Job(*row) if row else None

    def complete_job(
        self,
        job_id: int,
        measurement: Measurement | Mapping,
        source: str = "",
        *,
        attempt: int | None = None,
        worker: str | None = None,
    ) -> bool:
        """Store the job's measurement and mark it done, in one transaction; True if the measurement was stored.

        A job already done keeps its result (False: this one is a duplicate). A late result, from a worker
        whose lease (``attempt``) expired, is stored if the job is not done yet: the work is not wasted, and
        the worker that took the job over finds it done.
        """
        if self.is_postgres:
            return self._complete_pg(job_id, measurement, source, worker)
        with self.transaction() as conn:
            job = self._lock_job(conn, job_id)
            if job is None:
                raise LetiError(f"no job {job_id!r}", "job_id")
            if job.state == "done":
                return False
            values = measurement_values(job.arch_id, job.target, job.settings_key, measurement, source)
            new = self._insert_measurement(conn, values)
            self._x(
                conn,
                f"UPDATE jobs SET state = 'done', error = NULL, lease_until = NULL, finished_at = {self.dialect.now},"
                " worker = COALESCE(?, worker), updated = ? WHERE id = ?",
                (worker, now_text(), job_id),
            )
            self._finish_job(conn, job_id)
        return new

    def _complete_pg(self, job_id: int, measurement, source: str, worker: str | None) -> bool:
        """complete_job in one statement (one round trip): lock the job unless done, insert its measurement with
        the job's keys, mark it done."""
        values = measurement_values("-", "x", "-", measurement, source)[
            3:
        ]  # validated; the keys come from the job
        cols = ", ".join(MEAS_COLS)
        sql = (
            "WITH j AS (SELECT id, arch_id, target, settings_key FROM jobs WHERE id = ? AND state <> 'done' FOR UPDATE),"
            f" m AS (INSERT INTO measurements ({cols}) SELECT j.arch_id, j.target, j.settings_key,"
            f" {', '.join('?' * len(values))} FROM j ON CONFLICT (arch_id, target, settings_key, rep) DO NOTHING"
            " RETURNING 1),"
            " u AS (UPDATE jobs SET state = 'done', error = NULL, lease_until = NULL,"
            f" finished_at = {self.dialect.now}, worker = COALESCE(?, worker), updated = ?"
            " WHERE id IN (SELECT id FROM j) RETURNING 1)"
            " SELECT (SELECT COUNT(*) FROM m), (SELECT COUNT(*) FROM u), (SELECT COUNT(*) FROM jobs WHERE id = ?)"
        )
        new, _, exists = self._write(sql, [job_id, *values, worker, now_text(), job_id], queue=True)[0]
        if not exists:
            raise LetiError(f"no job {job_id!r}", "job_id")
        return bool(new)

    def _finish_job(self, conn, job_id: int) -> None:
        """Hook run inside complete_job's transaction, after both writes (tests kill a process here)."""

    def fail_job(
        self,
        job_id: int,
        error: str,
        requeue: bool = True,
        max_attempts: int | None = None,
        *,
        attempt: int | None = None,
    ) -> str:
        """Record a failure; the job goes back to pending while it has attempts left, else to failed.

        Returns the job's new state. A job already done stays done, and with ``attempt`` (the claim's) a job
        that was taken over by another worker is left alone: this worker's report is stale.
        """
        with self.transaction(queue=True) as conn:
            job = self._lock_job(conn, job_id)
            if job is None:
                raise LetiError(f"no job {job_id!r}", "job_id")
            if job.state == "done" or (
                attempt is not None and (job.state != "running" or job.attempts != attempt)
            ):
                return job.state
            cap = job.max_attempts if max_attempts is None else max_attempts
            state = "pending" if requeue and job.attempts < cap else "failed"
            self._x(
                conn,
                "UPDATE jobs SET state = ?, error = ?, lease_until = NULL, updated = ? WHERE id = ?",
                (state, str(error)[:2000], now_text(), job_id),
            )
            return state

    # -- measurements (shared with Store) ----------------------------------------------------------------------------

    def _insert_measurement(self, conn, values: tuple, replace: bool = False) -> bool:
        """Insert one row (MEAS_COLS order) inside the caller's transaction; True if it is new. With ``replace``
        an existing row with the same key is overwritten (and False returned)."""
        cols = ", ".join(MEAS_COLS)
        cur = self._x(
            conn,
            f"INSERT INTO measurements ({cols}) VALUES {_marks(len(MEAS_COLS))}"
            " ON CONFLICT (arch_id, target, settings_key, rep) DO NOTHING",
            values,
        )
        if cur.rowcount > 0:
            return True
        if replace:
            sets = ", ".join(f"{c} = ?" for c in MEAS_COLS[4:])
            self._x(
                conn,
                f"UPDATE measurements SET {sets} WHERE arch_id = ? AND target = ? AND settings_key = ? AND rep = ?",
                values[4:] + values[:4],
            )
        return False

    def _missing_archs(self, conn, arch_ids: Iterable[str]) -> list[str]:
        ids = list(dict.fromkeys(arch_ids))
        found: set[str] = set()
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            found.update(
                r[0]
                for r in self._x(
                    conn, f"SELECT arch_id FROM archs WHERE arch_id IN {_marks(len(chunk))}", chunk
                )
            )
        return [a for a in ids if a not in found]

    @staticmethod
    def _unknown_arch_error(missing: list[str]) -> LetiError:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        return LetiError(f"unknown arch {missing[0]!r}{more}; upsert_arch it first", "arch_id")

    def _ensure_target_names(self, conn, names: Iterable[str]) -> int:
        now = now_text()
        return self._many(
            conn,
            "INSERT INTO targets (name, created, updated) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
            [(n, now, now) for n in dict.fromkeys(names)],
        )

    # -- the farm's workers ------------------------------------------------------------------------------------------

    def register_workers(
        self,
        host: str,
        pid: int,
        entries: Sequence[tuple[str, str, str]],
        alive: Callable[[int], bool],
        lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        """Record this process's (name, target, device) bindings. A device already bound by another live worker
        process on this host is refused (one phone, one measurement at a time)."""
        now = self.dialect.now
        with self.transaction() as conn:
            self.dialect.lock_schema(conn)  # registrations are rare: serialise them
            for _name, _target, device in entries:
                rows = self._x(
                    conn,
                    f"SELECT name, pid, {now} - COALESCE(heartbeat_at, 0) FROM workers"
                    " WHERE host = ? AND device = ? AND pid <> ? AND state = 'running'",
                    (host, device, pid),
                ).fetchall()
                for other, other_pid, age in rows:
                    if alive(int(other_pid)) and age < 3 * lease_s:
                        raise LetiError(
                            f"device {device} is already claimed by worker {other} (pid {other_pid}) on this host",
                            "target",
                        )
            info = to_json({"lease_s": lease_s}, "info")
            self._many(
                conn,
                f"INSERT INTO workers (name, host, pid, target, device, state, started, heartbeat_at, info)"
                f" VALUES (?, ?, ?, ?, ?, 'running', {now}, {now}, ?) ON CONFLICT (name) DO UPDATE SET"
                " host = excluded.host, pid = excluded.pid, target = excluded.target, device = excluded.device,"
                " state = 'running', started = excluded.started, heartbeat_at = excluded.heartbeat_at,"
                " info = excluded.info",
                [(name, host, pid, target, device, info) for name, target, device in entries],
            )

    def set_worker_state(self, names: Sequence[str], state: str, pid: int | None = None) -> None:
        if state not in ("running", "stopped", "quarantined"):
            raise LetiError(f"must be running, stopped or quarantined, got {state!r}", "state")
        if not names:
            return
        sql, params = f"UPDATE workers SET state = ? WHERE name IN {_marks(len(names))}", [state, *names]
        if pid is not None:  # only our own rows: another process may have taken the name over since
            sql, params = sql + " AND pid = ?", params + [pid]
        with self.transaction() as conn:
            self._x(conn, sql, params)

    def farm_status(self, run_id: str | None = None, window_s: float = RATE_WINDOW_S) -> dict:
        """Per target and per worker: queued, leased, expired, done, failed, measurements/min (over the last
        ``window_s``) and, for workers, the last heartbeat's age. Times come from the database clock."""
        now = self.dialect.now
        live = f"state = 'running' AND lease_until >= {now}"
        counts = (
            f"SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END), SUM(CASE WHEN {live} THEN 1 ELSE 0 END),"
            f" SUM(CASE WHEN state = 'running' AND NOT ({live}) THEN 1 ELSE 0 END),"
            " SUM(CASE WHEN state = 'done' THEN 1 ELSE 0 END), SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END),"
            f" SUM(CASE WHEN state = 'done' AND finished_at >= {now} - ? THEN 1 ELSE 0 END)"
        )
        where, params = ("WHERE run_id = ?", [run_id]) if run_id is not None else ("", [])
        per_min = 60.0 / window_s

        def row(vals) -> dict:
            q, leased, expired, done, failed, recent = (int(v or 0) for v in vals)
            return {"queued": q + expired, "leased": leased, "expired": expired, "done": done, "failed": failed,
                    "per_min": round(recent * per_min, 2)}  # fmt: skip

        targets = [
            {"target": t, **row(vals)}
            for t, *vals in self._read(
                f"SELECT target, {counts} FROM jobs {where} GROUP BY target ORDER BY target",
                [window_s, *params],
            )  # fmt: skip
        ]
        by_worker = {
            w: row(vals)
            for w, *vals in self._read(
                f"SELECT worker, {counts} FROM jobs {where + (' AND' if where else 'WHERE')} worker IS NOT NULL"
                " GROUP BY worker",
                [window_s, *params],
            )
        }
        workers = []
        seen = set()
        for name, host, pid, target, device, state, age, info in self._read(
            f"SELECT name, host, pid, target, device, state, {now} - heartbeat_at, info FROM workers ORDER BY name"
        ):
            seen.add(name)
            lease = json.loads(info or "{}").get("lease_s", DEFAULT_LEASE_S)
            if state == "running" and age is not None and age > 3 * lease:
                state = "lost"  # no heartbeat for three leases: the process died or lost the store
            c = by_worker.get(name) or row((0,) * 6)
            workers.append({"worker": name, "host": host, "pid": pid, "target": target, "device": device,
                            "state": state, "last_heartbeat_s": None if age is None else round(float(age), 1),
                            **{k: c[k] for k in ("leased", "done", "failed", "per_min")}})  # fmt: skip
        for name, c in sorted(by_worker.items()):  # bindings of `leti generate` have no worker row
            if name not in seen:
                workers.append({"worker": name, "host": None, "pid": None, "target": None, "device": None,
                                "state": None, "last_heartbeat_s": None,
                                **{k: c[k] for k in ("leased", "done", "failed", "per_min")}})  # fmt: skip
        return {"store": self.location.display, "run_id": run_id, "window_s": window_s, "targets": targets,
                "workers": workers}  # fmt: skip
