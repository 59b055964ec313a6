"""Train, evaluate and report predictors on a store's measurements, always testing on archs never seen in training.

The split is ``split_by_hash``: isomorphic archs (same canonical hash) never sit on both sides. ``train`` records the
training archs' hashes in the metadata so that ``evaluate`` can later test a saved predictor on everything else.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np

from leti.datasets.archs import TargetData, target_data
from leti.datasets.split import split_by_hash
from leti.datasets.store import Store
from leti.errors import LetiError
from leti.predictors.base import FEATURE_VERSION, Predictor, library_versions
from leti.predictors.families import FAMILIES, NEEDS_SOURCES
from leti.predictors.features import FEATURES_ID
from leti.predictors.fewshot_data import fewshot_rows, fewshot_sources
from leti.predictors.metrics import metrics
from leti.predictors.registry import (
    TRAINED,
    best_family,
    make,
    next_version_dir,
    record_selection,
    save_trained,
    saved,
)
from leti.predictors.registry import load as load_trained
from leti.predictors.render import ReportPage, ReportRow, markdown, plot, write_pages
from leti.space import canonical_space
from leti.trust import calibrate
from leti.trust import load as load_trust

DEFAULT_FAMILIES = tuple(f for f in FAMILIES if f not in NEEDS_SOURCES)


def versions() -> dict:
    out = library_versions()
    for pkg in ("xgboost", "xgboost-cpu", "lightgbm", "catboost", "torch", "torch-geometric"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def _check_size(train_size, n: int) -> None:
    if isinstance(train_size, bool) or not isinstance(train_size, int | np.integer) or train_size < 2:
        raise LetiError(
            f"must be an integer >= 2 (one arch trains nothing), got {train_size!r}", "train_size"
        )
    if train_size >= n:
        raise LetiError(f"{train_size} is not smaller than the target's {n} measured archs", "train_size")


def fit_on(
    store: Store, data: TargetData, family: str, idx: np.ndarray, params: dict | None = None
) -> Predictor:
    """A new ``family`` predictor fitted on rows ``idx`` of ``data`` (see ``_fit``)."""
    return _fit(make(family, **(params or {})), data, idx, store)


def _fit(pred: Predictor, data: TargetData, idx: np.ndarray, store: Store) -> Predictor:
    """Fit on rows ``idx``, grouped by canonical hash (auto's folds and the GCN's early stopping use the groups),
    with whatever else the family reads from the store (``Predictor.store_inputs``)."""
    extra = pred.store_inputs(store, data.target, data.arch_ids[idx])
    return pred.fit(data.graphs(idx), data.latency_ms[idx], groups=list(data.hashes[idx]), **extra)


def train(
    store: Store,
    target: str,
    family: str,
    train_size: int = 900,
    seed: int = 0,
    params: dict | None = None,
    space: str | None = None,
    save: bool = False,
    root=None,
    sources: list[str] | None = None,
    train_archs: list | None = None,
    trust: bool | None = None,
    trust_folds: int = 5,
) -> tuple[Predictor, dict]:
    """Fit ``family`` on ``train_size`` archs of ``target`` (split by hash, ``seed``) and test it on the rest.

    Returns the fitted predictor and its metadata (metrics on the test split, the training hashes, versions);
    ``save=True`` also stores it as the target's predictor of that family.

    ``trust`` (default: when saving) calibrates intervals and out-of-distribution checks on the training archs
    (``leti.trust``, ``trust_folds``-fold cross-validation) and saves them with the predictor; ``meta["trust"]``
    then records the test archs' ``coverage``, ``interval_rel_width`` and ``ood_share``.

    ``family="fewshot"`` learns from the ``sources``' measurements (default: every other target measured in the
    space) and ``train_size`` archs of ``target`` (distinct networks, ``one_per_hash``; all of them: nothing is left
    to test), or exactly the archs ``train_archs`` (``[(Arch, where), ...]``; each must be measured on ``target``).
    """
    space = canonical_space(space) if space is not None else None
    if params is not None and not isinstance(params, dict):
        raise LetiError(f"must be a JSON object of hyper-parameters, got {type(params).__name__}", "params")
    pred = make(family, **(params or {}))  # bad hyper-parameters are reported before any data is read
    data = target_data(store, target, space)
    if family == "fewshot":
        tr, te = fewshot_rows(data, train_size, seed, train_archs)
    else:
        if sources is not None or train_archs is not None:
            field = "sources" if sources is not None else "train_archs"
            raise LetiError("applies to the fewshot predictor only", field)
        _check_size(train_size, len(data))
        tr, te = split_by_hash(data.hashes, int(train_size), int(seed))
    source_meta = None
    t0 = time.perf_counter()
    if family == "fewshot":
        spaces = sorted(set(data.spaces[tr].tolist())) if space is None else [space]
        source_data, source_meta = fewshot_sources(store, target, spaces, sources)
        pred.fit(data.graphs(tr), data.latency_ms[tr], groups=list(data.hashes[tr]), source_data=source_data)
    else:
        _fit(pred, data, tr, store)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    p = pred.predict(data.graphs(te)) if te.size else np.zeros(0)
    predict_s = time.perf_counter() - t0
    meta = {
        "target": target,
        "family": family,
        "space": space,
        "params": pred.get_params(),
        "feature_version": FEATURE_VERSION,
        "features_id": FEATURES_ID,
        "train_size": int(tr.size) if family == "fewshot" else int(train_size),
        "seed": int(seed),
        "split": "train_archs" if train_archs is not None else "split_by_hash",
        "n_train": int(tr.size),
        "n_test": int(te.size),
        "train_hashes": sorted(set(data.hashes[tr].tolist())),
        "metrics": metrics(data.latency_ms[te], p) if te.size else {},
        "fit_seconds": round(fit_s, 3),
        "predict_seconds": round(predict_s, 3),
        "versions": versions(),
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if family == "auto":
        meta["auto_chosen"] = pred.chosen_
    if source_meta is not None:
        meta["sources"] = source_meta
    if trust if trust is not None else save:
        tm = _calibrate(pred, data, tr, seed, trust_folds, source_data if family == "fewshot" else None)
        pred.trust_ = tm
        meta["trust"] = {"folds": int(trust_folds), "n_calibration": tm.info["n_calibration"]}
        if te.size:  # on the test archs, at the default 90%
            meta["trust"].update(tm.coverage_of(data.graphs(te), p, data.latency_ms[te]))
    if save:
        into = next_version_dir(target, family, root)  # reserved first: the selection names this version
        meta["version"] = int(into.name[1:])
        meta["selection"] = select(store, target, root, new=(pred, meta), data=data)
        meta["path"] = str(save_trained(pred, target, meta, root, into=into))
        record_selection(target, meta["selection"], root)
        if getattr(pred, "trust_", None) is not None:
            pred.trust_.save(meta["path"])  # and re-seals the version's directory
    pred.meta_ = {**getattr(pred, "meta_", {}), **meta}
    return pred, meta


def _calibrate(pred: Predictor, data: TargetData, tr: np.ndarray, seed: int, folds: int, source_data):
    ref = None
    if source_data:  # few-shot: the sources' archs are in distribution too (a seeded sample of them)
        pool = [g for gs, _ in source_data.values() for g in gs]
        pick = np.random.default_rng(seed).permutation(len(pool))[:2000]
        ref = [pool[i] for i in np.sort(pick)]
    return calibrate(pred, data.graphs(tr), data.latency_ms[tr], groups=list(data.hashes[tr]), folds=folds,
                     seed=seed, reference_graphs=ref)  # fmt: skip


MIN_SELECTION_ARCHS = 20


def _or_worst(v) -> float:
    return float(v) if isinstance(v, int | float) and v == v else -np.inf


def select(
    store: Store, target: str, root=None, new: tuple[Predictor, dict] | None = None, data=None
) -> dict:
    """Choose the family that answers for ``target`` among the user's trained predictors (each family's current
    version, with ``new`` = (predictor, meta) in place of its family's), on one protocol: every candidate predicts
    the same archs, those of the target that none of them was trained on; best acc@10, ties by Spearman's rho.

    When fewer than ``MIN_SELECTION_ARCHS`` such archs remain, the candidates are ranked by the test acc@10 recorded
    at training instead, and the selection says so. Returns the selection record (``registry.record_selection``).
    """
    data = data if data is not None else target_data(store, target)
    cands: dict[str, tuple[Predictor | None, dict, int | None]] = {}
    for r in saved(target, root, pretrained=False):
        if r.current and r.source == TRAINED:
            cands[r.family] = (None, r.meta, r.version)
    if new is not None:
        cands[new[0].family] = (new[0], new[1], new[1].get("version"))
    seen: set = set()
    for _, meta, _ in cands.values():
        seen |= set(meta.get("train_hashes") or [])
    test = np.flatnonzero([h not in seen for h in data.hashes])
    if test.size < MIN_SELECTION_ARCHS:
        family = best_family({f: m for f, (_, m, _) in cands.items()})
        scores = {
            f: {"version": v, "acc10": (m.get("metrics") or {}).get("acc10")}
            for f, (_, m, v) in cands.items()
        }
        return {"family": family, "metric": "acc10 recorded at training (own test splits)", "n_test": 0,
                "scores": scores, "reason": f"only {test.size} archs are held out from every candidate"}  # fmt: skip
    graphs, y = data.graphs(test), data.latency_ms[test]
    scores = {}
    for fam, (pred, _, version) in cands.items():
        try:
            p = (pred if pred is not None else load_trained(target, fam, root, version)).predict(graphs)
            m = metrics(y, p)
        except LetiError as e:  # an unreadable or broken candidate cannot answer
            scores[fam] = {"version": version, "error": str(e)}
            continue
        scores[fam] = {"version": version, "acc10": m["acc10"], "spearman": m["spearman"]}
    ok = {f: s for f, s in scores.items() if "acc10" in s}
    if not ok:
        raise LetiError(f"no trained predictor of {target} can predict its archs", "target")
    family = max(sorted(ok), key=lambda f: (_or_worst(ok[f]["acc10"]), _or_worst(ok[f]["spearman"])))
    return {"family": family, "metric": "acc10, ties by spearman", "n_test": int(test.size),
            "test": "archs of the target held out from every candidate's training set", "scores": scores,
            "chosen_at": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip


def evaluate(
    store: Store,
    target: str,
    predictor: str | Predictor | None = None,
    root=None,
    space: str | None = None,
    return_predictions: bool = False,
    coverage: float = 0.9,
) -> dict:
    """Metrics of a predictor (a family name: the target's saved one; None: the target's best saved one) on every
    arch of ``target`` it was not trained on. A predictor without recorded training hashes is tested on all archs
    (``held_out`` False). ``return_predictions`` adds ``y_true`` and ``y_pred`` (arrays, ms) for plotting. A
    predictor saved with trust data adds ``coverage`` (share of test archs inside their ``coverage`` interval),
    ``interval_rel_width`` (median (hi - lo) / prediction) and ``ood_share`` (share flagged out of distribution)."""
    pred = (
        load_trained(target, predictor, root)
        if predictor is None or isinstance(predictor, str)
        else predictor
    )
    if not isinstance(pred, Predictor):
        raise LetiError(f"expected a family name or a Predictor, got {type(predictor).__name__}", "predictor")
    data = target_data(store, target, canonical_space(space) if space else None)
    seen = set((getattr(pred, "meta_", None) or {}).get("train_hashes") or [])
    test = np.flatnonzero([h not in seen for h in data.hashes])
    if test.size == 0:
        raise LetiError(
            "every measured arch of this target was used in training; nothing left to test", "target"
        )
    p = pred.predict(data.graphs(test))
    out = metrics(data.latency_ms[test], p)
    tm = getattr(pred, "trust_", None)
    if tm is None and getattr(pred, "path_", None) is not None:
        tm = load_trust(pred.path_)
    if tm is not None:
        out.update(tm.coverage_of(data.graphs(test), p, data.latency_ms[test], coverage))
    out.update(
        {
            "n_train": int(getattr(pred, "n_train_", 0)),
            "n_test": int(test.size),
            "family": pred.family,
            "target": target,
            "held_out": bool(seen),
        }
    )
    if return_predictions:
        out["y_true"], out["y_pred"] = data.latency_ms[test], p
    return out


def targets_of_space(store: Store, space: str) -> list[str]:
    per = store.stats().get("per_target_space", {})
    return sorted(t for t, spaces in per.items() if spaces.get(space))


def report(store: Store, space: str, *args, **kwargs) -> str:
    """Train and test every family on every target of ``space`` (the arguments of ``report_page``); the Markdown
    report (one table per target) and, with ``out_dir``, ``report.md`` and ``report.html`` plus one plot per target
    (its best family by acc@10)."""
    page = report_page(store, space, *args, **kwargs)
    return markdown(page, images=bool(page.plots))


def report_page(
    store: Store,
    space: str,
    train_size: int = 900,
    families=DEFAULT_FAMILIES,
    out_dir=None,
    seed: int = 0,
    targets=None,
    params: dict | None = None,
    progress=None,
) -> ReportPage:
    """``report``'s findings as a ``ReportPage`` (rows, plots); the pages are written to ``out_dir`` if given."""
    space = canonical_space(space)
    targets = list(targets) if targets else targets_of_space(store, space)
    if not targets:
        raise LetiError(f"no target has measurements in space {space}", "space")
    families = list(families)
    if not families:
        raise LetiError("no families to report on", "families")
    out = Path(out_dir) if out_dir is not None else None
    page = ReportPage(space, int(train_size), int(seed), [])
    for target in targets:
        best = None
        for fam in families:
            pred, meta = train(
                store, target, fam, train_size, seed, (params or {}).get(fam), space, trust=False
            )
            chosen = meta.get("auto_chosen", {}).get("family", "") if fam == "auto" else ""
            page.rows.append(ReportRow(target, fam, meta["metrics"], meta["n_train"], meta["n_test"],
                                       meta["fit_seconds"], chosen))  # fmt: skip
            if progress is not None:
                progress(page.rows[-1], len(page.rows), len(targets) * len(families))
            if best is None or meta["metrics"]["acc10"] > best[1]["metrics"]["acc10"]:
                best = (pred, meta)
        if out is not None and best is not None:
            data = target_data(store, target, space)
            seen = set(best[1]["train_hashes"])
            te = np.flatnonzero([h not in seen for h in data.hashes])
            png = plot(data.latency_ms[te], best[0].predict(data.graphs(te)), out / f"{target}.png", target,
                       best[1]["family"], note=f"trained on {best[1]['n_train']}")  # fmt: skip
            page.plots[target] = (best[1]["family"], png)
    if out is not None:
        write_pages(page, out)
    return page


def learning_curve(
    store: Store,
    target: str,
    family: str,
    sizes=(100, 300, 900, 3000),
    seed: int = 0,
    params: dict | None = None,
    space: str | None = None,
) -> list[dict]:
    """Metrics for growing training sets on one common test set.

    With one seed the hash-split training sets are nested (each a prefix of the same shuffled group order), so the
    test set of the largest size is disjoint from every smaller training set too: all sizes are tested on it.
    """
    space = canonical_space(space) if space is not None else None
    data = target_data(store, target, space)
    sizes = sorted({int(s) for s in sizes})
    if not sizes:
        raise LetiError("no training sizes given", "sizes")
    for s in sizes:
        _check_size(s, len(data))
    _, test = split_by_hash(data.hashes, sizes[-1], seed)
    gte = data.graphs(test)
    out = []
    for s in sizes:
        tr, _ = split_by_hash(data.hashes, s, seed)
        pred = make(family, **(params or {}))
        t0 = time.perf_counter()
        _fit(pred, data, tr, store)
        fit_s = time.perf_counter() - t0
        m = metrics(data.latency_ms[test], pred.predict(gte))
        out.append({"train_size": s, "n_test": int(test.size), "family": family, "fit_seconds": fit_s, **m})
    return out


__all__ = [
    "evaluate",
    "fit_on",
    "learning_curve",
    "plot",
    "report",
    "report_page",
    "select",
    "train",
    "versions",
]
