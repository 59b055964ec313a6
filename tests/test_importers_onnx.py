"""ONNX -> LayerGraph on real files: torch modules exported by torch.onnx.export, and hand-written graphs for the
forms other exporters write (NHWC input, GELU as Erf, MatMul + Add, Split, ...). MACs and params are checked
against counts made independently of the importer (torch's own parameter count, forward hooks on the layers)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from leti.errors import LetiError, ModelFileError
from leti.importers.common import UnsupportedOpError
from leti.importers.models import read_model
from leti.importers.onnx_model import read_onnx
from leti.importers.torch_module import export_onnx, read_torch

F = torch.nn.functional


class SE(torch.nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Conv2d(c, c // 4, 1), torch.nn.Conv2d(c // 4, c, 1)

    def forward(self, x):
        return x * F.hardsigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


class SmallNet(torch.nn.Module):
    """Every op family of common CNNs in a few layers."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 16, 3, 2, 1, bias=False)
        self.bn = torch.nn.BatchNorm2d(16)
        self.dw = torch.nn.Conv2d(16, 16, 3, 1, 1, groups=16)
        self.se = SE(16)
        self.pw = torch.nn.Conv2d(16, 32, 1)
        self.gconv = torch.nn.Conv2d(32, 32, 3, 1, 1, groups=4)
        self.bn2 = torch.nn.BatchNorm2d(32)
        self.head = torch.nn.Linear(32 * 4 * 4, 10)

    def forward(self, x):
        x = F.relu6(self.bn(self.stem(x)))  # conv + BN + ReLU6 (Clip) fold into one node
        x = F.hardswish(self.dw(x))
        x = self.se(x)
        x = F.silu(self.pw(x))  # x * sigmoid(x)
        b, c, h, w = x.shape
        x = x.view(b, 4, c // 4, h, w).transpose(1, 2).reshape(b, c, h, w)  # channel shuffle
        x = F.gelu(self.gconv(x)) + x
        x = self.bn2(x)  # a BN that follows no conv: standalone
        x = F.max_pool2d(x, 2)
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = F.interpolate(x, size=(6, 6), mode="bilinear", align_corners=False)
        x = F.avg_pool2d(x, 3, 2, 1, ceil_mode=True)  # pads and ceil_mode: a pad node, then a VALID pool
        x = F.pad(x, (1, 0, 0, 1), mode="reflect")
        x = x[:, :, 1:, :4]  # a crop
        x = F.dropout(x, 0.5, self.training)
        return self.head(torch.flatten(x, 1))


def torch_params(m: torch.nn.Module) -> int:
    """torch's stored weights as Keras counts them: parameters plus BatchNorm running statistics."""
    buffers = sum(b.numel() for n, b in m.named_buffers() if "running_" in n)
    return sum(p.numel() for p in m.parameters()) + buffers


def hook_macs(m: torch.nn.Module, shape) -> dict[str, int]:
    """MACs of convs, linears and pools, counted by forward hooks on torch's own layers."""
    out = {"conv": 0, "dense": 0}

    def conv(mod, inp, y):
        kh, kw = mod.kernel_size
        out["conv"] += y.numel() * kh * kw * mod.in_channels // mod.groups

    def linear(mod, inp, y):
        out["dense"] += mod.in_features * mod.out_features

    hooks = [
        mod.register_forward_hook(conv if isinstance(mod, torch.nn.Conv2d) else linear)
        for mod in m.modules()
        if isinstance(mod, torch.nn.Conv2d | torch.nn.Linear)
    ]
    m.eval()
    with torch.no_grad():
        m(torch.zeros(1, shape[2], shape[0], shape[1]))
    for h in hooks:
        h.remove()
    return out


@pytest.fixture(scope="module")
def small_onnx() -> bytes:
    torch.manual_seed(0)
    return export_onnx(SmallNet(), (16, 16, 3))


def test_torch_module_counts_match_torch(small_onnx):
    torch.manual_seed(0)
    net = SmallNet()
    g = read_torch(net, (16, 16, 3))
    assert g.meta["source"] == "torch" and net.training  # the training flag is restored
    assert g.total_params == torch_params(net)
    hooks = hook_macs(net, (16, 16, 3))
    weighted = {op: sum(int(g.macs[i]) for i in range(g.n_nodes) if g.op_name(i) in ops)
                for op, ops in (("conv", ("conv", "dwconv")), ("dense", ("dense",)))}  # fmt: skip
    assert weighted == hooks
    # the rest by hand: SE gap 8*8*16 + SE mul 8*8*16 + add 8*8*32 + standalone bn 8*8*32 + maxpool 4*4*32*4 +
    # bilinear resize 4 * 6*6*32 + avgpool (ceil mode: 4x4 out) 4*4*32*9
    assert g.total_macs - sum(weighted.values()) == 1024 + 1024 + 2048 + 2048 + 2048 + 4608 + 4608
    assert g.op_counts() == {"input": 1, "conv": 5, "dwconv": 1, "gap": 1, "mul": 1, "shuffle": 1, "add": 1,
                             "bn": 1, "maxpool": 1, "resize": 2, "pad": 4, "avgpool": 1, "reshape": 1,
                             "dense": 1}  # fmt: skip
    acts = {n.attrs["act"] for n in g.nodes() if n.op in ("conv", "dwconv")}
    assert acts == {"relu6", "hswish", "relu", "hsigmoid", "swish", "gelu"}
    stem = g.node(1)
    assert (stem.op, stem.attrs["bn"], stem.attrs["bias"], stem.attrs["pad"]) == ("conv", True, False, 0)
    assert g.output_shape == (1, 1, 10)
    assert read_onnx(small_onnx).to_dict()["op"] == g.to_dict()["op"]


def test_pads_and_crops_keep_their_amounts():
    torch.manual_seed(0)
    g = read_torch(SmallNet(), (16, 16, 3))
    pads = [n for n in g.nodes() if n.op == "pad"]
    # ceil_mode avgpool (3, stride 2, pad 1) on 6x6: one pad on every side, one more at the end for the ceiling;
    # torch writes the crop x[:, :, 1:, :4] as two Slice nodes
    assert [
        (p.attrs["top"], p.attrs["left"], p.attrs["bottom"], p.attrs["right"], p.attrs["mode"]) for p in pads
    ] == [
        (1, 1, 2, 2, "constant"),
        (0, 1, 1, 0, "reflect"),
        (-1, 0, 0, 0, "constant"),
        (0, 0, 0, -1, "constant"),
    ]
    assert pads[-1].out_shape == (4, 4, 32)


def test_onnx_file_through_read_model(small_onnx, tmp_path):
    p = tmp_path / "net.onnx"
    p.write_bytes(small_onnx)
    g = read_model(p)
    assert g.meta["source"] == "onnx" and g.meta["file"] == "net.onnx"
    assert g.input_shape == (16, 16, 3)


def test_dynamic_input_needs_a_shape(tmp_path):
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1)
    )
    p = tmp_path / "dyn.onnx"
    torch.onnx.export(net.eval(), (torch.zeros(1, 3, 32, 32),), str(p), dynamo=False,
                      dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}}, input_names=["x"])  # fmt: skip
    with pytest.raises(ModelFileError, match=r"input_shape: .*--input-shape") as e:
        read_model(p)
    assert "\n" not in str(e.value)
    g = read_model(p, (40, 24, 3))
    assert g.input_shape == (40, 24, 3) and g.node(1).out_shape == (40, 24, 8)
    assert read_model(p, "20,20,3").total_macs == 20 * 20 * 8 * 27 + 20 * 20 * 8
    with pytest.raises(LetiError, match="does not fit"):
        read_model(p, (40, 24, 4))


def test_torch_errors_are_one_line():
    with pytest.raises(LetiError, match="expected a torch.nn.Module"):
        read_torch("not a module", (8, 8, 3))
    with pytest.raises(LetiError, match="input_shape"):
        read_torch(torch.nn.Conv2d(3, 4, 3), None)
    up = torch.nn.Sequential(torch.nn.ConvTranspose2d(3, 4, 2, stride=2))
    with pytest.raises(
        UnsupportedOpError, match=r"node '.*' \(ConvTranspose\): has no LayerGraph equivalent"
    ):
        read_torch(up, (8, 8, 3))


# ---- hand-written graphs ----------------------------------------------------------------------------------------
def make_model(nodes, inits, in_shape, out_shape, opset: int = 17, in_name: str = "x") -> onnx.ModelProto:
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [onnx.numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def f32(*shape) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def test_exporter_decompositions():
    """NHWC input, GELU as Erf, Clip ranges, x * HardSigmoid(x), MatMul + Add, Split, ReduceMean, Resize, ..."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["t", "w1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Div", ["c1", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["e1"]),
        helper.make_node("Mul", ["c1", "e1"], ["m"]),
        helper.make_node("Mul", ["m", "half"], ["gelu"]),
        helper.make_node("HardSigmoid", ["gelu"], ["hs"], alpha=1 / 6),
        helper.make_node("Mul", ["gelu", "hs"], ["hsw"]),
        helper.make_node("Clip", ["hsw", "zero", "four"], ["clip"]),
        helper.make_node("Split", ["clip", "split"], ["a", "b"], axis=1),
        helper.make_node("GlobalMaxPool", ["a"], ["gm"]),
        helper.make_node("Mul", ["b", "gm"], ["se"]),
        helper.make_node("Resize", ["se", "", "scales"], ["up"], mode="linear"),
        helper.make_node("Pad", ["up", "pads"], ["pad"]),
        helper.make_node("Conv", ["pad", "w2"], ["c2"], kernel_shape=[3, 3], strides=[2, 2]),
        helper.make_node("ReduceMean", ["c2"], ["gap"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["gap", "wd"], ["mm"]),
        helper.make_node("Add", ["mm", "bd"], ["fc"]),
        helper.make_node("Softmax", ["fc"], ["y"], axis=1),
    ]
    inits = {"w1": f32(8, 3, 3, 3), "sqrt2": np.float32(np.sqrt(2)), "one": np.float32(1), "half": np.float32(0.5),
             "zero": np.float32(0), "four": np.float32(4), "split": np.array([4, 4]), "scales": np.array(
                 [1, 1, 2, 2], np.float32), "pads": np.array([0, 0, 3, 0, 0, 0, 0, 1]), "w2": f32(2, 4, 3, 3),
             "wd": f32(2, 5), "bd": f32(5)}  # fmt: skip
    g = read_onnx(make_model(nodes, inits, [1, 8, 8, 3], [1, 5], opset=17))
    ops = [(n.op, n.attrs.get("act")) for n in g.nodes()]
    assert ops == [("input", None), ("conv", "none"), ("act", "gelu"), ("act", "hswish"), ("act", "relu6"),
                   ("slice", None), ("slice", None), ("maxpool", None), ("mul", None), ("resize", None),
                   ("pad", None), ("conv", "none"), ("gap", None), ("dense", "softmax")]  # fmt: skip
    assert g.input_shape == (8, 8, 3) and g.node(7).out_shape == (1, 1, 4) and g.node(7).attrs["kh"] == 8
    assert g.node(9).out_shape == (16, 16, 4) and g.node(9).attrs == {"mode": "bilinear"}
    assert g.node(11).out_shape == (9, 8, 2) and g.node(11).attrs["pad"] == 1  # VALID on the padded map
    assert g.node(13).params == 2 * 5 + 5 and g.node(13).attrs["bias"]
    assert g.node(8).inputs == (6, 7)  # the 1x1 scale goes second


def test_bn_as_constants_and_zero():
    nodes = [
        helper.make_node("Mul", ["x", "scale"], ["m"]),
        helper.make_node("Add", ["m", "shift"], ["a"]),
        helper.make_node("Sub", ["a", "three"], ["s"]),
        helper.make_node("Mul", ["s", "zero"], ["y"]),
    ]
    inits = {"scale": f32(4, 1, 1), "shift": f32(4, 1, 1), "three": np.float32(3), "zero": np.float32(0)}
    g = read_onnx(make_model(nodes, inits, [1, 4, 6, 6], [1, 4, 6, 6]))
    assert [n.op for n in g.nodes()] == ["input", "bn", "bn", "zero"]
    assert [n.params for n in g.nodes()] == [0, 8, 0, 0]  # stored vectors count, a scalar does not


def test_unsupported_ops_are_named():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1], name="proj"),
             helper.make_node("LpNormalization", ["c"], ["y"], axis=1, name="norm")]  # fmt: skip
    with pytest.raises(
        UnsupportedOpError, match=r"^node 'norm' \(LpNormalization\): has no LayerGraph equivalent$"
    ):
        read_onnx(make_model(nodes, {"w": f32(4, 3, 1, 1)}, [1, 3, 4, 4], [1, 4, 4, 4]))
    nodes = [helper.make_node("ReduceMean", ["x"], ["y"], axes=[1], keepdims=1, name="cmean")]
    with pytest.raises(UnsupportedOpError, match="cmean.*reduces over axes other than H and W"):
        read_onnx(make_model(nodes, {}, [1, 3, 4, 4], [1, 1, 4, 4]))
    nodes = [helper.make_node("Transpose", ["x"], ["y"], perm=[0, 1, 3, 2], name="tr")]
    with pytest.raises(UnsupportedOpError, match=r"tr.*transposes axes \[0, 1, 3, 2\]"):
        read_onnx(make_model(nodes, {}, [1, 3, 4, 5], [1, 3, 5, 4]))


@pytest.mark.parametrize(
    "data,message",
    [
        (b"", "empty"),
        (b"this is not a model at all, just text" * 3, "not a"),
        (bytes(range(256)) * 4, "not a"),
    ],
    ids=["empty", "text", "garbage"],
)
def test_garbage_files(data, message, tmp_path):
    p = tmp_path / "bad.onnx"
    p.write_bytes(data)
    with pytest.raises(ModelFileError, match=message) as e:
        read_model(p)
    assert "\n" not in str(e.value)


def test_truncated_and_mutated_files(small_onnx):
    """Cuts and flipped bytes give a LayerGraph or a one-line ModelFileError, never another exception."""
    rng = np.random.default_rng(0)
    errors = 0
    for k in range(40):
        data = bytearray(small_onnx)
        if k % 2:
            data = data[: int(rng.integers(1, len(data)))]
        else:
            for pos in rng.integers(0, len(data), size=4):
                data[pos] = int(rng.integers(0, 256))
        try:
            read_onnx(bytes(data))
        except ModelFileError as e:
            assert "\n" not in str(e)
            errors += 1
    assert errors >= 20  # every truncation at least
