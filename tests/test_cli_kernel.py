"""The kernel family's verbs: import --format mobile-ml-benchmark, evaluate --split family, predict --explain and
kernels build; bad input gives one line and exit status 2."""

from __future__ import annotations

import json

import pytest

from leti.cli import main
from leti.testing.mlbench_synth import write_mlbench

NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|"


@pytest.fixture
def imported(tmp_path, capsys):
    d = write_mlbench(tmp_path / "mlbench")
    assert main(["import", "--format", "mobile-ml-benchmark", str(d), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["models"] == 24 and "pixel4-tflite-gpu" in out["targets"]
    return d


def test_import_evaluate_train_explain(imported, capsys):
    assert main(["import", "--format", "mobile-ml-benchmark", str(imported)]) == 0
    assert "0 new measurements" in capsys.readouterr().out  # importing again adds nothing

    argv = [
        "evaluate",
        "--target",
        "pixel4-tflite-gpu",
        "--predictor",
        "kernel",
        "--split",
        "family",
        "--json",
    ]
    assert main(argv) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["split"] == "family" and m["n_families"] == 5 and m["n_test"] == 24 and m["kernel_measurements"]
    assert {"acc5", "acc10", "acc20", "rmse", "mape", "r2", "spearman", "kendall", "n_train"} <= set(m)

    assert (
        main(["train", "--target", "pixel4-tflite-gpu", "--predictor", "kernel", "--train-size", "16"]) == 0
    )
    capsys.readouterr()
    assert (
        main(["predict", "--target", "pixel4-tflite-gpu", "--predictor", "kernel", "--explain", NB201]) == 0
    )
    out = capsys.readouterr().out
    assert "gpu rules" in out and "overhead" in out and "conv" in out
    argv = ["predict", "--target", "pixel4-tflite-gpu", "--predictor", "kernel", "--explain", "--json", NB201]
    assert main(argv) == 0
    e = json.loads(capsys.readouterr().out)["explain"][0]
    assert e["total_ms"] == pytest.approx(sum(k["ms"] for k in e["kernels"]) + e["overhead_ms"])
    assert main(["predict", "--target", "pixel4-tflite-gpu", "--predictor", "kernel", "--json", NB201]) == 0
    ms = json.loads(capsys.readouterr().out)["latency_ms"][0]
    assert ms == pytest.approx(e["total_ms"])


def test_kernels_build(imported, capsys):
    argv = ["kernels", "build", "--target", "host-litert-cpu-1t", "--n", "4", "--rounds", "2", "--runs", "2",
            "--max-macs", "2000000", "--json"]  # fmt: skip
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["n_configs"] == 4 and r["n_measured"] == 4 and r["rules"] == "litert" and r["path"]


@pytest.mark.parametrize(
    "argv,field",
    [
        (["import", "--format", "mobile-ml-benchmark", "a", "b"], "files"),
        (["import", "--format", "mobile-ml-benchmark", "/nonexistent/dir"], "/nonexistent/dir"),
        (["evaluate", "--target", "pixel4-tflite-gpu", "--split", "family"], "--predictor"),
        (
            ["evaluate", "--target", "pixel4-tflite-gpu", "--split", "family", "--predictor", "svm"],
            "--predictor",
        ),
        (["kernels", "build", "--target", "host-litert-cpu-1t", "--rounds", "0"], "rounds"),
        (["kernels", "build", "--target", "pixel4-tflite-gpu"], "target"),
    ],
)
def test_bad_input_is_one_line(argv, field, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("leti: error:") and field in err and "\n" not in err


def test_explain_needs_a_kernel_predictor(imported, capsys):
    assert main(["train", "--target", "pixel4-tflite-gpu", "--predictor", "flops", "--train-size", "16"]) == 0
    capsys.readouterr()
    assert main(["predict", "--target", "pixel4-tflite-gpu", "--predictor", "flops", "--explain", NB201]) == 2
    assert "--predictor kernel" in capsys.readouterr().err
