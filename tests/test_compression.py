"""Compression on top of the numerical core: candidates, Keras surgery, Keras -> Arch, budget plans, the CLI.

Real Keras models, real TFLite conversions and real LiteRT measurements on this machine (host-litert-cpu-1t).
"""

from __future__ import annotations

import itertools
import json
import os
import random

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from leti.errors import LetiError  # noqa: E402

TARGET = "host-litert-cpu-1t"


@pytest.fixture(scope="module")
def resnet():
    from leti.compression.models import resnet_like

    return resnet_like(16, widths=(8, 16, 24), blocks=(1, 1, 1), head_units=16, seed=1)


@pytest.fixture(scope="module")
def mobilenet():
    from leti.compression.models import mobilenetv2_like

    return mobilenetv2_like(32, alpha=0.5, blocks=((1, 16, 1, 1), (4, 24, 2, 2)), last_channels=64, seed=2)


def one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text and text
    return text


class MacPredictor:
    """An additive stand-in for a trained predictor: 1 ms per million MACs, plus 0.01 ms per node."""

    additive = True

    def predict(self, graphs):
        return np.array([g.total_macs * 1e-6 + 0.01 * g.n_nodes for g in graphs])


# ---- Keras -> Arch ----------------------------------------------------------------------------------------------
def test_reference_models_map_exactly_onto_the_ir(resnet, mobilenet):
    from leti.compression.keras_ir import check_arch, keras_to_arch
    from leti.tflite.convert import keras_to_tflite
    from leti.tflite.reader import read_tflite

    for model, extra in ((resnet, 16), (mobilenet, 0)):
        ka = keras_to_arch(model)
        c = check_arch(model, ka)
        assert c.ok, c
        assert c.keras_params == c.graph_params == model.count_params()
        assert c.graph_macs - c.keras_macs == extra == ka.extra_macs  # the expansion's pool over a 1x1 map
        assert c.graph_output == (1, 1, 10) and ka.classifier == "classifier"
    ops = [x["op"] for x in keras_to_arch(mobilenet).arch.layers]
    assert {"conv", "dwconv", "add"} <= set(ops) and ops[0] == "input" and ops[-1] == "output"
    # the converter agrees: MACs of the .tflite read back equal the Arch's graph
    g = keras_to_arch(mobilenet).graph()
    assert read_tflite(keras_to_tflite(mobilenet)).total_macs == g.total_macs


def test_unsupported_models_are_refused_in_one_line():
    import keras

    from leti.compression.keras_ir import keras_to_arch

    x = keras.Input((16, 16, 3), batch_size=1)
    y = keras.layers.Conv2D(4, 3, padding="valid", name="shrinks")(x)
    y = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(y))
    with pytest.raises(LetiError) as e:
        keras_to_arch(keras.Model(x, y))
    assert "shrinks" in one_line(e) and "padding" in one_line(e)
    y = keras.layers.Dense(10)(keras.layers.Flatten()(keras.layers.Conv2D(4, 3, padding="same")(x)))
    with pytest.raises(LetiError) as e:
        keras_to_arch(keras.Model(x, y))
    assert "GlobalAveragePooling2D" in one_line(e)
    seq = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)]
    )
    with pytest.raises(LetiError) as e:
        keras_to_arch(seq)
    assert "Sequential" in one_line(e)


# ---- candidates and surgery -------------------------------------------------------------------------------------
def test_candidates_shrink_units_and_respect_the_graph(resnet):
    from leti.compression.candidates import CandidateOptions, list_candidates
    from leti.compression.keras_surgery import units

    us = units(resnet)
    assert "classifier" in us and us["classifier"].classifier
    cands = list_candidates(resnet, CandidateOptions(min_rank=4, cp_ratios=(4.0,)))
    assert "classifier" not in cands
    for name, cs in cands.items():
        for c in cs:
            assert c.params_after < c.params_before == us[name].params
            assert 0 <= c.rel_error <= 1
    # convs feeding a residual Add cannot be pruned; those feeding only a conv can
    assert "prune" not in {c.method for c in cands["s0b0_conv2"]}
    assert "Add" in us["s0b0_conv2"].prune_reason
    assert {"tucker2", "cp", "prune"} <= {c.method for c in cands["s1b0_conv1"]}
    assert {c.method for c in cands["fc"]} == {"svd", "prune"}
    assert any(c.source.startswith("evbmf") for c in cands["fc"])


def test_cp_candidates_are_bounded_by_their_als_work(resnet):
    """A CP candidate whose ALS would need a Khatri-Rao product over the bound is not scored (ResNet50's 3x3x512x512
    kernels took 11 GB); Tucker-2 still covers the layer."""
    from leti.compression.candidates import CandidateOptions, cp_modes, layer_candidates
    from leti.compression.keras_surgery import units

    assert cp_modes((3, 3, 512, 512)) == 3 * 512 * 512
    unit = units(resnet)["s1b0_conv1"]
    opts = CandidateOptions(min_rank=4, cp_ratios=(2.0,))
    assert "cp" in {c.method for c in layer_candidates(unit, opts)}
    tight = CandidateOptions(min_rank=4, cp_ratios=(2.0,), cp_max_work=cp_modes(unit.kernel.shape) - 1)
    methods = {c.method for c in layer_candidates(unit, tight)}
    assert "cp" not in methods and "tucker2" in methods


def test_full_rank_decompositions_reproduce_the_model(resnet):
    from leti.compression.candidates import apply_candidates, candidate
    from leti.compression.keras_surgery import Edit, units

    us = units(resnet)
    cands = []
    for name, u in us.items():
        if u.kind == "conv":
            cands.append(candidate(u, Edit(name, "tucker2", u.kernel.shape[2:])))
        elif u.kind == "dense" and not u.classifier:
            cands.append(candidate(u, Edit(name, "svd", (min(u.kernel.shape),))))
    a = apply_candidates(resnet, cands)
    assert a.check.ok
    assert max(a.layer_errors.values()) < 1e-5
    assert a.output_error < 1e-4
    ops = [x["op"] for x in a.arch.layers]
    assert ops.count("tucker2") == sum(u.kind == "conv" for u in us.values()) and "svd_dense" in ops
    # and again through the core (MUSCO's further compression) at the same ranks
    t2 = units(a.model)["s2b0_conv2"]
    assert t2.kind == "tucker2"
    again = apply_candidates(a.model, [candidate(t2, Edit("s2b0_conv2", "tucker2", t2.factors.ranks))])
    assert again.output_error < 1e-4


def test_cp_recovers_a_cp_kernel_on_a_strided_conv(resnet):
    """The split-stride CP layout runs in LiteRT (TF's own depthwise kernel refuses unequal strides)."""
    from leti.compression.candidates import apply_candidates, candidate
    from leti.compression.keras_surgery import Edit, apply_edits, units

    model = apply_edits(resnet, [])  # a copy
    layer = model.get_layer("s1b0_conv1")  # 3x3, stride 2
    rng = np.random.default_rng(0)
    k = np.einsum("ir,jr,cr,or->ijco", *(rng.standard_normal((n, 3)) for n in layer.kernel.shape))
    layer.set_weights([k.astype(np.float32) / 3])
    c = candidate(units(model)["s1b0_conv1"], Edit("s1b0_conv1", "cp", (3,), cp_iters=300))
    assert c.rel_error < 1e-3
    a = apply_candidates(model, [c])
    assert [x["op"] for x in a.arch.layers].count("cp") == 1 and a.check.ok
    assert a.output_error < 1e-2


def _zero_unused_inputs(model, producer: str, consumer: str, ratio: float):
    """A copy of ``model`` whose ``consumer`` ignores the channels that pruning ``producer`` drops."""
    from leti.compression.keras_surgery import apply_edits
    from leti.compression.prune import prune_plan

    copy = apply_edits(model, [])
    keep = prune_plan(copy.get_layer(producer).get_weights()[0], ratio)
    w = copy.get_layer(consumer).get_weights()
    drop = np.setdiff1d(np.arange(w[0].shape[-2]), keep)
    w[0][..., drop, :] = 0.0
    copy.get_layer(consumer).set_weights(w)
    return copy, keep


def test_pruning_slices_producer_bn_depthwise_and_consumer(resnet, mobilenet):
    from leti.compression.keras_surgery import Edit, apply_edits, output_error

    # expand conv -> BN -> relu6 -> depthwise -> BN -> relu6 -> project conv
    base, keep = _zero_unused_inputs(mobilenet, "b1_0_expand", "b1_0_project", 0.5)
    pruned = apply_edits(base, [Edit("b1_0_expand", "prune", ratio=0.5)])
    assert pruned.get_layer("b1_0_dw").get_weights()[0].shape[2] == len(keep)
    assert pruned.get_layer("b1_0_project").get_weights()[0].shape[2] == len(keep)
    assert output_error(base, pruned) < 1e-5
    # a pruned producer and a decomposed reader: the reader's input rank is capped by the channels left
    base, keep = _zero_unused_inputs(resnet, "s2b0_conv1", "s2b0_conv2", 0.75)
    both = apply_edits(
        base, [Edit("s2b0_conv1", "prune", ratio=0.75), Edit("s2b0_conv2", "tucker2", (24, 24))]
    )
    assert both.get_layer("s2b0_conv2__tucker2_0").get_weights()[0].shape[2:] == (len(keep), len(keep))
    assert output_error(base, both) < 1e-4


def test_edited_arch_matches_the_rebuilt_model(resnet, mobilenet):
    from leti.compression.candidates import CandidateOptions, edited_arch, list_candidates
    from leti.compression.keras_ir import check_arch, keras_to_arch
    from leti.compression.keras_surgery import apply_edits

    rnd = random.Random(0)
    for model in (resnet, mobilenet):
        ka = keras_to_arch(model)
        cands = list_candidates(model, CandidateOptions(min_rank=4, cp_ratios=(4.0,)))
        for _ in range(3):
            edits = [rnd.choice(cs).edit for cs in cands.values() if rnd.random() < 0.7]
            planned = edited_arch(ka, edits).to_graph()
            rebuilt = apply_edits(model, edits)
            got = keras_to_arch(rebuilt)
            assert check_arch(rebuilt, got).ok
            assert (planned.total_macs, planned.total_params) == (
                got.graph().total_macs,
                got.graph().total_params,
            )
            assert planned.n_nodes == got.graph().n_nodes


def test_bad_edits_are_refused_in_one_line(resnet):
    from leti.compression.keras_surgery import Edit, apply_edits

    with pytest.raises(LetiError):
        Edit("x", "tucker2", (3,))
    with pytest.raises(LetiError):
        Edit("x", "prune", ratio=1.0)
    with pytest.raises(LetiError):
        Edit("x", "lowrank", (3,))
    with pytest.raises(LetiError) as e:
        apply_edits(resnet, [Edit("nope", "svd", (2,))])
    assert "nope" in one_line(e)
    with pytest.raises(LetiError) as e:
        apply_edits(resnet, [Edit("s0b0_conv2", "prune", ratio=0.5)])
    assert "Add" in one_line(e)
    with pytest.raises(LetiError) as e:
        apply_edits(resnet, [Edit("fc", "tucker2", (2, 2))])
    assert "fc" in one_line(e)


# ---- planning ---------------------------------------------------------------------------------------------------
def test_knapsack_is_optimal_and_greedy_feasible():
    from leti.compression.plan import _efficient, _greedy, _knapsack, _Option

    rng = np.random.default_rng(0)
    for _ in range(20):
        per_unit = []
        for u in range(4):
            opts = [_Option(u, k, float(rng.uniform(0.1, 3)), float(rng.uniform(0, 1))) for k in range(3)]
            per_unit.append(_efficient(opts))
        need = float(rng.uniform(0.5, 6))
        best = None
        for combo in itertools.product(*[[None, *opts] for opts in per_unit]):
            chosen = [o for o in combo if o is not None]
            if sum(o.save for o in chosen) >= need:
                err = sum(o.err for o in chosen)
                best = err if best is None else min(best, err)
        ks, gr = _knapsack(per_unit, need), _greedy(per_unit, need)
        if best is None:
            assert ks is None and gr is None
            continue
        assert sum(o.save for o in ks) >= need and sum(o.save for o in gr) >= need
        assert sum(o.err for o in ks) <= best + 1e-3 * (1 + best)  # exact up to the saving grid
        assert sum(o.err for o in gr) >= sum(o.err for o in ks) - 1e-3


def test_plan_in_steps_calls_the_hook_and_meets_the_budget(resnet):
    from leti.compression.candidates import CandidateOptions
    from leti.compression.keras_ir import keras_to_arch
    from leti.compression.plan import apply, plan

    calls = []
    opts = CandidateOptions(min_rank=4, cp_ratios=(4.0,))
    pred = MacPredictor()
    p = plan(resnet, TARGET, "0.5x", ("tucker2", "svd"), predictor=pred, steps=2,
             on_step=lambda k, m: calls.append((k, m.count_params())), options=opts)  # fmt: skip
    assert [k for k, _ in calls] == [1, 2] and len(p.steps) == 2
    assert p.meets_budget and p.predicted_ms <= 0.5 * p.original_ms + 1e-9
    assert p.steps[0].budget_ms == pytest.approx(p.original_ms * 0.5**0.5)
    final = apply(p)
    assert pred.predict([keras_to_arch(final).graph()])[0] == pytest.approx(p.predicted_ms)
    # round 2 re-decomposes Tucker-2 units of round 1 through their cores, to smaller ranks
    first = {c.unit: c.candidate.edit.ranks for c in p.steps[0].choices}
    again = [c for c in p.steps[1].choices if c.unit in first]
    assert again and all(c.method == "tucker2" for c in again)
    assert all(np.all(np.array(c.candidate.edit.ranks) <= first[c.unit]) for c in again)
    greedy = plan(resnet, TARGET, "0.5x", ("tucker2", "svd"), predictor=pred, solver="greedy", options=opts)
    assert greedy.meets_budget and greedy.solver == "greedy"
    safe = plan(resnet, TARGET, "0.6x", ("tucker2", "svd"), predictor=pred, options=opts, margin=0.1)
    assert safe.predicted_ms <= 0.9 * safe.budget_ms + 1e-9
    ms = plan(resnet, TARGET, f"{p.original_ms * 0.7:.4f}ms", ("prune",), predictor=pred, options=opts)
    assert ms.predicted_ms <= ms.budget_ms and ms.budget.kind == "ms"


def test_plan_bad_inputs(resnet):
    import keras

    from leti.compression.plan import parse_budget, plan

    for bad in ("60%", "1.5x", "0x", "0ms", "-3ms", "fast", 0.6, None):
        with pytest.raises(LetiError) as e:
            parse_budget(bad)
        assert "latency_budget" in one_line(e)
    assert parse_budget("12ms").ms(40.0) == 12.0 and parse_budget(".5X").ms(10.0) == 5.0
    pred = MacPredictor()
    with pytest.raises(LetiError) as e:
        plan(resnet, TARGET, "0.6x", ("tucker2", "magic"), predictor=pred)
    assert "magic" in one_line(e)
    for kw in ({"steps": 0}, {"solver": "anneal"}, {"predictor": object()}, {"margin": 0.7}):
        with pytest.raises(LetiError):
            plan(resnet, TARGET, "0.6x", predictor=kw.pop("predictor", pred), **kw)
    with pytest.raises(LetiError) as e:
        plan(resnet, TARGET, "0.01x", ("svd",), predictor=pred)
    assert "cannot be met" in one_line(e)
    x = keras.Input((16, 16, 8), batch_size=1)
    y = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    only_dw = keras.Model(x, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(y)))
    with pytest.raises(LetiError) as e:
        plan(only_dw, TARGET, "0.6x", predictor=pred)
    assert "no compressible layers" in one_line(e)


def test_layer_lut_round_trips_and_matches_the_lut_family(resnet):
    from leti.compression.keras_ir import keras_to_arch
    from leti.errors import PredictorError
    from leti.predictors.lut import layer_signatures
    from leti.workflows.lut_build import LayerLUT

    g = keras_to_arch(resnet).graph()
    lut = LayerLUT(TARGET, stat="min")
    with pytest.raises(PredictorError):
        lut.predict([g])  # nothing measured yet
    lut.entries = {sig: 0.01 * (k + 1) for k, sig in enumerate(dict.fromkeys(layer_signatures(g, "skip")))}
    lut.scale = 1.5
    again = LayerLUT.from_dict(json.loads(json.dumps(lut.to_dict())))
    assert again.predict([g])[0] == pytest.approx(lut.predict([g])[0])
    assert lut.to_lut_predictor().predict([g])[0] == pytest.approx(lut.predict([g])[0])
    assert not lut.missing([g])
    with pytest.raises(LetiError):
        LayerLUT.from_dict({"entries": []})
    with pytest.raises(LetiError):
        LayerLUT(TARGET, stat="p99")


# ---- on this machine --------------------------------------------------------------------------------------------
def test_host_plan_builds_a_smaller_model_that_runs():
    """A plan for 0.6x of a ResNet-like on host-litert-cpu-1t, with a layer LUT measured here and calibrated as
    `leti compress` does: it meets the budget as predicted, and the planned model is built, smaller, and runs.

    Correctness only. Whether measured latencies land near the predictions and under the budget is a timing claim,
    noisy on a shared machine: benchmarks/bench_compress.py measures and reports it.
    """
    from leti.compression.candidates import CandidateOptions, edited_arch, list_candidates
    from leti.compression.keras_ir import keras_to_arch
    from leti.compression.models import resnet_like
    from leti.compression.plan import apply, calibration_archs, plan
    from leti.tflite.convert import build_tflite, keras_to_tflite
    from leti.workflows.lut_build import LayerLUT

    model = resnet_like(32, widths=(24, 48, 96), blocks=(1, 1, 1), head_units=64)
    opts = CandidateOptions(methods=("tucker2", "svd", "prune"), ratios=(2.0, 4.0))
    lut = LayerLUT(TARGET, runs=3, warmup=1, stat="min", repeats=1)
    ka = keras_to_arch(model)
    cands = list_candidates(model, opts)
    singles = [edited_arch(ka, [c.edit]).to_graph() for cs in cands.values() for c in cs]
    calib = [ka.graph()] + [a.to_graph() for a in calibration_archs(ka, 3)]  # as `leti compress` calibrates
    measured = lut.measure_with_layers(calib + singles, [build_tflite(g) for g in calib])
    assert len(measured) == len(calib) and all(np.isfinite(measured)) and min(measured) > 0
    lut.calibrate(calib, measured)
    p = plan(model, TARGET, "0.6x", opts.methods, predictor=lut, options=opts, margin=0.05)
    assert p.meets_budget and p.solver == "knapsack" and p.predicted_ms <= 0.95 * p.budget_ms + 1e-9
    compressed = apply(p)
    before, after = ka.graph(), keras_to_arch(compressed).graph()
    assert after.total_macs < before.total_macs and after.total_params < before.total_params
    assert compressed.output_shape == model.output_shape
    (ms,) = lut.measure_many([keras_to_tflite(compressed)])
    assert np.isfinite(ms) and ms > 0


# ---- CLI --------------------------------------------------------------------------------------------------------
def _run_cli(argv: list[str]) -> int:
    from leti.cli.common import _Parser
    from leti.cli.compress import add_compress_parser

    parser = _Parser(prog="leti")
    add_compress_parser(parser.add_subparsers(dest="command", required=True, parser_class=_Parser))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_compress_prints_json_and_saves(tmp_path, capsys):
    from leti.cli.compress import load_model
    from leti.compression.keras_ir import check_arch
    from leti.compression.models import resnet_like

    src = tmp_path / "m.keras"
    resnet_like(32, widths=(16, 32, 32), blocks=(1, 1, 1)).save(src)
    out, lut = tmp_path / "c.keras", tmp_path / "lut.json"
    argv = ["compress", str(src), "--target", TARGET, "--latency-budget", "0.8x", "--methods", "prune,tucker2",
            "--lut", str(lut), "-o", str(out), "--json"]  # fmt: skip
    assert _run_cli(argv) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["meets_budget"] and res["predicted_ms"] <= res["budget_ms"] and res["plan"]
    assert {"layer", "method", "setting", "params", "macs", "saved_ms", "rel_error"} <= set(res["plan"][0])
    assert check_arch(load_model(str(out))).ok and res["output_error"] > 0
    assert json.loads(lut.read_text())["entries"]  # measured layers are kept for the next run
    assert _run_cli(argv[:-3]) == 0  # text output, reusing the LUT
    text = capsys.readouterr().out
    assert "rank/ratio" in text and "budget 0.8x" in text


def test_cli_bad_inputs(tmp_path):
    src = tmp_path / "m.keras"
    src.write_text("not a model")
    base = ["compress", str(src), "--target", TARGET]
    for extra, field in ((["--latency-budget", "70%"], "latency_budget"),
                         (["--latency-budget", "0.7x", "--methods", "svd,zip"], "methods"),
                         (["--latency-budget", "0.7x", "--steps", "0"], "--steps"),
                         (["--latency-budget", "0.7x", "--verify", "--target", "pixel4-tflite-cpu"], "--verify"),
                         (["--latency-budget", "0.7x"], "model")):  # fmt: skip
        with pytest.raises(LetiError) as e:
            _run_cli(base + extra)
        assert field in one_line(e)
    with pytest.raises(LetiError) as e:
        _run_cli(
            ["compress", str(tmp_path / "missing.keras"), "--target", TARGET, "--latency-budget", "0.7x"]
        )
    assert "no such file" in one_line(e)


def test_compression_scores_with_the_kernel_predictor_when_the_target_has_one():
    """Issue 13: a target with a ``kernel`` predictor plans with it, even where another family answers by default."""
    from leti.compression.plan import default_predictor
    from leti.predictors.kernel import KernelPredictor
    from leti.predictors.registry import load, make, save_trained
    from leti.space import sample

    target = "pixel4-tflite-cpu-1large"
    graphs = [a.to_graph() for a, _ in sample("nb201", 12, seed=1)]
    y = np.array([1e-7 * g.total_macs + 0.5 for g in graphs])
    save_trained(make("flops").fit(graphs, y), target, {"metrics": {"acc10": 0.99}})
    assert default_predictor(target).family == "flops"
    save_trained(KernelPredictor(features="small").fit(graphs, y), target, {"metrics": {"acc10": 0.1}})
    assert load(target).family == "flops"  # what answers by default (the better test acc@10)...
    assert isinstance(default_predictor(target), KernelPredictor)  # ...but compression takes the kernel one
    with pytest.raises(LetiError, match="no predictor for s10"):
        default_predictor("s10-tflite-cpu-1large")
