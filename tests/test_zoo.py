"""The pretrained zoo: a seeded, reproducible build from public data (here: synthetic files in the same formats), its
provenance, no measurements shipped, gzipped models read through the seal, the precedence of the user's own
predictors, and the zoo shipped in the package."""

from __future__ import annotations

import csv
import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest

from leti.cli import main
from leti.errors import LetiError, PredictorError
from leti.predictors import registry as R
from leti.predictors.metrics import METRIC_KEYS
from leti.space import nb201, sample
from leti.zoo import ZOO_DIR
from leti.zoo.build import Source, build, total_bytes

TARGETS = ("zt-cpu", "zt-gpu")
SOURCES = (
    Source("synthetic cells", "example/cells", "abc1234", "MIT", ("nasbench201__zt-cpu.csv", "nasbench201__zt-gpu.csv")),
    Source("synthetic models", "example/models", "def5678", "MIT", ("mlbench",), format="mobile-ml-benchmark",
           protocol="family", family="kernel"),
)  # fmt: skip
CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from leti.testing.mlbench_synth import write_mlbench

    d = tmp_path_factory.mktemp("public")
    rng = np.random.default_rng(0)
    archs = sample("nb201", 120, 7)
    for target, scale in zip(TARGETS, (2e7, 6e7), strict=True):
        with open(d / f"nasbench201__{target}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["space", "arch", "target", "latency_ms", "source"])
            for a, text in archs:
                g = a.to_graph()
                ms = (0.3 + g.total_macs / scale + 0.01 * g.n_nodes) * np.exp(rng.normal(0, 0.02))
                w.writerow(["nasbench201", text, target, f"{ms:.6f}", "synthetic"])
    write_mlbench(d / "mlbench")
    return d


def _build(out, data_dir, **kw):
    kw.setdefault("cands", [["lut", {}], ["flops", {}]])
    return build(out, data_dir, SOURCES, train_size=80, folds=2, **kw)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("zoo")
    built = _build(out, data_dir)
    return out, built


def _files(root: Path) -> dict[str, bytes]:
    """Every file's bytes, gzipped ones inflated (a measurement must not hide in a compressed file either)."""
    return {p.relative_to(root).as_posix(): gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


def test_build_covers_every_target_with_provenance(zoo):
    out, built = zoo
    targets = {b.target for b in built}
    assert set(TARGETS) <= targets and any(t.endswith("-gpu") and t.startswith("pixel4") for t in targets)
    for b in built:
        meta = json.loads((b.path / "meta.json").read_text())
        src = meta["source_data"]
        assert meta["source"] == "pretrained" and meta["licence"] == "MIT" == src["licence"]
        assert src["repo"].startswith("https://github.com/example/") and src["commit"] in (
            "abc1234",
            "def5678",
        )
        assert set(meta["metrics"]) >= set(METRIC_KEYS) and meta["n_test"] > 0
        p = meta["protocol"]
        if b.target in TARGETS:  # NAS cells: hash split, family by grouped CV on the training archs
            assert (
                p["split"] == "split_by_hash"
                and p["train_size"] == 80
                and p["seed"] == 0
                and b.family == "auto"
            )
            assert meta["auto_chosen"]["family"] in ("lut", "flops")
            assert "grouped by canonical hash" in p["family_choice"] and {c["family"] for c in p["cv_scores"]} == {
                "lut", "flops"}  # fmt: skip
        else:  # real models: leave-one-family-out metrics, fitted on all models
            assert (
                p["split"] == "family" and b.family == "kernel" and "leave one model family out" in p["test"]
            )
        assert "trained_at" not in meta and "fit_seconds" not in meta  # nothing that changes from run to run
    index = json.loads((out / "zoo.json").read_text())
    assert set(index["targets"]) == targets and index["total_bytes"] == total_bytes(out)


def test_build_is_reproducible(zoo, data_dir, tmp_path):
    out, _ = zoo
    again = tmp_path / "again"
    _build(again, data_dir)
    assert _files(again) == _files(out)


def test_every_pretrained_predictor_answers_with_intervals(zoo, monkeypatch):
    """NAS-cell predictors calibrate on their grouped CV, kernel ones on their leave-one-family-out predictions: both
    ship trust data, so a pretrained prediction comes with an interval and a flag."""
    from leti.service.api import PredictorCache

    out, built = zoo
    monkeypatch.setenv("LETI_ZOO", str(out))
    for b in built:
        loaded = PredictorCache().get(b.target, b.family, out)
        assert loaded.trust is not None, b.target


def test_no_measurement_ships(zoo, data_dir):
    out, _ = zoo
    blob = b"".join(_files(out).values())
    with open(data_dir / "nasbench201__zt-cpu.csv") as f:
        latencies = [row["latency_ms"] for row in csv.DictReader(f)]
    assert not [ms for ms in latencies if ms.encode() in blob]
    assert not list(out.rglob("*.csv")) and not list(out.rglob("*.db"))


def test_large_model_files_are_gzipped_and_stay_sealed(data_dir, tmp_path, monkeypatch):
    out = tmp_path / "zoo"
    _build(out, data_dir, cands=[["lightgbm", {"n_estimators": 300}]], targets=["zt-cpu"])
    d = out / "zt-cpu" / "auto" / "v1" / "model"  # the auto predictor ships with the candidate it chose
    assert (d / "model.txt.gz").is_file() and not (d / "model.txt").exists()
    monkeypatch.setenv("LETI_ZOO", str(out))
    pred = R.load("zt-cpu")
    assert pred.chosen_["family"] == "lightgbm" and pred.predict([nb201.from_string(CELL).to_graph()])[0] > 0
    raw = bytearray((d / "model.txt.gz").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (d / "model.txt.gz").write_bytes(bytes(raw))
    with pytest.raises(PredictorError):
        R.load("zt-cpu")


def test_users_own_predictor_takes_precedence(zoo, monkeypatch, capsys):
    out, _ = zoo
    monkeypatch.setenv("LETI_ZOO", str(out))
    hit = R.resolve("zt-cpu")
    assert hit.source == R.PRETRAINED and hit.answers
    g = [a.to_graph() for a, _ in sample("nb201", 40, 1)]
    mine = R.make("flops").fit(g, [1.0 + i % 5 for i in range(40)])
    R.save_trained(mine, "zt-cpu", {"metrics": {"acc10": 0.01}})  # worse on paper, but the user's own
    assert R.resolve("zt-cpu").source == R.TRAINED and R.load("zt-cpu").family == "flops"
    assert main(["predictors", "list", "--target", "zt-cpu", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["predictors"]
    assert [(r["source"], r["answers"]) for r in rows] == [("trained", True), ("pretrained", False)]
    assert main(["predictors", "rm", "zt-cpu", "--predictor", "flops"]) == 0
    assert "now answers with" in capsys.readouterr().out and R.resolve("zt-cpu").source == R.PRETRAINED
    assert main(["predictors", "rm", "zt-cpu", "--predictor", hit.family]) == 2
    assert "is pretrained" in capsys.readouterr().err
    assert main(["targets", "--json"]) == 0
    row = next(r for r in json.loads(capsys.readouterr().out)["targets"] if r["target"] == "zt-cpu")
    assert row["pretrained"] and row["predictor"]["source"] == "pretrained"


def test_missing_public_data_is_one_line(tmp_path, capsys):
    assert main(["zoo", "build", "-o", str(tmp_path / "z"), "--data", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("leti: error: data: missing nasbench201__") and err.count("\n") == 1


# ---- the zoo shipped in the package --------------------------------------------------------------------------------
def test_shipped_zoo_is_small_and_every_predictor_loads(monkeypatch):
    monkeypatch.delenv("LETI_ZOO")
    rows = R.saved(None, ZOO_DIR, pretrained=False)
    assert rows, "no pretrained predictors in leti/zoo: run leti zoo build -o leti/zoo"
    assert total_bytes(ZOO_DIR) <= 15_000_000
    index = json.loads((ZOO_DIR / "zoo.json").read_text())
    assert set(index["targets"]) == {r.target for r in rows}
    for r in rows:
        try:
            pred = R.family_class(r.family).load(r.path)
        except (LetiError, ImportError) as e:  # features changed since the build, …: the zoo must be rebuilt
            pytest.fail(f"{r.target}: {e}; rebuild with leti zoo build -o leti/zoo")
        for key in ("source_data", "licence", "protocol", "metrics"):
            assert r.meta.get(key), (r.target, key)
        if r.meta["protocol"]["split"] == "split_by_hash":
            assert pred.predict([nb201.from_string(CELL).to_graph()])[0] > 0
    assert os.environ.get("LETI_ZOO") is None
