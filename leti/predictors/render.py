"""Predicted-vs-measured plots and the report pages (Markdown and one self-contained HTML file).

A plot shows every held-out arch as a point, the y = x line and the ±10% band (the band acc@10 counts), on linear
axes when the latencies span less than ``LOG_SPAN`` and on log axes labelled in plain milliseconds otherwise. Its
title names the target and the family and gives n, acc@10 and Spearman's rho, computed from the plotted points.
Figures are 1280 x 1200 px.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from leti.errors import LetiError

LOG_SPAN = 8.0  # max/min latency above which the axes are logarithmic
FIG_INCHES, FIG_DPI = (6.4, 6.0), 200  # 1280 x 1200 px
IN_BAND, OUT_BAND = "#1f77b4", "#d62728"


def plot_stats(y_true, y_pred) -> dict:
    """n, acc@10 and Spearman's rho of the points a plot shows."""
    t, p = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    rho = float("nan")
    if t.size > 1 and np.ptp(t) > 0 and np.ptp(p) > 0:
        rt, rp = _ranks(t), _ranks(p)
        rho = float(np.corrcoef(rt, rp)[0, 1])
    return {"n": int(t.size), "acc10": float(np.mean(np.abs(p - t) <= 0.1 * t)) if t.size else float("nan"),
            "spearman": rho}  # fmt: skip


def _ranks(a: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as Spearman's rho uses them."""
    order = np.argsort(a, kind="stable")
    ranks = np.empty(a.size)
    ranks[order] = np.arange(a.size, dtype=float)
    _, inv, counts = np.unique(a, return_inverse=True, return_counts=True)
    sums = np.bincount(inv.ravel(), weights=ranks)
    return (sums / counts)[inv.ravel()]


def plot(
    y_true, y_pred, path, target: str = "", family: str = "", note: str = "", title: str | None = None
) -> Path:
    """Scatter of predicted against measured latency (ms) with y = x and the ±10% band, saved as PNG at ``path``.

    The title is ``target — family`` over ``n, acc@10, rho`` (and ``note``, e.g. the split); ``title`` replaces its
    first line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    t = np.asarray(y_true, dtype=float)
    p = np.asarray(y_pred, dtype=float)
    if t.shape != p.shape or t.size == 0:
        raise LetiError(f"{t.size} measured values but {p.size} predictions", "y_pred")
    ok = np.isfinite(t) & np.isfinite(p) & (t > 0) & (p > 0)
    t, p = t[ok], p[ok]
    if t.size == 0:
        raise LetiError("no positive, finite pair of measured and predicted latency to plot", "y_pred")
    s = plot_stats(t, p)
    lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
    log = hi / lo > LOG_SPAN
    if log:
        lo, hi = lo / 1.15, hi * 1.15
    else:
        pad = 0.06 * (hi - lo) or 0.1 * hi
        lo, hi = max(0.0, lo - pad), hi + pad
    xs = np.geomspace(max(lo, 1e-9), hi, 200) if log else np.linspace(lo, hi, 200)

    fig, ax = plt.subplots(figsize=FIG_INCHES, dpi=FIG_DPI)
    ax.fill_between(xs, xs * 0.9, xs * 1.1, color="#2ca02c", alpha=0.16, lw=0, label="±10% of measured")
    ax.plot(xs, xs * 0.9, color="#2ca02c", lw=0.8, ls="--")
    ax.plot(xs, xs * 1.1, color="#2ca02c", lw=0.8, ls="--")
    ax.plot(xs, xs, color="black", lw=1.0, label="y = x")
    inside = np.abs(p - t) <= 0.1 * t
    size = 18 if t.size <= 2000 else 8
    ax.scatter(t[inside], p[inside], s=size, alpha=0.55, color=IN_BAND, edgecolors="none",
               label=f"within ±10% ({int(inside.sum())})")  # fmt: skip
    ax.scatter(t[~inside], p[~inside], s=size, alpha=0.75, color=OUT_BAND, edgecolors="none",
               label=f"outside ±10% ({int((~inside).sum())})")  # fmt: skip
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal", adjustable="box")
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    scale = "log scale" if log else "linear scale"
    ax.set_xlabel(f"measured latency (ms, {scale})", fontsize=12)
    ax.set_ylabel(f"predicted latency (ms, {scale})", fontsize=12)
    ax.tick_params(labelsize=11)
    ax.grid(True, which="major", alpha=0.3)
    head = title or " — ".join(x for x in (target, family) if x) or "predicted vs measured"
    stats = f"n = {s['n']}, acc@10 = {100 * s['acc10']:.1f}%, ρ = {s['spearman']:.3f}" + (
        f" ({note})" if note else ""
    )
    ax.set_title(f"{head}\n{stats}", fontsize=13)
    ax.legend(loc="upper left", fontsize=10, framealpha=0.9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=FIG_DPI)
    plt.close(fig)
    return path


# ---- report pages ----------------------------------------------------------------------------------------------
@dataclass
class ReportRow:
    target: str
    family: str
    metrics: dict
    n_train: int
    n_test: int
    fit_seconds: float
    chosen: str = ""

    def label(self) -> str:
        return f"{self.family} ({self.chosen})" if self.chosen else self.family

    def to_dict(self) -> dict:
        return {"target": self.target, "family": self.family, "chosen": self.chosen or None, "metrics": self.metrics,
                "n_train": self.n_train, "n_test": self.n_test, "fit_seconds": self.fit_seconds}  # fmt: skip


@dataclass
class ReportPage:
    """What ``leti report`` found: the rows, per target the plotted family and the plot's file, and the setup."""

    space: str
    train_size: int
    seed: int
    rows: list[ReportRow]
    plots: dict[str, tuple[str, Path | None]] = field(default_factory=dict)  # target -> (family, png)

    @property
    def targets(self) -> list[str]:
        return list(dict.fromkeys(r.target for r in self.rows))

    def intro(self) -> str:
        return (f"Space {self.space}: each family trained on {self.train_size} archs per target (split by canonical "
                f"hash, seed {self.seed}) and tested on all the others. The plot shows the best family by test "
                "acc@10.")  # fmt: skip


COLUMNS = ("family", "acc@10 %", "acc@5 %", "ρ", "τ", "MAPE %", "n_train", "n_test", "fit s")


def _cells(r: ReportRow) -> list[str]:
    m = r.metrics
    return [r.label(), f"{100 * m['acc10']:.1f}", f"{100 * m['acc5']:.1f}", f"{m['spearman']:.3f}",
            f"{m['kendall']:.3f}", f"{100 * m['mape']:.1f}", str(r.n_train), str(r.n_test), f"{r.fit_seconds:.1f}"]  # fmt: skip


def markdown(page: ReportPage, images: bool = True) -> str:
    """One section per target: its table and (``images``) its plot."""
    out = [f"# leti report: {page.space}", "", page.intro()]
    for target in page.targets:
        out += [
            "",
            f"## {target}",
            "",
            "| " + " | ".join(COLUMNS) + " |",
            "|---" + "|---:" * (len(COLUMNS) - 1) + "|",
        ]
        out += ["| " + " | ".join(_cells(r)) + " |" for r in page.rows if r.target == target]
        fam, png = page.plots.get(target, ("", None))
        if images and png is not None:
            out += ["", f"![{target}: {fam}, predicted vs measured]({png.name})"]
    return "\n".join(out) + "\n"


_CSS = """body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:1320px;
color:#222;padding:0 1rem}table{border-collapse:collapse;margin:.5rem 0 1rem}th,td{padding:.3rem .7rem;
border-bottom:1px solid #ddd;text-align:right}th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}
tr.best td{font-weight:600}img{width:100%;max-width:1000px;height:auto;border:1px solid #eee}
section{margin-bottom:2.5rem}"""


def html_page(page: ReportPage) -> str:
    """One self-contained HTML file: the tables, and the plots inline as base64 PNGs."""
    e = html.escape
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>leti report: {e(page.space)}</title><style>{_CSS}</style></head><body>",
             f"<h1>leti report: {e(page.space)}</h1>", f"<p>{e(page.intro())}</p>"]  # fmt: skip
    for target in page.targets:
        fam, png = page.plots.get(target, ("", None))
        parts.append(f'<section id="{e(target)}"><h2>{e(target)}</h2><table><thead><tr>')
        parts += [f"<th>{e(c)}</th>" for c in COLUMNS]
        parts.append("</tr></thead><tbody>")
        for r in page.rows:
            if r.target == target:
                best = ' class="best"' if r.family == fam else ""
                parts.append(f"<tr{best}>" + "".join(f"<td>{e(c)}</td>" for c in _cells(r)) + "</tr>")
        parts.append("</tbody></table>")
        if png is not None:
            data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
            alt = e(f"{target}: {fam}, predicted vs measured latency")
            parts.append(f'<img alt="{alt}" src="data:image/png;base64,{data}">')
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_pages(page: ReportPage, out_dir) -> dict[str, Path]:
    """``report.md`` (plots beside it) and ``report.html`` (plots inside it) in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, page_html = out / "report.md", out / "report.html"
    md.write_text(markdown(page))
    page_html.write_text(html_page(page))
    return {"markdown": md, "html": page_html}


__all__ = ["ReportPage", "ReportRow", "html_page", "markdown", "plot", "plot_stats", "write_pages"]
