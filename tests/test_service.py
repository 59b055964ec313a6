"""The prediction service: a real ``leti serve`` process on 127.0.0.1, the HTTP client, the in-process API and the
CLI handlers. Predictors are trained for real on small synthetic NB201 data (seeded)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from leti.errors import LetiError
from leti.importers.inputs import as_list, is_single, to_arch
from leti.service import AuthError, Client, NotFoundError, TooLargeError, predict
from leti.service.api import predictor_cache
from leti.space import Arch, fbnet, nb101, sample

TARGET = "host-litert-cpu-1t"
TOKEN = "t0ken-for-tests"
MAX_BATCH = 64
MAX_BODY = 1 << 20
NOISE_FLOOR = 0.04
REPO = Path(__file__).resolve().parents[1]

FAMILIES = ("xgboost", "lightgbm")
# Without the LUT base: the LUT sums layer costs in an order that depends on which layer signatures the process
# met first, so its last bit can differ between this process and the server's; the checks here compare bits.
PARAMS = {"base": "none", "n_estimators": 200}


# ---- fixtures: trained predictors and a live server ----------------------------------------------------------------
def synthetic_nb201(n: int, seed: int):
    """NB201 archs with a made-up but learnable latency: MACs and node count plus 3% log-normal noise."""
    pairs = sample("nb201", n, seed=seed)
    graphs = [a.to_graph() for a, _ in pairs]
    rng = np.random.default_rng(seed)
    base = np.array([0.3 + g.total_macs / 2e7 + 0.002 * g.n_nodes for g in graphs])
    return pairs, graphs, base * rng.lognormal(0.0, 0.03, n)


def train_predictors(home: Path) -> dict[str, dict]:
    """Train and save one predictor per family for TARGET under ``home``; returns family -> test metrics."""
    from leti.datasets.store import Store, TargetRecord
    from leti.predictors import registry
    from leti.predictors.metrics import metrics

    _, graphs, y = synthetic_nb201(160, seed=0)
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LETI_HOME", str(home))
        for family in FAMILIES:
            pred = registry.make(family, **PARAMS).fit(graphs[:120], y[:120])
            out[family] = metrics(y[120:], pred.predict(graphs[120:]))
            registry.save_trained(pred, TARGET, {"metrics": out[family], "seed": 0, "n_train": 120})
    with Store.open(home / "leti.db") as st:
        st.upsert_target(TargetRecord.from_name(TARGET, noise_floor=NOISE_FLOOR))
    return out


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    h = tmp_path_factory.mktemp("leti_home")
    metrics = train_predictors(h)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LETI_HOME", str(h))
        yield h, metrics


@pytest.fixture(autouse=True)
def _home_env(home, monkeypatch):
    """In-process predictions in this module read the predictors trained by ``home``."""
    monkeypatch.setenv("LETI_HOME", str(home[0]))


@pytest.fixture(scope="module")
def best(home):
    from leti.predictors.registry import best_family
    from leti.service.api import trained_index

    return best_family(trained_index(home[0] / "predictors")[TARGET])


def wait_for_url(proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        for line in text.splitlines():
            if "serving on " in line:
                return line.split("serving on ", 1)[1].split()[0]
        if proc.poll() is not None:
            raise RuntimeError(f"leti serve exited with {proc.returncode}: {text}")
        time.sleep(0.05)
    raise RuntimeError("leti serve did not start")


def wait_healthy(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)


@pytest.fixture(scope="module")
def server(home, tmp_path_factory):
    """``leti serve`` in its own process on an ephemeral loopback port, token from $LETI_TOKEN."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "LETI_HOME": str(home[0]), "LETI_TOKEN": TOKEN, "LETI_ZOO": "off"}
    cmd = [sys.executable, "-m", "leti.cli", "serve", "--port", "0", "--max-batch", str(MAX_BATCH),
           "--max-body", str(MAX_BODY)]  # fmt: skip
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        url = wait_for_url(proc, log)
        assert url.startswith("http://127.0.0.1:")
        wait_healthy(url)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log.read_text()


@pytest.fixture
def client(server):
    with Client(server, token=TOKEN) as c:
        yield c


def held_out(n: int = 40) -> list[str]:
    return [text for _, text in sample("nb201", n, seed=7)]


# ---- predictions ---------------------------------------------------------------------------------------------------
def test_http_predictions_equal_in_process_exactly(client, best):
    texts = held_out()
    over_http = client.predict(texts, TARGET)
    here = predict(texts, TARGET)
    assert over_http.dtype == np.float64 and over_http.shape == (len(texts),)
    assert np.array_equal(over_http, here)
    assert np.all(over_http > 0)
    for family in FAMILIES:
        assert np.array_equal(client.predict(texts, TARGET, predictor=family), predict(texts, TARGET, family))


def test_response_shape_and_default_predictor_is_best(server, best, home):
    metrics = home[1]
    assert metrics[best]["acc10"] == max(m["acc10"] for m in metrics.values())
    body = {"target": TARGET, "archs": [{"space": "nb201", "arch": t} for t in held_out(3)]}
    r = httpx.post(f"{server}/v1/predict", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    res = r.json()
    assert set(res) == {
        "target",
        "predictor",
        "n",
        "latency_ms",
        "coverage",
        "interval_ms",
        "in_distribution",
        "why",
    }
    assert (
        res["target"] == TARGET and res["predictor"] == best and res["n"] == 3 and len(res["latency_ms"]) == 3
    )


def test_every_arch_form_gives_the_same_prediction(client, server):
    text = held_out(1)[0]
    arch = to_arch(text)
    forms = [
        {"space": "nb201", "arch": text},
        {"space": "nasbench201", "arch": text},
        {"space": " NB201 ", "arch": text},
        {"arch": text},
        {"arch": arch.to_dict()},
        {"arch": arch.to_json(), "space": "leti"},
        {"space": "nasbench201", "arch": arch.to_dict(), "hash": arch.hash},  # a `leti space sample` line
    ]
    values = []
    for form in forms:  # one request each: some models round differently by a row's place in a batch
        r = httpx.post(f"{server}/v1/predict", json={"target": TARGET, "archs": [form]}, headers=AUTH)
        assert r.status_code == 200, r.text
        values += r.json()["latency_ms"]
    assert len(set(values)) == 1
    assert values[0] == predict(arch, TARGET)[0] == client.predict(arch, TARGET)[0]


def test_nb101_and_fbnet_forms(client):
    rng = np.random.default_rng(3)
    while True:
        m, ops = nb101.random_spec(rng)
        try:
            nb101.from_spec(m, ops)
            break
        except LetiError:
            continue
    blocks = fbnet.random_blocks(rng)
    archs = [(m, ops), {"matrix": m, "ops": ops}, (np.array(m), ops), blocks, ",".join(blocks)]
    got = client.predict(archs, TARGET)
    assert np.array_equal(got, predict(archs, TARGET))
    got = np.concatenate([client.predict([a], TARGET) for a in archs])
    assert got[0] == got[1] == got[2] and got[3] == got[4]
    assert np.array_equal(client.predict(blocks, TARGET), got[3:4])  # a block list is one arch, not 22
    assert np.array_equal(client.predict(",".join(blocks), TARGET, space="fbnet"), got[3:4])


def test_single_arch_and_empty_batch(client):
    text = held_out(1)[0]
    one = predict(text, TARGET)
    assert one.shape == (1,) and one[0] == predict([text], TARGET)[0] == client.predict(text, TARGET)[0]
    assert client.predict([], TARGET).shape == (0,)
    assert predict([], TARGET).shape == (0,)


def test_is_single():
    text = held_out(1)[0]
    m, ops = [[0, 1], [0, 0]], ["input", "output"]
    singles = [text, to_arch(text), {"space": "nb201", "arch": text}, (m, ops), [m, ops], ["skip"] * 22,
               (np.array(m), ops)]  # fmt: skip
    batches = [[text, text], [(m, ops), (m, ops)], [["skip"] * 22, ["skip"] * 22], []]
    assert all(is_single(s) for s in singles)
    assert not any(is_single(b) for b in batches)
    assert len(as_list(a for a in [text, text])) == 2


def test_layergraphs_are_accepted_in_process():
    texts = held_out(5)
    graphs = [to_arch(t).to_graph() for t in texts]
    assert np.array_equal(predict(graphs, TARGET), predict(texts, TARGET))


def test_client_splits_long_batches(server):
    texts = held_out(2 * MAX_BATCH + 5)
    with Client(server, token=TOKEN, max_batch=MAX_BATCH) as c:
        assert np.array_equal(c.predict(texts, TARGET), predict(texts, TARGET))


def test_concurrent_requests_agree(server):
    """Many threads at once: the cached predictor and graph cache must give every caller the right numbers."""
    texts = held_out(60)
    expected = predict(texts, TARGET)
    singles = [predict(t, TARGET)[0] for t in texts]  # like with like: a model may round by batch position
    results, errors = {}, []

    def work(k: int) -> None:
        try:
            with Client(server, token=TOKEN) as c:
                for j in range(k, len(texts), 6):
                    results[j] = c.predict(texts[j], TARGET)[0]
                results[f"batch{k}"] = c.predict(texts, TARGET)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [results[j] for j in range(len(texts))] == singles
    assert all(np.array_equal(results[f"batch{k}"], expected) for k in range(6))


def test_predictor_loads_once():
    cache = predictor_cache()
    a = cache.get(TARGET)
    assert cache.get(TARGET) is a and cache.get(TARGET, a.family) is a


# ---- info endpoints ------------------------------------------------------------------------------------------------
def test_health_is_open_and_lists_loaded_predictors(server, client, best):
    client.predict(held_out(1), TARGET)
    h = httpx.get(f"{server}/v1/health").json()
    assert h["status"] == "ok" and h["auth"] is True and h["max_batch"] == MAX_BATCH
    assert f"{TARGET}/{best}" in h["loaded"]
    assert client.health() == h


def test_targets_and_predictors(client, best, home):
    metrics = home[1]
    (t,) = client.targets()
    assert t["target"] == TARGET and t["best"] == best and t["noise_floor"] == pytest.approx(NOISE_FLOOR)
    assert sorted(p["family"] for p in t["predictors"]) == sorted(FAMILIES)
    preds = client.predictors()
    assert {(p["target"], p["family"]) for p in preds} == {(TARGET, f) for f in FAMILIES}
    for p in preds:
        assert p["n_train"] == 120 and p["seed"] == 0 and p["best"] == (p["family"] == best)
        assert p["metrics"]["acc10"] == pytest.approx(metrics[p["family"]]["acc10"])
        assert {"spearman", "rmse", "mape"} <= set(p["metrics"])


def test_openapi_docs(server):
    assert httpx.get(f"{server}/docs").status_code == 200
    spec = httpx.get(f"{server}/openapi.json").json()
    assert {"/v1/predict", "/v1/targets", "/v1/predictors", "/v1/health"} <= set(spec["paths"])


# ---- errors: always a 4xx naming the field -------------------------------------------------------------------------
NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _ok(*archs):
    return {"target": TARGET, "archs": [{"space": "nb201", "arch": a} for a in archs]}


ERROR_CASES = [
    # name, content (bytes) or JSON body, headers, status, field, words in the reason
    ("malformed JSON", b'{"target": "x", "archs": [', AUTH, 400, "body", "invalid JSON"),
    ("not an object", [1, 2], AUTH, 422, "body", "object"),
    ("empty body", b"", AUTH, 422, "body", "missing"),
    ("target wrong type", {"target": 5, "archs": []}, AUTH, 422, "target", "string"),
    ("archs missing", {"target": TARGET}, AUTH, 422, "archs", "required"),
    ("archs wrong type", {"target": TARGET, "archs": "abc"}, AUTH, 422, "archs", "list"),
    ("item wrong type", {"target": TARGET, "archs": [5]}, AUTH, 422, "archs[0]", "a string, an object or a list"),
    ("unknown request space", {"target": TARGET, "space": "nb999", "archs": []}, AUTH, 422, "space", "nb999"),
    ("index out of range", {"target": TARGET, "archs": [{"space": "nb201", "index": 15625}]}, AUTH, 422, "archs[0].index", "0..15624"),
    ("index without space", {"target": TARGET, "archs": [{"index": 3}]}, AUTH, 422, "archs[0].space", "needs its space"),
    ("space wrong type", {"target": TARGET, "archs": [{"space": 3, "arch": NB201}]}, AUTH, 422, "archs[0].space", "string"),
    ("arch wrong type", {"target": TARGET, "archs": [{"arch": 3.5}]}, AUTH, 422, "archs[0].arch", "string, an object or a list"),
    ("unknown space", {"target": TARGET, "archs": [{"space": "nb999", "arch": NB201}]}, AUTH, 422, "archs[0].space", "nb999"),
    ("unknown target", {"target": "nokia3310-tflite-cpu", "archs": []}, AUTH, 404, "target", "no trained predictor"),
    ("path in target", {"target": "../../etc", "archs": []}, AUTH, 404, "target", "no trained predictor"),
    ("unknown predictor", {"target": TARGET, "predictor": "gcn", "archs": []}, AUTH, 404, "predictor", "trained: "),
    ("invalid NB201 op", _ok(NB201, NB201.replace("none~1", "conv9x9~1")), AUTH, 422, "archs[1].arch node 2", "conv9x9"),
    ("invalid NB201 text", _ok("|nor_conv_3x3~0|"), AUTH, 422, "archs[0].arch", "3 nodes"),
    ("invalid Arch JSON", {"target": TARGET, "archs": [{"arch": {"adjacency": [[0, 1], [0, 0]], "layers": [{"op": "input"}, {"op": "warp"}]}}]}, AUTH, 422, "archs[0].arch.layers[1].op", ""),
    ("space mismatch", {"target": TARGET, "archs": [{"space": "fbnet", "arch": NB201}]}, AUTH, 422, "archs[0].arch", ""),
    ("NaN target", b'{"target": NaN, "archs": []}', AUTH, 422, "target", "string"),
    ("Infinity in an arch", b'{"target": "host-litert-cpu-1t", "archs": [{"arch": [Infinity, NaN]}]}', AUTH, 422, "archs[0].arch", ""),
    ("oversized batch", _ok(*[NB201] * (MAX_BATCH + 1)), AUTH, 413, "archs", "limit of 64"),
    ("missing token", _ok(NB201), {}, 401, "authorization", "missing bearer token"),
    ("wrong token", _ok(NB201), {"Authorization": "Bearer not-the-token"}, 401, "authorization", "wrong token"),
    ("wrong scheme", _ok(NB201), {"Authorization": f"Basic {TOKEN}"}, 401, "authorization", "missing bearer token"),
]  # fmt: skip


@pytest.mark.parametrize("case", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_errors_are_4xx_naming_the_field(server, case):
    _, body, headers, status, field, words = case
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(
        f"{server}/v1/predict", content=content, headers={"Content-Type": "application/json", **headers}
    )
    assert r.status_code == status, r.text
    res = r.json()
    assert res["field"] == field
    assert res["detail"].startswith(f"{field}: ") and words in res["detail"]
    assert "\n" not in res["detail"]
    if status == 401:
        assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("path", ["/v1/targets", "/v1/predictors"])
def test_info_endpoints_need_the_token(server, path):
    assert httpx.get(f"{server}{path}").status_code == 401
    assert httpx.get(f"{server}{path}", headers={"Authorization": "Bearer x"}).status_code == 401
    assert httpx.get(f"{server}{path}", headers=AUTH).status_code == 200


def test_unknown_path_and_method(server):
    r = httpx.get(f"{server}/v2/predict", headers=AUTH)
    assert r.status_code == 404 and r.json()["field"] == "path"
    # without the token every path but health and the docs is closed, known or not
    assert httpx.get(f"{server}/v2/predict").status_code == 401
    r = httpx.get(f"{server}/v1/predict", headers=AUTH)
    assert r.status_code == 405 and r.json()["field"] == "method"


def _raw(server: str, head: bytes, body_chunks=(), timeout: float = 20.0) -> tuple[bytes, int]:
    """Send ``head`` then ``body_chunks`` on a raw socket (httpx will not send a false length) until the server
    answers; returns the reply and how many body bytes were sent before it came."""
    import select

    host, port = server.removeprefix("http://").split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(head)
        for chunk in body_chunks:
            if select.select([s], [], [], 0)[0]:  # the server has answered: stop sending
                break
            try:
                s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        reply = b""
        try:
            while chunk := s.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass
    return reply, sent


def _status(reply: bytes) -> tuple[bytes, dict]:
    head, _, body = reply.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], json.loads(body)


HEAD = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
AUTH_LINE = f"Authorization: Bearer {TOKEN}\r\n".encode()


def test_declared_oversized_body_is_refused_before_reading(server):
    reply, _ = _raw(
        server, HEAD + AUTH_LINE + b"Content-Length: 1000000000000\r\nConnection: close\r\n\r\n{}"
    )
    status, body = _status(reply)
    assert status.startswith(b"HTTP/1.1 413") and body["field"] == "body"
    reply, _ = _raw(server, HEAD + AUTH_LINE + b"Content-Length: -5\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400")


def test_unauthenticated_body_is_refused_before_reading(server):
    """Issue 11: with a token, a client without one made the server buffer a 300 MB body before its 401. Now the
    401 comes from the headers alone, while the body is still unsent."""
    reply, _ = _raw(server, HEAD + b"Content-Length: 300000000\r\n\r\n", timeout=10)
    status, body = _status(reply)
    assert status.startswith(b"HTTP/1.1 401") and body["field"] == "authorization"


def test_chunked_body_over_the_cap_is_refused_while_streaming(server):
    """Issue 11: the cap read only Content-Length, so a chunked 800 MB body was read whole (8.2 GB RSS). Now bytes
    are counted as they arrive and the answer is a 413 once they pass --max-body, with the rest never read."""
    chunk = 64 * 1024
    frame = f"{chunk:x}\r\n".encode() + b"[" * chunk + b"\r\n"
    head = HEAD + AUTH_LINE + b"Transfer-Encoding: chunked\r\n\r\n"
    reply, sent = _raw(server, head, (frame for _ in range(50 * MAX_BODY // chunk)))  # up to 50 MB
    status, body = _status(reply)
    assert status.startswith(b"HTTP/1.1 413") and body["field"] == "body", reply[:300]
    assert sent < 10 * MAX_BODY  # what was sent before the answer: the cap, plus what the socket buffers held
    with Client(server, token=TOKEN) as c:  # and the server is fine
        assert c.health()["status"] == "ok"


def test_chunked_body_under_the_cap_is_served(server):
    data = json.dumps(_ok(NB201, NB201)).encode()
    frames = [
        f"{len(data[i : i + 7]):x}\r\n".encode() + data[i : i + 7] + b"\r\n" for i in range(0, len(data), 7)
    ]
    reply, _ = _raw(server, HEAD + AUTH_LINE + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                    + b"".join(frames) + b"0\r\n\r\n")  # fmt: skip
    status, body = _status(reply)
    assert status.startswith(b"HTTP/1.1 200") and body["n"] == 2


def test_stalled_bodies_cannot_hold_the_server(home, monkeypatch):
    """A body that stops arriving gets a 408; while stalled uploads hold the budget of bodies in flight, another
    request waits, then gets a 429, and is served once they are gone."""
    from leti.service import app as app_module

    monkeypatch.setattr(app_module, "BODY_TIMEOUT_S", 1.5)
    monkeypatch.setattr(app_module, "BUDGET_WAIT_S", 0.5)
    monkeypatch.setattr(app_module, "IN_FLIGHT_BODIES", 1)
    app = app_module.create_app(predictor_root=home[0] / "predictors", max_body=MAX_BODY)
    with app_module.BackgroundServer(app) as srv:
        host, port = srv.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as stalled:
            stalled.sendall(HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\n[1,2,\r\n")  # and no more
            time.sleep(0.2)
            r = httpx.post(f"{srv.url}/v1/predict", json=_ok(NB201), timeout=10)
            assert r.status_code == 429 and r.json()["field"] == "body" and r.headers["retry-after"]
            reply = stalled.recv(65536)
        assert reply.startswith(b"HTTP/1.1 408")
        assert httpx.post(f"{srv.url}/v1/predict", json=_ok(NB201), timeout=10).status_code == 200


def test_errors_do_not_echo_a_large_input(server):
    """Issue 11: a 422 for a 100 MB arch echoed all of it. Every error is now a short excerpt."""
    big = "|nor_conv_3x3~0|+" * (MAX_BODY // 20)  # ~0.9 MB of an invalid NB201 cell
    for arch in (big, {"adjacency": [[0]], "layers": [big]}, [big]):
        r = httpx.post(
            f"{server}/v1/predict", json={"target": TARGET, "archs": [{"arch": arch}]}, headers=AUTH
        )
        assert r.status_code == 422 and len(r.content) < 1500, (r.status_code, len(r.content))
    r = httpx.post(f"{server}/v1/predict", json={"target": big[:200_000], "archs": []}, headers=AUTH)
    assert r.status_code == 422 and len(r.content) < 1500


def test_deeply_nested_body_is_a_4xx(server):
    for depth in (10_000, 200_000):
        r = httpx.post(f"{server}/v1/predict", content=b"[" * depth + b"]" * depth, headers=AUTH)
        assert 400 <= r.status_code < 500, r.text[:300]
        nested = (
            b'{"target": "%s", "archs": [{"arch": ' % TARGET.encode() + b"[" * depth + b"]" * depth + b"}]}"
        )
        r = httpx.post(f"{server}/v1/predict", content=nested, headers=AUTH)
        assert 400 <= r.status_code < 500, r.text[:300]


def test_client_raises_the_servers_message(server, client):
    with pytest.raises(LetiError) as e:
        client.predict([NB201, NB201.replace("none~1", "conv9x9~1")], TARGET)
    assert str(e.value).startswith("archs[1].arch node 2: ") and e.value.field == "archs[1].arch node 2"
    with pytest.raises(NotFoundError, match="^target: "):
        client.predict(NB201, "nokia3310-tflite-cpu")
    with pytest.raises(NotFoundError, match="^predictor: "):
        client.predict(NB201, TARGET, predictor="gcn")
    with pytest.raises(AuthError, match="^authorization: wrong token"), Client(server, token="nope") as c:
        c.predict(NB201, TARGET)
    with pytest.raises(TooLargeError, match="^archs: "), Client(server, token=TOKEN, max_batch=10**6) as c:
        c.predict([NB201] * (MAX_BATCH + 1), TARGET)
    with (
        Client(server, token=TOKEN, max_batch=10) as c,
        pytest.raises(LetiError, match=r"^archs\[23\].arch: "),
    ):
        c.predict([NB201] * 23 + ["|bad|"], TARGET)  # renumbered across chunks


def test_client_unreachable_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        with (
            pytest.raises(LetiError, match="^url: cannot reach"),
            Client(f"http://127.0.0.1:{port}", timeout=2) as c,
        ):
            c.health()


def test_client_token_from_env(server, monkeypatch):
    monkeypatch.setenv("LETI_TOKEN", TOKEN)
    with Client(server) as c:
        assert c.predictors()


def test_in_process_errors_name_the_field():
    with pytest.raises(LetiError, match=r"^archs\[1\]: "):
        predict([NB201, "|nor_conv_3x3~0|"], TARGET)
    with pytest.raises(LetiError, match="^space: .*nb301"):
        predict(NB201, TARGET, space="nb301")
    with pytest.raises(NotFoundError, match="^target: "):
        predict(NB201, "nokia3310-tflite-cpu")
    with pytest.raises(NotFoundError, match="^predictor: "):
        predict(NB201, TARGET, predictor="gcn")
    with pytest.raises(LetiError, match=r"^archs\[0\]: "):
        predict(object(), TARGET)
    with pytest.raises(LetiError, match="^target: "):
        predict(NB201, None)


# ---- the CLI handlers ----------------------------------------------------------------------------------------------
def run_cli(*args):
    from leti.cli import main

    return main(list(args))


def test_cli_predict_args(capsys, best):
    texts = held_out(3)
    assert run_cli("predict", "--target", TARGET, *texts, "--json") == 0
    res = json.loads(capsys.readouterr().out)
    assert res["predictor"] == best and res["latency_ms"] == predict(texts, TARGET).tolist()
    assert run_cli("predict", "--target", TARGET, "--space", "nb201", texts[0]) == 0
    out = capsys.readouterr().out.strip()
    assert out.endswith(texts[0][:69] + "...") and out.split()[1] == "ms"
    assert float(out.split()[0]) == pytest.approx(predict(texts[0], TARGET)[0], abs=1e-4)


def test_cli_predict_file(tmp_path, capsys):
    arch_a, text_b = sample("nb201", 2, seed=11)
    text_a = arch_a[1]
    sample_line = {
        "hash": arch_a[0].hash,
        "space": "nasbench201",
        "native": text_a,
        "arch": arch_a[0].to_dict(),
    }
    lines = [json.dumps({"space": "nb201", "arch": text_b[1]}), json.dumps(arch_a[0].to_dict()), "",
             json.dumps(sample_line), text_b[1]]  # fmt: skip
    f = tmp_path / "archs.jsonl"
    f.write_text("\n".join(lines) + "\n")
    assert (
        run_cli("predict", "--target", TARGET, "--file", str(f), "--json", "--predictor", FAMILIES[-1]) == 0
    )
    got = json.loads(capsys.readouterr().out)["latency_ms"]
    expected = predict([text_b[1], text_a, text_a, text_b[1]], TARGET, FAMILIES[-1]).tolist()
    assert got == expected


def test_cli_predict_via_url(server, capsys, monkeypatch):
    monkeypatch.setenv("LETI_TOKEN", TOKEN)
    texts = held_out(4)
    assert run_cli("predict", "--target", TARGET, "--url", server, "--json", *texts) == 0
    assert json.loads(capsys.readouterr().out)["latency_ms"] == predict(texts, TARGET).tolist()


@pytest.mark.parametrize(
    "args, message",
    [
        (["predict", "--target", TARGET, "|nor_conv_3x3~0|"], "arch: needs 3 nodes"),
        (["predict", "--target", TARGET, NB201, "|nor_conv_3x3~0|"], "arch[1]: needs 3 nodes"),
        (["predict", "--target", TARGET, "--space", "nb999", NB201], "nb999"),
        (["predict", "--target", "nokia3310-tflite-cpu", NB201], "target: no trained predictor"),
        (["predict", "--target", TARGET, "--predictor", "gcn", NB201], "predictor: no trained gcn predictor"),
        (["predict", "--target", TARGET], "arch: give one or more archs"),
        (["predict", "--target", TARGET, "--file", "/nonexistent.jsonl"], "/nonexistent.jsonl: no such file"),
        (["serve", "--port", "70000"], "--port: must be an integer in [0, 65535]"),
        (["serve", "--max-batch", "0"], "--max-batch: must be an integer >= 1"),
    ],
)
def test_cli_errors_are_one_line(capsys, args, message):
    assert run_cli(*args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("leti: error: ") and message in err and "\n" not in err


def test_cli_file_errors_name_the_line(tmp_path, capsys):
    f = tmp_path / "bad.jsonl"
    f.write_text(
        json.dumps({"space": "nb201", "arch": NB201})
        + "\n"
        + json.dumps({"space": "nb201", "arch": "|x|"})
        + "\n"
    )
    assert run_cli("predict", "--target", TARGET, "--file", str(f)) == 2
    assert f"{f} line 2: " in capsys.readouterr().err


def test_cli_serve_busy_port(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert run_cli("serve", "--port", str(port)) == 2
    assert "--port: cannot bind 127.0.0.1:" in capsys.readouterr().err


def test_serve_socket_gets_tcp_nodelay_on_accept():
    """asyncio sets TCP_NODELAY on accepted connections only when the listening socket says IPPROTO_TCP; without
    it each response waited ~40 ms for a delayed ACK."""
    from leti.cli.predict import _bind

    sock = _bind("127.0.0.1", 0)
    with sock:
        assert sock.proto == socket.IPPROTO_TCP and sock.getsockname()[0] == "127.0.0.1"


def test_arch_objects_survive_the_wire(client):
    archs = [Arch.from_dict(to_arch(t).to_dict()) for t in held_out(3)]
    assert np.array_equal(client.predict(archs, TARGET), predict(archs, TARGET))


def test_size_caps_and_read_only_store(home, tmp_path, monkeypatch):
    """A request whose archs expand past the server's budget of nodes + edges gets a 413 naming the arch that
    crossed it, and so does one arch over the per-arch budget, before it is built; and /v1/targets never creates a
    store that is not there."""
    from leti.graph.memo import graph_weight
    from leti.service import app as app_module

    texts = held_out(3)
    sizes = [graph_weight(to_arch(t).to_graph()) for t in texts]
    monkeypatch.setattr(app_module, "MIN_REQUEST_SIZE", sizes[0] + sizes[1] - 1)  # the second arch crosses it
    monkeypatch.setattr(app_module, "SIZE_PER_ARCH", 1)
    missing_store = tmp_path / "none.db"
    app = app_module.create_app(predictor_root=home[0] / "predictors", store_path=missing_store, max_batch=8)
    with app_module.BackgroundServer(app) as srv, httpx.Client(base_url=srv.url) as http:
        r = http.post("/v1/predict", json=_ok(*texts))
        assert (
            r.status_code == 413 and r.json()["field"] == "archs[1]" and "per request" in r.json()["detail"]
        )
        assert http.post("/v1/predict", json=_ok(texts[0])).status_code == 200
        (t,) = http.get("/v1/targets").json()["targets"]
        assert t["noise_floor"] is None and not missing_store.exists()
    monkeypatch.setattr(app_module, "ARCH_SIZE", min(sizes) - 1)
    app = app_module.create_app(predictor_root=home[0] / "predictors", store_path=missing_store)
    unseen = held_out(60)[-1]  # not built before, so the memo cannot answer for it
    with app_module.BackgroundServer(app) as srv, httpx.Client(base_url=srv.url) as http:
        r = http.post("/v1/predict", json=_ok(unseen))
        assert (
            r.status_code == 413 and r.json()["field"] == "archs[0].arch" and "per arch" in r.json()["detail"]
        )


def test_readme_nas_loop_runs_against_the_server(server):
    # the README's NAS-loop example, pointed at this server and target, with fewer rounds
    text = (REPO / "README.md").read_text()
    block = text.split("A NAS loop, here random search")[1].split("```python\n")[1].split("```")[0]
    code = (
        block.replace('leti.Client("http://127.0.0.1:8000")', f"leti.Client({server!r}, token={TOKEN!r}, max_batch={MAX_BATCH})")
        .replace('"pixel4-tflite2.1-cpu-a76"', repr(TARGET))
        .replace("range(20)", "range(2)")
    )  # fmt: skip
    assert code.count(TOKEN) == 1 and code.count(TARGET) == 1 and "range(2)" in code
    scored = []

    def proxy(arch: str) -> float:
        scored.append(arch)
        return float(len(arch))

    ns = {"my_accuracy_proxy": proxy}
    exec(compile(code, "README.md", "exec"), ns)
    assert scored and ns["best"] in scored and ns["best_score"] == max(len(a) for a in scored)
