"""Predictions from Python: in-process ``predict(archs, target)`` and ``Client(url).predict(archs, target)``.

Both take one arch or a list of them in every form ``leti.importers.inputs.to_arch`` reads (NB101 ``(matrix, ops)``, NB201
strings, FBNet block lists or comma strings, ``Arch`` objects, Arch JSON) and return an ``np.ndarray`` of
milliseconds, one per arch, in input order. Bad input raises ``LetiError`` naming the field (``archs[3]``).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from leti.errors import LetiError, PredictorError
from leti.graph.layergraph import LayerGraph
from leti.importers.inputs import as_list, clear_graphs, graphs_of
from leti.paths import default_predictor_dir
from leti.space import Arch


class NotFoundError(LetiError):
    """An unknown target or predictor (HTTP 404)."""


class TooLargeError(LetiError):
    """A request beyond the server's limits (HTTP 413)."""


class AuthError(LetiError):
    """A missing or wrong bearer token (HTTP 401)."""


# ---- trained predictors --------------------------------------------------------------------------------------------
def _registry():
    from leti.predictors import registry

    return registry


def trained_index(root: str | os.PathLike | None = None) -> dict[str, dict[str, dict]]:
    """target -> family -> meta (all of meta.json, plus the registry's summary: version, source, whether it answers)
    of the predictor each family answers with: the user's current version under ``root`` (default
    ``$LETI_HOME/predictors``), else the pretrained one."""
    from leti.predictors.registry import TRAINED

    out: dict[str, dict[str, dict]] = {}
    rows = [r for r in _registry().saved(None, root) if r.current]
    mine = {(r.target, r.family) for r in rows if r.source == TRAINED}
    for r in rows:
        if r.source != TRAINED and (r.target, r.family) in mine:
            continue  # the user's own predictor of this family shadows the pretrained one
        out.setdefault(r.target, {})[r.family] = {**r.meta, **r.summary()}
    return out


# Predictors and the feature memo they share are not documented as thread-safe, so one prediction runs at a time
# (the work is CPU-bound under the GIL anyway). Big batches take the lock chunk by chunk, so that single-arch
# requests arriving meanwhile wait for one chunk, not for the whole batch.
_PREDICT_LOCK = threading.Lock()
PREDICT_CHUNK = 512


@dataclass
class Loaded:
    """A loaded predictor with the target and family it was loaded for."""

    target: str
    family: str
    predictor: Any
    version: int = 0
    source: str = "trained"  # or "pretrained" (the zoo)

    def predict(self, graphs: list[LayerGraph]) -> np.ndarray:
        out = []
        for start in range(0, len(graphs), PREDICT_CHUNK):
            chunk = graphs[start : start + PREDICT_CHUNK]
            with _PREDICT_LOCK:
                ms = np.asarray(self.predictor.predict(chunk), dtype=float).ravel()
            if ms.size != len(chunk):
                raise PredictorError(f"returned {ms.size} values for {len(chunk)} archs", self.family)
            out.append(ms)
        return np.concatenate(out) if out else np.zeros(0)


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
        return Loaded(target, hit.family, pred, hit.version, hit.source)


_PREDICTORS = PredictorCache()  # process-wide: the in-process API and the server share loaded predictors


def predictor_cache() -> PredictorCache:
    return _PREDICTORS


def clear_cache() -> None:
    """Forget loaded predictors and parsed archs (after retraining a predictor in this process)."""
    _PREDICTORS.clear()
    clear_graphs()


def predict(
    archs, target: str, predictor: str | None = None, space: str | None = None, *, root=None, input_shape=None
) -> np.ndarray:
    """Predicted latency in ms of one arch or a list of archs on ``target``.

    An arch is anything ``leti.importers.inputs`` reads (Arch, native text, Arch JSON, a LayerGraph) or an in-memory
    ``torch.nn.Module`` / Keras model; ``input_shape`` = (H, W, C) gives a torch module's input size (and fixes a
    Keras model's open one). ``predictor`` is a family name (``xgboost``, ``lut``, …); None picks the target's best
    by test acc@10. ``space`` says how to read native strings when they are ambiguous (``nb101``, ``nb201``,
    ``fbnet``, ``leti``). ``root`` is the predictor directory (default ``$LETI_HOME/predictors``). Always returns a
    1-D array.
    """
    loaded = _PREDICTORS.get(target, predictor, root)
    return loaded.predict(graphs_of(as_list(archs), space, input_shape=input_shape))


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

    ``token`` defaults to ``$LETI_TOKEN``. Batches longer than ``max_batch`` are split into several requests.
    Errors raise ``LetiError`` with the server's message (``archs[3].arch: …``); an unreachable server names ``url``.
    """

    def __init__(self, url: str = "http://127.0.0.1:8000", token: str | None = None, timeout: float = 30.0,
                 max_batch: int = 10000):  # fmt: skip
        self.url = url.rstrip("/")
        self.token = token if token is not None else os.environ.get("LETI_TOKEN")
        self.timeout = timeout
        self.max_batch = max_batch
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

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        import httpx

        try:
            if body is None:
                r = self._client().request(method, path)
            else:
                data = json.dumps(body, separators=(",", ":"), allow_nan=False)
                r = self._client().request(
                    method, path, content=data, headers={"Content-Type": "application/json"}
                )
        except httpx.HTTPError as e:
            raise LetiError(
                f"cannot reach the leti server at {self.url} ({type(e).__name__}: {e})", "url"
            ) from None
        except ValueError as e:  # NaN or infinity in an arch
            raise LetiError(f"cannot be sent as JSON ({e})", "archs") from None
        if r.status_code >= 400:
            raise _server_error(r)
        try:
            return r.json()
        except ValueError:
            raise LetiError(f"the server at {self.url} answered {path} with invalid JSON", "url") from None

    # ---- the endpoints ----------------------------------------------------------------------------------------
    def predict(
        self, archs, target: str, predictor: str | None = None, space: str | None = None
    ) -> np.ndarray:
        """Predicted latency in ms, one per arch, exactly as ``leti.predict`` on the server's machine gives."""
        items = [wire_item(a, space, f"archs[{i}]") for i, a in enumerate(as_list(archs))]
        return self.predict_items(items, target, predictor)["latency_ms"]

    def predict_items(self, items: list[dict], target: str, predictor: str | None = None) -> dict:
        """Send request items (``{"space", "arch"}`` dicts) as is; returns ``{"target", "predictor",
        "latency_ms": ndarray}``."""
        out, res = [], {"target": target, "predictor": predictor}
        for start in range(0, max(len(items), 1), self.max_batch):
            body: dict = {"target": target, "archs": items[start : start + self.max_batch]}
            if predictor is not None:
                body["predictor"] = predictor
            try:
                res = self._request("POST", "/v1/predict", body)
            except LetiError as e:
                raise _shift(e, start) from None
            out.append(np.asarray(res["latency_ms"], dtype=float))
        return {"target": res["target"], "predictor": res["predictor"], "latency_ms": np.concatenate(out)}

    def targets(self) -> list[dict]:
        return self._request("GET", "/v1/targets")["targets"]

    def predictors(self) -> list[dict]:
        return self._request("GET", "/v1/predictors")["predictors"]

    def health(self) -> dict:
        return self._request("GET", "/v1/health")


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
