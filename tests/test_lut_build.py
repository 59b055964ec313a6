"""The one round-robin measuring loop behind ``leti lut build`` and the host layer LUT, on this machine."""

from __future__ import annotations

import pytest

from leti.device_runner.local import LocalRunner, settings_for_target
from leti.errors import LetiError
from leti.graph.builder import GraphBuilder
from leti.tflite.flatbuffer import graph_to_tflite
from leti.workflows.lut_build import round_robin

TARGET = "host-litert-cpu-1t"


def _model(channels: int) -> bytes:
    b = GraphBuilder()
    b.conv(b.input((16, 16, 3)), channels, 3)
    return graph_to_tflite(b.finish(), seed=0)


def test_round_robin_measures_every_model_each_pass_and_builds_once():
    settings, _ = settings_for_target(TARGET, warmup=1, runs=3)
    built, calls = [], []

    def lazy():
        built.append(1)
        return _model(8)

    with LocalRunner() as runner:
        ms = round_robin(
            runner, settings, [_model(4), lazy], 3, "min", lambda done, total: calls.append(done)
        )
    assert len(ms) == 2 and all(m > 0 for m in ms)
    assert calls == list(range(1, 7)) and len(built) == 1  # a small model is kept for the later passes
    with pytest.raises(LetiError, match="rounds"):
        round_robin(LocalRunner(), settings, [_model(4)], 0)
    with pytest.raises(LetiError, match="stat"):
        round_robin(LocalRunner(), settings, [_model(4)], 1, "p99")


def test_lut_calibrate_scales_the_saved_table_to_the_stored_models(tmp_path, capsys):
    """``leti lut calibrate``: a saved lut (here from a table, no measuring) is scaled to whole models in the store."""
    import json

    import numpy as np

    from leti.cli import main
    from leti.datasets.archs import arch_record
    from leti.datasets.store import Store
    from leti.predictors.lut import LUTPredictor, layer_signatures
    from leti.predictors.manifest import verify
    from leti.predictors.registry import load, save_trained, saved
    from leti.space import sample

    target = "pixel4-tflite-cpu-1large"
    archs = [a for a, _ in sample("nb201", 12, seed=4)]
    graphs = [a.to_graph() for a in archs]
    table = {
        s: 0.01 + 1e-3 * i
        for i, s in enumerate(sorted({s for g in graphs for s in layer_signatures(g, "skip")}))
    }
    lut = LUTPredictor.from_table(table, states="skip", overhead_ms=0.1)
    save_trained(lut, target, {"source": "test table"})
    store_path = tmp_path / "s.db"
    st = Store.open(store_path)
    recs = [arch_record(a) for a in archs]
    st.upsert_archs(recs)
    y = 1.7 * lut.predict(graphs)  # the whole models run 1.7x the sum of their layers
    st.add_measurements_bulk([{"arch_id": r.arch_id, "target": target, "latency_ms": float(v)}
                              for r, v in zip(recs, y, strict=True)])  # fmt: skip
    assert (
        main(["--store", str(store_path), "lut", "calibrate", "--target", target, "-n", "8", "--json"]) == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["n_models"] == 8 and out["scale_before"] == 1.0 and out["scale"] == pytest.approx(1.7)
    assert out["mape_before"] == pytest.approx(0.7 / 1.7) and out["mape_after"] < 1e-9
    again = load(target, "lut")
    assert np.allclose(again.predict(graphs), y) and again.meta_["source"] == "test table"
    assert again.meta_["calibration"]["n_models"] == 8
    # a new, sealed version through the registry's save path; the uncalibrated one stays as v1
    rows = {r.version: r for r in saved(target) if r.family == "lut"}
    assert sorted(rows) == [1, 2] and rows[2].current and out["path"] == str(rows[2].path)
    verify(rows[2].path)
    assert np.allclose(load(target, "lut", version=1).predict(graphs), y / 1.7)
    # nothing measured on another target: a one-line error, exit 2, the saved table unchanged
    save_trained(lut, "s10-tflite-cpu-1large")
    assert main(["--store", str(store_path), "lut", "calibrate", "--target", "s10-tflite-cpu-1large"]) == 2
    assert "no whole-model measurements" in capsys.readouterr().err
    assert main(["--store", str(store_path), "lut", "calibrate", "--target", "mi8se-tflite-cpu-1large"]) == 2
    assert "no trained predictor" in capsys.readouterr().err


def test_lut_calibrate_end_to_end_on_the_host(tmp_path, capsys):
    """``lut build`` then ``generate`` then ``lut calibrate``, all measured on this machine (few archs, few runs)."""
    import json

    import numpy as np

    from leti.cli import main
    from leti.datasets.store import Store
    from leti.importers.inputs import stored_graph
    from leti.predictors.registry import load, saved

    store, target = str(tmp_path / "s.db"), "host-litert-cpu-1t"
    fast = ["--runs", "2", "--warmup", "1"]
    assert main(["lut", "build", "--target", target, "--space", "nb201", "-n", "3", "--rounds", "1", "--seed", "1",
                 "--json", *fast]) == 0  # fmt: skip
    assert main(["generate", "--space", "nb201", "-n", "4", "--seed", "2", "--target", target, "--quiet",
                 "--store", store, *fast]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["lut", "calibrate", "--target", target, "--store", store, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_models"] == 4 and out["scale"] > 0 and out["scale_before"] == 1.0
    rows = sorted(r.version for r in saved(target) if r.family == "lut")
    assert rows == [1, 2] and load(target, "lut").meta_["calibration"]["scale"] == pytest.approx(out["scale"])
    # calibrated: its median ratio to the measured models is 1, and it is the uncalibrated table times the scale
    df = (
        Store.open(store)
        .measurements(target=target)
        .groupby("arch_id")
        .agg(text=("arch_text", "first"), ms=("latency_ms", "median"))
    )
    graphs = [stored_graph("nb201", t) for t in df["text"]]
    after, before = load(target, "lut").predict(graphs), load(target, "lut", version=1).predict(graphs)
    assert np.median(df["ms"].to_numpy() / after) == pytest.approx(1.0)
    assert np.allclose(after, out["scale"] * before)
