"""The one door for user input: every form of an arch, the {"space", "arch"} wrapper, the graph cache, and the
command-line readers (arguments, JSON and JSON-lines files, model files)."""

from __future__ import annotations

import json

import pytest

from leti.errors import LetiError
from leti.graph.builder import GraphBuilder
from leti.importers import inputs
from leti.importers.inputs import graph_of, read_arch_arg, read_jsonl, to_arch, unwrap
from leti.space import sample
from leti.tflite.flatbuffer import graph_to_tflite

NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def test_the_wrapper_rule():
    assert unwrap({"space": "nb201", "arch": NB201}) == (NB201, "nb201")
    assert unwrap({"arch": NB201}, "nb201") == (NB201, "nb201")
    assert unwrap({"space": "nb201", "arch": NB201}, "fbnet") == (
        NB201,
        "nb201",
    )  # the wrapper's own space wins
    arch = to_arch(NB201).to_dict()
    assert unwrap({"space": "nb201", "arch": arch}) == (arch, None)  # Arch JSON says its own space
    assert unwrap(arch, "fbnet") == (arch, "fbnet")  # Arch JSON is no wrapper
    with pytest.raises(LetiError) as err:
        unwrap({"space": 3, "arch": NB201}, space_field="line 4: space")
    assert err.value.field == "line 4: space"


def test_every_form_gives_the_same_arch():
    want = to_arch(NB201)
    arch_json = want.to_json()
    forms = [
        (NB201, None),
        (NB201, "nb201"),
        ({"space": "nb201", "arch": NB201}, None),
        (arch_json, None),
        (json.loads(arch_json), "fbnet"),  # Arch JSON says its own space
        ({"space": "nb201", "arch": json.loads(arch_json)}, None),
        (want, None),
    ]
    for obj, space in forms:
        assert to_arch(obj, space) == want
        assert graph_of(obj, space).n_nodes == want.to_graph().n_nodes


def test_graphs_are_cached_by_text_and_errors_name_the_field():
    inputs.clear_graphs()
    assert graph_of(NB201) is graph_of(NB201) is graph_of({"arch": NB201})
    with pytest.raises(LetiError) as err:
        graph_of("|bogus~0|", "nb201", field="archs[2].arch")
    assert err.value.field.startswith("archs[2].arch")
    with pytest.raises(LetiError) as err:
        graph_of(NB201, "nb999", space_field="archs[2].space")
    assert err.value.field == "archs[2].space"
    stored = inputs.stored_graph("nasbench201", NB201)
    assert stored is inputs.stored_graph("nasbench201", NB201)


def test_a_long_argument_is_never_opened_as_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    arch = next(a for a, _ in sample("leti", 20, seed=0) if len(a.to_json()) > 300)
    arch_json = arch.to_json()
    got, g = read_arch_arg(arch_json)  # longer than a file name may be: no OSError "File name too long"
    assert got == arch and g.n_nodes == arch.to_graph().n_nodes
    with pytest.raises(LetiError):
        read_arch_arg("x" * 5000)
    with pytest.raises(LetiError):
        read_jsonl("y" * 5000)


def test_files_json_jsonl_and_models(tmp_path):
    line = {
        "space": "nasbench201",
        "arch": to_arch(NB201).to_dict(),
        "hash": "h",
    }  # `leti space sample` output
    (tmp_path / "a.jsonl").write_text(json.dumps(line) + "\n" + json.dumps({"space": "nb201", "arch": NB201}))
    (tmp_path / "a.json").write_text(json.dumps({"space": "nb201", "arch": NB201}, indent=2))
    (tmp_path / "a.txt").write_text(NB201)
    for name in ("a.jsonl", "a.json", "a.txt"):
        arch, _ = read_arch_arg(str(tmp_path / name))
        assert arch == to_arch(NB201)
    archs, spaces, where = read_jsonl(str(tmp_path / "a.jsonl"), "fbnet")
    assert spaces == [None, "nb201"] and where[1].endswith("a.jsonl line 2")
    b = GraphBuilder()
    b.conv(b.input((8, 8, 3)), 4, 3)
    (tmp_path / "m.tflite").write_bytes(graph_to_tflite(b.finish(), seed=0))
    arch, g = read_arch_arg(str(tmp_path / "m.tflite"))
    assert arch is None and g.n_nodes >= 2
    (tmp_path / "empty.jsonl").write_text("# nothing\n")
    with pytest.raises(LetiError, match="holds no archs"):
        read_jsonl(str(tmp_path / "empty.jsonl"))
    (tmp_path / "bad.jsonl").write_text("3\n")
    with pytest.raises(LetiError) as err:
        read_jsonl(str(tmp_path / "bad.jsonl"))
    assert err.value.field.endswith("line 1")
