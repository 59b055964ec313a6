"""Fusion rules: each rule on a small graph it applies to and on one it does not, and the kernels ``split`` makes."""

import pytest

from leti.errors import PredictorError
from leti.graph.builder import GraphBuilder
from leti.graph.oplist import OpSpec, oplist_graph
from leti.predictors import fusion as FU


def rule(name):
    return next(r for r in FU.RULES if r.name == name)


def view(g, j):
    i = g.inputs_of(j)[0]
    return FU.View.of(g, i, j, i)


def chain(*steps, shape=(16, 16, 8)):
    """A graph input -> steps; each step is a callable (builder, x) -> node."""
    b = GraphBuilder()
    x = b.input(shape)
    for step in steps:
        x = step(b, x)
    return b.finish()


def kernel_ops(g, ruleset):
    k = FU.split(g, ruleset)
    return [[g.op_name(n) for n in ns] for ns in k.nodes], k.names()


def test_bn_into_conv():
    g = chain(lambda b, x: b.conv(x, 8, 3), lambda b, x: b.bn(x))
    assert rule("bn->conv").applies(view(g, 2))
    for rs in FU.RULESETS:
        assert kernel_ops(g, rs)[0] == [["conv", "bn"]]
    g = chain(
        lambda b, x: b.add([x, x]), lambda b, x: b.bn(x)
    )  # a BN after an add stays (pre-activation nets)
    assert not rule("bn->conv").applies(view(g, 2))
    assert kernel_ops(g, "cpu") == ([["add"], ["bn"], ["bn"]], ["add", "bn", "mul"])  # XNNPACK: MUL, then ADD
    assert kernel_ops(g, "gpu") == ([["add", "bn"]], ["add"])
    g = chain(lambda b, x: b.add([x, x]), lambda b, x: b.bn(x), lambda b, x: b.act(x, "relu"))
    assert kernel_ops(g, "cpu")[0] == [["add"], ["bn", "act"], ["bn"]]  # the ReLU rides on the shift's ADD


def test_clamp_into_producer():
    g = chain(lambda b, x: b.pool("maxpool", x, 3, 1), lambda b, x: b.act(x, "relu6"))
    assert rule("clamp->producer").applies(view(g, 2))
    for rs in ("cpu", "litert"):
        assert kernel_ops(g, rs)[0] == [["maxpool", "act"]]
    g = chain(lambda b, x: b.pool("maxpool", x, 3, 1), lambda b, x: b.act(x, "hswish"))
    assert not rule("clamp->producer").applies(view(g, 2))
    assert kernel_ops(g, "cpu")[0] == [["maxpool"], ["act"]]


def test_clamp_into_binary_op():
    g = chain(lambda b, x: b.add([x, x]), lambda b, x: b.act(x, "relu"))
    assert rule("clamp->binary").applies(view(g, 2)) and not rule("clamp->producer").applies(view(g, 2))
    assert kernel_ops(g, "cpu")[0] == [["add", "act"]]  # TFLite 2.x on phones: the add's fused activation
    assert kernel_ops(g, "litert")[0] == [["add"], ["act"]]  # LiteRT 2.3 on the host: a second pass
    g = chain(lambda b, x: b.add([x, x]), lambda b, x: b.act(x, "sigmoid"))
    assert not rule("clamp->binary").applies(view(g, 2))
    assert kernel_ops(g, "cpu")[0] == [["add"], ["act"]]
    g = chain(
        lambda b, x: b.concat([x, x]), lambda b, x: b.act(x, "relu")
    )  # a concat has no fused activation
    assert kernel_ops(g, "cpu")[0] == [["concat"], ["act"]]


def test_gpu_links_elementwise_chains():
    g = chain(lambda b, x: b.conv(x, 8, 3), lambda b, x: b.add([x, x]), lambda b, x: b.act(x, "hswish"))
    assert rule("elementwise->kernel").applies(view(g, 2))
    assert kernel_ops(g, "gpu")[0] == [["conv", "add", "act"]]
    assert kernel_ops(g, "cpu")[0] == [["conv"], ["add"], ["act"]]
    # a squeeze-excite scale broadcasts a (1, 1, C) gate over the map: not linked
    b = GraphBuilder()
    x = b.input((16, 16, 8))
    gate = b.conv(b.gap(x, keepdims=True), 8, 1, act="sigmoid")
    b.mul(x, gate)
    g = b.finish()
    mul = g.n_nodes - 1
    assert not rule("elementwise->kernel").applies(FU.View.of(g, gate, mul, gate))
    assert [g.op_name(ns[0]) for ns in FU.split(g, "gpu").nodes] == ["gap", "conv", "mul"]


def test_metal_merges_small_depthwise_with_pointwise():
    small = chain(lambda b, x: b.dwconv(x, 3), lambda b, x: b.conv(x, 32, 1), shape=(16, 16, 16))
    assert rule("dw3x3+conv1x1").applies(view(small, 2))
    assert kernel_ops(small, "metal")[0] == [["dwconv", "conv"]]
    assert kernel_ops(small, "gpu")[0] == [["dwconv"], ["conv"]]
    wide = chain(lambda b, x: b.dwconv(x, 3), lambda b, x: b.conv(x, 32, 1), shape=(16, 16, 64))
    assert not rule("dw3x3+conv1x1").applies(view(wide, 2))
    assert kernel_ops(wide, "metal")[0] == [["dwconv"], ["conv"]]


def test_no_fusion_through_a_shared_tensor():
    b = GraphBuilder()
    x = b.input((8, 8, 8))
    c = b.conv(x, 8, 3)
    r = b.act(c, "relu")
    b.add([r, c])  # the conv output is read twice: the relu cannot be folded into it
    g = b.finish()
    assert [len(ns) for ns in FU.split(g, "cpu").nodes] == [1, 1, 1]


def _padded(op):
    """An op-list chain whose second op reads an explicitly padded copy of the first op's output."""
    first = OpSpec("conv", (16, 16, 8), (16, 16, 8), {"kh": 1, "kw": 1, "sh": 1, "sw": 1, "act": "relu"})
    attrs = {"kh": 3, "kw": 3, "sh": 1, "sw": 1, "pad": 1}
    if op == "conv":
        second = OpSpec("conv", (18, 18, 8), (16, 16, 8), attrs)
    else:
        second = OpSpec("maxpool", (18, 18, 8), (16, 16, 8), attrs)
    return oplist_graph([first, second], (16, 16, 8))


def test_pads():
    conv, pool = _padded("conv"), _padded("maxpool")
    assert FU.implied_pad(conv, 2, 1) and FU.implied_pad(pool, 2, 1)
    assert "pad" not in FU.split(conv, "cpu").names()  # XNNPACK fuses a constant pad into a convolution
    assert FU.split(pool, "cpu").names().count("pad") == 1  # but not into pooling
    assert "pad" not in FU.split(pool, "gpu").names()  # the GPU delegate merges padding into pooling too
    valid = chain(
        lambda b, x: b.conv(x, 8, 3, pad=1)
    )  # a genuinely VALID conv reads its producer's full output
    assert not FU.implied_pad(valid, 1, 0)


def test_activations_other_than_clamps():
    g = chain(lambda b, x: b.conv(x, 8, 3, act="hswish"))
    assert FU.split(g, "cpu").names() == ["conv3x3", "act"]  # XNNPACK runs hard-swish as its own operator
    assert FU.split(g, "gpu").names() == ["conv3x3"]
    g = chain(lambda b, x: b.conv(x, 8, 3, act="relu6"))
    assert FU.split(g, "cpu").names() == ["conv3x3"]


def test_kernel_rows():
    g = chain(lambda b, x: b.conv(x, 12, 3, sh=2, act="relu"), shape=(16, 16, 5))
    k = FU.split(g, "cpu")
    r = dict(zip(FU.COLUMNS, k.rows[0], strict=True))
    assert (r["h_in"], r["c_in"], r["h_out"], r["c_out"], r["k"], r["stride"]) == (16, 5, 8, 12, 3, 2)
    assert r["macs"] == g.total_macs and r["tile_macs"] == 8 * 8 * 16 * 9 * 5  # 12 outputs padded to 16
    assert FU.split(g, "gpu").rows[0][FU.COL["tile_macs"]] == 8 * 8 * 12 * 9 * 8  # 4-channel slices


def test_rulesets():
    assert FU.ruleset_for_target("pixel4-tflite-cpu-1large") == "cpu"
    assert FU.ruleset_for_target("pixel4-tflite-gpu") == "gpu"
    assert FU.ruleset_for_target("iphonexs-tflite-gpu") == "metal"
    assert FU.ruleset_for_target("host-litert-cpu-1t") == "litert"
    assert {r.name for r in FU.rules_for("cpu")} == {"bn->conv", "clamp->producer", "clamp->binary"}
    assert {r.name for r in FU.rules_for("litert")} == {"bn->conv", "clamp->producer"}
    with pytest.raises(PredictorError):
        FU.split(chain(lambda b, x: b.act(x, "relu")), "npu")
