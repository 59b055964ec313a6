"""Start-up: wall time of ``leti --help`` and of ``leti predict`` of one arch with each boosting family.

Goals: ``leti --help`` <= 0.3 s; ``leti predict`` of one arch with a boosting predictor <= 1.0 s wall.

Each figure is the median of ``--runs`` fresh processes (``python -m leti.cli …``, as the ``leti`` script runs it).
The predictors are trained first, with the families' default hyper-parameters (model size drives loading time), on
900 NB201 archs with a synthetic latency, into a throw-away ``LETI_HOME``; the last row asks the pretrained zoo, as
right after installing. Bytecode is compiled beforehand into a
private cache (``PYTHONPYCACHEPREFIX``), as an installed package has it: the figures do not include compiling
leti's sources. The pretrained zoo is switched off (``LETI_ZOO=off``) so that each run loads the predictor named.

    .venv/bin/python benchmarks/bench_startup.py [--runs 7] [--families lightgbm,xgboost,catboost]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|"
TARGET = "bench-startup-cpu"
ZOO_TARGET = "pixel4-tflite2.1-cpu-a76"


def timed(cmd: list[str], env: dict, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out.append(time.perf_counter() - t0)
    return out


def train(families: list[str], home: Path) -> None:
    """Fit each family on 900 NB201 archs (synthetic latency) and save it for TARGET under ``home``."""
    os.environ["LETI_HOME"] = str(home)
    import numpy as np

    from leti.predictors import features as F
    from leti.predictors.registry import make, save_trained
    from leti.space import sample

    graphs = [a.to_graph() for a, _ in sample("nb201", 900, 1)]
    X = F.featurize(graphs)
    y = (0.5 + X[:, F.feature_index("tot.live_macs")] / 2e7) * np.exp(
        np.random.default_rng(0).normal(0, 0.02, 900)
    )
    for fam in families:
        save_trained(make(fam).fit(graphs, y), TARGET, {"metrics": {"acc10": 0.9}})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--families", default="lightgbm,xgboost,catboost")
    args = ap.parse_args()
    families = [f for f in args.families.split(",") if f]
    with tempfile.TemporaryDirectory() as tmp:
        home, cache = Path(tmp) / "home", Path(tmp) / "pycache"
        train(families, home)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(LETI_HOME=str(home), LETI_ZOO="off", PYTHONPYCACHEPREFIX=str(cache),
                   PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))  # fmt: skip
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "leti")], env=env, check=True)
        leti = [sys.executable, "-m", "leti.cli"]
        rows = [("leti --help", timed(leti + ["--help"], env, args.runs), 0.3)]
        for fam in families:
            cmd = leti + ["predict", "--target", TARGET, "--predictor", fam, ARCH]
            rows.append((f"leti predict ({fam}, 1 arch)", timed(cmd, env, args.runs), 1.0))
        zoo = {k: v for k, v in env.items() if k != "LETI_ZOO"}  # the pretrained predictor, as after install
        cmd = leti + ["predict", "--target", ZOO_TARGET, ARCH]
        rows.append((f"leti predict (zoo {ZOO_TARGET})", timed(cmd, zoo, args.runs), 1.0))
    print(
        f"median of {args.runs} fresh processes; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"{'command':44s} {'median s':>9s} {'min s':>7s} {'goal s':>7s}  status")
    for name, ts, goal in rows:
        med = statistics.median(ts)
        print(f"{name:44s} {med:9.3f} {min(ts):7.3f} {goal:7.1f}  {'met' if med <= goal else 'MISSED'}")


if __name__ == "__main__":
    main()
