"""The ``fewshot`` family on synthetic devices that are scaled copies of each other: it must beat training on the K
archs alone, save and load exactly, and ``suggest`` must spread its picks."""

from __future__ import annotations

import numpy as np
import pytest

from leti.errors import PredictorError
from leti.predictors import features as F
from leti.predictors.fewshot import FewShotPredictor, suggest
from leti.predictors.metrics import metrics
from leti.predictors.registry import load_dir, make
from leti.space import sample
from leti.trust import calibrate


def device(graphs, costs: tuple, overhead: float, seed: int, noise: float = 0.02):
    """A synthetic device: its own cost per MAC of 1x1 and 3x3 convs at each of three resolutions (cache effects),
    per pooling and per network; log-normal noise."""
    X = F.featurize(graphs)
    ms = np.full(len(graphs), overhead)
    for lvl in range(3):
        ms += costs[lvl] * X[:, F.feature_index(f"lvl{lvl}.conv_k3_s1.macs")] / 1e8
        ms += costs[3 + lvl] * X[:, F.feature_index(f"lvl{lvl}.conv_k1_s1.macs")] / 1e8
        ms += costs[6] * X[:, F.feature_index(f"lvl{lvl}.avgpool_s1.count")] / (lvl + 1)
    return ms * np.exp(np.random.default_rng(seed).normal(0, noise, len(graphs)))


CPU_A = (6.0, 2.0, 9.0, 1.0, 12.0, 3.0, 0.08)
GPU_B = (1.0, 1.5, 1.2, 2.0, 1.0, 3.0, 0.01)


@pytest.fixture(scope="module")
def world():
    graphs = [a.to_graph() for a, _ in sample("nb201", 700, seed=3)]
    src = {
        "cpu-a": (graphs[:400], device(graphs[:400], CPU_A, 0.3, 1)),
        "gpu-b": (graphs[:400], device(graphs[:400], GPU_B, 1.0, 2)),
    }
    new = 2.5 * device(graphs, CPU_A, 0.3, 3)  # a scaled copy of cpu-a, measured anew
    return graphs, src, new


def test_fewshot_beats_training_on_k_archs_alone(world):
    graphs, src, new = world
    tr, te = (
        np.arange(400, 405),
        np.arange(410, 700),
    )  # K = 5 (at K = 10 a LUT alone gets close on this easy space)
    gtr, gte = [graphs[i] for i in tr], [graphs[i] for i in te]
    few = FewShotPredictor().fit(gtr, new[tr], source_data=src)
    m_few = metrics(new[te], few.predict(gte))
    assert m_few["acc10"] >= 0.95 and m_few["spearman"] >= 0.95
    for fam, params in (
        ("lut", {}),
        ("flops", {}),
        ("lightgbm", {"n_estimators": 100, "min_child_samples": 2}),
    ):
        alone = metrics(new[te], make(fam, **params).fit(gtr, new[tr]).predict(gte))
        assert m_few["acc10"] > alone["acc10"] + 0.1 and m_few["mape"] < alone["mape"] / 2, (fam, alone)
        assert m_few["spearman"] > alone["spearman"], (fam, alone)
    # the head found the scaled copy: the cpu-a weight dominates
    w = dict(zip(few.sources, few.coef_[1:], strict=True))
    assert abs(w["cpu-a"]) > 5 * abs(w["gpu-b"])


def test_save_load_and_clone_keep_the_sources(world, tmp_path):
    graphs, src, new = world
    few = FewShotPredictor(max_source_archs=300).fit(graphs[400:415], new[400:415], source_data=src)
    few.save(tmp_path / "fs")
    back = load_dir(tmp_path / "fs")
    assert back.family == "fewshot" and back.sources == ["cpu-a", "gpu-b"]
    assert np.allclose(back.predict(graphs[500:600]), few.predict(graphs[500:600]))
    c = few.clone()
    assert c.source_models_ is few.source_models_ and not hasattr(c, "coef_")
    c.fit(graphs[420:430], new[420:430])  # the head only
    # and the intervals calibrate by refitting the head on folds of the K archs (leave-one-out for so few)
    tm = calibrate(few, graphs[400:415], new[400:415], reference_graphs=graphs[:400])
    cov = tm.coverage_of(graphs[500:700], few.predict(graphs[500:700]), new[500:700])
    assert cov["coverage"] >= 0.8 and cov["ood_share"] <= 0.05


def test_suggest_spreads_over_the_predicted_latency(world):
    graphs, src, _ = world
    few = FewShotPredictor().fit_sources(src)
    pool = graphs[400:700]
    idx = suggest(pool, few.source_models_, few.source_scales_, 10)
    assert len(set(idx.tolist())) == 10
    score = np.mean(
        [np.log(m.predict(pool) / few.source_scales_[s]) for s, m in few.source_models_.items()], 0
    )
    # one pick per decile of the sources' mean (log, relative) predicted latency
    deciles = np.quantile(score, np.linspace(0, 1, 11))
    assert (np.histogram(score[idx], deciles)[0] == 1).all(), score[idx]
    with pytest.raises(PredictorError) as e:
        suggest(pool, few.source_models_, few.source_scales_, 301)
    assert e.value.field == "n"


def test_bad_sources_are_one_line_errors(world):
    graphs, src, new = world
    with pytest.raises(PredictorError) as e:
        FewShotPredictor().fit(graphs[:5], new[:5])
    assert e.value.field == "sources"
    with pytest.raises(PredictorError) as e:
        FewShotPredictor().fit(graphs[:5], new[:5], source_data={"x": (graphs[:3], [1.0, 2.0])})
    assert e.value.field == "sources.x"
    with pytest.raises(PredictorError):
        FewShotPredictor(sources=["other"]).fit(graphs[:5], new[:5], source_data=src)
