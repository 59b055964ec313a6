"""Saved predictors are sealed (issue 11): every file of the directory, ``meta.json`` included, is checked against
the manifest before anything is parsed; ``meta.json`` fits a schema with bounded values; hyper-parameters are
checked and thread counts capped at the machine's cores. Real predictors, fitted on small synthetic data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from leti.errors import PredictorError
from leti.predictors import manifest
from leti.predictors import registry as R
from leti.predictors.base import Predictor
from leti.predictors.schema import cores
from leti.space import sample

REPO = Path(__file__).resolve().parents[1]
TARGET = "host-litert-cpu-1t"
NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|"


@pytest.fixture(scope="module")
def data():
    pairs = sample("nb201", 60, seed=3)
    graphs = [a.to_graph() for a, _ in pairs]
    y = np.array([0.3 + g.total_macs / 2e7 + 0.002 * g.n_nodes for g in graphs])
    return graphs, y * np.random.default_rng(3).lognormal(0, 0.03, y.size)


def one_line(fn, match: str = "."):
    with pytest.raises(PredictorError, match=match) as e:
        fn()
    assert "\n" not in str(e.value) and len(str(e.value)) < 800
    return str(e.value)


def cli(*args, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LETI_HOME": str(home), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "leti.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300, cwd=REPO)  # fmt: skip


def edit_meta(d: Path, **changes) -> None:
    meta = json.loads((d / "meta.json").read_text())
    for key, value in changes.items():
        node = meta
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    (d / "meta.json").write_text(json.dumps(meta))


# ---- the bugs of issue 11 ------------------------------------------------------------------------------------------
def test_edited_n_jobs_no_longer_crashes_predict(data, tmp_path):
    """``params.n_jobs`` set to 100000 in a LightGBM meta.json made ``leti predict`` die of SIGSEGV (exit 139).
    Edited, the directory no longer matches its seal: exit 2 and one line. Resealed on purpose, the thread count is
    capped at this machine's cores and the prediction runs."""
    graphs, y = data
    R.save_trained(R.make("lightgbm", n_estimators=30).fit(graphs, y), TARGET, {"metrics": {"acc10": 0.9}},
                   root=tmp_path / "predictors")  # fmt: skip
    d = R.current_dir(TARGET, "lightgbm", tmp_path / "predictors")
    edit_meta(d, **{"params.n_jobs": 100000})
    r = cli("predict", "--target", TARGET, NB201, home=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, (r.returncode, r.stderr)
    assert "meta.json does not match its SHA-256" in r.stderr
    manifest.seal(d)
    r = cli("predict", "--target", TARGET, NB201, "--json", home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert np.isfinite(json.loads(r.stdout)["latency_ms"][0])
    assert R.load_dir(d).get_params()["n_jobs"] == cores()


def test_gcn_weights_and_config_are_sealed(data, tmp_path):
    """Weights scaled by 1.5 in gcn.pt loaded silently (5.10 ms became 1.67 ms); gcn.json had no checksum."""
    graphs, y = data
    gcn = R.make("gcn", epochs=2, hidden=8, patience=2).fit(graphs, y)
    d = gcn.save(tmp_path / "gcn")
    state = torch.load(d / "gcn.pt", weights_only=True)
    torch.save({k: v * 1.5 for k, v in state.items()}, d / "gcn.pt")
    one_line(lambda: R.load_dir(d), "gcn.pt does not match its SHA-256")
    d = gcn.save(tmp_path / "gcn2")
    cfg = json.loads((d / "gcn.json").read_text())
    (d / "gcn.json").write_text(json.dumps({**cfg, "y_mu": cfg["y_mu"] + 1}))
    one_line(lambda: R.load_dir(d), "gcn.json does not match its SHA-256")


@pytest.mark.parametrize("change", [{"metrics.acc10": 1.0}, {"target": "other-target"}, {"params.robust": 3.0},
                                    {"n_train": 5}])  # fmt: skip
def test_meta_edits_are_refused(data, tmp_path, change):
    """Edits to metrics.acc10 (which picks the best family), target and params all loaded before."""
    graphs, y = data
    d = R.make("lut").fit(graphs, y).save(tmp_path / "lut", {"metrics": {"acc10": 0.5}, "target": TARGET})
    edit_meta(d, **change)
    one_line(lambda: R.load_dir(d), "meta.json does not match its SHA-256")
    manifest.seal(d)  # whoever reseals takes responsibility: then it loads
    assert R.load_dir(d).family == "lut"


def test_a_tampered_family_does_not_become_the_best(data, tmp_path):
    graphs, y = data
    root = tmp_path / "predictors"
    for fam, acc in (("lut", 0.9), ("flops", 0.2)):
        R.save_trained(R.make(fam).fit(graphs, y), TARGET, {"metrics": {"acc10": acc}}, root=root)
    edit_meta(R.current_dir(TARGET, "flops", root), **{"metrics.acc10": 1.0})
    assert R.load(TARGET, root=root).family == "lut"
    assert {e["family"] for e in R.list_trained(root)} == {"lut"}  # the tampered one is not offered


BAD_META = [
    ("deeply nested", {"extra": None}, "nested too deeply"),  # written as text below: too deep to build
    ("n_train a string", {"n_train": "x"}, "n_train"),
    ("n_train negative", {"n_train": -3}, "n_train"),
    ("n_train a bool", {"n_train": True}, "n_train"),
    ("metric a string", {"metrics": {"acc10": "high"}}, "metrics.acc10"),
    ("family a path", {"family": "../lut"}, "family"),
    ("target too long", {"target": "t" * 1000}, "target"),
    ("n_jobs a string", {"params": {"n_estimators": 30, "n_jobs": "abc"}}, "n_jobs"),
    ("n_estimators negative", {"params": {"n_estimators": -1}}, "n_estimators"),
    ("unknown param", {"params": {"n_trees": 3}}, "n_trees"),
    ("seed huge", {"seed": 10**30}, "seed"),
]  # fmt: skip


@pytest.mark.parametrize("meta, match", [c[1:] for c in BAD_META], ids=[c[0] for c in BAD_META])
def test_bad_meta_is_one_line_even_when_resealed(data, tmp_path, meta, match):
    """A deeply nested meta.json, or ``"n_train": "x"``, ended in a traceback."""
    graphs, y = data
    d = R.make("lightgbm", n_estimators=30).fit(graphs, y).save(tmp_path / "m")
    info = json.loads((d / "meta.json").read_text())
    (d / "meta.json").write_text(json.dumps({**info, **meta}) if "extra" not in meta else
                                 json.dumps(info)[:-1] + ', "extra": ' + "[" * 10000 + "]" * 10000 + "}")  # fmt: skip
    manifest.seal(d)
    one_line(lambda: R.load_dir(d), match)


def test_bad_meta_through_the_cli_is_exit_2(data, tmp_path):
    graphs, y = data
    R.save_trained(R.make("lut").fit(graphs, y), TARGET, root=tmp_path / "predictors")
    d = R.current_dir(TARGET, "lut", tmp_path / "predictors")
    (d / "meta.json").write_text(
        (d / "meta.json").read_text()[:-2] + ', "x": ' + "[" * 100000 + "]" * 100000 + "}"
    )
    manifest.seal(d)
    r = cli("predict", "--target", TARGET, "--predictor", "lut", NB201, home=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "nested too deeply" in r.stderr, r.stderr


# ---- the mechanism: every file, whoever wrote it -------------------------------------------------------------------
class Custom(Predictor):
    """A family this module makes up: its files are sealed by the base class, with no code of its own for it."""

    family = "custom"

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def _fit(self, graphs, y):
        self.mean_ = float(np.mean(y))

    def _predict(self, graphs):
        return np.full(len(graphs), self.mean_ * self.scale)

    def _save(self, d):
        (d / "weights.bin").write_bytes(np.array([self.mean_]).tobytes())
        (d / "calibration").mkdir()
        (d / "calibration" / "intervals.json").write_text(json.dumps({"q": [0.1, 0.9]}))

    def _load(self, d):
        self.mean_ = float(np.frombuffer((d / "weights.bin").read_bytes())[0])


def test_every_file_is_sealed_whatever_the_family(data, tmp_path):
    graphs, y = data
    good = Custom().fit(graphs, y).save(tmp_path / "good")
    listed = json.loads((good / "manifest.json").read_text())["files"]
    assert sorted(listed) == ["calibration/intervals.json", "meta.json", "weights.bin"]
    assert Custom.load(good).predict(graphs[:2]) == pytest.approx([np.mean(y)] * 2)

    def damaged(name, how):
        d = tmp_path / name
        shutil.copytree(good, d)
        how(d)
        return d

    cases = {
        "edited": (lambda d: (d / "calibration" / "intervals.json").write_text('{"q": [0.2, 0.9]}'), "SHA-256"),
        "removed": (lambda d: (d / "weights.bin").unlink(), "missing"),
        "added": (lambda d: (d / "calibration" / "extra.json").write_text("{}"), "not in manifest.json"),
        "linked": (lambda d: (d / "weights.bin").unlink() or (d / "weights.bin").symlink_to(good / "weights.bin"),
                   "link"),
        "no manifest": (lambda d: (d / "manifest.json").unlink(), "no manifest.json"),
        "manifest escapes": (lambda d: (d / "manifest.json").write_text(json.dumps(
            {"format": 1, "files": {"../good/weights.bin": "0" * 64}})), "outside"),
        "manifest nested": (lambda d: (d / "manifest.json").write_text("[" * 5000 + "]" * 5000), "nested"),
    }  # fmt: skip
    for name, (how, match) in cases.items():
        one_line(lambda name=name, how=how: Custom.load(damaged(name, how)), match)
    # a tool that adds a file afterwards (calibration, say) reseals, and the predictor loads again
    d = damaged("resealed", lambda d: (d / "calibration" / "extra.json").write_text("{}"))
    manifest.seal(d)
    assert Custom.load(d).predict(graphs[:1])[0] == pytest.approx(np.mean(y))


def test_auto_nested_model_is_sealed(data, tmp_path):
    graphs, y = data
    d = R.make("auto", candidates=["lut", "flops"], folds=2).fit(graphs, y).save(tmp_path / "auto")
    assert "model/meta.json" in json.loads((d / "manifest.json").read_text())["files"]
    edit_meta(d / "model", **{"n_train": 1})
    manifest.seal(d / "model")  # resealing the inner directory does not satisfy the outer seal
    one_line(lambda: R.load_dir(d), "model/meta.json does not match its SHA-256|model/manifest.json")


def test_save_replaces_the_whole_directory(data, tmp_path):
    graphs, y = data
    d = R.make("lightgbm", n_estimators=20).fit(graphs, y).save(tmp_path / "m")
    assert (d / "base").is_dir()  # the LUT base
    R.make("lightgbm", n_estimators=20, base="none").fit(graphs, y).save(d)
    assert not (d / "base").exists() and R.load_dir(d).base == "none"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary directories left


# ---- hyper-parameters ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("params, field", [
    ({"n_estimators": -1}, "params.n_estimators"), ({"n_estimators": "abc"}, "params.n_estimators"),
    ({"learning_rate": float("inf")}, "params.learning_rate"), ({"learning_rate": 1e400}, "params.learning_rate"),
    ({"n_estimators": 1.5}, "params.n_estimators"), ({"base": 3}, "params.base"), ({"n_trees": 3}, "params.n_trees"),
    ({"seed": -1}, "params.seed"), ({"n_jobs": True}, "params.n_jobs"),
])  # fmt: skip
def test_params_are_checked(params, field):
    msg = one_line(lambda: R.make("lightgbm", **params))
    assert msg.startswith(f"{field}: ")


def test_thread_counts_are_capped_at_the_cores():
    assert R.make("lightgbm", n_jobs=100000).n_jobs == cores()
    assert R.make("xgboost", n_jobs=3.0).n_jobs == min(3, cores())
    assert R.make("gcn", threads=None).threads is None
    assert R.make("gcn", threads=10**6).threads == cores()
