"""Trust through the real `leti` command and a real server: intervals and flags from predict, coverage from
evaluate, few-shot train/suggest/generate, compress refusing out-of-distribution plans, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import numpy as np
import pytest
from trust_devices import write_csv

from leti.space import sample

NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|"


def run_cli(*args, home, timeout=300) -> subprocess.CompletedProcess:
    env = {**os.environ, "LETI_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "leti.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)  # fmt: skip


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, r.stderr
    return r


def bad(r: subprocess.CompletedProcess, needle: str) -> str:
    lines = [
        x for x in r.stderr.splitlines() if x.startswith("leti:")
    ]  # (TensorFlow may log before leti runs)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(lines) == 1, r.stderr
    assert lines[0].startswith("leti: error:") and needle in lines[0], lines[0]
    return lines[0]


def cli(capsys, home, monkeypatch, *args) -> tuple[int, str, str]:
    """The same command in this process (``leti.cli.main``): (status, stdout, stderr)."""
    from leti.cli import main

    monkeypatch.setenv("LETI_HOME", str(home))
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A LETI_HOME whose store holds two source targets (300 NB201 archs), a new one (60) and an FBNet-only one,
    imported and trained through the CLI."""
    h = tmp_path_factory.mktemp("trust_cli_home")
    path = h / "m.csv"
    write_csv(path)
    ok(run_cli("import", str(path), home=h))
    ok(run_cli("train", "--target", "srca-cpu", "--predictor", "lut", "--train-size", "150", home=h))
    return h


def test_predict_json_has_parallel_intervals_and_flags(home, tmp_path):
    fb = sample("fbnet", 1, seed=4)[0][1]
    f = tmp_path / "archs.jsonl"
    f.write_text(
        json.dumps({"space": "nb201", "arch": NB201}) + "\n" + json.dumps({"space": "fbnet", "arch": fb})
    )
    r = ok(run_cli("predict", "--target", "srca-cpu", "--file", str(f), "--json", home=home))
    res = json.loads(r.stdout)
    assert set(res) == {"target", "predictor", "latency_ms", "interval_ms", "in_distribution", "why"}
    assert res["predictor"] == "lut" and len(res["latency_ms"]) == len(res["interval_ms"]) == 2
    (lo, hi), ms = res["interval_ms"][0], res["latency_ms"][0]
    assert lo < ms < hi
    assert res["in_distribution"] == [True, False] and res["why"][0] == ""
    assert "layer types never seen in training" in res["why"][1]
    warnings = [x for x in r.stderr.splitlines() if x.startswith("leti: warning:")]
    assert (
        len(warnings) == 1
        and "out of distribution: layer types never seen" in warnings[0]
        and fb[:20] in warnings[0]
    )
    bad(run_cli("predict", "--target", "srca-cpu", NB201, "--coverage", "1.5", home=home), "--coverage")


def test_predict_coverage_and_text_output(home, tmp_path, capsys, monkeypatch):
    code, out, _ = cli(capsys, home, monkeypatch, "predict", "--target", "srca-cpu", NB201, "--json")
    (lo, hi) = json.loads(out)["interval_ms"][0]
    code, out, _ = cli(capsys, home, monkeypatch, "predict", "--target", "srca-cpu", NB201, "--json",
                       "--coverage", "0.99")  # fmt: skip
    wide = json.loads(out)["interval_ms"][0]
    assert code == 0 and wide[0] < lo and wide[1] > hi
    f = tmp_path / "two.jsonl"
    f.write_text(
        f'{{"space": "nb201", "arch": "{NB201}"}}\n{{"space": "fbnet", "arch": "{sample("fbnet", 1)[0][1]}"}}'
    )
    code, out, err = cli(capsys, home, monkeypatch, "predict", "--target", "srca-cpu", "--file", str(f))
    text = out.splitlines()
    assert (
        code == 0 and "[" in text[0] and "OOD" not in text[0] and "OOD" in text[1] and "90% intervals" in err
    )
    for value in ("0", "1", "-0.2", "nan"):
        assert (
            cli(capsys, home, monkeypatch, "predict", "--target", "srca-cpu", NB201, "--coverage", value)[0]
            == 2
        )


def test_evaluate_json_adds_coverage_and_width(home, capsys, monkeypatch):
    code, out, _ = cli(
        capsys, home, monkeypatch, "evaluate", "--target", "srca-cpu", "--predictor", "lut", "--json"
    )
    res = json.loads(out)
    assert 0.75 <= res["coverage"] <= 1.0 and res["interval_rel_width"] > 0 and "ood_share" in res
    code, out, _ = cli(capsys, home, monkeypatch, "evaluate", "--target", "srca-cpu", "--predictor", "lut", "--json",
                       "--coverage", "0.5")  # fmt: skip
    low = json.loads(out)
    assert low["coverage"] < res["coverage"] and low["interval_rel_width"] < res["interval_rel_width"]
    code, out, _ = cli(capsys, home, monkeypatch, "evaluate", "--target", "srca-cpu", "--predictor", "lut")
    assert code == 0 and "90% intervals cover" in out


def test_fewshot_train_suggest_and_train_archs(home, tmp_path, capsys, monkeypatch):
    r = ok(run_cli("train", "--target", "newc-cpu", "--predictor", "fewshot", "--sources", "srca-cpu,srcb-gpu",
                   "--train-size", "10", "--json", home=home))  # fmt: skip
    meta = json.loads(r.stdout)
    assert meta["n_train"] == 10 and meta["metrics"]["spearman"] > 0.9 and "coverage" in meta["trust"]
    _, out, _ = cli(capsys, home, monkeypatch, "predict", "--target", "newc-cpu", NB201, "--json")
    res = json.loads(out)
    assert res["predictor"] == "fewshot" and res["in_distribution"] == [True]
    # suggest prints `leti space sample` lines; train takes such lines as --train-archs
    _, out, _ = cli(capsys, home, monkeypatch, "suggest", "--target", "brandnew-gpu", "--space", "nb201", "-n", "4",
                    "--pool", "100")  # fmt: skip
    sug = out.splitlines()
    assert len(sug) == 4 and all(
        {"hash", "full_hash", "space", "native", "arch"} <= set(json.loads(x)) for x in sug
    )
    _, lines, _ = cli(
        capsys, home, monkeypatch, "space", "sample", "--space", "nb201", "-n", "12", "--seed", "8"
    )
    f = tmp_path / "measured.jsonl"
    f.write_text(lines)  # the first 12 of the archs measured on newc-cpu (the same sampler and seed)
    _, out, _ = cli(capsys, home, monkeypatch, "train", "--target", "newc-cpu", "--predictor", "fewshot",
                    "--train-archs", str(f), "--json")  # fmt: skip
    meta = json.loads(out)
    assert meta["split"] == "train_archs" and meta["n_train"] == 12


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--train-size", "0"], "--train-size: must be an integer"),
        (["--train-size", "61"], "more than the 60 archs measured on newc-cpu"),
        (["--sources", "nope-cpu"], "sources: unknown target 'nope-cpu'"),
        (["--sources", "newc-cpu"], "sources: cannot include the target itself"),
        (["--sources", "srca-cpu,fbx-cpu"], "sources: fbx-cpu has no measurements in nasbench201"),
        (["--sources", "srca-cpu,"], "--sources: must be comma-separated target names"),
    ],
)
def test_fewshot_bad_input_is_one_line(home, extra, needle, capsys, monkeypatch):
    code, _, err = cli(
        capsys, home, monkeypatch, "train", "--target", "newc-cpu", "--predictor", "fewshot", *extra
    )
    assert code == 2 and err.startswith("leti: error:") and err.count("\n") == 1 and needle in err, err


def test_fewshot_train_archs_errors_name_the_line(home, tmp_path, capsys, monkeypatch):
    f = tmp_path / "bad.jsonl"
    f.write_text(
        json.dumps({"space": "nb201", "arch": NB201}) + "\n" + '{"space": "nb201", "arch": "|nope~0|"}\n'
    )
    unmeasured = sample("nb201", 300, seed=8)[200][1]  # on the sources only
    g = tmp_path / "unmeasured.jsonl"
    g.write_text(json.dumps({"space": "nb201", "arch": unmeasured}) + "\n")
    for argv, needle in (
        (["--target", "newc-cpu", "--predictor", "fewshot", "--train-archs", str(f)], "bad.jsonl line 2"),
        (
            ["--target", "newc-cpu", "--predictor", "fewshot", "--train-archs", str(g)],
            "unmeasured.jsonl line 1: this",
        ),
        (
            ["--target", "srca-cpu", "--predictor", "lut", "--sources", "srcb-gpu"],
            "--sources: applies to --predictor",
        ),
        (
            ["--target", "newc-cpu", "--predictor", "fewshot", "--train-archs", str(f), "--train-size", "5"],
            "not both",
        ),
    ):
        code, _, err = cli(capsys, home, monkeypatch, "train", *argv)
        assert code == 2 and err.startswith("leti: error:") and err.count("\n") == 1 and needle in err, err


def test_generate_suggest_measures_exactly_the_suggested_archs(home):
    target = "host-litert-cpu-1t"
    sug = ok(run_cli("suggest", "--target", target, "--space", "nb201", "-n", "2", "--sources", "srca-cpu",
                     "--pool", "50", home=home)).stdout.splitlines()  # fmt: skip
    r = ok(run_cli("generate", "--target", target, "--space", "nb201", "--suggest", "2", "--sources", "srca-cpu",
                   "--pool", "50", "--runs", "2", "--warmup", "1", "--quiet", "--json", home=home), )  # fmt: skip
    rep = json.loads(r.stdout)
    assert rep["progress"]["done"] == 2
    from leti.datasets.store import Store

    with Store.open(home / "leti.db") as st:
        measured = set(st.measurements(target=target)["arch_id"])
    assert measured == {json.loads(x)["full_hash"] for x in sug}
    bad(run_cli("generate", "--target", target, "--space", "nb201", "--suggest", "2", "-n", "3", home=home),
        "--suggest: give -n or --suggest")  # fmt: skip
    bad(run_cli("generate", "--target", target, "--space", "nb201", home=home), "-n: give -n")


def test_server_returns_intervals_and_flags(home):
    from leti.service.api import Client
    from leti.service.app import BackgroundServer, create_app

    app = create_app(predictor_root=home / "predictors", store_path=home / "leti.db")
    fb = sample("fbnet", 1, seed=4)[0][1]
    with BackgroundServer(app) as srv, Client(srv.url) as client, httpx.Client(base_url=srv.url) as http:
        res = client.predict([NB201], "srca-cpu", space="nb201", interval=0.8)
        assert res["interval_ms"].shape == (1, 2) and res["in_distribution"].tolist() == [True]
        assert res["interval_ms"][0, 0] < res["latency_ms"][0] < res["interval_ms"][0, 1]
        import leti

        here = leti.predict([NB201], "srca-cpu", space="nb201", interval=0.8, root=home / "predictors")
        assert np.allclose(here["interval_ms"], res["interval_ms"]) and here["coverage"] == 0.8
        body = {
            "target": "srca-cpu",
            "archs": [{"space": "fbnet", "arch": fb}, {"space": "nb201", "arch": NB201}],
        }
        r = http.post("/v1/predict", json=body)
        assert r.status_code == 200
        j = r.json()
        assert j["in_distribution"] == [False, True] and "never seen" in j["why"][0] and j["coverage"] == 0.9
        r = http.post("/v1/predict", json={**body, "coverage": 1.5})
        assert 400 <= r.status_code < 500 and r.json()["field"] == "coverage"
        # the CLI through the server prints the same fields
        out = json.loads(ok(run_cli("predict", "--target", "srca-cpu", NB201, "--json", "--url", srv.url,
                                    home=home)).stdout)  # fmt: skip
        assert out["in_distribution"] == [True] and len(out["interval_ms"][0]) == 2


def test_compress_refuses_an_out_of_distribution_plan(home, tmp_path, capsys, monkeypatch):
    import keras

    x = keras.Input((32, 32, 3))
    y = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv_a")(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6", name="dw_b")(y)
    y = keras.layers.Conv2D(24, 1, activation="relu6", name="pw_c")(y)
    y = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(y))
    src = tmp_path / "m.keras"
    keras.Model(x, y).save(src)
    args = ["compress", str(src), "--target", "srca-cpu", "--family", "lut", "--latency-budget", "0.9x",
            "--methods", "prune"]  # fmt: skip
    code, _, err = cli(capsys, home, monkeypatch, *args)
    assert code == 2 and err.startswith("leti: error: plan:") and err.count("\n") == 1, err
    assert "--allow-ood" in err and "dw_b (dwconv 3x3/s1: layer type never seen in training)" in err
    code, out, _ = cli(capsys, home, monkeypatch, *args, "--allow-ood", "--json")
    out = json.loads(out)
    assert code == 0 and out["in_distribution"] is False and "dw_b" in out["why"]
