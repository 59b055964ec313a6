"""``leti zoo build -o leti/zoo``: train the pretrained predictors from the public measurement data.

One command, seeded and reproducible: for every target of every source in ``SOURCES`` the measurements are imported
into a throw-away store, split by canonical hash (``TRAIN_SIZE`` archs to train, ``SEED``), a family is chosen by
k-fold cross-validation on the training archs alone (folds grouped by canonical hash, ``leti.predictors.auto``), the
winner is refitted on all training archs and tested on every other arch of the target. What ships is the winner's
model files and a ``meta.json`` naming the data source, its licence and commit, the protocol and the test metrics;
never a measurement. Model files over ``GZIP_OVER`` bytes are stored gzipped (read back through the seal as before).

Adding a data source is one ``Source`` entry; a new file format is one entry in ``IMPORTERS``.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from leti.datasets.archs import record_from_text, target_data
from leti.datasets.csvio import import_csv
from leti.datasets.mlbench import import_mlbench
from leti.datasets.store import Store
from leti.errors import LetiError
from leti.predictors import manifest
from leti.predictors.auto import DEFAULT_CANDIDATES
from leti.predictors.evaluate import fit_on, train, versions
from leti.predictors.family_split import evaluate_by_family, families_of
from leti.predictors.metrics import METRIC_KEYS
from leti.predictors.registry import GZ_SUFFIX, available_families, read_checked, saved
from leti.space import MODEL_SPACE
from leti.trust import calibrate
from leti.zoo import INDEX_FILE, ZOO_DIR

TRAIN_SIZE = (
    1500  # archs to train on (split by canonical hash); a target keeps at least a quarter for testing
)
SEED = 0
FOLDS = 5
GZIP_OVER = 64 * 1024
# Families a pretrained predictor may use: core installs have them (no torch), and they load without the
# library that trained them (the boosting families evaluate their trees in numpy).
ZOO_FAMILIES = ("lut", "flops", "linear", "xgboost", "lightgbm", "catboost", "kernel")
# Things in meta.json that differ from run to run; left out so that a rebuild gives the same files.
UNSTABLE_META = ("trained_at", "fit_seconds", "predict_seconds", "path", "selection")


@dataclass(frozen=True)
class Source:
    """A public measurement data set: where it comes from and which files of the data directory hold it."""

    name: str
    repo: str  # GitHub owner/name
    commit: str
    licence: str
    files: tuple[str, ...]
    format: str = "measurement-csv"  # a key of IMPORTERS
    paper: str = ""
    # "hash": NAS cells, split by canonical hash, family chosen by grouped CV on the training archs; "family": real
    # models, the source's family tested leave-one-model-family-out, then fitted on every model
    protocol: str = "hash"
    family: str = ""  # the family of a "family" source

    def describe(self, file: str) -> dict:
        return {"name": self.name, "paper": self.paper, "repo": f"https://github.com/{self.repo}",
                "commit": self.commit, "licence": self.licence, "file": file, "format": self.format}  # fmt: skip


NB201 = "nasbench201__{}.csv"
SOURCES: tuple[Source, ...] = (
    Source("HW-NAS-Bench via HELP", "HayeonLee/HELP", "45f70eb", "MIT",
           (NB201.format("pixel3-tflite-cpu"), NB201.format("raspi4-tflite-cpu")), paper="HW-NAS-Bench, ICLR 2021"),
    Source("nn-Meter", "microsoft/nn-Meter", "28e982e", "MIT",
           (NB201.format("pixel4-tflite2.1-cpu-a76"), NB201.format("mi9-tflite2.1-gpu-adreno640")),
           paper="nn-Meter, MobiSys 2021"),
    Source("LatBench via OneProxy", "Ren-Research/OneProxy", "e3c9b2c", "MIT",
           (NB201.format("sd855-cpu"), NB201.format("sd855-gpu")), paper="BRP-NAS, NeurIPS 2020"),
    Source("mobile-ml-benchmark", "qed-usc/mobile-ml-benchmark", "40ba833", "MIT", ("mobile-ml-benchmark",),
           format="mobile-ml-benchmark", protocol="family", family="kernel"),
)  # fmt: skip


def _import_measurement_csv(store, path: Path) -> list[str]:
    import_csv(store, path, record_from_text)
    return sorted(store.stats()["per_target"])


def _import_mlbench(store, path: Path) -> list[str]:
    return sorted(import_mlbench(store, path, ("float", "quant")).targets)


# format -> importer(store, path) -> the targets it filled
IMPORTERS: dict[str, Callable] = {"measurement-csv": _import_measurement_csv,
                                  "mobile-ml-benchmark": _import_mlbench}  # fmt: skip


@dataclass
class Built:
    target: str
    family: str
    path: Path
    metrics: dict
    bytes: int
    source: dict = field(default_factory=dict)


def default_data_dir() -> Path:
    """``$LETI_DATA`` or, in a checkout next to the shared data, ``../shared/data``."""
    return Path(os.environ.get("LETI_DATA") or "../shared/data")


def candidates(train_size: int) -> list:
    """auto's default candidates restricted to the zoo families that this installation has."""
    have = set(available_families())
    return [[f, p] for f, p in DEFAULT_CANDIDATES if f in ZOO_FAMILIES and f in have]


def build(
    out=ZOO_DIR,
    data_dir=None,
    sources: tuple[Source, ...] = SOURCES,
    train_size: int = TRAIN_SIZE,
    seed: int = SEED,
    folds: int = FOLDS,
    targets: list[str] | None = None,
    cands: list | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Built]:
    """Train one pretrained predictor per target of ``sources`` into ``out`` (replacing what was there)."""
    data = Path(data_dir) if data_dir is not None else default_data_dir()
    jobs = []
    for src in sources:
        if src.format not in IMPORTERS:
            raise LetiError(
                f"no importer for format {src.format!r} (known: {', '.join(IMPORTERS)})", "format"
            )
        for f in src.files:
            if not (data / f).exists():
                raise LetiError(
                    f"missing {f} of {src.name} ({src.repo} @{src.commit}); pass --data DIR", "data"
                )
            jobs.append((src, f))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".zoo-", dir=out))
    built: list[Built] = []
    try:
        for src, f in jobs:
            built += _build_file(src, data / f, staging, train_size, seed, folds, targets, cands, progress)
        _replace(out, staging, built)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    built = [
        Built(b.target, b.family, out / b.path.relative_to(staging), b.metrics, b.bytes, b.source)
        for b in built
    ]
    index = {
        "built_by": "leti zoo build",
        "protocol": protocol(train_size, seed, folds),
        "sources": [asdict(s) for s in sources],
        "targets": {b.target: {"family": b.family, "bytes": b.bytes, "acc10": b.metrics.get("acc10"),
                               "spearman": b.metrics.get("spearman"), "source": b.source["name"]} for b in built},
        "total_bytes": sum(b.bytes for b in built),
    }  # fmt: skip
    (out / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return built


def protocol(train_size: int, seed: int, folds: int) -> dict:
    return {
        "split": "split_by_hash",
        "train_size": int(train_size),
        "seed": int(seed),
        "test": "every other measured arch of the target",
        "family_choice": f"{folds}-fold cross-validation on the training archs, folds grouped by canonical hash "
        "(auto, select=rank); the winner refitted on all training archs",
    }


def _build_file(src, path, staging, train_size, seed, folds, only, cands, progress) -> list[Built]:
    out = []
    with tempfile.TemporaryDirectory(prefix="leti-zoo-") as tmp, Store.open(Path(tmp) / "zoo.db") as store:
        for target in IMPORTERS[src.format](store, path):
            if only and target not in only:
                continue
            n = int(store.stats()["per_target"][target])
            fit = _by_family if src.protocol == "family" else _by_hash
            model, meta = fit(store, target, src, n, train_size, seed, folds, cands, progress)
            keep = {k: v for k, v in meta.items() if k not in ("family", "params", *UNSTABLE_META)}
            keep.update({"source": "pretrained", "source_data": {**src.describe(path.name), "archs": n},
                         "licence": src.licence, "version": 1})  # fmt: skip
            d = staging / target / model.family / "v1"
            model.save(d, keep)
            if getattr(model, "trust_", None) is not None:
                model.trust_.save(d)
            _gzip_large(d)
            nbytes = sum(p.stat().st_size for p in d.rglob("*") if p.is_file())
            out.append(Built(target, model.family, d, meta["metrics"], nbytes, keep["source_data"]))
            if progress:
                progress(f"{target}: {model.family}, test acc@10 {100 * meta['metrics']['acc10']:.1f}% "
                         f"on {meta['n_test']} archs, {nbytes / 1e6:.2f} MB")  # fmt: skip
    return out


def _by_hash(store, target, src, n, train_size, seed, folds, cands, progress):
    """NAS cells: the family chosen by grouped CV on the training archs, tested on all other archs."""
    size = min(int(train_size), (3 * n) // 4)
    if progress:
        progress(f"{target}: {n} archs, training on {size}")
    params = {"candidates": cands if cands is not None else candidates(size), "folds": folds, "seed": seed}
    auto, meta = train(store, target, "auto", size, seed, params, trust=True)  # intervals and flags ship too
    meta["protocol"] = {**protocol(size, seed, folds), "cv_scores": _rounded(getattr(auto, "cv_scores_", []))}
    meta["chosen_by"] = "cross-validation on the training archs (auto)"
    # the auto predictor ships as fitted: the chosen candidate (or blend, with its corrections), nothing else
    return auto, meta


def _by_family(store, target, src, n, train_size, seed, folds, cands, progress):
    """Real models: the source's family, tested leave-one-model-family-out, then fitted on every model."""
    if progress:
        progress(f"{target}: {n} models, {src.family} tested leave-one-family-out")
    m = evaluate_by_family(store, target, src.family, return_predictions=True)
    held_out_ms = m.pop("y_pred")
    data = target_data(store, target, MODEL_SPACE)
    model = fit_on(store, data, src.family, np.arange(len(data)))
    # trust data from the leave-one-family-out predictions: honest errors, no refit (leti.trust uses them as given)
    model.oof_predictions_ = np.asarray(held_out_ms, dtype=float)
    model.trust_ = calibrate(model, data.graphs(np.arange(len(data))), data.latency_ms,
                             groups=list(families_of(data)[1]), seed=seed)  # fmt: skip
    keys = ("n_families", "n_test", "kernel_measurements", "target")
    held_out = (f"leave one model family out: each family predicted by a {src.family} predictor fitted on the other "
                f"{m['n_families'] - 1}; metrics over all held-out predictions")  # fmt: skip
    meta = {"metrics": {k: m[k] for k in METRIC_KEYS}, **{k: m[k] for k in keys}, "n_train": len(data),
            "space": str(data.spaces[0]), "versions": versions(), "chosen_by": "fixed for the source",
            "protocol": {"split": "family", "test": held_out, "shipped": f"fitted on all {len(data)} models",
                         "family_choice": f"{src.family}, fixed for real models (docs/real-models.md)"}}  # fmt: skip
    return model, meta


def _rounded(scores: list[dict]) -> list[dict]:
    return [{k: round(v, 6) if isinstance(v, float) else v for k, v in s.items()} for s in scores]


def _gzip_large(d: Path) -> None:
    """Gzip every model file over ``GZIP_OVER`` bytes (mtime 0: the same bytes on every build), then seal the
    directory again over what it now holds; ``read_checked`` reads either form."""
    for p in sorted(d.rglob("*")):
        if (
            p.is_file()
            and p.stat().st_size > GZIP_OVER
            and p.suffix != GZ_SUFFIX
            and p.name not in ("meta.json", manifest.MANIFEST_FILE)
        ):
            raw = p.read_bytes()
            with open(p.with_name(p.name + GZ_SUFFIX), "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0,
                                                                             filename="") as gz:  # fmt: skip
                gz.write(raw)
            p.unlink()
            if read_checked(p) != raw:
                raise LetiError("gzipped model file does not read back", str(p))
    # nested predictors (auto's members) carry manifests of their own: seal the innermost first
    for m in sorted(d.rglob(manifest.MANIFEST_FILE), key=lambda f: len(f.parts), reverse=True):
        manifest.seal(m.parent)
    manifest.verify(d)


def _replace(out: Path, staging: Path, built: list[Built]) -> None:
    """Swap the staged predictors in: the old zoo's target directories go (only those: the package's Python files
    share the directory)."""
    for row in saved(None, out, pretrained=False):
        old = out / row.target
        if old.is_dir():
            shutil.rmtree(old)
    for b in built:
        dest = out / b.target
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staging / b.target, dest)


def total_bytes(root=ZOO_DIR) -> int:
    """Bytes of every pretrained predictor's files under ``root``."""
    return sum(
        p.stat().st_size
        for r in saved(None, root, pretrained=False)
        for p in r.path.rglob("*")
        if p.is_file()
    )


__all__ = ["FOLDS", "IMPORTERS", "SEED", "SOURCES", "TRAIN_SIZE", "Built", "Source", "build", "total_bytes"]
