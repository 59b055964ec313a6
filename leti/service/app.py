"""The HTTP service: ``create_app()`` builds a FastAPI app serving latency predictions.

Endpoints: ``POST /v1/predict`` (batched), ``GET /v1/targets``, ``GET /v1/predictors``, ``GET /v1/health``; the
OpenAPI docs are at ``/docs``. Every error is a 4xx JSON body ``{"detail": "<field>: <reason>", "field": …}``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, WithJsonSchema
from starlette.exceptions import HTTPException as StarletteHTTPException

from leti import __version__
from leti.datasets.store import Store
from leti.errors import LetiError, excerpt
from leti.paths import default_predictor_dir, default_store_path
from leti.predictors.registry import best_family
from leti.service.api import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BODY,
    AuthError,
    Limits,
    NotFoundError,
    TooLargeError,
    predictor_cache,
    trained_index,
)
from leti.space import canonical_space

log = logging.getLogger("leti.service")

STATUS = {NotFoundError: 404, TooLargeError: 413, AuthError: 401}
# Paths open without a token: liveness and the API docs
OPEN_PATHS = frozenset({"/v1/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})

# Memory. A body is read here under a hard cap, chunked or not, and parsed JSON takes a few times its bytes; graphs
# are built and predicted a chunk at a time (leti.service.api), so a request's working set is its parsed body plus
# one chunk. Bodies in flight together share IN_FLIGHT_BODIES x max_body. benchmarks/bench_service.py --flood
# measures the server's peak RSS under these limits.
# DEFAULT_MAX_BODY (leti.service.api): 10,000 NB201 or FBNet archs take ~1.5 MB; leti Arch JSON ~450 bytes an arch
IN_FLIGHT_BODIES = 2
# A body must arrive within BODY_TIMEOUT_S (else 408), and a request waits at most BUDGET_WAIT_S for its share of the
# bodies in flight (else 429): slow or stalled uploads cannot hold the server's budget forever.
BODY_TIMEOUT_S = 60.0
BUDGET_WAIT_S = 120.0
ARCH_SIZE = 250_000  # nodes + edges of one arch (an NB201 network has ~350; features of 250k take ~50 MB)
SIZE_PER_ARCH = 1_000  # a batch slot's share of a request's nodes + edges (NB201 ~350, FBNet ~190)
MIN_REQUEST_SIZE = 1_000_000


# ---- request and response bodies -----------------------------------------------------------------------------------
ArchValue = Annotated[
    Any,
    WithJsonSchema(
        {
            "anyOf": [{"type": "string"}, {"type": "object"}, {"type": "array"}],
            "description": "NB201 string, FBNet comma string or block list, NB101 {matrix, ops} or [matrix, ops], "
            "or an Arch JSON object",
        }
    ),
]
ArchEntry = Annotated[
    Any,
    WithJsonSchema(
        {
            "anyOf": [{"type": "string"}, {"type": "array"}, {"type": "object"}],
            "description": "an arch in any form leti reads (as leti.predict and leti predict do): a native string "
            "(NB201 cell, FBNet blocks), [matrix, ops], Arch JSON, {matrix, ops}, the wrapper {space, arch}, or "
            "{space: nb201, index: N} (NAS-Bench-201's own arch index)",
            "examples": ["|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|",
                         {"space": "nb201", "index": 1234}],
        }
    ),
]  # fmt: skip


class ArchItem(BaseModel):
    """The wrapper form of a request item (documentation: items are read by ``unwrap_item``)."""

    space: str | None = Field(
        None, max_length=64, description="nasbench101, nasbench201, fbnet, leti (or nb101, nb201)"
    )
    arch: ArchValue


class PredictRequest(BaseModel):
    target: str = Field(..., min_length=1, max_length=200, examples=["pixel4-tflite2.1-cpu-a76"])
    predictor: str | None = Field(
        None, max_length=64, description="family (xgboost, lut, …); omit for the best"
    )
    space: str | None = Field(
        None, max_length=64, description="how to read native strings among archs (nb101, nb201, fbnet, leti), "
        "where the string alone does not say; an item's own space wins"
    )  # fmt: skip
    archs: list[ArchEntry] = Field(..., examples=[[{"space": "nb201", "arch": "|nor_conv_3x3~0|+|nor_conv_3x3~0|"
                                                    "none~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|"}]])  # fmt: skip
    coverage: float = Field(0.9, description="coverage of interval_ms, in (0, 1)")


def unwrap_item(item, space: str | None, i: int) -> tuple:
    """(arch, space, field, space field) of request item ``i``: the wrapper ``{space, arch}`` opened (its own space
    wins), any other form as is; graphs are built later, a chunk at a time (``Loaded.predict_archs``)."""
    if isinstance(item, dict) and "arch" in item and "adjacency" not in item:
        s = item.get("space", space)
        if s is not None and not isinstance(s, str):
            raise LetiError("must be a string", f"archs[{i}].space")
        if not isinstance(item["arch"], str | dict | list):
            raise LetiError("must be a string, an object or a list", f"archs[{i}].arch")
        return item["arch"], s, f"archs[{i}].arch", f"archs[{i}].space"
    if not isinstance(item, str | dict | list):
        raise LetiError("must be an arch: a string, an object or a list", f"archs[{i}]")
    return item, space, f"archs[{i}]", f"archs[{i}].space"


class PredictResponse(BaseModel):
    target: str
    predictor: str
    n: int
    latency_ms: list[float | None]
    coverage: float
    interval_ms: list[list[float | None]] = Field(description="[lo, hi] per arch at `coverage`")
    in_distribution: list[bool | None] = Field(description="false: unlike the training archs (see `why`)")
    why: list[str]


class PredictorInfo(BaseModel):
    target: str
    family: str
    best: bool
    metrics: dict[str, Any] = {}
    n_train: int | None = None
    seed: int | None = None
    trained_at: str | None = None
    version: int | None = None
    source: str = Field("trained", description="trained (by you) or pretrained (shipped with leti)")


class TargetInfo(BaseModel):
    target: str
    best: str
    noise_floor: float | None
    predictors: list[PredictorInfo]


class TargetsResponse(BaseModel):
    targets: list[TargetInfo]


class PredictorsResponse(BaseModel):
    predictors: list[PredictorInfo]


class Health(BaseModel):
    status: str
    version: str
    max_batch: int
    max_body: int
    auth: bool
    loaded: list[str]


class ErrorBody(BaseModel):
    detail: str
    field: str | None


# ---- errors --------------------------------------------------------------------------------------------------------
def error_response(
    status: int, reason: str, field: str | None = None, headers: dict | None = None
) -> JSONResponse:
    reason = excerpt(reason)  # never echo a large input back
    detail = f"{field}: {reason}" if field else reason
    return JSONResponse({"detail": detail, "field": field}, status_code=status, headers=headers)


def _loc(parts) -> str:
    """('body', 'archs', 0, 'space') -> 'archs[0].space'."""
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out


def _validation_error(errors: list[dict]) -> tuple[str, str]:
    e = errors[0]
    loc = list(e.get("loc") or ())
    kind = e.get("type", "")
    if kind == "json_invalid":
        ctx = (e.get("ctx") or {}).get("error", "")
        pos = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
        where = f" at character {pos}" if pos is not None else ""
        return "body", f"invalid JSON{where}{f' ({ctx})' if ctx else ''}"
    if loc and loc[0] == "body":
        loc = loc[1:]
    field = _loc(loc) or "body"
    if field == "body" and kind == "missing":
        return field, 'missing: send a JSON object {"target": …, "archs": [{"space": …, "arch": …}]}'
    msg = str(e.get("msg", "invalid value")).removeprefix("Value error, ")
    if len(errors) > 1:
        msg += f" (and {len(errors) - 1} more {'error' if len(errors) == 2 else 'errors'})"
    return field, msg


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LetiError)
    async def _leti(request: Request, exc: LetiError):
        status = next((s for cls, s in STATUS.items() if isinstance(exc, cls)), 422)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return error_response(status, exc.reason, exc.field, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors = list(exc.errors())
        field, msg = _validation_error(errors)
        return error_response(400 if errors[0].get("type") == "json_invalid" else 422, msg, field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        field = {400: "body", 404: "path", 405: "method"}.get(
            exc.status_code
        )  # FastAPI's 400: an unparsable body
        reason = str(exc.detail)
        if exc.status_code == 404:
            reason = f"no endpoint {request.url.path} (see /docs)"
        elif exc.status_code == 405:
            reason = f"{request.method} is not allowed on {request.url.path}"
        status = exc.status_code if 400 <= exc.status_code < 500 else 400
        return error_response(status, reason, field, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__}); see the server log")


# ---- authentication and the body, before the app sees the request ------------------------------------------------
def bearer_error(authorization: str | None, token: str) -> str | None:
    """Why an ``Authorization`` header value does not carry ``token`` as a bearer token; None when it does."""
    import hmac

    scheme, _, cred = (authorization or "").partition(" ")
    cred = cred.strip()
    if scheme.lower() != "bearer" or not cred:
        return "missing bearer token (send 'Authorization: Bearer <token>')"
    # constant-time comparison: the time taken must not reveal how much of the token matched
    if not hmac.compare_digest(
        cred.encode("utf-8", "surrogateescape"), token.encode("utf-8", "surrogateescape")
    ):
        return "wrong token"
    return None


class _Budget:
    """Bytes of request bodies held at once, shared by all requests: a body reserves its declared length (or the
    whole cap when chunked) before it is read, and waits while others hold the budget. Waiting leaves the body
    unread in the socket, so a flood of uploads is held back by TCP instead of filling memory."""

    def __init__(self, total: int):
        self.total, self.used = total, 0
        self._cond = asyncio.Condition()

    async def acquire(self, n: int) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.used + n <= self.total)
            self.used += n

    async def release(self, n: int) -> None:
        async with self._cond:
            self.used -= n
            self._cond.notify_all()


class BodyGuard:
    """Pure ASGI middleware in front of the app. With a token, a request is authenticated from its headers before
    a byte of its body is read (only ``OPEN_PATHS`` need none). The body is then read here, counting bytes as they
    arrive, chunked or not, and refused with 413 as soon as it passes ``max_bytes``; only then does FastAPI see it,
    whole and bounded."""

    def __init__(self, app, max_bytes: int, token: str | None = None, in_flight: int = IN_FLIGHT_BODIES):
        self.app, self.max_bytes, self.token = app, max_bytes, token
        self.in_flight = in_flight
        self._budget: _Budget | None = None  # made on first use, inside the server's event loop

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {
            k.lower(): v for k, v in scope.get("headers", ())
        }  # a client may repeat one: the last counts
        if self.token and scope.get("path") not in OPEN_PATHS:
            why = bearer_error(headers.get(b"authorization", b"").decode("latin-1"), self.token)
            if why:
                return await _refuse(
                    401, why, "authorization", scope, receive, send, {"WWW-Authenticate": "Bearer"}
                )
        length = headers.get(b"content-length")
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        if length is None and not chunked:
            return await self.app(scope, receive, send)
        try:
            declared = None if chunked else int(length)
        except ValueError:
            declared = -1
        if declared is not None and declared < 0:
            return await _refuse(400, f"bad Content-Length {excerpt(length.decode('latin-1'), 40)!r}", "body",
                                 scope, receive, send)  # fmt: skip
        if declared is not None and declared > self.max_bytes:
            return await _refuse(413, f"body of {declared:,} bytes; this server takes at most {self.max_bytes:,}",
                                 "body", scope, receive, send)  # fmt: skip
        if self._budget is None:
            self._budget = _Budget(self.in_flight * self.max_bytes)
        hold = self.max_bytes if declared is None else declared
        try:
            await asyncio.wait_for(self._budget.acquire(hold), BUDGET_WAIT_S)
        except TimeoutError:
            return await _refuse(429, "the server is busy with other large requests; retry later", "body",
                                 scope, receive, send, {"Retry-After": "5"})  # fmt: skip
        try:
            try:
                body = await asyncio.wait_for(self._read(receive), BODY_TIMEOUT_S)
            except TimeoutError:
                return await _refuse(408, f"the body did not arrive within {BODY_TIMEOUT_S:g} s", "body",
                                     scope, receive, send)  # fmt: skip
            if body is None:  # the client went away
                return None
            if len(body) > self.max_bytes:
                return await _refuse(413, f"body over {self.max_bytes:,} bytes, the most this server takes",
                                     "body", scope, receive, send)  # fmt: skip
            return await self.app(scope, _replay(body, receive), send)
        finally:
            await self._budget.release(hold)

    async def _read(self, receive) -> bytes | None:
        """The body, or None when the client disconnects; stops one chunk past ``max_bytes``."""
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            parts.append(chunk)
            if size > self.max_bytes or not message.get("more_body", False):
                return b"".join(parts)


def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect, as the server would tell it

    return replay


async def _refuse(status, reason, field, scope, receive, send, headers: dict | None = None) -> None:
    # Connection: close, because the rest of an unread body would otherwise be read as the next request
    await error_response(status, reason, field, {**(headers or {}), "Connection": "close"})(
        scope, receive, send
    )


# ---- the app -------------------------------------------------------------------------------------------------------
def _auth_dependency(token: str | None):
    """Declares ``Authorization: Bearer <token>`` in the OpenAPI docs and checks it (``BodyGuard`` has checked it
    already, before the body was read), or nothing when the server has no token."""
    if not token:
        return []
    bearer = HTTPBearer(auto_error=False, description="the server's --token / LETI_TOKEN")

    # (a default, not Annotated: with postponed annotations FastAPI cannot see the local ``bearer``)
    def check(cred: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        why = bearer_error(f"{cred.scheme} {cred.credentials}" if cred else None, token)
        if why:
            raise AuthError(why, "authorization")

    return [Depends(check)]


def _noise_floors(store_path: Path, targets) -> dict[str, float | None]:
    if not store_path.is_file():  # opening a Store creates it; a read-only endpoint must not
        return {}

    try:
        with Store.open(store_path) as st:
            out = {}
            for t in targets:
                rec = st.get_target(t)
                out[t] = rec.noise_floor if rec else None
            return out
    except LetiError as e:
        log.warning("cannot read noise floors from %s: %s", store_path, e)
        return {}


def _answering(families: dict[str, dict]) -> str:
    """The family the registry answers with by default (marked in the index), else the best by recorded metrics."""
    return next((f for f, m in families.items() if m.get("answers")), None) or best_family(families)


def _info(target: str, family: str, meta: dict, best: bool) -> dict:
    metrics = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
    n_train, seed = meta.get("n_train"), meta.get("seed")
    return {
        "target": target,
        "family": family,
        "best": best,
        "metrics": {k: v for k, v in metrics.items() if not (isinstance(v, float) and not math.isfinite(v))},
        "n_train": n_train if isinstance(n_train, int) else None,
        "seed": seed if isinstance(seed, int) else None,
        "trained_at": meta["trained_at"] if isinstance(meta.get("trained_at"), str) else None,
        "version": meta["version"] if isinstance(meta.get("version"), int) else None,
        "source": meta["source"] if isinstance(meta.get("source"), str) else "trained",
    }


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LetiError(f"must be a positive integer, got {value!r}", name)
    return value


def create_app(predictor_root=None, store_path=None, token: str | None = None, max_batch: int = DEFAULT_MAX_BATCH,
               max_body: int = DEFAULT_MAX_BODY) -> FastAPI:  # fmt: skip
    """The FastAPI app. ``predictor_root`` defaults to ``$LETI_HOME/predictors`` and ``store_path`` (read for
    noise floors) to ``$LETI_HOME/leti.db``, both resolved when a request needs them; ``token`` enables bearer
    authentication on every endpoint but ``/v1/health`` and the docs; batches above ``max_batch`` archs and bodies
    above ``max_body`` bytes get a 413."""
    _positive_int(max_batch, "max_batch")
    _positive_int(max_body, "max_body")
    limits = Limits(ARCH_SIZE, max(MIN_REQUEST_SIZE, max_batch * SIZE_PER_ARCH))
    cache = predictor_cache()

    def root() -> Path:
        return Path(predictor_root).expanduser() if predictor_root else default_predictor_dir()

    def store() -> Path:
        return Path(store_path).expanduser() if store_path else default_store_path()

    app = FastAPI(
        title="leti",
        version=__version__,
        description="Predicted inference latency (ms) of neural-network architectures on phones and boards. "
        "Errors are 4xx bodies {detail, field} naming the offending field.",
        responses={422: {"model": ErrorBody, "description": "invalid input"}},
    )
    _install_error_handlers(app)
    app.add_middleware(BodyGuard, max_bytes=max_body, token=token, in_flight=IN_FLIGHT_BODIES)
    auth = _auth_dependency(token)
    errors = {401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 413: {"model": ErrorBody}}

    # Handlers are plain ``def``: FastAPI runs them in its thread pool, keeping graph building, prediction and disk
    # reads off the event loop.
    @app.post(
        "/v1/predict", response_model=PredictResponse, dependencies=auth, responses=errors, tags=["predict"]
    )
    def predict(req: PredictRequest):
        """Latency in ms of each arch on ``target`` with ``predictor`` (default: the target's best)."""
        if len(req.archs) > max_batch:
            raise TooLargeError(f"{len(req.archs)} archs exceed this server's limit of {max_batch}; split the batch",
                                "archs")  # fmt: skip
        loaded = cache.get(req.target, req.predictor, root())
        if req.space is not None:
            canonical_space(req.space, "space")
        items = [unwrap_item(it, req.space, i) for i, it in enumerate(req.archs)]
        archs, spaces, fields, space_fields = (
            (list(c) for c in zip(*items, strict=True)) if items else ([], [], [], [])
        )
        res = loaded.predict_archs(
            archs, spaces, fields, limits, space_fields=space_fields, coverage=req.coverage
        )
        return {**res, "n": len(req.archs)}

    @app.get(
        "/v1/targets", response_model=TargetsResponse, dependencies=auth, responses=errors, tags=["info"]
    )
    def targets():
        """Targets with trained predictors: their families and metrics, the best family and the noise floor."""
        index = trained_index(root())
        floors = _noise_floors(store(), index)
        out = []
        for t, fams in sorted(index.items()):
            best = _answering(fams)
            preds = [_info(t, f, m, f == best) for f, m in sorted(fams.items())]
            out.append({"target": t, "best": best, "noise_floor": floors.get(t), "predictors": preds})
        return {"targets": out}

    @app.get(
        "/v1/predictors",
        response_model=PredictorsResponse,
        dependencies=auth,
        responses=errors,
        tags=["info"],
    )
    def predictors():
        """Every trained predictor: target, family, test metrics, train size and split seed."""
        index = trained_index(root())
        out = []
        for t, fams in sorted(index.items()):
            best = _answering(fams)
            out += [_info(t, f, m, f == best) for f, m in sorted(fams.items())]
        return {"predictors": out}

    @app.get("/v1/health", response_model=Health, tags=["info"])
    async def health():
        """Liveness; open without a token. ``loaded`` lists the predictors in memory."""
        loaded = sorted(f"{v.target}/{v.family}" for v in cache.loaded(root()))
        return {
            "status": "ok",
            "version": __version__,
            "max_batch": max_batch,
            "max_body": max_body,
            "auth": bool(token),
            "loaded": loaded,
        }

    return app


def token_from_env(token: str | None = None) -> str | None:
    """``--token`` if given, else ``$LETI_TOKEN``; empty means none."""
    return token or os.environ.get("LETI_TOKEN") or None


class BackgroundServer:
    """Serve ``app`` with uvicorn from a background thread (notebooks, tests): ``with BackgroundServer(app) as s:
    Client(s.url)…``. Port 0 picks a free port; ``url`` is known once ``start()`` returns."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        self.app, self.host, self.port = app, host, port
        self.url: str | None = None
        self._server = None
        self._thread = None

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        import threading
        import time

        import uvicorn

        config = uvicorn.Config(
            self.app, host=self.host, port=self.port, log_level="warning", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="leti-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise LetiError(f"the server did not start on {self.host}:{self.port}", "port")
            time.sleep(0.005)
        host, port = self._server.servers[0].sockets[0].getsockname()[:2]
        self.port = port
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = None

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
