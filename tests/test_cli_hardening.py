"""Each CLI bug of issue 11, reproduced: before the fix these ended in a traceback (exit 1), a hang, a crash or a
silent success; now each is one ``leti: error:`` line and exit 2, or the documented behaviour."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from leti.cli import main

NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|"
TARGET = "host-litert-cpu-1t"


def bad(capsys, argv, needle: str = "") -> str:
    """Run ``leti argv``: exit 2 and exactly one stderr line starting ``leti: error:`` (containing ``needle``)."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, (argv, code, err)
    assert err.count("\n") == 1 and err.startswith("leti: error: ") and needle in err, (argv, err)
    return err


@pytest.fixture
def store_with_data(tmp_path, capsys):
    """A store holding 40 NB201 archs measured (made-up latencies) on dev-cpu, imported through the CLI."""
    from leti.space import sample

    rows = ["space,arch,target,latency_ms,source"]
    for i, (a, text) in enumerate(sample("nb201", 40, seed=0)):
        rows.append(f"nb201,{text},dev-cpu,{0.3 + a.to_graph().total_macs / 2e7 + i / 1000:.4f},test")
    f = tmp_path / "m.csv"
    f.write_text("\n".join(rows) + "\n")
    assert main(["import", str(f)]) == 0
    capsys.readouterr()
    return f


# ---- arch arguments ------------------------------------------------------------------------------------------------
def test_a_long_arch_json_argument_is_not_a_file_name(capsys):
    """A valid 423-character Arch JSON argument crashed ``space show`` and ``predict`` with ``OSError: File name
    too long``: it was tried as a path first."""
    assert main(["space", "sample", "--space", "leti", "-n", "1"]) == 0
    arch = json.dumps(json.loads(capsys.readouterr().out)["arch"])
    assert len(arch) > 255
    assert main(["space", "show", arch, "--rows", "3"]) == 0
    assert "MACs" in capsys.readouterr().out
    bad(capsys, ["predict", "--target", TARGET, arch], "no trained predictor")  # reaches the predictor lookup


# ---- flag values ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, needle", [
    (["space", "sample", "--space", "nb201", "--seed", "-1"], "--seed"),
    (["space", "sample", "--space", "nb201", "--constraints", "{bad"], "--constraints"),
    (["space", "sample", "--space", "leti", "--constraints", '{"max_tries":"abc"}'], "max_tries"),
    (["space", "sample", "--space", "leti", "--constraints", '{"max_tries":1e400}'], "--constraints"),
    (["space", "sample", "--space", "leti", "--constraints", '["a"]'], "--constraints"),
    (["generate", "--space", "nb201", "-n", "1", "--target", TARGET, "--seed", "-1"], "--seed"),
    (["generate", "--space", "nb201", "-n", "1", "--target", TARGET, "--constraints", "{bad"], "--constraints"),
    (["train", "--target", "dev-cpu", "--predictor", "lightgbm", "--seed", "-1"], "--seed"),
    (["train", "--target", "dev-cpu", "--predictor", "lightgbm", "--params", "{bad"], "--params"),
    (["train", "--target", "dev-cpu", "--predictor", "lightgbm", "--params", '{"n_estimators":-1}'], "n_estimators"),
    (["train", "--target", "dev-cpu", "--predictor", "lightgbm", "--params", '"abc"'], "--params"),
    (["train", "--target", "dev-cpu", "--predictor", "lightgbm", "--params", "1e400"], "--params"),
    (["train", "--target", "dev-cpu", "--predictor", "lightgbm", "--train-size", "1"], "--train-size"),
    (["generate", "--space", "nb201", "-n", "1", "--target", TARGET, "--attempts", "0"], "--attempts"),
    (["generate", "--space", "nb201", "-n", "1", "--target", TARGET, "--command-timeout", "-1"], "--command-timeout"),
    (["generate", "--space", "nb201", "-n", "1", "--target", TARGET, "--max-temp", "nan"], "--max-temp"),
    (["generate", "--space", "nb201", "-n", "1", "--target", TARGET, "--max-failures", "0"], "--max-failures"),
    (["generate", "--space", "nb201", "-n", "1", "--target", TARGET, "--repeat-check", "-1"], "--repeat-check"),
    (["serve", "--port", "70000"], "--port"),
    (["serve", "--max-body", "0"], "--max-body"),
])  # fmt: skip
def test_bad_flag_values_are_one_line(capsys, argv, needle):
    """All of these ended in tracebacks, or were accepted (``--attempts 0``, ``--max-temp nan``, …)."""
    bad(capsys, argv, needle)


def test_train_params_are_checked_before_the_data(capsys, store_with_data):
    bad(
        capsys,
        ["train", "--target", "dev-cpu", "--predictor", "lightgbm", "--params", '{"n_jobs":"x"}'],
        "n_jobs",
    )
    bad(capsys, ["train", "--target", "dev-cpu", "--predictor", "lut", "--train-size", "40"], "train_size")


# ---- JSON inputs: nesting and bytes --------------------------------------------------------------------------------
@pytest.mark.parametrize("content, needle", [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"adjacency": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply"),
    (b"\xff\xfe\x00garbage", "not UTF-8"),
    (b'{"adjacency": [[0, 1], [0, 0]], "layers": ["input", NaN]}', "NaN"),
])  # fmt: skip
def test_deep_or_undecodable_json_files(capsys, tmp_path, monkeypatch, content, needle):
    """``RecursionError`` and ``UnicodeDecodeError`` tracebacks in ``space show`` and ``predict --file``."""
    f = tmp_path / "arch.json"
    f.write_bytes(content)
    bad(capsys, ["space", "show", str(f)], needle)
    g = tmp_path / "archs.jsonl"
    g.write_bytes(content + b"\n")
    bad(capsys, ["predict", "--target", TARGET, "--file", str(g)], needle)

    class Stdin:
        buffer = __import__("io").BytesIO(content)

    monkeypatch.setattr("sys.stdin", Stdin())
    bad(capsys, ["predict", "--target", TARGET, "--file", "-"], needle)


# ---- hangs ---------------------------------------------------------------------------------------------------------
def test_sampling_more_than_the_space_holds_is_quick(capsys):
    """``space sample --space nb201 -n 1000000`` ran for minutes; NB201 holds 15,625 cells."""
    t0 = time.perf_counter()
    bad(capsys, ["space", "sample", "--space", "nb201", "-n", "1000000"], "15,625")
    assert time.perf_counter() - t0 < 10


def test_show_of_a_huge_arch_is_bounded(capsys, tmp_path):
    """``space show`` of a 670k-layer arch printed for more than 5 minutes; the table now stops at --rows."""
    n = 64
    adj = [[1 if j == i + 1 or (j > i and (j - i) % 2 == 0) else 0 for j in range(n)] for i in range(n)]
    arch = {"adjacency": adj, "layers": ["input"] + ["conv"] * (n - 2) + ["output"], "space": "leti",
            "config": {"stacks": 4, "cells_per_stack": 6, "channels": 8, "merge": "sum", "downsample": "conv"}}  # fmt: skip
    f = tmp_path / "big.json"
    f.write_text(json.dumps(arch))
    assert main(["space", "show", str(f), "--rows", "20"]) == 0
    out = capsys.readouterr().out
    assert "more layers not shown" in out and out.count("\n") < 80
    assert main(["space", "show", str(f), "--rows", "20", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert len(shown["nodes"]) == shown["nodes_shown"] == 20 and shown["totals"]["nodes"] > 1000


# ---- paths and targets that do not exist ----------------------------------------------------------------------------
def test_export_to_a_missing_folder_or_unknown_target(capsys, tmp_path, store_with_data):
    """``dataset export -o /nonexistent/dir/x.csv`` reported success; ``--target nosuch`` wrote 0 rows, exit 0."""
    bad(
        capsys, ["dataset", "export", "-o", str(tmp_path / "nonexistent" / "dir" / "x.csv")], "does not exist"
    )
    assert not (tmp_path / "nonexistent").exists()
    bad(capsys, ["dataset", "export", "--target", "nosuch", "-o", str(tmp_path / "x.csv")], "nosuch")
    assert main(["dataset", "export", "--target", "dev-cpu", "-o", str(tmp_path / "x.csv")]) == 0


# ---- device bindings and addresses ----------------------------------------------------------------------------------
@pytest.mark.parametrize("device", ["tcp:host:99999", "usb:a;b", "tcp:host", "tcp:", "usb:a b", "x:y:z"])
def test_malformed_bindings_exit_2(capsys, tmp_path, device):
    """Malformed bindings exited 1, or 0 with --json."""
    t = f"pixel4-tflite-cpu-4t@{device}"
    bad(capsys, ["generate", "--space", "nb201", "-n", "1", "--target", t, "--json"], "bad device address")
    bad(capsys, ["lut", "build", "--space", "nb201", "--target", t], "bad device address")
    model = tmp_path / "m.tflite"
    model.write_bytes(b"\0" * 64)
    bad(capsys, ["bench", str(model), "--target", t, "--json"], "bad device address")


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_devices_with_bad_addresses_exit_2(capsys, json_flag):
    bad(capsys, ["devices", "1.2.3.4:99999", *json_flag], "port 99999")
    bad(capsys, ["devices", "10.0.0.2:5555", "usb:a;b", *json_flag], "address[1]")


# ---- leti evaluate defaults to the best family ----------------------------------------------------------------------
def test_evaluate_without_predictor_uses_the_best(capsys, store_with_data):
    """``leti evaluate`` without ``--predictor`` failed with "got NoneType", though its help says it uses the best."""
    for fam in ("lut", "flops"):
        assert main(["train", "--target", "dev-cpu", "--predictor", fam, "--train-size", "25", "--json"]) == 0
    trained = {f: json.loads(line)["metrics"]["acc10"] for f, line in
               zip(("lut", "flops"), capsys.readouterr().out.strip().splitlines(), strict=True)}  # fmt: skip
    assert main(["evaluate", "--target", "dev-cpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    best = min(trained, key=lambda f: (-trained[f], f))
    assert out["family"] == best and np.isfinite(out["acc10"])


# ---- anything else is a bug: one line asking for a report ----------------------------------------------------------
def test_internal_errors_are_one_line_with_traceback_under_debug(capsys, monkeypatch):
    import leti.cli.space as space_cli

    def boom(args):
        raise RuntimeError("something leti did not expect " + "x" * 5000)

    monkeypatch.setattr(space_cli, "cmd_space_sample", boom)
    assert main(["space", "sample", "--space", "nb201"]) == 1
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and "internal error (RuntimeError" in err and "report" in err and len(err) < 600
    )
    assert "Traceback" not in err
    assert main(["space", "sample", "--space", "nb201", "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("leti: internal error")
