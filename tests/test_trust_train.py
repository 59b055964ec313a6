"""Training with trust from a store: intervals saved with the predictor, coverage in evaluate, and the few-shot family
learnt from source targets (synthetic devices that are scaled copies), with its bad-input errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from trust_devices import write_csv

from leti.datasets.archs import record_from_text, target_data
from leti.datasets.csvio import import_csv
from leti.datasets.store import Store
from leti.errors import LetiError
from leti.predictors import evaluate as E
from leti.predictors.fewshot_data import suggest_archs
from leti.predictors.registry import current_dir, load
from leti.trust import TRUST_FILE
from leti.trust import load as load_trust


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("trust_store")
    path = d / "m.csv"
    archs = write_csv(path, new_conv=8.0, new_add=0.02)  # the new target: a scaled copy of srca-cpu
    st = Store.open(d / "leti.db")
    import_csv(st, path, record_from_text)
    yield st, archs
    st.close()


def test_saved_predictor_carries_trust_and_evaluate_reports_coverage(store, tmp_path):
    st, _ = store
    pred, meta = E.train(st, "srca-cpu", "lut", 150, save=True, root=tmp_path)
    d = current_dir("srca-cpu", "lut", tmp_path)
    assert (d / TRUST_FILE).is_file() and TRUST_FILE in json.loads((d / "manifest.json").read_text())["files"]
    assert 0.75 <= meta["trust"]["coverage"] <= 1.0 and meta["trust"]["n_calibration"] == 150
    ev = E.evaluate(st, "srca-cpu", "lut", root=tmp_path)
    assert ev["coverage"] == pytest.approx(meta["trust"]["coverage"])
    assert ev["interval_rel_width"] > 0 and 0 <= ev["ood_share"] <= 0.1
    assert E.evaluate(st, "srca-cpu", "lut", root=tmp_path, coverage=0.5)["coverage"] < ev["coverage"]
    # not saving: no calibration unless asked
    _, meta = E.train(st, "srca-cpu", "flops", 100)
    assert "trust" not in meta
    assert load_trust(d) is not None and load("srca-cpu", "lut", tmp_path).family == "lut"


def test_fewshot_from_sources_on_k_archs(store, tmp_path):
    st, _ = store
    pred, meta = E.train(
        st, "newc-cpu", "fewshot", 10, save=True, root=tmp_path, sources=["srca-cpu", "srcb-gpu"]
    )
    assert meta["n_train"] == 10 and meta["n_test"] == 50
    assert meta["metrics"]["acc10"] >= 0.8 and meta["metrics"]["spearman"] >= 0.9
    assert [s["target"] for s in meta["sources"]] == ["srca-cpu", "srcb-gpu"]
    assert meta["trust"]["coverage"] >= 0.7 and meta["trust"]["ood_share"] <= 0.1
    back = load("newc-cpu", "fewshot", tmp_path)
    g = target_data(st, "newc-cpu").graphs()
    assert np.allclose(back.predict(g), pred.predict(g))
    # default sources: every other target measured in the space; all measured archs: nothing left to test
    _, meta = E.train(st, "newc-cpu", "fewshot", 60)
    assert {s["target"] for s in meta["sources"]} == {"srca-cpu", "srcb-gpu"} and meta["n_test"] == 0
    assert meta["metrics"] == {}


def test_fewshot_train_archs_are_exactly_those(store):
    st, archs = store
    chosen = [(a, f"archs.jsonl line {i + 1}") for i, (a, _) in enumerate(archs[5:17])]
    _, meta = E.train(st, "newc-cpu", "fewshot", None, sources=["srca-cpu"], train_archs=chosen)
    assert meta["split"] == "train_archs" and meta["n_train"] == 12
    assert set(meta["train_hashes"]) == {a.hash for a, _ in chosen}


@pytest.mark.parametrize(
    "kwargs,field,match",
    [
        ({"train_size": 0}, "train_size", "positive"),
        ({"train_size": 61}, "train_size", "more than the 60"),
        ({"sources": ["nope-cpu"]}, "sources", "unknown target"),
        ({"sources": ["newc-cpu"]}, "sources", "the target itself"),
        ({"sources": ["srca-cpu", "srca-cpu"]}, "sources", "twice"),
    ],
)
def test_fewshot_bad_input_names_the_field(store, kwargs, field, match):
    st, _ = store
    args = {"train_size": 10, "sources": ["srca-cpu"], **kwargs}
    with pytest.raises(LetiError, match=match) as e:
        E.train(st, "newc-cpu", "fewshot", **args)
    assert e.value.field == field and "\n" not in str(e.value)


def test_fewshot_rejects_unmeasured_train_archs_and_spaceless_sources(store):
    st, archs = store
    unmeasured = (archs[200][0], "archs.jsonl line 3")  # measured on the sources only
    with pytest.raises(LetiError, match="not measured on newc-cpu") as e:
        E.train(st, "newc-cpu", "fewshot", None, sources=["srca-cpu"], train_archs=[unmeasured])
    assert e.value.field == "archs.jsonl line 3"
    with pytest.raises(LetiError, match="fbx-cpu has no measurements in nasbench201") as e:
        E.train(st, "newc-cpu", "fewshot", 10, sources=["srca-cpu", "fbx-cpu"])
    assert e.value.field == "sources"
    with pytest.raises(LetiError) as e:
        E.train(st, "srca-cpu", "lut", 100, sources=["srcb-gpu"])
    assert e.value.field == "sources"


def test_suggest_archs_for_a_new_and_a_measured_target(store):
    st, _ = store
    picks = suggest_archs(st, "brandnew-gpu", "nb201", 6, sources=["srca-cpu", "srcb-gpu"], pool=120)
    assert len(picks) == 6 and len({a.hash for a, _ in picks}) == 6
    assert all(a.space == "nasbench201" and "|" in text for a, text in picks)
    measured = set(target_data(st, "newc-cpu").hashes)
    again = suggest_archs(st, "newc-cpu", "nb201", 6, pool=120)  # sources: every other NB201 target
    assert not {a.hash for a, _ in again} & measured
    with pytest.raises(LetiError) as e:
        suggest_archs(st, "brandnew-gpu", "nb201", 0)
    assert e.value.field == "n"
    with pytest.raises(LetiError) as e:
        suggest_archs(st, "brandnew-gpu", "nb201", 3, sources=["fbx-cpu"])
    assert e.value.field == "sources"
