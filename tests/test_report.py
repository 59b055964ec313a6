"""Plots people want to look at, and ``leti report``'s HTML page rendered in headless Chromium."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leti.cli import main
from leti.predictors.metrics import metrics
from leti.predictors.render import FIG_DPI, FIG_INCHES, IN_BAND, OUT_BAND, plot, plot_stats
from leti.space import sample

TARGETS = ("ta-cpu", "tb-gpu")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


def _rgb(hex_color: str) -> np.ndarray:
    return np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])


def _share_near(img: np.ndarray, color, tol: int = 40) -> float:
    """Share of pixels within ``tol`` of ``color`` (markers are drawn half transparent over white or the band)."""
    rgb = _rgb(color) if isinstance(color, str) else np.asarray(color)
    return float((np.abs(img[..., :3].astype(int) - rgb).max(axis=-1) <= tol).mean())


# the ±10% band: its green at 16% over white
BAND = (255 - 0.16 * (255 - _rgb("#2ca02c"))).round()


def test_plot_title_numbers_are_the_metrics():
    rng = np.random.default_rng(0)
    t = rng.uniform(1, 60, 800)
    p = t * rng.normal(1, 0.06, t.size)
    s, m = plot_stats(t, p), metrics(t, p)
    assert (
        s["n"] == 800
        and s["acc10"] == m["acc10"]
        and s["spearman"] == pytest.approx(m["spearman"], abs=1e-12)
    )


@pytest.mark.parametrize("span", [1.5, 40.0])  # linear axes, log axes
def test_plot_is_large_with_band_and_both_marker_colours(tmp_path, span):
    rng = np.random.default_rng(1)
    t = rng.uniform(2, 2 * span, 600)
    p = t * rng.normal(1, 0.08, t.size)
    path = plot(t, p, tmp_path / "p.png", "ta-cpu", "lut")
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape[1] >= 1200 and img.shape[:2] == (FIG_INCHES[1] * FIG_DPI, FIG_INCHES[0] * FIG_DPI)
    assert _share_near(img, IN_BAND, 60) > 0.002 and _share_near(img, OUT_BAND, 60) > 0.0005
    assert _share_near(img, BAND, 6) > 0.005  # the ±10% band


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    """``leti report --space nb201 -o DIR --json`` on two synthetic targets."""
    d = tmp_path_factory.mktemp("report")
    home = tmp_path_factory.mktemp("home")
    archs = sample("nb201", 140, seed=4)
    csv_path = d / "m.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["space", "arch", "target", "latency_ms", "source"])
        rng = np.random.default_rng(0)
        for target, scale in zip(TARGETS, (2e7, 5e7), strict=True):
            for a, text in archs:
                g = a.to_graph()
                ms = (0.4 + g.total_macs / scale + 0.01 * g.n_nodes) * np.exp(rng.normal(0, 0.03))
                w.writerow(["nasbench201", text, target, f"{ms:.6f}", "synthetic"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LETI_HOME", str(home))
        assert main(["import", str(csv_path)]) == 0
        out = d / "out"
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = main(["report", "--space", "nb201", "--train-size", "80", "--families", "flops,lut", "-o",
                       str(out), "--json"])  # fmt: skip
    assert rc == 0
    return out, json.loads(buf.getvalue())


def test_report_writes_markdown_html_and_plots(report_dir):
    out, res = report_dir
    assert {r["target"] for r in res["rows"]} == set(TARGETS) and len(res["rows"]) == 4
    assert (
        Path(res["files"]["html"]) == out / "report.html"
        and Path(res["files"]["markdown"]) == out / "report.md"
    )
    html = (out / "report.html").read_text()
    # one file: every image inline, nothing fetched from elsewhere
    assert html.count('src="data:image/png;base64,') == 2 and "http://" not in html and "https://" not in html
    md = (out / "report.md").read_text()
    for t in TARGETS:
        assert f"## {t}" in md and f"({t}.png)" in md and (out / f"{t}.png").is_file()


def test_report_html_renders_in_headless_chromium(report_dir, tmp_path):
    exe = _chromium()
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (make browser installs it): CI must render the report")
        pytest.skip("chromium not installed (apt-get install chromium, or make browser as root)")
    out, res = report_dir
    url = (out / "report.html").resolve().as_uri()

    def run(*extra: str, profile: str) -> subprocess.CompletedProcess:
        cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / profile}", *extra, url]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    dom = run("--dump-dom", profile="dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = dom.stdout
    for t in TARGETS:
        assert f"<h2>{t}</h2>" in text
    for word in ("acc@10 %", "flops", "lut", "n_test", "leti report: nasbench201"):
        assert word in text

    width, height = 1400, 3600
    shot = tmp_path / "shot.png"
    r = run(f"--window-size={width},{height}", f"--screenshot={shot}", "--hide-scrollbars", profile="shot")
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (height, width)
    # both plots were drawn, one under the other: the band in the upper and in the lower half of the page, and
    # the markers
    top, bottom = img[: height // 2], img[height // 2 :]
    assert _share_near(top, BAND, 8) > 0.004 and _share_near(bottom, BAND, 8) > 0.004
    assert _share_near(img, IN_BAND, 80) > 0.0002
    # and the tables' text: dark pixels beside the plots
    assert (img[..., :3].max(axis=-1) < 80).mean() > 0.002
