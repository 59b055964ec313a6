"""Tree ensembles walked in numpy (leti.predictors.trees) give exactly the boosting libraries' predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from leti.errors import PredictorError
from leti.predictors import boosting, trees


@pytest.fixture(scope="module")
def xy():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 10))
    X[:, 5] = 0.0  # a constant column, and missing values in another
    X[::7, 2] = np.nan
    y = 2 * X[:, 0] + np.sin(X[:, 1]) + X[:, 3] * X[:, 4]
    Xt = rng.normal(size=(600, 10))
    Xt[::5, 2] = np.nan
    Xt[:, 6] = np.round(Xt[:, 6])  # values exactly on thresholds are likely
    Xt[::11, 5] = 1.0
    return X, y, Xt


@pytest.mark.parametrize("objective", ["regression", "quantile", "huber"])
def test_lightgbm_text_matches_lightgbm(xy, objective):
    lgb = pytest.importorskip("lightgbm")
    X, y, Xt = xy
    params = {"objective": objective, "alpha": 0.6, "num_leaves": 15, "verbose": -1, "num_threads": 1,
              "min_data_in_bin": 1, "seed": 1}  # fmt: skip
    m = lgb.train(params, lgb.Dataset(X, y), num_boost_round=60)
    f = trees.from_lightgbm_text(m.model_to_string())
    assert np.array_equal(f.predict(Xt), m.predict(Xt))


def test_lightgbm_single_leaf_trees(xy):
    lgb = pytest.importorskip("lightgbm")
    X, _, Xt = xy
    y = np.ones(len(X))
    y[0] = 2.0
    m = lgb.train({"verbose": -1, "min_data_in_leaf": 1000}, lgb.Dataset(X, y), num_boost_round=3)
    assert np.array_equal(trees.from_lightgbm_text(m.model_to_string()).predict(Xt), m.predict(Xt))


@pytest.mark.parametrize("objective", ["reg:squarederror", "reg:absoluteerror"])
def test_xgboost_json_matches_xgboost(xy, objective):
    xgb = pytest.importorskip("xgboost")
    X, y, Xt = xy
    params = {"max_depth": 5, "eta": 0.1, "objective": objective, "nthread": 1, "base_score": 0.0}
    b = xgb.train(params, xgb.DMatrix(X, y), num_boost_round=60)
    f = trees.from_xgboost_json(bytes(b.save_raw("json")))
    assert np.array_equal(f.predict(Xt), b.inplace_predict(Xt))


def test_catboost_json_matches_catboost(xy, tmp_path):
    cb = pytest.importorskip("catboost")
    X, y, Xt = xy
    m = cb.CatBoostRegressor(
        iterations=80,
        depth=5,
        rsm=0.5,
        verbose=False,
        thread_count=1,
        random_seed=0,
        allow_writing_files=False,
    )
    m.fit(X, y)
    m.save_model(str(tmp_path / "m.json"), format="json")
    f = trees.from_catboost_json((tmp_path / "m.json").read_bytes())
    assert np.array_equal(f.predict(Xt), m.predict(Xt))


@pytest.mark.parametrize("family", ["lightgbm", "xgboost", "catboost"])
def test_predictor_numpy_and_library_paths_agree(family, xy, tmp_path, monkeypatch):
    """A loaded predictor walks its trees in numpy for small batches and hands large ones to the library: the
    numbers are the same either way."""
    pytest.importorskip(family)
    from leti.space import sample

    graphs = [a.to_graph() for a, _ in sample("nb201", 120, 3)]
    from leti.predictors import features as F

    y = 1 + F.featurize(graphs)[:, F.feature_index("tot.live_macs")] / 1e7
    pred = boosting.__dict__[{"lightgbm": "LightGBMPredictor", "xgboost": "XGBoostPredictor",
                              "catboost": "CatBoostPredictor"}[family]](n_estimators=40).fit(graphs, y)  # fmt: skip
    pred.save(tmp_path / "p")
    loaded = type(pred).load(tmp_path / "p")
    assert loaded.model_ is None  # nothing of the library was needed to load it
    small = loaded.predict(graphs[:5])
    monkeypatch.setattr(boosting, "LIBRARY_BATCH", 1)
    monkeypatch.setattr(boosting, "SMALL_BATCH", 1)
    big = loaded.predict(graphs)
    assert loaded.model_ is not None  # the library answered the large batch
    assert np.array_equal(small, big[:5])
    assert np.array_equal(big, pred.predict(graphs))


@pytest.mark.parametrize(
    "reader, data",
    [
        (trees.from_xgboost_json, b"{}"),
        (trees.from_xgboost_json, b"not json"),
        (trees.from_catboost_json, b'{"features_info": {}}'),
        (trees.from_lightgbm_text, "tree\nmax_feature_idx=2\n\nTree=0\nnum_leaves=3\n\nend of trees\n"),
    ],
)
def test_damaged_models_give_one_predictor_error(reader, data):
    with pytest.raises(PredictorError):
        reader(data)


def test_tree_cycles_and_out_of_range_links_are_refused():
    xgb = pytest.importorskip("xgboost")
    rng = np.random.default_rng(1)
    b = xgb.train(
        {"max_depth": 2, "nthread": 1}, xgb.DMatrix(rng.normal(size=(50, 3)), rng.normal(size=50)), 2
    )
    model = json.loads(bytes(b.save_raw("json")))
    tree = model["learner"]["gradient_booster"]["model"]["trees"][0]
    tree["left_children"][1] = 0  # node 1 links back to the root
    with pytest.raises(PredictorError, match="not a tree|out of range"):
        trees.from_xgboost_json(json.dumps(model).encode())
    tree["left_children"][1] = 99
    with pytest.raises(PredictorError, match="out of range"):
        trees.from_xgboost_json(json.dumps(model).encode())


def test_lightgbm_categorical_splits_match_lightgbm():
    """The kernel family's regressor splits on the kernel type as a category."""
    lgb = pytest.importorskip("lightgbm")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 6))
    X[:, 0] = rng.integers(0, 70, 3000)
    y = np.sin(X[:, 0]) * 3 + X[:, 1] + (X[:, 0] % 7 == 3) * 2
    ds = lgb.Dataset(X, y, categorical_feature=[0], params={"min_data_in_bin": 1, "verbose": -1})
    m = lgb.train({"num_leaves": 15, "verbose": -1, "num_threads": 1, "min_data_in_leaf": 10}, ds, 60)
    f = trees.from_lightgbm_text(m.model_to_string())
    assert f.cat_words is not None and f.cat_words.any()
    Xt = rng.normal(size=(1500, 6))
    Xt[:, 0] = rng.integers(-3, 90, 1500)  # unseen and negative categories too
    Xt[::13, 0] = np.nan
    Xt[::17, 0] = 2.7  # truncated to category 2
    assert np.array_equal(f.predict(Xt), m.predict(Xt))
