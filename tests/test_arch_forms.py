"""One arch, every form: Python (leti.predict), HTTP (POST /v1/predict) and the CLI (leti predict) read the same
forms, bare strings and NAS-Bench-201 indices included, and give the same milliseconds."""

from __future__ import annotations

import csv
import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from leti.cli import main
from leti.space import fbnet, nb101, nb201, sample

TARGET = "forms-test-cpu"
CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|"
BLOCKS = ["k3_e1", "k3_e3", "k5_e6", "skip"] + ["k3_e1"] * 18
MATRIX = [[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0]]
OPS = ["input", "conv3x3-bn-relu", "maxpool3x3", "output"]
# Upstream's own index -> cell pairs (NAS-Bench-201 API docs and tools): index 0, 1, 5, 6
UPSTREAM = {
    0: "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    1: "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    5: "|nor_conv_1x1~0|+|skip_connect~0|nor_conv_1x1~1|+|nor_conv_3x3~0|none~1|avg_pool_3x3~2|",
    6: "|nor_conv_3x3~0|+|none~0|none~1|+|avg_pool_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
}
HW_NAS_BENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "nasbench201__pixel3-tflite-cpu.csv"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A LUT predictor for TARGET trained on NB201, NB101 and FBNet archs (synthetic latency)."""
    from leti.predictors import registry

    h = tmp_path_factory.mktemp("home")
    graphs = [a.to_graph() for sp in ("nb201", "nb101", "fbnet") for a, _ in sample(sp, 60, 2)]
    y = np.array([0.5 + g.total_macs / 1e7 + 0.01 * g.n_nodes for g in graphs])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LETI_HOME", str(h))
        registry.save_trained(registry.make("lut").fit(graphs, y), TARGET, {"metrics": {"acc10": 0.9}})
    return h


@pytest.fixture(autouse=True)
def _env(home, monkeypatch):
    monkeypatch.setenv("LETI_HOME", str(home))


# form -> (Python/HTTP value, request-level space or None, CLI argument, CLI --space or None)
FORMS = {
    "nb201 bare string": (CELL, None, CELL, None),
    "nb201 wrapper": (
        {"space": "nb201", "arch": CELL},
        None,
        json.dumps({"space": "nb201", "arch": CELL}),
        None,
    ),
    "nb201 by index": ({"space": "nb201", "index": 1}, None, None, None),
    "nb201 Arch JSON": (nb201.from_string(CELL).to_dict(), None, nb201.from_string(CELL).to_json(), None),
    "fbnet comma string": (",".join(BLOCKS), None, ",".join(BLOCKS), None),
    "fbnet block list": (BLOCKS, None, None, None),
    "nb101 [matrix, ops]": ([MATRIX, OPS], None, None, None),
    "nb101 {matrix, ops}": (
        {"matrix": MATRIX, "ops": OPS},
        None,
        json.dumps({"matrix": MATRIX, "ops": OPS}),
        None,
    ),
}


def _expected(name):
    value = FORMS[name][0]
    if name.startswith("nb201"):
        return nb201.from_string(CELL if "index" not in name else UPSTREAM[1]).to_graph()
    if name.startswith("fbnet"):
        return fbnet.from_blocks(BLOCKS).to_graph()
    return nb101.from_spec(MATRIX, OPS).to_graph() if value is not None else None


@pytest.mark.parametrize("name", list(FORMS))
def test_python_http_and_cli_read_every_form_alike(name):
    from fastapi.testclient import TestClient

    import leti
    from leti.predictors.registry import load
    from leti.service.app import create_app

    value, space, cli_arg, cli_space = FORMS[name]
    want = float(load(TARGET).predict([_expected(name)])[0])
    py = float(leti.predict(value, target=TARGET, space=space)[0])
    with TestClient(create_app()) as c:
        r = c.post("/v1/predict", json={"target": TARGET, "archs": [value]})
    assert r.status_code == 200, r.json()
    assert py == want and r.json()["latency_ms"][0] == want
    if cli_arg is not None:
        buf = io.StringIO()
        with redirect_stdout(buf):
            assert (
                main(
                    ["predict", "--target", TARGET, cli_arg, "--json"]
                    + (["--space", cli_space] if cli_space else [])
                )
                == 0
            )
        assert json.loads(buf.getvalue())["latency_ms"][0] == want


def test_http_request_space_reads_ambiguous_strings():
    from fastapi.testclient import TestClient

    from leti.service.app import create_app

    with TestClient(create_app()) as c:
        r = c.post("/v1/predict", json={"target": TARGET, "archs": [",".join(BLOCKS), CELL]})
        assert r.status_code == 200 and r.json()["n"] == 2
        bad = c.post("/v1/predict", json={"target": TARGET, "space": "nb201", "archs": [",".join(BLOCKS)]})
        assert bad.status_code == 422 and bad.json()["field"].startswith("archs[0]")


def test_cli_predict_by_index_matches_the_cell_string(capsys):
    assert (
        main(["predict", "--target", TARGET, "--space", "nb201", "--index", "1", "--index", "5", "--json"])
        == 0
    )
    by_index = json.loads(capsys.readouterr().out)["latency_ms"]
    assert main(["predict", "--target", TARGET, UPSTREAM[1], UPSTREAM[5], "--json"]) == 0
    assert by_index == json.loads(capsys.readouterr().out)["latency_ms"]
    assert main(["predict", "--target", TARGET, "--index", "5"]) == 0
    assert f"#5 {UPSTREAM[5][:40]}" in capsys.readouterr().out
    assert main(["predict", "--target", TARGET, "--index", "-1"]) == 2
    assert "--index: must be an integer >= 0" in capsys.readouterr().err
    assert main(["predict", "--target", TARGET, CELL, "--index", "3"]) == 2


def test_predict_file_labels_rows_by_native_string_or_hash(tmp_path, capsys):
    f = tmp_path / "archs.jsonl"
    a101 = nb101.from_spec(MATRIX, OPS)
    f.write_text("\n".join([CELL, json.dumps({"space": "fbnet", "arch": ",".join(BLOCKS)}),
                            json.dumps({"space": "nb101", "arch": {"matrix": MATRIX, "ops": OPS}})]) + "\n")  # fmt: skip
    assert main(["predict", "--target", TARGET, "--file", str(f)]) == 0
    rows = capsys.readouterr().out.splitlines()
    labels = [r.split(" ms  ", 1)[1].split("]", 1)[1].strip() for r in rows]  # after the interval
    assert labels[0].startswith(CELL[:60]) and labels[1].startswith("k3_e1,k3_e3,k5_e6")
    assert labels[2] == f"nasbench101 {a101.hash[:16]}"
    assert not any("line" in r for r in rows)


def test_nb201_index_matches_upstream():
    for i, cell in UPSTREAM.items():
        assert nb201.string_of_index(i) == cell
        assert nb201.index_of(cell) == i and nb201.index_of(nb201.from_index(i)) == i
    idx = [nb201.index_of(s) for s in nb201.all_strings()]
    assert sorted(idx) == list(range(15625))  # a permutation
    for bad in (-1, 15625, 1.5, True, "3"):
        with pytest.raises(Exception, match="0..15624"):
            nb201.string_of_index(bad)


@pytest.mark.skipif(not HW_NAS_BENCH.is_file(), reason=f"public data absent ({HW_NAS_BENCH})")
def test_nb201_index_is_hw_nas_bench_row_order():
    """HW-NAS-Bench lists NB201 cells in the benchmark's index order: all 15,625 agree."""
    with open(HW_NAS_BENCH) as fh:
        cells = [row["arch"] for row in csv.DictReader(fh)]
    assert len(cells) == 15625
    assert all(nb201.string_of_index(i) == nb201.to_string(nb201.from_string(c)) for i, c in enumerate(cells))
