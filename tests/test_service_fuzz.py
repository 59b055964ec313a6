"""Fuzz the live HTTP service from its own OpenAPI spec (schemathesis): valid and invalid requests alike, sent with a
Content-Length or chunked, and bodies over the server's cap, must never get a 5xx, and every 4xx must be the JSON
error body that names a field."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from leti.service.app import BackgroundServer, create_app
from leti.space import fbnet, nb101, nb201, sample

TARGET = (
    "host-litert-cpu-1t"  # the target named in the spec's examples, so example requests reach a predictor
)
MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def live_url(tmp_path_factory):
    from leti.predictors import registry

    home = tmp_path_factory.mktemp("fuzz_home")
    pairs = sample("nb201", 60, seed=1)
    graphs = [a.to_graph() for a, _ in pairs]
    y = np.array([0.3 + g.total_macs / 2e7 for g in graphs]) * np.random.default_rng(1).lognormal(0, 0.03, 60)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LETI_HOME", str(home))
        pred = registry.make("lut").fit(graphs, y)  # real and quick to fit
        registry.save_trained(pred, TARGET, {"metrics": {"acc10": 0.9}, "seed": 1, "n_train": 60})
    # small limits keep generated bodies cheap: anything longer gets a 413 at once
    app = create_app(predictor_root=home / "predictors", store_path=home / "leti.db", max_batch=16,
                     max_body=MAX_BODY)  # fmt: skip
    with BackgroundServer(app) as srv:
        yield srv.url


@pytest.fixture(scope="module")
def api_schema(live_url):
    schema = schemathesis.openapi.from_url(f"{live_url}/openapi.json")
    schema.config.update(base_url=live_url)
    return schema


# (method, path, generation mode, examples); the GET endpoints take no input, so nothing negative to generate
RUNS = [("POST", "/v1/predict", "positive", 150), ("POST", "/v1/predict", "negative", 150),
        ("GET", "/v1/targets", "positive", 10), ("GET", "/v1/predictors", "positive", 10),
        ("GET", "/v1/health", "positive", 10)]  # fmt: skip


@pytest.fixture(scope="module")
def session():
    import requests  # schemathesis calls through requests; one session keeps one connection

    with requests.Session() as s:
        yield s


@pytest.fixture(scope="module")
def http():
    with httpx.Client(timeout=30) as c:
        yield c


def check(case, session, how: str = "plain") -> None:
    """Send ``case`` as schemathesis builds it (``plain``), or its body ``chunked``, or padded past the server's cap
    (``oversized`` with a Content-Length, ``oversized-chunked``: both must be a 413)."""
    if how == "plain":
        r = case.call(session=session, timeout=30)
    else:
        kw = case.as_transport_kwargs()
        body = kw.get("data", b"") if "json" not in kw else json.dumps(kw["json"]).encode()
        body = body.encode() if isinstance(body, str) else bytes(body or b"")
        if how.startswith("oversized"):
            body += b" " * (MAX_BODY + 1 - len(body) + len(body) % 97)  # just past the cap
        headers = {
            k: v for k, v in kw["headers"].items() if k.lower() not in ("content-length", "transfer-encoding")
        }
        data = (body[i : i + 997] for i in range(0, len(body), 997)) if how.endswith("chunked") else body
        r = session.request(
            kw["method"], kw["url"], data=data, headers=headers, params=kw.get("params"), timeout=30
        )
        if how.startswith("oversized"):
            assert r.status_code == 413 and r.json()["field"] == "body", r.text[:300]
    assert r.status_code < 500, f"{case.method} {case.path} -> {r.status_code}: {r.text[:300]}"
    if r.status_code >= 400:
        body = r.json()
        assert isinstance(body.get("detail"), str) and body["detail"]
        if body.get("field"):
            assert body["detail"].startswith(f"{body['field']}: ")


# Hypothesis is driven here directly: schemathesis' own pytest loader does not run under pytest 9.
@pytest.mark.parametrize("method, path, mode, n", RUNS, ids=[f"{m} {p} {g}" for m, p, g, _ in RUNS])
def test_no_server_errors(api_schema, session, method, path, mode, n):
    operation = api_schema[path][method]
    strategy = operation.as_strategy(generation_mode=GenerationMode(mode))

    @settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def run(case):
        check(case, session)

    run()


TRANSPORTS = ["chunked", "oversized", "oversized-chunked"]


@pytest.mark.parametrize("how", TRANSPORTS)
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_server_errors_chunked_and_oversized(api_schema, session, mode, how):
    strategy = api_schema["/v1/predict"]["POST"].as_strategy(generation_mode=GenerationMode(mode))

    @settings(max_examples=40, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(strategy)
    def run(case):
        check(case, session, how)

    run()


# ---- structure-aware fuzzing of the archs ----------------------------------------------------------------------------
# The spec only says "string, object or list", so the runs above rarely get past the target. Here every request names
# the trained target and carries near-miss archs: NB201-like strings, FBNet-like block lists, NB101-like specs, and
# valid Arch JSON with one value replaced by junk. Each must give 200 or a 4xx naming its arch, never a 5xx.
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)
NB201_TOKENS = st.sampled_from((*nb201.OPS, "conv9x9", "", "none~", "~0", "|", "+", "skip_connect~9"))


@st.composite
def nb201_like(draw) -> str:
    nodes = draw(st.lists(st.lists(st.tuples(NB201_TOKENS, st.integers(-1, 4)), max_size=4), max_size=4))
    return "+".join("|" + "|".join(f"{op}~{i}" for op, i in node) + "|" for node in nodes)


@st.composite
def mutated_arch_json(draw) -> dict:
    d = json.loads(draw(st.sampled_from(VALID_JSON)))
    part = draw(st.sampled_from(("adjacency", "layers", "config", "space")))
    if part == "config":
        key = draw(st.sampled_from(sorted(d["config"]) + ["bogus"]))
        d["config"][key] = draw(JSON | st.integers(-3, 5000))
    elif part == "layers" and d["layers"]:
        i = draw(st.integers(0, len(d["layers"]) - 1))
        d["layers"][i] = draw(JSON | st.sampled_from(["conv", "maxpool", "dwconv", "add", "concat", "zero"]))
    elif part == "adjacency":
        n = len(d["adjacency"])
        i, j = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
        d["adjacency"][i][j] = draw(st.sampled_from([0, 1, 2, -1, "1", None]))
    else:
        d[part] = draw(JSON)
    return d


VALID_JSON = [a.to_json() for sp in ("nb201", "fbnet", "nb101", "leti") for a, _ in sample(sp, 2, seed=5)]
ARCHS = st.one_of(
    nb201_like(),
    st.lists(st.sampled_from((*fbnet.BLOCKS, "k7_e9", "")), max_size=24),
    st.lists(st.sampled_from(fbnet.BLOCKS), min_size=22, max_size=22).map(",".join),
    st.fixed_dictionaries({"matrix": st.lists(st.lists(st.integers(0, 1), max_size=8), max_size=8),
                           "ops": st.lists(st.sampled_from(("input", "output", *nb101.OPS, "conv5x5")), max_size=8)}),
    mutated_arch_json(),
    JSON,
)  # fmt: skip
SPACES = st.none() | st.sampled_from(("nb101", "nb201", "nasbench201", "fbnet", "leti", "NB201", "nb301", ""))


@settings(
    max_examples=250, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)
@given(
    items=st.lists(st.fixed_dictionaries({"arch": ARCHS}, optional={"space": SPACES}), min_size=1, max_size=3)
)
def test_near_miss_archs_never_5xx(live_url, http, items):
    r = http.post(f"{live_url}/v1/predict", json={"target": TARGET, "archs": items})
    assert r.status_code in (200, 413, 422), r.text
    if r.status_code == 200:
        assert r.json()["n"] == len(items)
    else:
        field = r.json()["field"]
        assert field.startswith("archs[") and r.json()["detail"].startswith(f"{field}: ")
