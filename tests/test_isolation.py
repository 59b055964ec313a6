"""The test suite's own guarantees (issue 11): no test can use the real ~/.leti, and every test has a fresh
private LETI_HOME, so results do not depend on the machine or on the order tests run in (pytest-randomly)."""

from __future__ import annotations

import os
from pathlib import Path

import conftest
import pytest

from leti.paths import leti_home


def test_the_real_leti_home_is_refused(monkeypatch):
    monkeypatch.delenv("LETI_HOME")  # as on a worker where no fixture set it
    assert str(leti_home()) == conftest.REAL_LETI
    for touch in (lambda: (leti_home() / "leti.db").read_bytes(), lambda: os.listdir(leti_home() / "predictors"),
                  lambda: (leti_home() / "x").mkdir(parents=True)):  # fmt: skip
        with pytest.raises(PermissionError, match="real"):
            touch()
    assert conftest.TOUCHED  # the fixture fails the test after it, even if the code swallowed the error
    conftest.TOUCHED.clear()


def test_each_test_has_its_own_empty_home():
    home = Path(os.environ["LETI_HOME"])
    assert home.is_dir() and not any(home.iterdir())
    assert os.path.abspath(home) != conftest.REAL_LETI
