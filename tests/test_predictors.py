"""Predictor families on synthetic data: fit, predict, save, load (exactly), and their specific promises."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from leti.errors import GraphError, PredictorError
from leti.graph.builder import GraphBuilder
from leti.predictors import auto as AU
from leti.predictors import calibrate as C
from leti.predictors import features as F
from leti.predictors import lut as L
from leti.predictors import manifest
from leti.predictors import registry as R
from leti.predictors.auto import AutoPredictor, kfold_indices
from leti.predictors.flops import FlopsPredictor
from leti.predictors.linear import ALPHAS as L_ALPHAS
from leti.predictors.metrics import metrics
from leti.space import sample

FAST = {  # small but real models: the tests train them for real
    "lut": {},
    "flops": {"clusters": 2},
    "linear": {},
    "xgboost": {"n_estimators": 150},
    "lightgbm": {"n_estimators": 150},
    "catboost": {"n_estimators": 150},
    "auto": {
        "candidates": [["flops", {}], ["lut", {}], ["lightgbm", {"n_estimators": 60}]],
        "folds": 3,
        "repeats": 1,
    },
}
TABULAR = tuple(FAST)


def synthetic_latency(graphs, seed: int = 0, noise: float = 0.02) -> np.ndarray:
    """ms = overhead + MACs + per-op costs, with multiplicative noise: roughly what a phone does."""
    X = F.featurize(graphs)
    rng = np.random.default_rng(seed)
    ms = (
        0.3
        + X[:, F.feature_index("tot.live_macs")] / 2e7
        + 0.01 * X[:, F.feature_index("kind.add.live.count")]
        + 0.004 * X[:, F.feature_index("kind.avgpool_s1.live.count")] * 16
    )
    return ms * np.exp(rng.normal(0, noise, len(graphs)))


@pytest.fixture(scope="module")
def data():
    graphs = [a.to_graph() for a, _ in sample("nb201", 200, seed=11)]
    return graphs, synthetic_latency(graphs)


def fitted(family: str, data) -> R.Predictor:
    graphs, y = data
    return R.make(family, **FAST[family]).fit(graphs[:150], y[:150])


# ---- every family ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", TABULAR)
def test_fit_predict_save_load_round_trip(family, data, tmp_path):
    graphs, y = data
    pred = fitted(family, data)
    p = pred.predict(graphs[150:])
    assert p.shape == (50,) and np.isfinite(p).all() and (p > 0).all()
    m = metrics(y[150:], p)
    if family == "flops":  # one line in MACs cannot see the per-op costs: it only has to rank well
        assert m["spearman"] > 0.75, m
    else:
        assert m["acc10"] >= 0.85, m
    pred.save(tmp_path / family, {"note": "test"})
    back = R.load_dir(tmp_path / family)
    assert type(back) is type(pred) and back.family == family
    assert np.array_equal(back.predict(graphs[150:]), p)  # exactly the same numbers
    assert back.get_params() == json.loads(json.dumps(pred.get_params()))
    assert back.meta_["note"] == "test" and back.n_train_ == 150


def test_families_and_errors():
    assert set(TABULAR) <= set(R.FAMILIES) and "gcn" in R.FAMILIES
    with pytest.raises(PredictorError, match="unknown predictor family"):
        R.make("svm")
    with pytest.raises(PredictorError, match="unknown hyper-parameter"):
        R.make("lightgbm", n_trees=3)
    with pytest.raises(PredictorError, match="not fitted"):
        R.make("xgboost").predict([])
    with pytest.raises(PredictorError, match="objective"):
        R.make("lightgbm", objective="poisson").fit(*_tiny())
    assert R.make("lightgbm").get_params()["base"] == "lut"


def _tiny():
    g = [a.to_graph() for a, _ in sample("nb201", 12, seed=2)]
    return g, synthetic_latency(g)


def test_boosting_objectives_and_no_base(data):
    graphs, y = data
    for fam in ("xgboost", "lightgbm", "catboost"):
        for obj in ("l1", "quantile", "huber"):
            alpha = 0.05 if obj == "huber" else 0.6
            p = R.make(fam, n_estimators=60, objective=obj, alpha=alpha).fit(graphs[:150], y[:150])
            assert metrics(y[150:], p.predict(graphs[150:]))["acc10"] > 0.7, (fam, obj)
        plain = R.make(fam, n_estimators=150, base="none").fit(graphs[:150], y[:150])
        assert plain.base_ is None and metrics(y[150:], plain.predict(graphs[150:]))["acc10"] > 0.7


# ---- lut ---------------------------------------------------------------------------------------------------------
def random_chains(n: int, seed: int) -> list:
    """Chains of layers drawn independently from a small menu: every layer's count varies on its own, so every
    layer time is identifiable from whole-network sums."""
    rng = np.random.default_rng(seed)
    menu = (
        lambda b, x: b.conv(x, 16, 3, act="relu", bn=True),
        lambda b, x: b.conv(x, 16, 1),
        lambda b, x: b.dwconv(x, 3, bn=True),
        lambda b, x: b.pool("avgpool", x, 3, 1),
        lambda b, x: b.act(x, "hswish"),
        lambda b, x: b.bn(x),
        None,  # a residual add of the last two tensors
    )
    out = []
    for _ in range(n):
        b = GraphBuilder()
        prev = x = b.input((16, 16, 16))
        layers = np.repeat(np.arange(len(menu)), rng.integers(0, 4, len(menu)))
        for j in rng.permutation(layers) if layers.size else [0]:
            prev, x = x, (b.add((prev, x)) if menu[j] is None else menu[j](b, x))
        out.append(b.finish())
    return out


def test_lut_nnls_recovers_known_layer_times():
    graphs = random_chains(120, seed=5)
    gidx, ids, cnt = L.design(graphs, "skip")
    used = np.unique(ids)
    assert used.size == 7
    rng = np.random.default_rng(1)
    true = dict(zip(used.tolist(), rng.uniform(0.01, 0.5, used.size), strict=True))
    y = 0.7 + np.bincount(gidx, weights=cnt * np.array([true[i] for i in ids]), minlength=len(graphs))
    pred = L.LUTPredictor(states="skip").fit(graphs[:100], y[:100])
    assert pred.overhead_ == pytest.approx(0.7, rel=1e-6)
    for i in used:
        sig = L.format_signature(L.SIGNATURES.row("skip", int(i)))
        assert pred.table[sig] == pytest.approx(true[int(i)], rel=1e-6), sig
    assert np.allclose(pred.predict(graphs[100:]), y[100:], rtol=1e-7)
    # the same with measurement noise: close, not exact
    noisy = y * np.exp(np.random.default_rng(2).normal(0, 0.01, y.size))
    approx = L.LUTPredictor(states="skip").fit(graphs[:100], noisy[:100])
    for i in used:
        sig = L.format_signature(L.SIGNATURES.row("skip", int(i)))
        assert approx.table[sig] == pytest.approx(true[int(i)], rel=0.15, abs=0.02), sig


def test_lut_nnls_on_a_cell_space_predicts_exact_sums():
    # NB201 layers always come in fixed combinations (ReLU before each conv, the same cell in every stage): single
    # layer times are not identifiable, but every network's sum still is
    graphs = [a.to_graph() for a, _ in sample("nb201", 300, seed=5)]
    gidx, ids, cnt = L.design(graphs, "skip")
    cost = np.random.default_rng(1).uniform(0.01, 0.5, int(ids.max()) + 1)
    y = 0.7 + np.bincount(gidx, weights=cnt * cost[ids], minlength=len(graphs))
    pred = L.LUTPredictor(states="skip").fit(graphs[:250], y[:250])
    assert np.allclose(pred.predict(graphs[250:]), y[250:], rtol=1e-7)


def test_lut_from_table_missing_layers_and_signatures():
    b = GraphBuilder()
    x = b.input((16, 16, 8))
    x = b.conv(x, 8, 3, act="relu", bn=True)
    x = b.conv(x, 16, 3, act="relu", bn=True)
    g = b.finish()
    sigs = L.layer_signatures(g)
    assert len(sigs) == 2 and all(s.startswith("conv|k=3x3") for s in sigs)
    for s in sigs:  # format and parse are inverses, and a signature rebuilds as a one-layer graph of itself
        assert L.format_signature(L.parse_signature(s)) == s
        one = L.signature_graph(s)
        assert one.n_nodes == 2 and L.layer_signatures(one) == [s]
    full = L.LUTPredictor.from_table({sigs[0]: 1.0, sigs[1]: 3.0}, overhead_ms=0.5)
    assert full.predict([g])[0] == pytest.approx(4.5) and full.last_missing_.tolist() == [0]
    # the second conv is unknown: it costs the known one scaled by MACs (twice the output channels: 2x)
    part = L.LUTPredictor.from_table({sigs[0]: 1.0})
    d = part.predict_details([g])
    assert d.latency_ms[0] == pytest.approx(1.0 + 2.0) and d.n_missing.tolist() == [1]
    assert d.missing == [sigs[1]]
    assert part.predict([g]) == pytest.approx([3.0]) and part.last_missing_.tolist() == [1]
    # per-op records: repeated measurements of one layer take their median
    rec = L.LUTPredictor.from_op_records([(sigs[0], 1.0), (sigs[0], 1.2), (sigs[0], 9.0), (sigs[1], 2.0)])
    assert rec.table[sigs[0]] == pytest.approx(1.2)
    with pytest.raises(PredictorError, match="malformed layer signature"):
        L.parse_signature("conv|k=3")
    with pytest.raises(PredictorError, match="non-negative"):
        L.LUTPredictor.from_table({sigs[0]: -1.0})


def test_lut_calibration_scales_and_survives_save(tmp_path):
    graphs = [a.to_graph() for a, _ in sample("nb201", 6, seed=3)]
    sigs = sorted({s for g in graphs for s in L.layer_signatures(g, states="skip")})
    lut = L.LUTPredictor.from_table({s: 0.01 * (i + 1) for i, s in enumerate(sigs)}, overhead_ms=0.1)
    raw = lut.predict(graphs)
    factors = np.array([1.4, 1.5, 1.5, 1.6, 1.5, 9.0])  # one outlier: the median ignores it
    lut.calibrate(graphs, raw * factors)
    assert lut.scale_ == pytest.approx(1.5)
    assert lut.predict(graphs) == pytest.approx(1.5 * raw)
    lut.save(tmp_path / "lut")
    assert R.load_dir(tmp_path / "lut").predict(graphs) == pytest.approx(1.5 * raw)
    with pytest.raises(PredictorError, match="one positive latency per graph"):
        lut.calibrate(graphs, raw[:2])


def test_every_nb101_layer_signature_rebuilds_alone():
    # NB101's output concat splits its width unevenly (e.g. 86+85+85): the signature keeps only the first input,
    # and the rebuilt one-layer graph must still give that signature back (what `leti lut build` measures)
    sigs = {
        s for a, _ in sample("nb101", 30, seed=0) for s in L.layer_signatures(a.to_graph(), states="skip")
    }
    uneven = [s for s in sigs if s.startswith("concat|") and "out=32x32x128" in s and "in=32x32x43" in s]
    assert uneven, "expected an uneven three-way concat among 30 NB101 archs"
    for s in sigs:
        g = L.signature_graph(s)
        assert s in L.layer_signatures(g, states="skip")
    with pytest.raises(GraphError, match="cannot build a concat"):
        L.signature_graph("concat|k=0x0|s=0x0|d=0|g=0|act=none|bn=0|bias=0|pad=0|x=0|in=8x8x4|out=8x8x40|n=2")


def test_lut_state_modes_price_dead_branches_differently():
    # the same pruned network with and without dead branches
    a = sample("nb201", 1, seed=0)[0][0]
    from leti.space import parse_arch

    dead = parse_arch("nb201", "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|none~1|none~2|")
    clean = parse_arch("nb201", "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|")
    assert dead.hash == clean.hash and a is not None
    gd, gc = dead.to_graph(), clean.to_graph()
    assert L.layer_signatures(gd, "skip") == L.layer_signatures(gc, "skip")
    assert len(L.layer_signatures(gd, "count")) > len(L.layer_signatures(gc, "count"))
    sep = L.layer_signatures(gd, "separate")
    assert any(s.endswith("|state=dead") for s in sep)


def test_lut_folds_networks_with_constant_output(data):
    graphs, y = data
    from leti.space import parse_arch

    const = parse_arch("nb201", "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|none~0|none~1|none~2|")
    g = const.to_graph()
    assert L.constant_output([g, graphs[0]]).tolist() == [True, False]
    folded = L.LUTPredictor().fit(graphs, y)
    # only what still depends on the input is costed: here the stem (everything after it reads zeros)
    live = L.layer_signatures(g, "skip")
    assert len(live) == 1 and live[0].startswith("conv|k=3x3")
    table = folded.table
    expect = folded.overhead_ + table.get(live[0], 0.0)
    assert folded.predict([g])[0] == pytest.approx(max(expect, 1e-3))
    unfolded = L.LUTPredictor(fold_constant=False).fit(graphs, y)
    assert unfolded.predict([g])[0] > 5 * folded.predict([g])[0]


# ---- flops -------------------------------------------------------------------------------------------------------
def test_ransac_ignores_outliers(data):
    graphs, _ = data
    gm = F.featurize(graphs)[:, F.feature_index("tot.live_macs")] / 1e9
    y = 1.0 + 40.0 * gm
    rng = np.random.default_rng(0)
    bad = rng.choice(len(y), size=30, replace=False)  # 15% of the runs were disturbed: 3-5x slower
    y_obs = y.copy()
    y_obs[bad] *= rng.uniform(3, 5, bad.size)
    pred = FlopsPredictor().fit(graphs, y_obs)
    assert pred.slopes_[0] == pytest.approx(40.0, rel=0.02)
    assert pred.intercepts_[0] == pytest.approx(1.0, abs=0.05)
    # a plain least-squares line would have been dragged away: the test can tell the two apart
    ls = np.polyfit(gm, y_obs, 1)
    assert abs(ls[0] - 40.0) / 40.0 > 0.1 or abs(ls[1] - 1.0) > 0.3


def test_flops_clusters_fit_one_line_per_memory_regime(data, tmp_path):
    graphs, _ = data
    X = F.featurize(graphs)
    gm = X[:, F.feature_index("tot.live_macs")] / 1e9
    peak = X[:, F.feature_index("tot.peak_bytes")]
    big = peak > peak.min()  # NB201 networks peak at one of two sizes
    assert 0.2 < big.mean() < 0.8
    y = np.where(big, 2.0 + 90.0 * gm, 0.5 + 30.0 * gm)  # larger activations: slower per MAC
    one = FlopsPredictor(clusters=1).fit(graphs, y)
    two = FlopsPredictor(clusters=2).fit(graphs, y)
    assert two.centers_.size == 2 and np.all(np.diff(two.centers_) > 0)
    m1, m2 = metrics(y, one.predict(graphs)), metrics(y, two.predict(graphs))
    assert m2["acc5"] > m1["acc5"] and m2["acc5"] > 0.9
    assert sorted(np.round(two.slopes_).tolist()) == [30.0, 90.0] or m2["acc10"] > 0.95
    two.save(tmp_path / "f")
    assert np.array_equal(R.load_dir(tmp_path / "f").predict(graphs), two.predict(graphs))
    with pytest.raises(PredictorError, match="positive integer"):
        FlopsPredictor(clusters=0).fit(graphs, y)


# ---- auto --------------------------------------------------------------------------------------------------------
def test_auto_picks_the_family_that_fits(data):
    graphs, _ = data
    # exactly additive per-layer costs: the lookup table is the right model and CV must see it
    gidx, ids, cnt = L.design(graphs, "skip")
    rng = np.random.default_rng(3)
    cost = rng.uniform(0.01, 0.3, int(ids.max()) + 1)
    y = 0.2 + np.bincount(gidx, weights=cnt * cost[ids], minlength=len(graphs))
    hashes = [f"h{i // 2}" for i in range(len(graphs))]  # pairs share a group
    auto = AutoPredictor(candidates=[["flops", {}], ["lut", {"states": "skip"}]], folds=4)
    auto.fit(graphs, y, groups=hashes)
    assert auto.chosen_["family"] == "lut"
    scores = {s["family"]: s["acc10"] for s in auto.cv_scores_}
    assert scores["lut"] > 0.98 and scores["lut"] > scores["flops"]
    # refitted on all: every layer is known (networks with a constant output are costed apart: see the lut tests)
    regular = ~L.constant_output(graphs)
    assert np.allclose(auto.predict(graphs)[regular], y[regular], rtol=1e-6)


def test_auto_selection_rules():
    # per fold: acc10, acc5, rho, tau. a: most within 10%, but ranks worse; b: ranks best; c: poor
    a = [0.76, 0.20, 0.960, 0.85]
    b = [0.72, 0.64, 0.975, 0.88]
    c = [0.40, 0.20, 0.850, 0.70]
    S = np.array([[a] * 4, [b] * 4, [c] * 4])
    assert AU.choose(S, select="rank") == 1
    assert AU.choose(S, select="acc10") == 0
    nan_rho = S.copy()
    nan_rho[0, :, 2] = np.nan
    assert AU.choose(nan_rho[[0, 2]], select="rank") == 0  # NaN only loses its own column
    with pytest.raises(PredictorError, match="select"):
        AutoPredictor(candidates=["lut"], select="best").fit(*_tiny())


def test_one_standard_error_prefers_the_simpler_of_two_tied_candidates():
    base = np.array([0.80, 0.70, 0.950, 0.85])  # acc10, acc5, rho, tau
    swing = 0.02 * np.array([1, -1] * 5)[:, None]  # ten folds that favour one, then the other
    complex_ = base + swing
    simple = base - 0.005 - swing  # a hair worse on average, well within the fold-to-fold noise
    S = np.array([complex_, simple])
    for select in ("rank", "acc10"):
        assert AU.choose(S, [3.0, 1.0], select, one_se=False) == 0
        assert AU.choose(S, [3.0, 1.0], select, one_se=True) == 1
    # a clearly better complex model still wins
    clear = np.array([complex_, complex_ - 0.2])
    assert AU.choose(clear, [3.0, 1.0], "acc10") == 0 and AU.choose(clear, [3.0, 1.0], "rank") == 0


def test_quantised_targets_are_detected_and_snapped_in_order():
    rng = np.random.default_rng(1)
    y = rng.uniform(2, 20, 500)
    assert C.grid_step(np.round(y)) == 1.0
    assert C.grid_step(np.round(y * 2) / 2) == 0.5
    assert C.grid_step(y) is None  # no grid
    assert C.grid_step(np.round(y, 3)) is None  # a microsecond resolution is not a coarse grid
    p = np.sort(rng.uniform(0.5, 21, 300))
    for shrink in C.SHRINKS:
        q = C.snap(p, 1.0, shrink, lowest=1.0)
        assert (np.diff(q) > 0).all()  # order kept: rho cannot change
        assert np.abs(q - np.maximum(np.round(p), 1.0)).max() <= 0.5 * shrink + 1e-12
    assert np.array_equal(C.snap(p, 1.0, 1.0, 1.0), p)


def test_auto_on_whole_ms_readings_snaps_towards_the_grid(data):
    graphs, y = data
    ms = np.maximum(np.round(y * 8), 1.0)  # readings of 2..30 ms, as a phone app that reports whole ms
    auto = AutoPredictor(candidates=[["linear", {}], ["lut", {}]], folds=3, repeats=1).fit(
        graphs[:150], ms[:150]
    )
    assert auto.grid_ms_ == 1.0 and 0 < auto.shrink_ <= 1
    raw = auto.models_[0].predict(graphs[150:])
    p = auto.predict(graphs[150:])
    assert np.abs(p - np.round(p)).max() <= np.abs(raw - np.round(raw)).max() + 1e-12
    assert metrics(ms[150:], p)["spearman"] == pytest.approx(metrics(ms[150:], raw)["spearman"])
    off = AutoPredictor(candidates=[["linear", {}]], folds=3, repeats=1, quantised="off").fit(
        graphs[:150], ms[:150]
    )
    assert off.grid_ms_ is None


def test_mode_shift_moves_predictions_to_the_typical_value_and_keeps_their_order(data, tmp_path):
    rng = np.random.default_rng(5)
    truth = rng.uniform(2, 40, 4000)
    # lopsided noise: most runs near the typical time, a third of them 25-60% slower
    slow = rng.random(truth.size) < 0.33
    y = truth * np.where(slow, rng.uniform(1.25, 1.6, truth.size), rng.normal(1.0, 0.02, truth.size))
    mean_model = truth * float(np.mean(y / truth))  # what a least-squares fit aims at: too slow for most runs
    shift = C.ModeShift.fit(mean_model[:2000], y[:2000])
    p = shift(mean_model[2000:])
    assert C.acc10(y[2000:], p) > C.acc10(y[2000:], mean_model[2000:]) + 0.2
    assert (np.diff(shift(np.sort(mean_model))) > 0).all()  # strictly increasing: rho cannot change
    back = C.ModeShift.from_json(json.loads(json.dumps(shift.to_json())))
    assert np.array_equal(back(mean_model), shift(mean_model))
    with pytest.raises(ValueError):
        C.ModeShift.from_json({"knots_log_ms": [0.0, 0.1], "shifts": [0.0, 0.5]})  # would reverse the order
    # auto keeps the shift when it helps out of fold, saves it, and loads it back
    graphs, y_syn = data
    noisy = y_syn * np.where(rng.random(y_syn.size) < 0.3, 1.4, 1.0)
    auto = AutoPredictor(candidates=[["linear", {}]], folds=3, repeats=1).fit(graphs[:150], noisy[:150])
    assert auto.cv_scores_[0]["mode_shift"] == (auto.shift_ is not None)
    auto.save(tmp_path / "s")
    assert np.array_equal(R.load_dir(tmp_path / "s").predict(graphs[150:]), auto.predict(graphs[150:]))


def test_auto_blends_and_saves_every_member(data, tmp_path):
    graphs, y = data
    auto = AutoPredictor(candidates=[["linear", {}], ["lut", {}]], folds=3, repeats=2, stack=2, one_se=False)
    auto.fit(graphs[:150], y[:150], groups=[f"g{i // 2}" for i in range(150)])
    assert len(auto.cv_scores_) == 3
    blend = auto.cv_scores_[2]
    assert set(blend["family"].split("+")) == {"linear", "lut"}
    assert blend["complexity"] == 3.0  # one more than the lut
    auto.chosen_ = {"family": "linear+lut", "params": {}, "members": [{"family": "linear", "params": {}},
                                                                      {"family": "lut", "params": {}}]}  # fmt: skip
    auto.models_ = [R.make("linear").fit(graphs[:150], y[:150]), R.make("lut").fit(graphs[:150], y[:150])]
    p = auto.predict(graphs[150:])
    assert np.allclose(
        p, np.sqrt(auto.models_[0].predict(graphs[150:]) * auto.models_[1].predict(graphs[150:]))
    )
    auto.save(tmp_path / "a")
    back = R.load_dir(tmp_path / "a")
    assert [m.family for m in back.models_] == ["linear", "lut"]
    assert np.array_equal(back.predict(graphs[150:]), p)


def test_topology_columns_and_monotone_boosting_round_trip(data, tmp_path):
    graphs, y = data
    for family, params in (("lightgbm", {"topology": "all", "monotone": True, "n_estimators": 80}),
                           ("xgboost", {"topology": "path+big", "n_estimators": 40}),
                           ("linear", {"inputs": "features", "topology": "all", "alpha": 1.0})):  # fmt: skip
        pred = R.make(family, **params).fit(graphs[:150], y[:150])
        assert (pred.columns_ >= F.N_FEATURES).any()  # it reads topology columns
        pred.save(tmp_path / family)
        assert np.array_equal(R.load_dir(tmp_path / family).predict(graphs[150:]), pred.predict(graphs[150:]))
    with pytest.raises(PredictorError, match="unknown topology group"):
        R.make("lightgbm", topology="everything").fit(graphs[:20], y[:20])
    # monotone in work: more MACs (or a higher LUT estimate) never make the prediction faster
    mono = R.make("lightgbm", monotone=True, n_estimators=80).fit(graphs[:150], y[:150])
    X = mono._design(graphs[150:], mono._base_predict(graphs[150:]))
    j = int(np.flatnonzero(mono.columns_ == F.feature_index("tot.live_macs"))[0])
    assert F.monotone_signs()[mono.columns_[j]] == 1
    for col, step in ((j, 2e8), (X.shape[1] - 1, 1.0)):  # (the last column is the LUT's log estimate)
        more = X.copy()
        more[:, col] += step
        assert (mono._raw_predict(more) >= mono._raw_predict(X) - 1e-12).all()


def test_linear_fits_op_counts_and_resists_outliers(data, tmp_path):
    graphs, y = data
    X = F.featurize(graphs)
    # exactly linear in two op counts: a ridge with a tiny penalty finds it
    exact = 0.5 + 0.02 * X[:, F.feature_index("kind.conv_k3_s1.live.count")] + 0.01 * X[:, F.feature_index(
        "kind.add.live.count")]  # fmt: skip
    lin = R.make("linear", alpha=1e-6).fit(graphs[:150], exact[:150])
    assert np.allclose(lin.predict(graphs[150:]), exact[150:], rtol=1e-4)
    # a fifth of the readings twice too slow: Huber keeps the fit on the rest
    bad = exact.copy()
    bad[:150:5] *= 2
    huber = R.make("linear", loss="huber", alpha=1e-6).fit(graphs[:150], bad[:150])
    ridge = R.make("linear", loss="ridge", alpha=1e-6).fit(graphs[:150], bad[:150])
    assert metrics(exact[150:], huber.predict(graphs[150:]))["acc5"] == 1.0
    assert metrics(exact[150:], ridge.predict(graphs[150:]))["acc5"] < 1.0
    # the penalty chosen by grouped CV, saved and read back as JSON
    cv = R.make("linear", inputs="features").fit(
        graphs[:150], y[:150], groups=[f"g{i // 3}" for i in range(150)]
    )
    assert cv.alpha_ in L_ALPHAS
    cv.save(tmp_path / "lin")
    assert np.array_equal(R.load_dir(tmp_path / "lin").predict(graphs[150:]), cv.predict(graphs[150:]))
    for bad_params in ({"inputs": "pixels"}, {"loss": "l0"}, {"alpha": -1}, {"delta": 0}):
        with pytest.raises(PredictorError):
            R.make("linear", **bad_params).fit(graphs[:20], y[:20])


def test_kfold_groups_stay_together():
    groups = np.repeat(np.arange(30), 3)
    parts = kfold_indices(90, 5, seed=0, groups=groups)
    assert sorted(np.concatenate(parts).tolist()) == list(range(90))
    for p in parts:
        assert set(groups[p]).isdisjoint(set(groups[np.setdiff1d(np.arange(90), p)]))
    plain = kfold_indices(10, 3, seed=0)
    assert sorted(np.concatenate(plain).tolist()) == list(range(10))
    with pytest.raises(PredictorError, match="cannot fill"):
        AutoPredictor(candidates=["lut"], folds=5).fit(*_tiny()[:1], _tiny()[1], groups=["a"] * 12)


@pytest.mark.parametrize("family", ["lut", "flops"])
def test_every_family_takes_groups(family):
    graphs, y = _tiny()
    grouped = R.make(family).fit(graphs, y, groups=[str(i % 3) for i in range(len(y))])
    assert np.array_equal(grouped.predict(graphs), R.make(family).fit(graphs, y).predict(graphs))
    with pytest.raises(PredictorError, match="groups"):
        R.make(family).fit(graphs, y, groups=["a"] * (len(y) - 1))


def test_best_family_is_the_registry_pick():
    metas = {"lut": {"metrics": {"acc10": 0.5}}, "flops": {"metrics": {"acc10": 0.9}}, "gcn": {"metrics": {}},
             "xgboost": {"metrics": {"acc10": 0.9}}, "auto": {"metrics": {"acc10": True}}}  # fmt: skip
    assert R.best_family(metas) == "flops"  # ties by name; a bool is no score


# ---- registry: directories, corruption, no pickle ------------------------------------------------------------------
def test_registry_dirs_save_load_best(data, tmp_path, monkeypatch):
    monkeypatch.setenv("LETI_HOME", str(tmp_path / "home"))
    assert R.predictor_dir("t1", "lut") == tmp_path / "home" / "predictors" / "t1" / "lut"
    graphs, y = data
    lut, flops = fitted("lut", data), fitted("flops", data)
    R.save_trained(lut, "t1", {"metrics": {"acc10": 0.9}})
    R.save_trained(flops, "t1", {"metrics": {"acc10": 0.5}})
    assert R.load("t1").family == "lut"  # best test acc@10
    assert R.load("t1", "flops").family == "flops"
    rows = R.list_trained()
    assert {(r["target"], r["family"]) for r in rows} == {("t1", "lut"), ("t1", "flops")}
    with pytest.raises(PredictorError, match="no trained xgboost predictor"):
        R.load("t1", "xgboost")
    with pytest.raises(PredictorError, match="no trained predictor"):
        R.load("t2")
    with pytest.raises(Exception, match="cannot name"):
        R.predictor_dir("../evil", "lut")


def _model_files(d):
    return [p for p in d.rglob("*") if p.is_file() and p.name not in ("meta.json", "manifest.json")]


@pytest.mark.parametrize("family", TABULAR)
def test_corrupt_or_tampered_directories_give_one_line(family, data, tmp_path):
    pred = fitted(family, data)
    good = tmp_path / "good"
    pred.save(good)
    files = _model_files(good)
    assert files

    def check(path, match):
        with pytest.raises(PredictorError, match=match) as e:
            R.load_dir(path)
        assert "\n" not in str(e.value)

    import shutil

    for i, f in enumerate(files):
        # an edited byte, a truncated file, a missing file: caught by the checksum before any parser runs
        for how in ("edit", "truncate", "delete"):
            d = tmp_path / f"{how}{i}"
            shutil.copytree(good, d)
            g = d / f.relative_to(good)
            data_ = g.read_bytes()
            if how == "edit":
                g.write_bytes(data_[:-2] + bytes([data_[-2] ^ 0x01]) + data_[-1:])
            elif how == "truncate":
                g.write_bytes(data_[: len(data_) // 2])
            else:
                g.unlink()
            check(d, "SHA-256|missing|edited|no trained|not a saved")
        # garbage that matches a fresh seal still fails in the parser, as one line
        d = tmp_path / f"resealed{i}"
        shutil.copytree(good, d)
        g = d / f.relative_to(good)
        g.write_bytes(g.read_bytes()[: max(1, len(g.read_bytes()) // 3)])
        manifest.seal(d)
        check(d, ".")
    # meta.json problems, resealed so that they reach the reader
    d = tmp_path / "badmeta"
    shutil.copytree(good, d)
    (d / "meta.json").write_text("{not json")
    check(d, "SHA-256")
    manifest.seal(d)
    check(d, "not valid JSON")
    meta = json.loads((good / "meta.json").read_text())
    d = tmp_path / "mismatch"
    shutil.copytree(good, d)
    other = "lut" if family != "lut" else "flops"
    (d / "meta.json").write_text(json.dumps({**meta, "family": other}))
    manifest.seal(d)
    check(d, ".")
    with pytest.raises(PredictorError, match=f"holds a '{family}' predictor"):
        R.family_class(other).load(good)
    d = tmp_path / "version"
    shutil.copytree(good, d)
    (d / "meta.json").write_text(json.dumps({**meta, "feature_version": -1}))
    manifest.seal(d)
    check(d, "feature version")


def _gcn_or_none(data):
    try:
        cls = R.family_class("gcn")
    except PredictorError:
        return None
    graphs, y = data
    params = {k: v for k, v in {"epochs": 3, "hidden": 8, "patience": 3}.items() if k in cls._param_names()}
    return cls(**params).fit(graphs[:60], y[:60])


def test_loading_never_unpickles(data, tmp_path, monkeypatch):
    preds = [fitted(f, data) for f in TABULAR]
    gcn = _gcn_or_none(data)
    if gcn is not None:
        preds.append(gcn)
    graphs = data[0][150:]
    expected = {}
    for p in preds:
        p.save(tmp_path / p.family)
        expected[p.family] = p.predict(graphs)

    def refuse(*a, **k):
        raise AssertionError("a predictor was unpickled")

    class NoUnpickler:
        def __init__(self, *a, **k):
            refuse()

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", NoUnpickler)
    orig_np_load = np.load

    def np_load(*a, **k):
        assert k.get("allow_pickle", False) is False
        return orig_np_load(*a, **k)

    monkeypatch.setattr(np, "load", np_load)
    for fam, exp in expected.items():
        back = R.load_dir(tmp_path / fam)
        assert back.family == fam
        assert np.array_equal(back.predict(graphs), exp), fam
