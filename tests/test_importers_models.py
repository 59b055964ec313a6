"""read_model's dispatch by suffix, the input-shape argument, and errors shared by every format."""

from __future__ import annotations

import pytest

from leti.errors import LetiError, ModelFileError
from leti.graph.builder import GraphBuilder
from leti.importers.common import check_input_shape
from leti.importers.models import MODEL_SUFFIXES, is_model_file, read_model
from leti.tflite.flatbuffer import graph_to_tflite


@pytest.mark.parametrize("text,want", [("224,224,3", (224, 224, 3)), ("1,32,48,3", (32, 48, 3)),
                                       ("64x64x1", (64, 64, 1)), ((8, 9, 3), (8, 9, 3)), (None, None)])  # fmt: skip
def test_input_shape_forms(text, want):
    assert check_input_shape(text) == want


@pytest.mark.parametrize("bad", ["224,224", "a,b,c", "0,10,3", "10,10,3,3", "99999,2,3", [1.5, 2, 3], 42])
def test_bad_input_shapes_name_the_field(bad):
    with pytest.raises(LetiError, match=r"^input_shape: ") as e:
        check_input_shape(bad)
    assert "\n" not in str(e.value)


def test_dispatch_by_suffix(tmp_path):
    assert {".tflite", ".onnx", ".keras", ".h5"} <= set(MODEL_SUFFIXES)
    assert is_model_file("m.ONNX") and is_model_file("a/b.keras") and not is_model_file("arch.json")
    b = GraphBuilder()
    b.conv(b.input((8, 8, 3)), 4, 3, act="relu")
    p = tmp_path / "m.tflite"
    p.write_bytes(graph_to_tflite(b.finish()))
    g = read_model(p)
    assert g.op_counts() == {"input": 1, "conv": 1} and g.meta["file"] == "m.tflite"
    with pytest.raises(ModelFileError, match="no such file"):
        read_model(tmp_path / "missing.onnx")
    (tmp_path / "m.pb").write_bytes(b"x")
    with pytest.raises(ModelFileError, match="unknown model format '.pb'"):
        read_model(tmp_path / "m.pb")
    for suffix in (".tflite", ".onnx", ".keras", ".h5"):  # empty files of every format: one line each
        (tmp_path / f"e{suffix}").write_bytes(b"")
        with pytest.raises(ModelFileError, match="empty") as e:
            read_model(tmp_path / f"e{suffix}")
        assert "\n" not in str(e.value)
