"""pytest fixtures for the PostgreSQL tests (tests/test_postgres*.py): one throwaway server per test session
(``leti.testing.postgres.TempPostgres``), one fresh database per test. No database is mocked.

Without the server binaries the tests skip with the reason, or fail when ``CI`` is set: CI must run them.
"""

from __future__ import annotations

import contextlib
import itertools
import os

import pytest

from leti.testing.postgres import INSTALL_HINT, TempPostgres, find_server_bin

_names = itertools.count()


@pytest.fixture(scope="session")
def pg_server():
    if find_server_bin() is None:
        reason = f"PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; {INSTALL_HINT}"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"CI is set and {reason}", pytrace=False)
        pytest.skip(reason)
    pg = TempPostgres().start()
    yield pg
    pg.kill()


@pytest.fixture
def pg_url(pg_server):
    """The URL (password included) of a new, empty database on the session's server; dropped afterwards."""
    if not (pg_server.dir / "data" / "postmaster.pid").exists():  # a test stopped it, failed, did not restart
        pg_server.start()
    name = f"t{os.getpid()}_{next(_names)}"
    yield pg_server.create_database(name)
    with contextlib.suppress(Exception):  # best effort: the server goes away with the session anyway
        pg_server.drop_database(name)
