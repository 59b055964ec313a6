"""leti.trust on synthetic data: calibrated coverage under a known noise model, out-of-distribution flags, and trust
data saved with (and sealed like) the predictor. Real predictors are trained throughout."""

from __future__ import annotations

import json

import numpy as np
import pytest

from leti.errors import LetiError, PredictorError
from leti.graph.builder import GraphBuilder
from leti.predictors import features as F
from leti.predictors.registry import make
from leti.space import nb201, sample
from leti.trust import TRUST_FILE, TrustModel, calibrate, check_coverage
from leti.trust.crossval import out_of_fold
from leti.trust.embedding import nearest


def noise_level(graphs) -> np.ndarray:
    """The known noise model: log-normal with sigma 0.03, and 0.12 for archs with many 3x3 convs (about 40%)."""
    X = F.featurize(graphs)
    many = X[:, F.feature_index("kind.conv_k3_s1.live.count")] > 18
    return np.where(many, 0.12, 0.03)


def latency(graphs, seed: int) -> np.ndarray:
    X = F.featurize(graphs)
    ms = (
        0.4
        + X[:, F.feature_index("tot.live_macs")] / 2e7
        + 0.01 * X[:, F.feature_index("kind.add.live.count")]
    )
    return ms * np.exp(np.random.default_rng(seed).normal(0, noise_level(graphs)))


@pytest.fixture(scope="module")
def nb():
    archs = [a for a, _ in sample("nb201", 1400, seed=5)]
    graphs = [a.to_graph() for a in archs]
    hashes = [a.hash for a in archs]
    return graphs, hashes, latency(graphs, 1)


@pytest.fixture(scope="module")
def lut_trust(nb):
    graphs, hashes, y = nb
    pred = make("lut").fit(graphs[:700], y[:700])
    return pred, calibrate(pred, graphs[:700], y[:700], groups=hashes[:700])


def test_coverage_matches_the_requested_level_under_known_noise(nb, lut_trust):
    graphs, _, y = nb
    pred, tm = lut_trust
    test, yt = graphs[700:], y[700:]
    p = pred.predict(test)
    for level in (0.8, 0.9):
        c = tm.coverage_of(test, p, yt, level)
        assert abs(c["coverage"] - level) <= 0.04, (level, c)
    # normalised scores: intervals are wider where the noise is larger, and each noise class is covered
    a = tm.assess(test, p, 0.9)
    width = np.log(a.interval_ms[:, 1] / a.interval_ms[:, 0])
    noisy = noise_level(test) > 0.05
    assert noisy.sum() > 50 and (~noisy).sum() > 50
    assert np.median(width[noisy]) > 1.5 * np.median(width[~noisy])  # (1.0 without normalised scores)
    inside = (yt >= a.interval_ms[:, 0]) & (yt <= a.interval_ms[:, 1])
    # (one interval width for all would cover only ~63% of the noisy class and ~100% of the quiet one)
    assert inside[noisy].mean() > 0.72 and inside[~noisy].mean() > 0.72


def test_intervals_contain_the_prediction_and_grow_with_coverage(nb, lut_trust):
    graphs, _, _ = nb
    pred, tm = lut_trust
    p = pred.predict(graphs[600:700])
    lo80, hi80 = tm.assess(graphs[600:700], p, 0.8).interval_ms.T
    lo95, hi95 = tm.assess(graphs[600:700], p, 0.95).interval_ms.T
    assert (lo95 <= lo80).all() and (lo80 < p).all() and (p < hi80).all() and (hi80 <= hi95).all()


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, "0.9", None, True, float("nan")])
def test_coverage_outside_0_1_is_one_line_error(bad, nb, lut_trust):
    graphs, _, _ = nb
    pred, tm = lut_trust
    with pytest.raises(LetiError) as e:
        tm.assess(graphs[:2], pred.predict(graphs[:2]), bad)
    assert e.value.field == "coverage"
    with pytest.raises(LetiError):
        check_coverage(bad)


def test_coverage_beyond_what_the_calibration_set_allows_gives_no_finite_interval(nb):
    graphs, hashes, y = nb
    pred = make("flops").fit(graphs[:12], y[:12])
    tm = calibrate(pred, graphs[:12], y[:12], groups=hashes[:12])
    a = tm.assess(graphs[20:23], pred.predict(graphs[20:23]), 0.95)  # needs 19 calibration archs
    assert np.isinf(a.interval_ms[:, 1]).all()
    assert a.to_dict()["interval_ms"][0][1] is None
    assert np.isfinite(tm.assess(graphs[20:23], pred.predict(graphs[20:23]), 0.9).interval_ms).all()


# ---- out of distribution ---------------------------------------------------------------------------------------
def test_in_distribution_archs_are_rarely_flagged(nb, lut_trust):
    graphs, _, _ = nb
    pred, tm = lut_trust
    a = tm.assess(graphs[700:], pred.predict(graphs[700:]))
    assert np.mean(~a.in_distribution) <= 0.05
    assert all((w == "") == ok for w, ok in zip(a.why, a.in_distribution, strict=True))


def test_unseen_op_is_flagged_and_named(lut_trust):
    pred, tm = lut_trust
    fb = [a.to_graph() for a, _ in sample("fbnet", 2, seed=0)]  # depthwise convs: never in NB201
    a = tm.assess(fb, pred.predict(fb))
    assert not a.in_distribution.any()
    assert all("layer types never seen in training" in w and "dwconv" in w for w in a.why)


def test_out_of_range_width_is_flagged(lut_trust):
    pred, tm = lut_trust
    cell = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    normal = nb201.from_string(cell).to_graph()
    wide = nb201.from_string(cell, {"channels": 64}).to_graph()  # 64/128/256 channels instead of 16/32/64
    a = tm.assess([normal, wide], pred.predict([normal, wide]))
    assert a.in_distribution.tolist() == [True, False]
    assert "channels" in a.why[1] and "outside the training range" in a.why[1], a.why[1]


def test_zero_mac_and_layerless_models_are_flagged(lut_trust):
    pred, tm = lut_trust
    b = GraphBuilder()
    b.gap(b.input((32, 32, 3)))
    pool_only = b.finish()
    b = GraphBuilder()
    b.input((32, 32, 3))
    bare = b.finish()
    a = tm.assess([pool_only, bare], pred.predict([pool_only, bare]))
    assert not a.in_distribution.any()
    assert a.why[1].startswith("0 MACs") and "params 0 outside the training range" in a.why[0]


def test_prediction_far_below_the_training_latencies_is_flagged(nb, lut_trust):
    graphs, _, _ = nb
    _, tm = lut_trust
    a = tm.assess(graphs[:2], np.array([1e-4, tm.ood.latency_hi]))
    assert a.in_distribution.tolist() == [False, True]
    assert "below the training latencies" in a.why[0]


def test_reference_graphs_widen_what_counts_as_in_distribution(nb):
    graphs, _, y = nb
    few = graphs[:10]
    pred = make("flops").fit(few, y[:10])
    alone = TrustModel.fit(few, y[:10], out_of_fold(pred, few, y[:10]))
    with_ref = TrustModel.fit(few, y[:10], out_of_fold(pred, few, y[:10]), reference_graphs=graphs[10:500])
    test = graphs[600:800]
    p = pred.predict(test)
    assert np.mean(with_ref.assess(test, p).in_distribution) > np.mean(alone.assess(test, p).in_distribution)
    assert np.mean(with_ref.assess(test, p).in_distribution) >= 0.9


# ---- any family ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "family,params",
    [("flops", {}), ("lightgbm", {"n_estimators": 60}), ("gcn", {"epochs": 3, "hidden": 8})],
)
def test_every_family_calibrates_through_its_public_interface(family, params, nb):
    graphs, hashes, y = nb
    pred = make(family, **params).fit(graphs[:120], y[:120], groups=hashes[:120])
    tm = calibrate(pred, graphs[:120], y[:120], groups=hashes[:120], folds=3)
    p = pred.predict(graphs[800:900])
    c = tm.coverage_of(graphs[800:900], p, y[800:900])
    assert 0.6 <= c["coverage"] <= 1.0 and c["interval_rel_width"] > 0
    assert tm.info["family"] == family


def test_held_out_of_fold_predictions_are_used_as_is(nb):
    graphs, _, y = nb
    pred = make("flops").fit(graphs[:40], y[:40])
    pred.oof_predictions_ = y[:40] * 1.1
    assert np.allclose(out_of_fold(pred, graphs[:40], y[:40]), y[:40] * 1.1)


def test_nearest_leave_one_group_out():
    Z = np.array([[0.0], [0.1], [5.0], [5.2]])
    d, i = nearest(Z, Z, 1, exclude_self=True)
    assert i[:, 0].tolist() == [1, 0, 3, 2]
    d, i = nearest(Z, Z, 1, exclude_self=True, groups=np.array([0, 0, 1, 2]))
    assert i[:, 0].tolist() == [2, 2, 3, 2] and d[0, 0] == pytest.approx(5.0)


# ---- persistence -----------------------------------------------------------------------------------------------
def test_save_load_gives_the_same_assessment(nb, lut_trust, tmp_path):
    graphs, _, _ = nb
    pred, tm = lut_trust
    tm.save(tmp_path)
    assert TRUST_FILE in json.loads((tmp_path / "manifest.json").read_text())["files"]
    back = TrustModel.load(tmp_path)
    test = graphs[700:900] + [nb201.from_string("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|",
                                                {"channels": 48}).to_graph()]  # fmt: skip
    p = pred.predict(test)
    a, b = tm.assess(test, p), back.assess(test, p)
    assert np.allclose(a.interval_ms, b.interval_ms, rtol=1e-6)  # saved to 10 significant digits
    assert a.in_distribution.tolist() == b.in_distribution.tolist()
    assert TrustModel.load(tmp_path / "nothing") is None


def test_tampered_trust_file_is_refused(lut_trust, tmp_path):
    _, tm = lut_trust
    p = tm.save(tmp_path)
    obj = json.loads(p.read_text())
    obj["conformal"]["scores"] = [0.0] * len(obj["conformal"]["scores"])
    p.write_text(json.dumps(obj))
    with pytest.raises(PredictorError, match="SHA-256"):
        TrustModel.load(tmp_path)


def test_a_fused_activation_counts_as_its_own_layer_type():
    """A conv with a fused ReLU6 (a converted .tflite) and a conv followed by a ReLU6 op (a per-op graph) are the same
    work: each has the types the other has, so neither looks unseen to a predictor trained on the other."""
    from leti.graph.layergraph import ACT_CODE, COL_ATTR, COL_OP, OP_CODE, A
    from leti.trust.ood import layer_types

    conv = np.zeros(F.N_ROW, dtype=np.int64)
    conv[COL_OP] = OP_CODE["conv"]
    for name, v in (("kh", 3), ("kw", 3), ("sh", 1), ("sw", 1), ("dil", 1), ("groups", 1), ("act", ACT_CODE["relu6"])):
        conv[COL_ATTR + A[name]] = v
    act = np.zeros(F.N_ROW, dtype=np.int64)
    act[COL_OP] = OP_CODE["act"]
    act[COL_ATTR + A["act"]] = ACT_CODE["relu6"]
    plain = conv.copy()
    plain[COL_ATTR + A["act"]] = 0
    assert layer_types(conv) == ["conv 3x3/s1", "act relu6"]
    assert set(layer_types(conv)) == set(layer_types(plain) + layer_types(act))
