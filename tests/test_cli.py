"""The `leti` command: output formats, and one-line errors with exit status 2 on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from leti.cli import main

NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LETI_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def run_cli(*args, env=None) -> subprocess.CompletedProcess:
    e = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "leti.cli", *args], capture_output=True, text=True, env=e, timeout=120
    )


def test_space_sample_prints_json_lines(capsys, home):
    assert main(["space", "sample", "--space", "nb201", "-n", "5", "--seed", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5
    rows = [json.loads(x) for x in lines]
    assert all({"hash", "arch"} <= set(r) for r in rows)
    assert len({r["hash"] for r in rows}) == 5
    from leti.space import Arch

    assert Arch.from_dict(rows[0]["arch"]).hash == rows[0]["hash"]


def test_space_show_string_and_file(capsys, home, tmp_path):
    assert main(["space", "show", NB201]) == 0
    out = capsys.readouterr().out
    assert "MACs" in out and "dead" in out
    main(["space", "sample", "--space", "fbnet", "-n", "1"])
    line = capsys.readouterr().out.strip()
    f = tmp_path / "a.jsonl"
    f.write_text(line + "\n")
    assert main(["space", "show", str(f), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["hash"] == json.loads(line)["hash"] and shown["totals"]["nodes"] == len(shown["nodes"])


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["space", "show", "|nor_conv_3x3~0|+|bad|"], "arch"),
        (["space", "sample", "--space", "nb301"], "space"),
        (["space", "sample", "--space", "nb201", "-n", "0"], "n:"),
        (["space", "show", '{"adjacency": [[0,1],[1,0]], "layers": ["input", "output"]}'], "adjacency"),
        (["generate", "--space", "nb201", "-n", "2", "--target", "Pixel 4!"], "target"),
        (["generate", "--space", "nb201", "-n", "2", "--target", "pixel4-tflite-cpu"], "bind it to a device"),
        (["import", "/nonexistent/file.csv"], "no such file"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, needle, capsys, home):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("leti: error:") and needle in err and "\n" not in err


def test_import_names_line_and_column(tmp_path, capsys, home):
    f = tmp_path / "m.csv"
    f.write_text(
        f"space,arch,target,latency_ms,source\nnb201,{NB201},dev-cpu,1.5,x\nnb201,{NB201},dev-cpu,abc,x\n"
    )
    assert main(["import", str(f)]) == 2
    err = capsys.readouterr().err
    assert "line 3" in err and "latency_ms" in err


def test_import_then_stats_and_export(tmp_path, capsys, home):
    f = tmp_path / "m.csv"
    rows = ["space,arch,target,latency_ms,source"]
    from leti.space import sample

    for i, (_, text) in enumerate(sample("nb201", 12, seed=0)):
        rows.append(f"nb201,{text},dev-cpu,{1 + i / 10},test")
    f.write_text("\n".join(rows) + "\n")
    assert main(["import", str(f)]) == 0
    assert main(["import", str(f)]) == 0  # idempotent
    capsys.readouterr()
    assert main(["dataset", "stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["targets"] == {"dev-cpu": 12}
    out = tmp_path / "x.parquet"
    assert main(["dataset", "export", "--target", "dev-cpu", "-o", str(out)]) == 0
    import pandas as pd

    assert len(pd.read_parquet(out)) == 12


def test_unwritable_leti_home_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    r = run_cli("dataset", "stats", env={"LETI_HOME": str(blocker / "home")})
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("leti: error:") and "Traceback" not in r.stderr


def test_lut_build_measures_every_layer_and_saves_a_lut(capsys, home):
    from leti.predictors.lut import LUTPredictor, layer_signatures
    from leti.predictors.registry import load
    from leti.space import sample

    argv = ["lut", "build", "--target", "host-litert-cpu-1t", "--space", "nb201", "-n", "2", "--seed", "4",
            "--runs", "2", "--warmup", "1", "--rounds", "2"]  # fmt: skip
    assert main(argv) == 0
    assert "distinct layers of 2 nasbench201 archs" in capsys.readouterr().out
    lut = load("host-litert-cpu-1t", "lut")
    assert (
        isinstance(lut, LUTPredictor)
        and lut.meta_["rounds"] == 2
        and lut.meta_["source"] == "single-layer runs"
    )
    graphs = [a.to_graph() for a, _ in sample("nb201", 2, seed=4)]
    sigs = {s for g in graphs for s in layer_signatures(g, states="skip")}
    assert set(lut.table) == sigs and all(v >= 0 for v in lut.table.values())
    d = lut.predict_details(graphs)
    assert (d.latency_ms > 0).all() and d.n_missing.tolist() == [0, 0]
    assert main([*argv[:-1], "0"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "leti: error: lut build: argument --rounds: must be an integer >= 1, got '0'"
    ]
