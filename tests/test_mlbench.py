"""mobile-ml-benchmark importer: parsing to op-list graphs, the store import, model families, leave-one-family-out.

Unit tests use a small synthetic directory in the real format (leti.testing.mlbench_synth); the test on the real
files reads them from ../shared/data and skips when they are absent.
"""

from pathlib import Path

import numpy as np
import pytest

from leti.datasets.archs import target_data
from leti.datasets.mlbench import import_mlbench
from leti.datasets.split import model_family
from leti.datasets.store import Store
from leti.errors import LetiError
from leti.graph.layergraph import A
from leti.importers.inputs import stored_graph
from leti.importers.mlbench import KernelName, read_mlbench, target_name
from leti.predictors.family_split import evaluate_by_family, family_table, model_names
from leti.space import MODEL_SPACE, parse_arch, sample
from leti.testing.mlbench_synth import write_mlbench

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "mobile-ml-benchmark"
if not REAL.is_dir():
    REAL = Path("/work/shared/data/mobile-ml-benchmark")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return write_mlbench(tmp_path_factory.mktemp("mlbench"))


def test_kernel_name_parse():
    k = KernelName.parse("convolution_2d_5_linked_:_add_6_linked_:_relu_7")
    assert (k.base, k.ids, k.links) == ("convolution_2d", (5, 6, 7), ("add", "relu"))
    k = KernelName.parse("depthwise_conv_plus_1x1_conv_5_6_7_linked_:_add_8")
    assert k.ids == (5, 6, 7, 8) and k.links == ("add",)
    assert KernelName.parse("convolution_winograd_4x4_6x6_3").ids[-1] == 3
    with pytest.raises(LetiError):
        KernelName.parse("mean")


def test_target_names():
    assert target_name("pixel4", "1large") == "pixel4-tflite-cpu-1large"
    assert target_name("pixel4", "gpu") == "pixel4-tflite-gpu"
    assert target_name("s10", "2small", "quant") == "s10-tflite-cpu-2small-int8"
    with pytest.raises(LetiError):
        target_name("s10", "gpu", "half")


def test_read_synthetic_graphs(synth):
    models = {m.name: m for m in read_mlbench(synth)}
    assert len(models) == 24
    m = models["plainnet10"]
    g = m.graph
    # stem conv + 4 convs; odd ones link add + relu (an add node and a relu node after a plain conv)
    assert g.op_counts() == {"input": 1, "conv": 5, "add": 2, "act": 2, "gap": 1, "dense": 1}
    stem = g.node(m.op_nodes[0])
    assert stem.in_shape == (34, 34, 3) and stem.out_shape == (16, 16, 16)
    assert stem.attrs["pad"] == 1 and stem.attrs["act"] == "relu"  # VALID over the explicitly padded input
    assert g.input_shape == (32, 32, 3)  # the graph input is the unpadded image
    se = models["semobinet_w1"].graph
    assert se.op_counts()["mul"] == 3  # the squeeze-excite MULs the per-op file leaves out
    mul = [nd for nd in se.nodes() if nd.op == "mul"][0]
    assert mul.in_shape[:2] != (1, 1)
    cat = models["catnet_v1_0"].graph
    concat = [nd for nd in cat.nodes() if nd.op == "concat"][0]
    assert len(concat.inputs) == 2 and concat.out_shape[2] == 2 * concat.in_shape[2]
    gconv = [nd for nd in cat.nodes() if nd.op == "conv" and nd.attrs["groups"] == 2]
    assert len(gconv) == 1
    assert set(m.latency_ms) == {"pixel4-tflite-cpu-1large", "pixel4-tflite-gpu", "iphone7-tflite-cpu-1large",
                                 "iphone7-tflite-gpu"}  # fmt: skip
    assert len(m.gpu_ms["pixel4-tflite-gpu"]) == len(m.op_nodes)


def test_macs_match_file_flops(synth):
    from leti.importers.mlbench import read_op_rows

    rows = read_op_rows(synth / "tflite_cnn_ops_gpu.csv")
    models = {m.name: m for m in read_mlbench(synth)}
    by: dict = {}
    for r in rows:
        by.setdefault(r.model, []).append(r)
    for name, m in models.items():
        for r, n in zip(by[name], m.op_nodes, strict=True):
            if r.operation in ("CONV_2D", "CONV_2D_GROUP", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
                assert 2 * int(m.graph.macs[n]) == int(r.feature["FLOPS"]), (name, r.operation)


def test_import_into_store(synth, tmp_path):
    st = Store.open(tmp_path / "s.db")
    r = import_mlbench(st, synth, precisions=("float", "quant"))
    assert r.models == 24
    assert "pixel4-tflite-cpu-1large-int8" in r.targets and "pixel4-tflite-gpu" in r.targets
    assert r.measurements == 24 * 6 and r.kernel_measurements > 0
    again = import_mlbench(st, synth, precisions=("float", "quant"))
    assert again.measurements == 0 and again.kernel_measurements == 0  # idempotent
    d = target_data(st, "pixel4-tflite-gpu", MODEL_SPACE)
    assert len(d) == 24 and set(d.spaces) == {MODEL_SPACE}
    g = d.graphs([0])[0]
    assert g.meta["source"] == "mobile-ml-benchmark"
    k = st.kernel_measurements("pixel4-tflite-gpu")
    assert (k["latency_ms"] > 0).all() and k["runtime_kernel"].str.contains("convolution").any()
    # the graph round-trips through its stored text
    assert stored_graph(MODEL_SPACE, d.texts[0]).n_nodes == g.n_nodes


def test_bad_files_leave_the_store_unchanged(synth, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "tflite_cnn_e2e.csv").write_text((synth / "tflite_cnn_e2e.csv").read_text())
    text = (synth / "tflite_cnn_ops_gpu.csv").read_text().splitlines()
    text[3] = text[3].replace("CONV_2D", "RESIZE_BILINEAR", 1)
    (bad / "tflite_cnn_ops_gpu.csv").write_text("\n".join(text))
    st = Store.open(tmp_path / "s.db")
    with pytest.raises(LetiError, match="RESIZE_BILINEAR"):
        import_mlbench(st, bad)
    assert st.stats()["measurements"] == 0 and st.stats()["archs"] == 0
    (bad / "tflite_cnn_ops_gpu.csv").write_text(
        "\n".join(t.replace("'Stride': '1'", "'Stride': 'x'") for t in text)
    )
    with pytest.raises(LetiError, match="Stride"):
        import_mlbench(st, bad)
    with pytest.raises(LetiError, match="not a directory"):
        import_mlbench(st, tmp_path / "nope")


def test_model_space_is_not_sampled():
    with pytest.raises(LetiError):
        sample("model", 3)
    with pytest.raises(LetiError):
        parse_arch("model", "{}")


@pytest.mark.parametrize(
    "name,family",
    [("resnet10", "resnet"), ("resnet18_wd4", "resnet"), ("regnetx002", "regnetx"), ("regnetx016", "regnetx"),
     ("mobilenetv3_small_w7d20", "mobilenetv3"), ("mobilenetv2b_wd2", "mobilenetv2b"), ("diracnet18v2", "diracnet"),
     ("hardnet39ds", "hardnet"), ("resnetbc14b", "resnetbc"), ("squeezenet_v1_1", "squeezenet"),
     ("efficientnet_edge_large_b", "efficientnet"), ("EfficientNetB0", "efficientnet"),
     ("MobileNetV3Small", "mobilenetv3"), ("DenseNet121", "densenet"), ("NASNetMobile", "nasnet")],
)  # fmt: skip
def test_model_family(name, family):
    assert model_family(name) == family


def test_leave_one_family_out(synth, tmp_path):
    st = Store.open(tmp_path / "s.db")
    import_mlbench(st, synth)
    d = target_data(st, "pixel4-tflite-cpu-1large", MODEL_SPACE)
    fams = family_table(model_names(d))
    assert set(fams) == {"plainnet", "mobinet", "semobinet", "catnet", "widenet"}
    seen = {}

    out = evaluate_by_family(st, "pixel4-tflite-cpu-1large", "kernel", return_predictions=True,
                             progress=lambda k, n: seen.setdefault("n", n))  # fmt: skip
    assert seen["n"] == 5 and out["n_families"] == 5 and out["split"] == "family"
    assert out["n_test"] == 24 and np.isfinite(out["y_pred"]).all() and (out["y_pred"] > 0).all()
    for key in ("acc5", "acc10", "acc20", "rmse", "mape", "r2", "spearman", "kendall"):
        assert key in out
    assert out["spearman"] > 0.8 and out["mape"] < 0.3
    gpu = evaluate_by_family(st, "pixel4-tflite-gpu", "kernel")
    assert gpu["kernel_measurements"] is True


@pytest.mark.skipif(
    not (REAL / "tflite_cnn_e2e.csv").is_file(), reason="mobile-ml-benchmark data not in ../shared"
)
def test_real_files():
    models = read_mlbench(REAL)
    assert len(models) == 102
    assert len({model_family(m.name) for m in models}) == 32
    for m in models:
        assert len(m.latency_ms) >= 6 * 2
        g = m.graph
        assert g.total_macs > 0
        convs = [n for n in m.op_nodes if g.op_name(n) == "conv"]
        assert all(int(g.attr[n, A["kh"]]) >= 1 for n in convs)
