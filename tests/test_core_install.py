"""Installs that fit the user: the core (predict, train boosting/LUT predictors, the zoo, the service) works without
the optional packages, and the extras are declared with ranges.

The core check runs leti in a fresh interpreter whose import system refuses every optional package (a meta-path
finder raising ModuleNotFoundError for tensorflow, keras, torch, adb_shell, …), as a core-only install would. That is
honest about leti's own imports and fast; ``LETI_TEST_CORE_VENV=1`` also runs the slow check in a real venv with
only the core dependencies installed from the package index (see ``test_core_venv``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

from leti.errors import EXTRAS

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = sorted(EXTRAS)  # tensorflow, keras, ai_edge_litert, tensorly, torch, torch_geometric, adb_shell, …
HEAVY = ("lightgbm", "xgboost", "catboost", "sklearn", "scipy", "pandas", "matplotlib")
NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|"
ZOO_TARGET = "pixel4-tflite2.1-cpu-a76"

BLOCKER = """
import importlib.abc, sys
BLOCKED = set({blocked!r})
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: not a core dependency)", name=name)
        return None
sys.meta_path.insert(0, Block())
for m in list(sys.modules):
    if m.split(".")[0] in BLOCKED:
        del sys.modules[m]
"""


def run_core(code: str, tmp_path: Path) -> dict:
    """Run ``code`` (which sets ``out``, a dict) in a fresh interpreter that cannot import optional packages."""
    script = BLOCKER.format(blocked=OPTIONAL) + code + "\nimport json; print('RESULT ' + json.dumps(out))\n"
    env = {**os.environ, "LETI_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    env.pop("LETI_ZOO", None)
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(x for x in r.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def test_predict_with_the_zoo_in_a_core_only_interpreter(tmp_path):
    out = run_core(
        f"""
import io, contextlib, sys
import leti
from leti.cli import main
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    rc = main(["predict", "--target", {ZOO_TARGET!r}, {NB201!r}, "--json"])
out = {{"rc": rc, "cli": buf.getvalue(), "api": float(leti.predict({NB201!r}, target={ZOO_TARGET!r})[0]),
        "heavy": sorted(m for m in {list(HEAVY)!r} if m in sys.modules)}}
with contextlib.redirect_stdout(io.StringIO()):
    out["targets_rc"] = main(["targets", "--json"])
    out["list_rc"] = main(["predictors", "list", "--json"])
""",
        tmp_path,
    )
    assert out["rc"] == 0 and out["targets_rc"] == 0 and out["list_rc"] == 0
    cli = json.loads(out["cli"])
    assert cli["target"] == ZOO_TARGET and 1.0 < cli["latency_ms"][0] < 100.0
    assert cli["latency_ms"][0] == pytest.approx(out["api"], rel=1e-12)
    # predicting needs numpy only: no boosting library, scipy, pandas or scikit-learn was imported
    assert out["heavy"] == []


def test_train_boosting_and_serve_in_a_core_only_interpreter(tmp_path):
    csv = tmp_path / "m.csv"
    from leti.space import sample

    rows = ["space,arch,target,latency_ms,source"]
    for i, (arch, text) in enumerate(sample("nb201", 160, 5)):
        g = arch.to_graph()
        rows.append(
            f"nasbench201,{text},core-test-cpu,{1 + g.total_macs / 2e7 + 0.01 * (i % 7):.6f},synthetic"
        )
    csv.write_text("\n".join(rows) + "\n")
    out = run_core(
        f"""
import io, contextlib
from leti.cli import main
err = io.StringIO()
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
    rcs = [main(["import", {str(csv)!r}]),
           main(["train", "--target", "core-test-cpu", "--predictor", "lightgbm", "--train-size", "120",
                 "--params", '{{"n_estimators": 50}}'])]
    gcn = main(["train", "--target", "core-test-cpu", "--predictor", "gcn", "--train-size", "120"])
from fastapi.testclient import TestClient
from leti.service.app import create_app
with TestClient(create_app()) as c:
    r = c.post("/v1/predict", json={{"target": "core-test-cpu", "archs": [{NB201!r}]}})
out = {{"rcs": rcs, "gcn": gcn, "gcn_err": err.getvalue(), "status": r.status_code, "body": r.json()}}
""",
        tmp_path,
    )
    assert out["rcs"] == [0, 0]
    assert (
        out["status"] == 200 and out["body"]["predictor"] == "lightgbm" and out["body"]["latency_ms"][0] > 0
    )
    # a family from an extra: one line naming the extra, not a traceback
    assert (
        out["gcn"] == 2 and "pip install 'leti[gcn]'" in out["gcn_err"] and "Traceback" not in out["gcn_err"]
    )


def _deps(spec: list[str]) -> set[str]:
    import re

    return {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower() for d in spec}


def test_pyproject_core_is_light_and_extras_are_ranges():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core, extras = _deps(meta["dependencies"]), meta["optional-dependencies"]
    for heavy in ("tensorflow", "tensorflow-cpu", "ai-edge-litert", "keras", "torch", "torch-geometric",
                  "adb-shell", "cryptography", "psycopg", "tensorly"):  # fmt: skip
        assert heavy not in core, heavy
    assert {"tensorflow-cpu", "ai-edge-litert"} <= _deps(extras["measure"])
    assert {"torch", "torch-geometric"} <= _deps(extras["gcn"])
    assert {"adb-shell", "cryptography", "psycopg"} <= _deps(extras["farm"])
    assert any("measure" in d and "gcn" in d and "farm" in d for d in extras["all"])
    pinned = [d for group in (meta["dependencies"], *extras.values()) for d in group if "==" in d]
    assert pinned == []  # environment pins live in the Makefile
    assert "torch==2.13.0" in (ROOT / "Makefile").read_text()
    # every optional module leti imports is mapped to the extra that installs it
    assert set(EXTRAS.values()) <= set(extras)


def test_zoo_ships_as_package_data():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data = meta["tool"]["setuptools"]["package-data"]["leti.zoo"]
    from leti.predictors.registry import saved
    from leti.zoo import ZOO_DIR

    rows = saved(None, ZOO_DIR, pretrained=False)
    assert rows, "the package has no pretrained predictors"
    import fnmatch

    for r in rows:
        for p in r.path.rglob("*"):
            if p.is_file():
                rel = p.relative_to(ZOO_DIR).as_posix()
                assert any(fnmatch.fnmatch(rel, pat) for pat in data), rel


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("LETI_TEST_CORE_VENV"), reason="set LETI_TEST_CORE_VENV=1: installs the core "
                    "dependencies into a new venv from the package index (minutes, network)")  # fmt: skip
def test_core_venv(tmp_path):
    """A real venv with only the core dependencies (pip install -e . from the index) predicts with the zoo."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run([py, "-m", "pip", "install", "--quiet", "-e", str(ROOT)], check=True, timeout=1800)
    for mod in ("tensorflow", "torch", "adb_shell"):
        r = subprocess.run([py, "-c", f"import {mod}"], capture_output=True)
        assert r.returncode != 0, f"{mod} got installed with the core"
    env = {**os.environ, "LETI_HOME": str(tmp_path / "home")}
    env.pop("PYTHONPATH", None)
    env.pop("LETI_ZOO", None)  # the package's own zoo
    r = subprocess.run([env_dir / "bin" / "leti", "predict", "--target", ZOO_TARGET, NB201, "--json"], env=env,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["latency_ms"][0] > 0
