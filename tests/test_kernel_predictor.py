"""The ``kernel`` family: fitting from whole-model times and from kernel measurements, explain, save/load."""

import json

import numpy as np
import pytest

from leti.errors import PredictorError
from leti.predictors import fusion as FU
from leti.predictors.kernel import KernelPredictor, KernelSamples, kernels_of
from leti.predictors.registry import FAMILIES, load_dir, make
from leti.space import sample


@pytest.fixture(scope="module")
def graphs():
    return [a.to_graph() for a, _ in sample("leti", 60, seed=3)]


def synthetic_ms(graphs, ruleset="cpu"):
    """A latency made of kernels: 2 ms per GMAC (tile-rounded), 20 µs per kernel, 0.3 ms per model."""
    out = []
    for g in graphs:
        k = kernels_of(g, ruleset)
        out.append(0.3 + 2e-9 * k.rows[:, FU.COL["tile_macs"]].sum() + 0.02 * len(k))
    return np.array(out)


def test_registered():
    assert "kernel" in FAMILIES
    assert isinstance(make("kernel", rules="gpu"), KernelPredictor)
    with pytest.raises(PredictorError, match="rules"):
        make("kernel", rules="npu").fit([], [])
    for bad in ({"features": "huge"}, {"kernel_model": "svm"}, {"ridge": -1}):
        with pytest.raises(PredictorError):
            KernelPredictor(**bad)._check()


def test_fit_recovers_kernel_costs(graphs):
    y = synthetic_ms(graphs)
    tr, te = slice(0, 40), slice(40, 60)
    p = KernelPredictor(features="full", ridge=0.0).fit(graphs[tr], y[tr])
    pred = p.predict(graphs[te])
    assert np.max(np.abs(pred - y[te]) / y[te]) < 0.05
    assert p.rules_ == "cpu" and p.n_train_ == 40


def test_auto_choice_by_groups(graphs):
    y = synthetic_ms(graphs)
    groups = [i % 5 for i in range(len(graphs))]
    p = KernelPredictor().fit(graphs, y, groups=groups)
    assert p.features_ in ("small", "full") and p.cv_  # chosen by grouped CV
    with pytest.raises(PredictorError, match="groups"):
        KernelPredictor().fit(graphs, y, groups=groups[:-1])


def test_target_picks_rules(graphs):
    y = synthetic_ms(graphs, "gpu")
    assert KernelPredictor().fit(graphs, y, target="pixel4-tflite-gpu").rules_ == "gpu"
    assert KernelPredictor().fit(graphs, y, target="iphone7-tflite-gpu").rules_ == "metal"


def test_explain_adds_up(graphs):
    y = synthetic_ms(graphs)
    p = KernelPredictor(features="full").fit(graphs, y)
    g = graphs[7]
    e = p.explain(g)
    assert len(e["kernels"]) == len(kernels_of(g, "cpu"))
    assert e["total_ms"] == pytest.approx(float(p.predict([g])[0]), rel=1e-9)
    assert sum(k["ms"] for k in e["kernels"]) + e["overhead_ms"] == pytest.approx(e["total_ms"], rel=1e-9)
    first = e["kernels"][0]
    assert {"h_in", "c_in", "c_out", "k", "stride", "groups"} <= set(first["config"]) and first["ops"]
    assert e["kernels_outside_training_ranges"] == 0  # a training graph is inside its own ranges


def test_kernels_outside_training_ranges(graphs, tmp_path):
    from leti.graph.builder import GraphBuilder

    p = KernelPredictor(features="full").fit(graphs, synthetic_ms(graphs))
    b = GraphBuilder()
    b.conv(b.input((224, 224, 3)), 4096, 3)  # far wider and larger than any leti-space conv
    e = p.explain(b.finish())
    assert e["kernels_outside_training_ranges"] == 1 and "c_out" in e["kernels"][0]["outside"]
    q = load_dir(p.save(tmp_path / "k"))
    assert q.explain(b.finish())["kernels"][0]["outside"] == e["kernels"][0]["outside"]


def _kernel_samples(graphs, ruleset):
    """Per-node times for the head node of every kernel: 1 ms per GMAC + 10 µs."""
    node_ms = []
    for g in graphs:
        k = kernels_of(g, ruleset)
        node_ms.append(
            {ns[0]: 1e-9 * float(r[FU.COL["macs"]]) + 0.01 for ns, r in zip(k.nodes, k.rows, strict=True)}
        )
    return KernelSamples.from_node_times(graphs, node_ms, ruleset)


def test_kernel_measurements_and_round_trip(graphs, tmp_path):
    s = _kernel_samples(graphs[:40], "gpu")
    assert len(s) > 100 and s.rows.shape[1] == len(FU.COLUMNS)
    y = synthetic_ms(graphs, "gpu")
    p = KernelPredictor(features="small").fit(graphs[:40], y[:40], kernels=s, target="pixel4-tflite-gpu")
    assert p.kreg_ is not None and {"conv1x1", "conv3x3"} & set(p.kreg_.groups_)
    d = p.save(tmp_path / "k")
    files = sorted(f.name for f in d.iterdir())
    assert "kernel.json" in files and "kernel_model.txt" in files and "manifest.json" in files
    assert not any(f.endswith((".pkl", ".pickle", ".joblib")) for f in files)
    q = load_dir(d)
    assert isinstance(q, KernelPredictor)
    np.testing.assert_allclose(q.predict(graphs[40:]), p.predict(graphs[40:]), rtol=1e-12)
    assert q.explain(graphs[41])["total_ms"] == pytest.approx(p.explain(graphs[41])["total_ms"])


def test_tampered_files_are_refused(graphs, tmp_path):
    p = KernelPredictor(features="full").fit(graphs, synthetic_ms(graphs))
    d = p.save(tmp_path / "k")
    f = d / "kernel.json"
    f.write_text(f.read_text().replace("[", "[-1, ", 1))
    with pytest.raises(PredictorError, match="SHA-256"):
        load_dir(d)
    # a consistent file (re-sealed) with negative coefficients is refused too
    from leti.predictors import manifest
    from leti.predictors.registry import write_json_checked

    info = json.loads((tmp_path / "k" / "kernel.json").read_text().replace("[-1, ", "[", 1))
    info["coef"][0] = -1.0
    write_json_checked(f, info)
    manifest.seal(d)
    with pytest.raises(PredictorError, match="non-negative"):
        load_dir(d)


def test_from_kernels(graphs, tmp_path):
    s = _kernel_samples(graphs, "cpu")
    p = KernelPredictor.from_kernels(s, "cpu", overhead_ms=0.5)
    g = graphs[3]
    k = kernels_of(g, "cpu")
    expect = 0.5 + sum(1e-9 * float(r[FU.COL["macs"]]) + 0.01 for r in k.rows)
    assert float(p.predict([g])[0]) == pytest.approx(expect, rel=0.15)
    q = load_dir(p.save(tmp_path / "fk"))
    assert float(q.predict([g])[0]) == pytest.approx(float(p.predict([g])[0]))
    with pytest.raises(PredictorError):
        KernelPredictor.from_kernels(KernelSamples.empty(), "cpu")


def test_a_model_with_no_kernels_is_refused(graphs):
    from leti.graph.builder import GraphBuilder

    p = KernelPredictor(features="full").fit(graphs, synthetic_ms(graphs))
    b = GraphBuilder()
    b.input((8, 8, 3))
    empty = b.finish()
    with pytest.raises(PredictorError, match="no kernels"):
        p.predict([graphs[0], empty])
    with pytest.raises(PredictorError, match="no kernels"):
        p.explain(empty)
