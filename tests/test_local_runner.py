"""LocalRunner: real LiteRT runs of small models written by the fast path (and one int8 model from the converter)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from leti.device_runner.base import Runner
from leti.device_runner.local import (
    LocalRunner,
    load_interpreter,
    random_inputs,
    resolve_affinity,
    run_model,
    settings_for_target,
)
from leti.errors import LetiError, ModelFileError, TargetError
from leti.graph.builder import GraphBuilder
from leti.measurement import Settings
from leti.targets import host_targets
from leti.tflite.flatbuffer import graph_to_tflite


@pytest.fixture(scope="module")
def model() -> bytes:
    b = GraphBuilder()
    x = b.input((32, 32, 3))
    y = b.conv(x, 16, 3, sh=2, bn=True, act="relu")
    y = b.dwconv(y, 3, bn=True, act="relu6")
    y = b.conv(y, 32, 1, bn=True)
    y = b.gap(y)
    b.dense(y, 10)
    return graph_to_tflite(b.finish(), seed=0)


@pytest.fixture(scope="module")
def runner() -> LocalRunner:
    return LocalRunner()


def test_is_a_runner_for_the_host_targets(runner):
    assert isinstance(runner, Runner)
    assert runner.targets() == host_targets()


def test_is_a_context_manager(model):
    with LocalRunner() as r:
        assert r.measure(model, Settings(threads=1, warmup=1, runs=2)).n_runs == 2
    r.close()  # closing twice is harmless


def test_statistics_are_consistent(runner, model):
    m = runner.measure(model, Settings(threads=1, warmup=2, runs=12))
    assert m.n_runs == 12
    assert 0 < m.min_ms <= m.median_ms <= m.max_ms
    assert m.median_ms <= m.p90_ms <= m.max_ms
    assert m.min_ms <= m.mean_ms <= m.max_ms and m.std_ms >= 0
    assert m.init_ms > 0 and m.first_ms > 0 and m.warmup_ms > 0
    assert m.model_bytes == len(model)
    raw = json.loads(m.raw)
    assert len(raw["samples_ms"]) == 12 and len(raw["warmup_ms"]) == 2
    assert raw["samples_ms"] and m.min_ms == pytest.approx(min(raw["samples_ms"]), abs=1e-3)
    assert m.memory["peak_rss_delta_mb"] >= 0 and m.memory["peak_source"] in ("VmHWM", "ru_maxrss")
    for key in ("litert", "tensorflow", "python", "cpu"):
        assert m.versions[key]


def test_min_time_is_respected(runner, model):
    m = runner.measure(model, Settings(warmup=0, runs=1, min_time_s=0.2))
    assert m.n_runs > 1
    assert m.mean_ms * m.n_runs >= 200.0
    assert m.warmup_ms is None and m.first_ms > 0


def test_threads_and_xnnpack_take_effect(runner, model):
    ops_on = [d["op_name"] for d in load_interpreter(model, 2, xnnpack=True)._get_ops_details()]
    ops_off = [d["op_name"] for d in load_interpreter(model, 2, xnnpack=False)._get_ops_details()]
    assert "DELEGATE" in ops_on and "DELEGATE" not in ops_off
    for s in (Settings(threads=2, runs=3), Settings(xnnpack=False, runs=3)):
        m = runner.measure(model, s)
        assert m.n_runs == 3 and m.median_ms > 0
    # same model, same inputs: XNNPACK on or off, one thread or two, the numbers agree
    a = run_model(model, threads=1, xnnpack=True)[0]
    b = run_model(model, threads=2, xnnpack=False)[0]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_affinity_is_applied_and_restored(runner, model):
    before = os.sched_getaffinity(0)
    cpu = min(before)
    for aff in ((cpu,), hex(1 << cpu)):
        m = runner.measure(model, Settings(runs=2, affinity=aff))
        assert json.loads(m.raw)["affinity"] == [cpu]
        assert os.sched_getaffinity(0) == before


def test_bad_affinity_names_the_field(runner, model):
    before = os.sched_getaffinity(0)
    for aff in ((4096,), "big", "0xzz", ()):
        with pytest.raises(LetiError, match="^settings.affinity:"):
            runner.measure(model, Settings(runs=1, affinity=aff))
    assert os.sched_getaffinity(0) == before
    assert resolve_affinity(None) is None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not a model at all",
        b"\x1c\x00\x00\x00TFL3" + b"\x00" * 40,
        b"\x1c\x00\x00\x00TFL3" + b"\xff" * 200,
    ],
    ids=["empty", "text", "zeros", "garbage"],
)
def test_corrupt_models_raise_one_line(runner, data, capfd):
    with pytest.raises(ModelFileError) as e:
        runner.measure(data, Settings(runs=1))
    assert str(e.value).startswith("model:") and "\n" not in str(e.value)
    assert capfd.readouterr() == ("", "")  # LiteRT's C++ complaints do not leak


def test_truncated_model_raises(runner, model):
    with pytest.raises(ModelFileError):
        runner.measure(model[: len(model) // 2], Settings(runs=1))


def test_measure_file(runner, model, tmp_path):
    p = tmp_path / "m.tflite"
    p.write_bytes(model)
    assert runner.measure_file(p, Settings(runs=2)).n_runs == 2
    with pytest.raises(ModelFileError, match="^model: cannot read"):
        runner.measure_file(tmp_path / "missing.tflite", Settings(runs=1))


def test_measurement_is_quiet(runner, model, capfd):
    runner.measure(model, Settings(runs=2))
    assert capfd.readouterr() == ("", "")


def test_unsupported_settings(runner, model):
    with pytest.raises(LetiError, match="^settings.delegate:"):
        runner.measure(model, Settings(delegate="gpu", runs=1))
    with pytest.raises(LetiError, match="^settings.op_profiling:"):
        runner.measure(model, Settings(op_profiling=True, runs=1))


def test_settings_for_target():
    s, precision = settings_for_target("host-litert-cpu-2t-int8")
    assert (s.threads, s.xnnpack, precision) == (2, True, "int8")
    s, precision = settings_for_target("host-litert-cpu-1t-noxnn", runs=5)
    assert (s.threads, s.xnnpack, s.runs, precision) == (1, False, 5, "fp32")
    assert settings_for_target("host-litert-cpu-1t-fp16")[1] == "fp16"
    for name in host_targets():
        settings_for_target(name)
    for bad in ("pixel4-tflite-cpu", "host-litert-gpu-1t", "Host"):
        with pytest.raises(TargetError, match="^target:"):
            settings_for_target(bad)


def test_int8_model_gets_int8_inputs(runner):
    from leti.tflite.convert import to_tflite

    b = GraphBuilder()
    x = b.input((16, 16, 3))
    b.conv(x, 8, 3, bn=True, act="relu")
    data = to_tflite(b.finish(), "int8")
    details = load_interpreter(data).get_input_details()
    (x,) = random_inputs(details, seed=1)
    assert x.dtype == np.int8 and x.min() < -64 and x.max() > 64
    m = runner.measure(data, Settings(runs=2))
    assert m.n_runs == 2


def test_run_model_checks_inputs(model):
    with pytest.raises(LetiError, match="^inputs:"):
        run_model(model, [np.zeros((1, 32, 32, 3), np.float32)] * 2)
    with pytest.raises(LetiError, match=r"^inputs\[0\]: has shape \(1, 16, 16, 3\)"):
        run_model(model, [np.zeros((1, 16, 16, 3), np.float32)])
    a, b = run_model(model, seed=3)[0], run_model(model, seed=3)[0]
    np.testing.assert_array_equal(a, b)
