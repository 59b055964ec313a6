"""``leti kernels build`` on the host: real single-kernel .tflite models timed with LiteRT, stored, resumable."""

import numpy as np
import pytest

from leti.datasets.mlbench import import_mlbench
from leti.datasets.store import Store
from leti.device_runner.bindings import Binding
from leti.errors import LetiError
from leti.graph.builder import GraphBuilder
from leti.predictors.registry import load
from leti.testing.mlbench_synth import write_mlbench
from leti.workflows.kernels import KernelConfig, build_kernels, builtin_prior, config_of, prior_configs

TARGET = "host-litert-cpu-1t"


def test_configs_round_trip():
    for c in builtin_prior()[:40]:
        g = c.graph()
        assert g.n_nodes >= 2
        back = config_of(g, [g.n_nodes - 1] if c.op != "mul" else [g.n_nodes - 1])
        assert back is not None and back.op == c.op and back.h == c.h and back.cin == c.cin
    b = GraphBuilder()
    x = b.input((1, 1, 64))
    b.conv(x, 16, 1)  # a 1x1 conv on a 1x1 map is measured as the dense kernel it is
    assert config_of(b.finish(), [1]).op == "dense"
    with pytest.raises(LetiError):
        KernelConfig("resize", 8, 8).graph()


def test_prior_from_models(tmp_path):
    from leti.importers.mlbench import read_mlbench

    graphs = [m.graph for m in read_mlbench(write_mlbench(tmp_path / "mlb"))]
    pool = prior_configs(graphs, "cpu")
    ops = {c.op for c in pool}
    assert {"conv", "dwconv", "dense", "gap", "concat", "maxpool"} <= ops
    assert len({c.key() for c in pool}) == len(pool)


def test_build_is_resumable(tmp_path):
    st = Store.open(tmp_path / "s.db")
    import_mlbench(st, write_mlbench(tmp_path / "mlb"))  # the prior: the imported models' kernels
    seen = []
    r = build_kernels(st, Binding(TARGET), n=8, rounds=2, runs=3, warmup=1, max_macs=5_000_000,
                      progress=lambda d, t: seen.append((d, t)))  # fmt: skip
    assert r.n_configs == 8 and r.n_measured == 8 and r.prior.endswith("imported models")
    assert [x["new"] for x in r.rounds] == [4, 4]
    assert seen[-1][0] == seen[-1][1]
    km = st.kernel_measurements(TARGET)
    assert len(km) == 9 and (km["latency_ms"] > 0).all()  # 8 kernels and the invocation overhead
    pred = load(TARGET, "kernel")
    assert pred.meta_["n_kernels"] >= 6 and pred.rules_ == "litert"
    g = KernelConfig("conv", 16, 8, 16, 3, act="relu").graph()
    assert np.isfinite(pred.predict([g])).all()
    again = build_kernels(st, Binding(TARGET), n=8, rounds=2, runs=3, warmup=1, max_macs=5_000_000)
    assert again.n_measured == 0 and again.n_configs == 8  # the same rounds, nothing left to measure
    assert len(st.kernel_measurements(TARGET)) == 9


def test_bad_arguments(tmp_path):
    st = Store.open(tmp_path / "s.db")
    with pytest.raises(LetiError, match="rounds"):
        build_kernels(st, Binding(TARGET), n=4, rounds=0)
    with pytest.raises(LetiError, match="max_macs"):
        build_kernels(st, Binding(TARGET), n=4, max_macs=0)
