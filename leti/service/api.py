"""Predictions from Python: in-process ``predict(archs, target)`` and ``Client(url).predict(archs, target)``.

Both take one arch or a list of them in every form ``leti.importers.inputs.to_arch`` reads (NB101 ``(matrix, ops)``, NB201
strings, FBNet block lists or comma strings, ``Arch`` objects, Arch JSON) and return an ``np.ndarray`` of
milliseconds, one per arch, in input order. Bad input raises ``LetiError`` naming the field (``archs[3]``).

With ``interval=0.9`` (a coverage in (0, 1)) both return a dict instead: ``target``, ``predictor``, ``latency_ms``,
``interval_ms`` ((n, 2) [lo, hi], calibrated to contain the measured latency of that share of archs like the
training ones), ``in_distribution`` (bool per arch) and ``why`` (a short reason where it is False), ``coverage``
(docs/trust.md).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from leti.errors import LetiError, PredictorError, TooLargeError
from leti.graph.layergraph import LayerGraph
from leti.graph.memo import graph_weight
from leti.importers.inputs import as_list, clear_graphs, graph_of
from leti.paths import default_predictor_dir
from leti.predictors import registry
from leti.predictors.features import trim
from leti.predictors.registry import TRAINED
from leti.space import Arch, canonical_space
from leti.trust import check_coverage
from leti.trust import load as load_trust

# The server's defaults, which the client splits batches by (leti.service.app explains them)
DEFAULT_MAX_BATCH = 10000
DEFAULT_MAX_BODY = 4 << 20


class NotFoundError(LetiError):
    """An unknown target or predictor (HTTP 404)."""


class AuthError(LetiError):
    """A missing or wrong bearer token (HTTP 401)."""


# ---- trained predictors --------------------------------------------------------------------------------------------
def _registry():
    return registry


def trained_index(root: str | os.PathLike | None = None) -> dict[str, dict[str, dict]]:
    """target -> family -> meta (all of meta.json, plus the registry's summary: version, source, whether it answers)
    of the predictor each family answers with: the user's current version under ``root`` (default
    ``$LETI_HOME/predictors``), else the pretrained one."""
    out: dict[str, dict[str, dict]] = {}
    rows = [r for r in _registry().saved(None, root) if r.current]
    mine = {(r.target, r.family) for r in rows if r.source == TRAINED}
    for r in rows:
        if r.source != TRAINED and (r.target, r.family) in mine:
            continue  # the user's own predictor of this family shadows the pretrained one
        out.setdefault(r.target, {})[r.family] = {**r.meta, **r.summary()}
    return out


# Graph building and prediction run one chunk at a time, process-wide. Predictors and the feature memo they share are
# not documented as thread-safe, and the work is CPU-bound under the GIL, so serialising it costs no throughput; it
# also bounds a server's working set to one chunk's graphs and features however many requests arrive together. Big
# batches take the lock chunk by chunk, so that single-arch requests arriving meanwhile wait for one chunk only.
_WORK_LOCK = threading.Lock()
PREDICT_CHUNK = 128  # archs
CHUNK_SIZE = 50_000  # nodes + edges: a chunk's graphs and features take ~15 MB (benchmarks/bench_service.py)


@dataclass(frozen=True)
class Limits:
    """What one request may cost: nodes + edges of one arch, and of all its archs together."""

    arch_size: int
    request_size: int


NO_TRUST = "no trust data saved with this predictor: retrain it with `leti train` for intervals and flags"


@dataclass
class Loaded:
    """A loaded predictor with the target and family it was loaded for, and its trust data (None: saved without)."""

    target: str
    family: str
    predictor: Any
    trust: Any = None
    version: int = 0
    source: str = "trained"  # or "pretrained" (the zoo)

    def _predict_chunk(self, graphs: list[LayerGraph]) -> np.ndarray:
        ms = np.asarray(self.predictor.predict(graphs), dtype=float).ravel()
        if ms.size != len(graphs):
            raise PredictorError(f"returned {ms.size} values for {len(graphs)} archs", self.family)
        return ms

    def predict(self, graphs: list[LayerGraph]) -> np.ndarray:
        out = []
        for start in range(0, len(graphs), PREDICT_CHUNK):
            with _WORK_LOCK:
                out.append(self._predict_chunk(graphs[start : start + PREDICT_CHUNK]))
        return np.concatenate(out) if out else np.zeros(0)

    def _assess_chunk(self, graphs: list[LayerGraph], coverage: float) -> dict:
        """One chunk's JSON-ready lists (the caller holds ``_WORK_LOCK``: the trust model's memo is shared too)."""
        ms = self._predict_chunk(graphs)
        if self.trust is None:
            n = len(graphs)
            return {"latency_ms": [float(x) if np.isfinite(x) else None for x in ms],
                    "interval_ms": [[None, None]] * n, "in_distribution": [None] * n, "why": [NO_TRUST] * n}  # fmt: skip
        return self.trust.assess(graphs, ms, coverage).to_dict()

    def _merged(self, parts: list[dict], coverage: float) -> dict:
        out: dict = {"target": self.target, "predictor": self.family, "coverage": coverage}
        for key in ("latency_ms", "interval_ms", "in_distribution", "why"):
            out[key] = [v for p in parts for v in p[key]]
        return out

    def predict_archs(self, archs: list, spaces: list, fields: list[str], limits: Limits | None = None,
                      space_fields: list[str] | None = None, input_shape=None, coverage: float | None = None):  # fmt: skip
        """Latency of archs in any accepted form, built into graphs and predicted a chunk at a time, so that at most
        one chunk's graphs are held; errors name ``fields[i]`` (``space_fields[i]``, default ``archs[i].space``,
        for a bad space). ``limits`` refuses oversized archs and requests (``TooLargeError``) before they are
        built. ``input_shape`` is for in-memory torch / Keras models (``graph_of``). With ``coverage``, instead of
        an array, a dict of JSON-ready lists: ``latency_ms``, ``interval_ms``, ``in_distribution``, ``why``."""
        if coverage is not None:
            coverage = check_coverage(coverage)
        out, total, i = [], 0, 0
        while i < len(archs):
            with _WORK_LOCK:
                trim()  # registries of distinct layers start over past their budget (leti.predictors.features)
                graphs, size = [], 0
                while i < len(archs) and len(graphs) < PREDICT_CHUNK and size < CHUNK_SIZE:
                    space_field = (
                        space_fields[i] if space_fields else f"{fields[i].removesuffix('.arch')}.space"
                    )
                    g = graph_of(archs[i], spaces[i], fields[i], space_field, input_shape=input_shape,
                                 max_size=limits.arch_size if limits else None)  # fmt: skip
                    w = graph_weight(g)
                    total, size = total + w, size + w
                    if limits and total > limits.request_size:
                        raise TooLargeError(f"the archs up to this one expand to {total:,} layers and edges, over "
                                            f"this server's limit of {limits.request_size:,} per request; send fewer "
                                            "or smaller archs", fields[i].removesuffix(".arch"))  # fmt: skip
                    graphs.append(g)
                    i += 1
                out.append(
                    self._predict_chunk(graphs) if coverage is None else self._assess_chunk(graphs, coverage)
                )
        if coverage is not None:
            return self._merged(out, coverage)
        return np.concatenate(out) if out else np.zeros(0)


def as_arrays(res: dict) -> dict:
    """``predict_archs(..., coverage=)``'s JSON lists as arrays for Python callers (None -> NaN)."""
    out = dict(res)
    out["latency_ms"] = np.array([np.nan if v is None else v for v in res["latency_ms"]], dtype=float)
    iv = [[np.nan if v is None else v for v in pair] for pair in res["interval_ms"]]
    out["interval_ms"] = np.array(iv, dtype=float).reshape(-1, 2)
    out["in_distribution"] = np.array(
        res["in_distribution"], dtype=object if None in res["in_distribution"] else bool
    )
    out["why"] = list(res["why"])
    return out


class PredictorCache:
    """Predictors keyed by (root, target, family), each loaded from disk once; thread-safe.

    A predictor retrained on disk while the process runs is picked up after ``clear()``.
    """

    def __init__(self):
        self._items: dict[tuple, Loaded] = {}
        self._lock = threading.Lock()

    def get(self, target, family=None, root: str | os.PathLike | None = None) -> Loaded:
        if not isinstance(target, str) or not target.strip():
            raise LetiError("must be a non-empty string naming a target", "target")
        if family is not None and (not isinstance(family, str) or not family.strip()):
            raise LetiError("must be a predictor family name such as 'xgboost', or omitted", "predictor")
        base = str(Path(root).expanduser() if root is not None else default_predictor_dir())
        key = (base, target, family)
        hit = self._items.get(key)  # the fast path takes no lock: dict reads are atomic
        if hit is not None:
            return hit
        with self._lock:  # one load per key even when the first requests arrive together
            hit = self._items.get(key)
            if hit is None:
                hit = self._load(base, target, family)
                self._items[key] = hit
                self._items.setdefault((base, target, hit.family), hit)
            return hit

    def loaded(self, root: str | os.PathLike | None = None) -> list[Loaded]:
        """The predictors in memory that were loaded from ``root``."""
        base = str(Path(root).expanduser() if root is not None else default_predictor_dir())
        return list({id(v): v for k, v in list(self._items.items()) if k[0] == base}.values())

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    @staticmethod
    def _load(base: str, target: str, family: str | None) -> Loaded:
        # The registry checks names against what is on disk (a crafted name such as '../x' never reaches the file
        # system) and says which predictors exist when the asked-for one does not.
        reg = _registry()
        try:
            hit = reg.resolve(target, family, root=base)
        except LetiError as e:
            raise NotFoundError(e.reason, e.field) from None
        try:
            pred = reg.family_class(hit.family).load(hit.path)
        except LetiError as e:
            raise NotFoundError(f"{target}/{hit.family} cannot be loaded: {e}", "predictor") from None
        try:
            trust = load_trust(hit.path)
        except LetiError as e:
            raise NotFoundError(
                f"{target}/{hit.family} v{hit.version} cannot be loaded: {e}", "predictor"
            ) from None
        return Loaded(target, hit.family, pred, trust=trust, version=hit.version, source=hit.source)


_PREDICTORS = PredictorCache()  # process-wide: the in-process API and the server share loaded predictors


def predictor_cache() -> PredictorCache:
    return _PREDICTORS


def clear_cache() -> None:
    """Forget loaded predictors and parsed archs (after retraining a predictor in this process)."""
    _PREDICTORS.clear()
    clear_graphs()


def predict(
    archs,
    target: str,
    predictor: str | None = None,
    space: str | None = None,
    *,
    root=None,
    input_shape=None,
    interval=None,
):
    """Predicted latency in ms of one arch or a list of archs on ``target``.

    An arch is anything ``leti.importers.inputs`` reads (Arch, native text, Arch JSON, a LayerGraph) or an in-memory
    ``torch.nn.Module`` / Keras model; ``input_shape`` = (H, W, C) gives a torch module's input size (and fixes a
    Keras model's open one). ``predictor`` is a family name (``xgboost``, ``lut``, …); None picks the target's best
    by test acc@10. ``space`` says how to read native strings when they are ambiguous (``nb101``, ``nb201``,
    ``fbnet``, ``leti``). ``root`` is the predictor directory (default ``$LETI_HOME/predictors``). Returns a 1-D
    array; with ``interval`` (a coverage such as 0.9) a dict of arrays: ``latency_ms``, ``interval_ms`` (n, 2),
    ``in_distribution``, ``why``, with ``target``, ``predictor`` and ``coverage``.
    """
    loaded = _PREDICTORS.get(target, predictor, root)
    if space is not None:
        space = canonical_space(space, "space")
    items = as_list(archs)
    fields = [f"archs[{i}]" for i in range(len(items))]
    res = loaded.predict_archs(
        items, [space] * len(items), fields, input_shape=input_shape, coverage=interval
    )
    return res if interval is None else as_arrays(res)


# ---- the HTTP client -----------------------------------------------------------------------------------------------
def _jsonable(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, list | tuple):
        return [_jsonable(o) for o in obj]
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    return obj


def wire_item(obj, space: str | None = None, field: str = "archs") -> dict:
    """One arch as a request item: ``{"space": …, "arch": …}``, or ``{"arch": <Arch JSON>}`` for Arch objects."""
    if isinstance(obj, Arch):
        return {"arch": obj.to_dict()}
    if isinstance(obj, LayerGraph):
        raise LetiError("a LayerGraph cannot be sent over HTTP; send the arch, or use leti.predict", field)
    item = {"arch": _jsonable(obj)}
    if space is not None:
        item["space"] = space
    return item


class Client:
    """A client of ``leti serve`` that keeps one HTTP connection open.

    ``token`` defaults to ``$LETI_TOKEN``. Batches are split into requests of at most ``max_batch`` archs and
    ``max_body`` bytes (the server's defaults; see ``/v1/health``). Errors raise ``LetiError`` with the server's message (``archs[3].arch: …``); an unreachable server names ``url``.
    """

    def __init__(self, url: str = "http://127.0.0.1:8000", token: str | None = None, timeout: float = 30.0,
                 max_batch: int = DEFAULT_MAX_BATCH, max_body: int = DEFAULT_MAX_BODY):  # fmt: skip
        self.url = url.rstrip("/")
        self.token = token if token is not None else os.environ.get("LETI_TOKEN")
        self.timeout = timeout
        self.max_batch = max_batch
        self.max_body = max_body
        self._http = None  # opened on first use

    # ---- the connection ---------------------------------------------------------------------------------------
    def _client(self):
        if self._http is None:
            import socket

            import httpx

            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            # no Nagle delay: a request is written as headers then body, and single-arch calls are latency-bound
            transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
            self._http = httpx.Client(
                base_url=self.url, headers=headers, timeout=self.timeout, transport=transport
            )
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def _request(self, method: str, path: str, data: str | None = None) -> dict:
        import httpx

        try:
            if data is None:
                r = self._client().request(method, path)
            else:
                r = self._client().request(
                    method, path, content=data, headers={"Content-Type": "application/json"}
                )
        except httpx.HTTPError as e:
            raise LetiError(
                f"cannot reach the leti server at {self.url} ({type(e).__name__}: {e})", "url"
            ) from None
        if r.status_code >= 400:
            raise _server_error(r)
        try:
            return r.json()
        except ValueError:
            raise LetiError(f"the server at {self.url} answered {path} with invalid JSON", "url") from None

    # ---- the endpoints ----------------------------------------------------------------------------------------
    def predict(
        self, archs, target: str, predictor: str | None = None, space: str | None = None, interval=None
    ):
        """Predicted latency in ms, one per arch, exactly as ``leti.predict`` on the server's machine gives (with
        ``interval``, the same dict of arrays)."""
        items = [wire_item(a, space, f"archs[{i}]") for i, a in enumerate(as_list(archs))]
        res = self.predict_items(items, target, predictor, interval)
        if interval is None:
            return res["latency_ms"]
        return as_arrays({**res, "latency_ms": [None if x != x else float(x) for x in res["latency_ms"]]})

    def predict_items(
        self, items: list[dict], target: str, predictor: str | None = None, coverage=None
    ) -> dict:
        """Send request items (``{"space", "arch"}`` dicts) as is; returns ``{"target", "predictor",
        "latency_ms": ndarray}`` and the server's ``interval_ms``, ``in_distribution``, ``why`` lists (at
        ``coverage``, default the server's 0.9) when it sends them."""
        head: dict = {"target": target}
        if predictor is not None:
            head["predictor"] = predictor
        if coverage is not None:
            head["coverage"] = coverage
        head_text = _dumps(head, "target")[:-1] + ',"archs":['
        texts = [_dumps(it, f"archs[{i}]") for i, it in enumerate(items)]
        out, res, start = [], {"target": target, "predictor": predictor}, 0
        extra: dict = {}
        while True:  # one request at least, even for no archs
            stop, size = start, len(head_text) + 2
            while stop < len(texts) and stop - start < self.max_batch:
                if stop > start and size + len(texts[stop]) + 1 > self.max_body:
                    break
                size += len(texts[stop]) + 1
                stop += 1
            try:
                res = self._request("POST", "/v1/predict", head_text + ",".join(texts[start:stop]) + "]}")
            except LetiError as e:
                raise _shift(e, start) from None
            out.append(np.asarray([np.nan if v is None else v for v in res["latency_ms"]], dtype=float))
            for key in ("interval_ms", "in_distribution", "why"):
                if key in res:
                    extra.setdefault(key, []).extend(res[key])
            if stop >= len(texts):
                break
            start = stop
        if "coverage" in res:
            extra["coverage"] = res["coverage"]
        return {
            "target": res["target"],
            "predictor": res["predictor"],
            "latency_ms": np.concatenate(out),
            **extra,
        }

    def targets(self) -> list[dict]:
        return self._request("GET", "/v1/targets")["targets"]

    def predictors(self) -> list[dict]:
        return self._request("GET", "/v1/predictors")["predictors"]

    def health(self) -> dict:
        return self._request("GET", "/v1/health")


def _dumps(obj, field: str) -> str:
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:  # NaN or infinity in an arch
        raise LetiError(f"cannot be sent as JSON ({e})", field) from None


def _server_error(r) -> LetiError:
    cls = {401: AuthError, 404: NotFoundError, 413: TooLargeError}.get(r.status_code, LetiError)
    try:
        body = r.json()
        detail, fld = body.get("detail"), body.get("field")
    except (ValueError, AttributeError):
        detail, fld = None, None
    if not isinstance(detail, str):
        return cls(f"the server answered HTTP {r.status_code} {r.reason_phrase}", "url")
    if isinstance(fld, str) and detail.startswith(f"{fld}: "):
        return cls(detail[len(fld) + 2 :], fld)
    return cls(detail, fld if isinstance(fld, str) else None)


def _shift(e: LetiError, start: int) -> LetiError:
    """Renumber ``archs[i]`` in an error from a chunk that began at ``start``."""
    if start == 0 or not (e.field or "").startswith("archs["):
        return e
    i, rest = e.field[6:].split("]", 1)
    return type(e)(e.reason, f"archs[{int(i) + start}]{rest}")


__all__ = ["AuthError", "Client", "NotFoundError", "TooLargeError", "clear_cache", "predict"]
