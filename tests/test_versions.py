"""Predictor versions: training never overwrites, the previous version is kept, ``leti predictors list|show|rm``
manage them, and the family that answers is chosen on one held-out set and recorded."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from leti.cli import main
from leti.datasets.archs import record_from_text
from leti.datasets.csvio import import_csv
from leti.datasets.store import Store
from leti.errors import PredictorError
from leti.predictors import evaluate as E
from leti.predictors import registry as R
from leti.space import sample

TARGET = "vt-cpu"


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "m.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["space", "arch", "target", "latency_ms", "source"])
        for a, text in sample("nb201", 150, 3):
            g = a.to_graph()
            ms = (0.4 + g.total_macs / 3e7 + 0.01 * g.n_nodes) * np.exp(rng.normal(0, 0.02))
            w.writerow(["nasbench201", text, TARGET, f"{ms:.6f}", "synthetic"])
    st = Store.open(tmp_path / "leti.db")
    import_csv(st, path, record_from_text)
    yield st
    st.close()


def test_training_again_keeps_the_previous_version(store):
    _, m1 = E.train(store, TARGET, "lut", 60, seed=0, save=True)
    _, m2 = E.train(store, TARGET, "lut", 80, seed=1, save=True)
    assert (m1["version"], m2["version"]) == (1, 2) and m1["path"] != m2["path"]
    rows = [r for r in R.saved(TARGET) if r.family == "lut"]
    assert [(r.version, r.current) for r in rows] == [(1, False), (2, True)]
    assert R.load(TARGET, "lut").meta_["seed"] == 1 and R.load(TARGET, "lut", version=1).meta_["seed"] == 0
    assert (
        R.remove(TARGET, "lut", 2) and R.load(TARGET).meta_["version"] == 1
    )  # the previous one answers again
    with pytest.raises(PredictorError, match="no saved lut v7"):
        R.remove(TARGET, "lut", 7)


def test_best_family_is_chosen_on_one_held_out_set_and_recorded(store):
    E.train(store, TARGET, "flops", 60, save=True)
    _, meta = E.train(store, TARGET, "lut", 90, seed=2, save=True)
    sel = meta["selection"]
    seen = set(R.load(TARGET, "flops").meta_["train_hashes"]) | set(meta["train_hashes"])
    # every candidate was scored on the same archs: those neither was trained on
    assert sel["n_test"] == sum(1 for h in E.target_data(store, TARGET).hashes if h not in seen)
    assert set(sel["scores"]) == {"flops", "lut"} and sel["scores"]["lut"]["version"] == 1
    best = max(sel["scores"], key=lambda f: sel["scores"][f]["acc10"])
    assert sel["family"] == best == R.resolve(TARGET).family
    assert R.read_selection(TARGET)["family"] == best
    # a predictor saved outside ``train`` makes the recorded choice stale: back to the recorded test acc@10
    other = "flops" if best == "lut" else "lut"
    g = [a.to_graph() for a, _ in sample("nb201", 30, 9)]
    R.save_trained(
        R.make(other).fit(g, [1.0 + i % 3 for i in range(30)]), TARGET, {"metrics": {"acc10": 2.0}}
    )
    assert R.resolve(TARGET).family == other


def test_reserved_version_directories_never_collide(tmp_path):
    a = R.next_version_dir("t", "lut", tmp_path)
    b = R.next_version_dir("t", "lut", tmp_path)
    assert (a.name, b.name) == ("v1", "v2")
    assert R.saved("t", tmp_path, pretrained=False) == []  # reserved, nothing saved yet: not a version


def test_cli_train_list_show_rm(store, capsys):
    args = [
        "--store",
        str(store.path),
        "train",
        "--target",
        TARGET,
        "--predictor",
        "lut",
        "--train-size",
        "60",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "saved lut v1 to " in out and "now answers with lut v1" in out
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "saved lut v2 to " in out and "v1 and older kept" in out
    assert main(["predictors", "list", "--all", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["predictors"]
    assert [(r["version"], r["current"], r["answers"]) for r in rows] == [(1, False, False), (2, True, True)]
    assert main(["predictors", "show", TARGET, "--version", "1", "--predictor", "lut", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 1
    assert main(["predictors", "rm", TARGET, "--predictor", "lut", "--version", "2"]) == 0
    assert "now answers with lut v1" in capsys.readouterr().out
    assert main(["predictors", "rm", TARGET, "--predictor", "lut"]) == 0
    assert "no predictor is left" in capsys.readouterr().out
    assert main(["predictors", "show", TARGET]) == 2
    assert "no trained predictor" in capsys.readouterr().err
