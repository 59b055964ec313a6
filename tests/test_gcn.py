"""The gcn family: node features, learning, determinism and safe persistence (weights_only state dicts)."""

from __future__ import annotations

import gc
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from leti.errors import PredictorError
from leti.graph.layergraph import OP_CODE, LayerGraph
from leti.predictors import graph_tensors as GT
from leti.predictors import manifest
from leti.predictors.gcn import CONFIG_FILE, STATE_FILE, GCNPredictor
from leti.space import sample

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SMALL = dict(hidden=16, layers=1, epochs=25, patience=25, batch_size=32, lr=1e-2, threads=1)


def synthetic_latency(g: LayerGraph) -> float:
    """A made-up device: MACs of live layers cost time, every node has an overhead, dead convs cost a little."""
    conv = g.op == OP_CODE["conv"]
    live_macs = float(g.macs[g.live].sum())
    dead_conv_macs = float(g.macs[conv & ~g.live].sum())
    return 0.05 + 2e-8 * live_macs + 4e-9 * dead_conv_macs + 0.004 * int(g.live.sum())


@pytest.fixture(scope="module")
def data():
    archs = sample("nb201", 280, seed=3)
    graphs = [a.to_graph() for a, _ in archs]
    y = np.array([synthetic_latency(g) for g in graphs])
    hashes = np.array([a.hash for a, _ in archs], dtype=object)
    return graphs[:200], y[:200], hashes[:200], graphs[200:], y[200:]


@pytest.fixture(scope="module")
def fitted(data):
    g, y, h, _, _ = data
    return GCNPredictor(**SMALL, seed=0).fit(g, y, groups=h)


# ---- node features --------------------------------------------------------------------------------------------
def test_features_match_the_graph():
    g = sample("nb201", 1, seed=5)[0][0].to_graph()
    t = GT.features_of([g])
    assert t.x.shape == (g.n_nodes, GT.N_CONTINUOUS) and t.x.dtype == np.float32
    assert np.array_equal(t.op, g.op) and np.array_equal(t.src, g.src) and np.array_equal(t.dst, g.dst)
    col = {name: i for i, name in enumerate(GT.CONTINUOUS)}
    assert np.array_equal(t.x[:, col["live"]], g.live.astype(np.float32))
    np.testing.assert_allclose(t.x[:, col["log_macs"]], np.log2(1 + g.macs), rtol=1e-6)
    np.testing.assert_allclose(t.x[:, col["log_out_c"]], np.log2(1 + g.out_shape[:, 2]), rtol=1e-6)
    assert np.isfinite(t.x).all()


def test_cached_batches_equal_direct_features():
    graphs = [a.to_graph() for a, _ in sample("nb201", 5, seed=6)]
    graphs = graphs + graphs[:2]  # repeats are fine
    direct = GT.features_of(graphs)
    cache = GT.FeatureCache()
    for _ in range(2):  # cold, then warm
        b = cache.batch(graphs)
        for k in ("op", "act", "x", "src", "dst", "ptr"):
            assert np.array_equal(getattr(b, k), getattr(direct, k)), k
    assert len(cache) == 5


def test_cache_entries_die_with_their_graph():
    g0 = sample("nb201", 1, seed=7)[0][0].to_graph()
    g = LayerGraph.from_dict(g0.to_dict())  # a private copy, not held by any memo
    cache = GT.FeatureCache()
    cache.batch([g])
    assert len(cache) == 1
    del g
    gc.collect()
    assert len(cache) == 0


# ---- learning -------------------------------------------------------------------------------------------------
def test_learns_a_synthetic_latency(fitted, data):
    _, _, _, g_test, y_test = data
    p = fitted.predict(g_test)
    assert p.shape == y_test.shape and (p > 0).all()
    assert stats.spearmanr(p, y_test).statistic > 0.9
    assert np.median(np.abs(p / y_test - 1)) < 0.1


def test_deterministic_for_a_seed(data):
    g, y, _, g_test, _ = data
    kw = {**SMALL, "epochs": 4, "patience": 4}
    a = GCNPredictor(**kw, seed=1).fit(g[:120], y[:120]).predict(g_test)
    b = GCNPredictor(**kw, seed=1).fit(g[:120], y[:120]).predict(g_test)
    c = GCNPredictor(**kw, seed=2).fit(g[:120], y[:120]).predict(g_test)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_fit_and_predict_leave_global_torch_state_alone(data):
    g, y, _, _, _ = data
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    m = GCNPredictor(**{**SMALL, "epochs": 1, "threads": 1}).fit(g[:40], y[:40])
    m.predict(g[:5])
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize(
    "params",
    [
        {"conv": "gcn", "readout": "mean", "global_node": False},
        {"conv": "gin", "readout": "global"},
        {"conv": "graph", "layers": 2, "norm": False, "loss": "mse"},
    ],
)
def test_other_convs_and_readouts_run(params, data):
    g, y, _, g_test, _ = data
    m = GCNPredictor(**{**SMALL, "epochs": 1, **params}).fit(g[:60], y[:60])
    p = m.predict(g_test[:10])
    assert p.shape == (10,) and np.isfinite(p).all() and (p > 0).all()


# ---- interface and errors -------------------------------------------------------------------------------------
def test_bad_input_raises_predictor_errors(data):
    g, y, _, _, _ = data
    with pytest.raises(PredictorError, match="groups"):
        GCNPredictor(**SMALL).fit(g[:10], y[:10], groups=["a"] * 3)
    with pytest.raises(PredictorError, match="conv"):
        GCNPredictor(conv="transformer").fit(g[:10], y[:10])
    with pytest.raises(PredictorError, match="readout"):
        GCNPredictor(readout="global", global_node=False).fit(g[:10], y[:10])
    with pytest.raises(PredictorError, match="hidden"):
        GCNPredictor(hidden=0).fit(g[:10], y[:10])
    with pytest.raises(PredictorError, match="not fitted"):
        GCNPredictor().predict(g[:2])
    assert GCNPredictor().fit.__doc__  # the groups argument is documented


def test_empty_predict(fitted):
    assert fitted.predict([]).shape == (0,)


# ---- persistence ----------------------------------------------------------------------------------------------
def test_save_load_round_trip_is_identical(fitted, data, tmp_path):
    _, _, _, g_test, _ = data
    d = fitted.save(tmp_path / "m")
    assert sorted(p.name for p in d.iterdir()) == sorted(
        [CONFIG_FILE, STATE_FILE, "meta.json", "manifest.json"]
    )
    cfg = json.loads((d / CONFIG_FILE).read_text())
    assert cfg["features"] == list(GT.CONTINUOUS) and len(cfg["x_mean"]) == GT.N_CONTINUOUS
    loaded = GCNPredictor.load(d)
    assert loaded.get_params() == fitted.get_params()
    assert np.array_equal(loaded.predict(g_test), fitted.predict(g_test))


def test_load_never_needs_pickle(fitted, data, tmp_path, monkeypatch):
    """Loading goes through torch's weights-only unpickler: a broken pickle module does not matter."""
    _, _, _, g_test, _ = data
    d = fitted.save(tmp_path / "m")

    class NoUnpickler:
        def __init__(self, *a, **k):
            raise AssertionError("pickle.Unpickler must not be used")

    def no_load(*a, **k):
        raise AssertionError("pickle.load must not be used")

    monkeypatch.setattr(pickle, "Unpickler", NoUnpickler)
    monkeypatch.setattr(pickle, "load", no_load)
    monkeypatch.setattr(pickle, "loads", no_load)
    assert np.array_equal(GCNPredictor.load(d).predict(g_test), fitted.predict(g_test))


class Payload:
    """An arbitrary object: a pickle-based loader would rebuild it (and could run code while doing so)."""

    def __reduce__(self):
        return (Path, ("/tmp/owned",))


def test_tampered_state_with_objects_is_refused(fitted, tmp_path):
    d = fitted.save(tmp_path / "m")
    state = torch.load(d / STATE_FILE, weights_only=True)
    state["evil"] = Payload()
    torch.save(state, d / STATE_FILE)
    with pytest.raises(PredictorError, match="gcn.pt does not match its SHA-256"):
        GCNPredictor.load(d)
    manifest.seal(d)  # even resealed, the weights-only loader refuses the object
    with pytest.raises(PredictorError, match="cannot read the gcn model"):
        GCNPredictor.load(d)


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: (d / STATE_FILE).write_bytes(b"not a torch file"),
        lambda d: (d / STATE_FILE).write_bytes((d / STATE_FILE).read_bytes()[:200]),
        lambda d: (d / STATE_FILE).unlink(),
        lambda d: (d / CONFIG_FILE).write_text("{ not json"),
        lambda d: (d / CONFIG_FILE).write_text(json.dumps({"features": ["other"]})),
        lambda d: torch.save({"head.0.weight": torch.zeros(2, 2)}, d / STATE_FILE),
        lambda d: torch.save([torch.zeros(1)], d / STATE_FILE),
    ],
    ids=["garbage", "truncated", "missing", "bad-json", "other-features", "wrong-tensors", "not-a-dict"],
)
def test_corrupt_files_raise_predictor_error(damage, fitted, tmp_path):
    d = fitted.save(tmp_path / "m")
    damage(d)
    with pytest.raises(PredictorError, match="SHA-256|missing"):
        GCNPredictor.load(d)
    manifest.seal(d)  # resealed, the readers themselves refuse it, as one line
    with pytest.raises(PredictorError):
        GCNPredictor.load(d)


# ---- real measurements ----------------------------------------------------------------------------------------
@pytest.mark.skipif(not DATA.is_dir(), reason=f"real measurements not found at {DATA}")
def test_real_sd855_gpu_small():
    """Quick sanity check on real data: 200 training archs, a tiny model, ranks held-out archs well."""
    from leti.datasets import read_measurement_csv
    from leti.datasets.split import split_by_hash
    from leti.space import parse_arch

    rows = list(read_measurement_csv(DATA / "nasbench201__sd855-gpu.csv"))[:700]
    archs = [parse_arch(r.space, r.arch) for r in rows]
    graphs = [a.to_graph() for a in archs]
    y = np.array([r.latency_ms for r in rows])
    hashes = np.array([a.hash for a in archs], dtype=object)
    tr, te = split_by_hash(hashes, 200, seed=0)
    m = GCNPredictor(**SMALL).fit([graphs[i] for i in tr], y[tr], groups=hashes[tr])
    p = m.predict([graphs[i] for i in te])
    assert stats.spearmanr(p, y[te]).statistic > 0.9
    assert np.mean(np.abs(p / y[te] - 1) <= 0.1) > 0.9
