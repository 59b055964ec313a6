"""Leave-one-family-out evaluation of real models (``leti evaluate --split family``).

Each imported model (space ``model``) belongs to a family (``leti.datasets.split.model_family`` of the model name in
its graph's metadata). For every family, a fresh predictor is fitted on the models of all the other families and
predicts that family's models; the metrics are computed once over all the held-out predictions. A predictor whose
``fit`` uses them gets the training families (``groups``, for its own grouped cross-validation) and whatever else it
reads from the store (``Predictor.store_inputs``: the kernel family's kernel measurements, of the training models
only).
"""

from __future__ import annotations

import time

import numpy as np

from leti.datasets.archs import TargetData, target_data
from leti.datasets.split import model_family
from leti.datasets.store import Store
from leti.errors import LetiError
from leti.predictors.metrics import metrics
from leti.predictors.registry import make
from leti.space import MODEL_SPACE

MIN_FAMILIES = 3


def model_names(data: TargetData) -> list[str]:
    """The model name of each arch (the graph's ``meta["model"]``, else its arch id)."""
    return [str(g.meta.get("model") or a) for g, a in zip(data.graphs(), data.arch_ids, strict=True)]


def family_table(names) -> dict[str, list[str]]:
    """family -> its models, both sorted."""
    out: dict[str, list[str]] = {}
    for n in names:
        out.setdefault(model_family(n), []).append(n)
    return {f: sorted(ms) for f, ms in sorted(out.items())}


def node_times(store: Store, target: str) -> dict[str, dict[int, float]]:
    """arch_id -> {node: ms} of the target's kernel measurements (the first settings key of each)."""
    df = store.kernel_measurements(target=target)
    out: dict[str, dict[int, float]] = {}
    for aid, node, ms in zip(df["arch_id"], df["node"], df["latency_ms"], strict=True):
        out.setdefault(str(aid), {}).setdefault(int(node), float(ms))
    return out


def families_of(data: TargetData) -> tuple[list[str], np.ndarray]:
    """(model names, family of each) of a target's imported models."""
    names = model_names(data)
    fams = np.array([model_family(n) for n in names], dtype=object)
    if len(set(fams)) < MIN_FAMILIES:
        raise LetiError(
            f"{len(set(fams))} model families; leave-one-family-out needs at least {MIN_FAMILIES}", "target"
        )
    return names, fams


def leave_one_family_out(fams: np.ndarray, fit_predict, progress=None) -> np.ndarray:
    """Held-out predictions: for each family, ``fit_predict(train_idx, test_idx)`` -> predictions of test_idx."""
    uniq = sorted(set(fams))
    out = np.zeros(fams.size)
    for k, fam in enumerate(uniq):
        te = np.flatnonzero(fams == fam)
        out[te] = fit_predict(np.flatnonzero(fams != fam), te)
        if progress is not None:
            progress(k + 1, len(uniq))
    return out


def evaluate_by_family(
    store: Store,
    target: str,
    family: str,
    params: dict | None = None,
    use_kernels: bool = True,
    return_predictions: bool = False,
    progress=None,
) -> dict:
    """Leave-one-family-out metrics of predictor ``family`` on the imported models of ``target``."""
    data = target_data(store, target, MODEL_SPACE)
    names, fams = families_of(data)
    t0 = time.perf_counter()
    used_kernels = []

    def fit_predict(tr, te):
        pred = make(family, **(params or {}))
        extra = pred.store_inputs(store, target, data.arch_ids[tr]) if use_kernels else {}
        used_kernels.append("kernels" in extra)
        pred.fit(data.graphs(tr), data.latency_ms[tr], groups=list(fams[tr]), **extra)
        return pred.predict(data.graphs(te))

    pred_ms = leave_one_family_out(fams, fit_predict, progress)
    out = metrics(data.latency_ms, pred_ms)
    n_fam = len(set(fams))
    out.update({
        "target": target,
        "family": family,
        "split": "family",
        "n_families": n_fam,
        "n_test": len(data),
        "n_train": int(round(len(data) * (n_fam - 1) / n_fam)),
        "kernel_measurements": any(used_kernels),
        "seconds": round(time.perf_counter() - t0, 2),
    })  # fmt: skip
    if return_predictions:
        out["models"] = names
        out["y_true"], out["y_pred"] = data.latency_ms, pred_ms
    return out


__all__ = [
    "evaluate_by_family",
    "families_of",
    "family_table",
    "leave_one_family_out",
    "model_names",
    "node_times",
]
