"""Model files on the command line (``leti space show``, ``leti predict``, ``--input-shape``) and in-memory models
in the Python API (``leti.predict`` with a torch module or a Keras model)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import leti
from leti.cli import main
from leti.errors import LetiError
from leti.importers.models import read_model
from leti.importers.torch_module import export_onnx, read_torch
from leti.space import sample

TARGET = "dev-cpu-1t"


def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU6(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4),
    )  # fmt: skip


@pytest.fixture
def files(tmp_path):
    fixed = tmp_path / "fixed.onnx"
    fixed.write_bytes(export_onnx(net(), (16, 16, 3)))
    dyn = tmp_path / "dyn.onnx"
    torch.onnx.export(net().eval(), (torch.zeros(1, 3, 16, 16),), str(dyn), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {2: "h", 3: "w"}})  # fmt: skip
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(fixed.read_bytes()[:100])
    return fixed, dyn, bad


@pytest.fixture
def flops_predictor():
    """A flops predictor for TARGET, trained on synthetic NB201 latencies in this test's LETI_HOME."""
    from leti.predictors import registry

    graphs = [a.to_graph() for a, _ in sample("nb201", 40, seed=0)]
    y = np.array([0.2 + g.total_macs / 1e7 for g in graphs])
    pred = registry.make("flops").fit(graphs, y)
    registry.save_trained(pred, TARGET, {"seed": 0, "n_train": 40})
    return pred


def test_space_show_reads_model_files(files, capsys):
    fixed, dyn, bad = files
    assert main(["space", "show", str(fixed), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["totals"]["macs"] == read_model(fixed).total_macs and out["hash"] is None
    assert main(["space", "show", str(dyn), "--input-shape", "24,20,3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["nodes"][0]["out_shape"] == [24, 20, 3]
    assert main(["space", "show", str(fixed)]) == 0
    assert "onnx model" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["dyn"], "input_shape: the input shape [1, 3, 'h', 'w'] is not fixed; give it with --input-shape"),
        (["dyn", "--input-shape", "24,24"], "input_shape: expected H,W,C (three integers)"),
        (["bad"], "model: not a readable ONNX model"),
        (["missing.onnx"], "missing.onnx: no such file"),
        (
            [
                "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|",
                "--input-shape",
                "8,8,3",
            ],
            "--input-shape: applies to model files",
        ),  # fmt: skip
    ],
    ids=["dynamic", "bad_shape", "corrupt", "missing", "not_a_model"],
)
def test_bad_model_input_is_one_line(argv, needle, files, capsys):
    names = {"dyn": files[1], "bad": files[2]}
    argv = [str(names.get(a, a)) for a in argv]
    assert main(["space", "show", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err


def test_predict_model_files(files, flops_predictor, capsys):
    fixed, dyn, _ = files
    assert (
        main(["predict", str(fixed), str(dyn), "--input-shape", "16,16,3", "--target", TARGET, "--json"]) == 0
    )
    ms = json.loads(capsys.readouterr().out)["latency_ms"]
    want = float(flops_predictor.predict([read_model(fixed)])[0])
    assert ms == pytest.approx([want, want])  # the dynamic file at 16x16 is the same network
    assert main(["predict", str(dyn), "--target", TARGET]) == 2
    assert "--input-shape" in capsys.readouterr().err


def test_python_api_takes_torch_and_keras_models(flops_predictor):
    module = net()
    got = leti.predict(module, TARGET, predictor="flops", input_shape=(16, 16, 3))
    assert got.shape == (1,)
    assert got[0] == pytest.approx(float(flops_predictor.predict([read_torch(module, (16, 16, 3))])[0]))
    two = leti.predict([module, module], TARGET, predictor="flops", input_shape="16,16,3")
    assert two.tolist() == pytest.approx([got[0], got[0]])
    with pytest.raises(LetiError, match="input_shape"):
        leti.predict(module, TARGET, predictor="flops")
    from leti.tflite.convert import silenced

    with silenced():
        import keras

        x = keras.Input((16, 16, 3))
        model = keras.Model(x, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(x)))
    assert leti.predict(model, TARGET, predictor="flops").shape == (1,)
