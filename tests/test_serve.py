import argparse
import asyncio
import contextlib
import copy
import inspect
import json
import math
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import schemathesis
import torch
import uvicorn
import uvicorn.supervisors
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from uvicorn.server import ServerState

from ruleeraser import Eraser, wire
from ruleeraser import serve as serve_module
from ruleeraser.serve import (
    ENV,
    add_serve_parser,
    create_app,
    create_app_from_env,
    uvicorn_options,
)
from ruleeraser.serve.bodies import RequestReader
from ruleeraser.serve.bound import FLOAT32_MAX, input_bound
from ruleeraser.serve.limit import InflightLimit
from ruleeraser.serve.schemas import api_models
from ruleeraser.serve.upstream import SEPARATE_BODY_BYTES, Refusal, Upstream

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from example_upstream import create_upstream_app, make_demo  # noqa: E402

UPSTREAM = "http://upstream.test/predict"


@pytest.fixture(scope="module")
def demo():
    return make_demo(0, n_train=2000, n_calib=400, n_test=200)


@pytest.fixture(scope="module")
def eraser(demo):
    return Eraser(demo.model, random_state=0, max_epochs=20).fit(
        demo.X_calib, demo.y_calib, bias=demo.bias_calib
    )


@pytest.fixture(scope="module")
def eraser_dir(eraser, tmp_path_factory):
    return eraser.save(tmp_path_factory.mktemp("eraser"))


def model_handler(model):
    """An upstream's logic: the instances protocol over ``model.predict_proba``."""

    def handle(request: httpx.Request) -> httpx.Response:
        X = np.asarray(json.loads(request.content)["instances"], dtype=np.float64)
        return httpx.Response(200, json={"predictions": model.predict_proba(X).tolist()})

    return handle


def handler_app(handler):
    """An ASGI upstream answering every request with ``handler(httpx.Request)`` (or awaited)."""

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        answer = handler(httpx.Request(scope["method"], "http://upstream/", content=body))
        if inspect.isawaitable(answer):
            answer = await answer
        headers = [(k.encode(), v.encode()) for k, v in answer.headers.items()]
        await send(
            {"type": "http.response.start", "status": answer.status_code, "headers": headers}
        )
        await send({"type": "http.response.body", "body": answer.content})

    return app


@contextmanager
def serving(app):
    """Serve ``app`` with uvicorn as ``ruleeraser serve`` does, on a loopback ephemeral port,
    in a thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY
    sock.bind(("127.0.0.1", 0))
    options = uvicorn_options(access_log=False)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1, **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def proxy(eraser_dir, handler=None, upstream=UPSTREAM, **options):
    """A test client of the proxy; with ``handler``, in front of it served on loopback."""
    with contextlib.ExitStack() as stack:
        if handler is not None:
            upstream = stack.enter_context(serving(handler_app(handler))) + "/predict"
        yield stack.enter_context(TestClient(create_app(eraser_dir, upstream, **options)))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_fair_probabilities_equal_eraser_predict_proba(demo, eraser, eraser_dir):
    rows = demo.X_test[:50]
    with proxy(eraser_dir, model_handler(demo.model)) as client:
        answer = client.post("/v1/predict", json={"instances": rows.tolist()})
        with_original = client.post(
            "/v1/predict", json={"instances": rows.tolist(), "return_original": True}
        )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"predictions", "classes"} and body["classes"] == [0, 1]
    np.testing.assert_allclose(body["predictions"], eraser.predict_proba(rows), rtol=0, atol=1e-12)
    original = with_original.json()
    assert original["predictions"] == body["predictions"]
    np.testing.assert_allclose(original["original"], demo.model.predict_proba(rows), atol=1e-12)


def test_end_to_end_on_loopback(demo, eraser, eraser_dir):
    rows = demo.X_test[50:80]
    with serving(create_upstream_app(demo.model)) as upstream:
        proxy_app = create_app(eraser_dir, f"{upstream}/predict")
        with serving(proxy_app) as url, httpx.Client(base_url=url, timeout=10) as client:
            health = client.get("/healthz", params={"upstream": "true"})
            answer = client.post("/v1/predict", json={"instances": rows.tolist()})
            huge = client.post("/v1/predict", content=(b" " * 65536 for _ in range(40)))
    assert health.status_code == 200 and health.json()["upstream_checked"] is True
    assert huge.status_code == 413  # 2.5 MiB, chunked: refused before it is all read
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(
        answer.json()["predictions"], eraser.predict_proba(rows), rtol=0, atol=1e-12
    )


def test_server_libraries_load_with_the_app_not_before_nor_on_the_first_request(eraser_dir):
    """The command line imports this module without the serve extra; the app, once built,
    has aiohttp loaded, whose import (~150 ms) would otherwise hold up the first requests."""
    code = (
        "import sys; import ruleeraser.serve as s; "
        "libs = ('aiohttp', 'fastapi', 'uvicorn'); "
        "print([m for m in libs if m in sys.modules]); "
        f"s.create_app({str(eraser_dir)!r}, {UPSTREAM!r}); "
        "print([m for m in libs if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["[]", "['aiohttp', 'fastapi']"]


def test_healthz(demo, eraser, eraser_dir):
    with proxy(eraser_dir, model_handler(demo.model)) as client:
        plain = client.get("/healthz")
        probed = client.get("/healthz", params={"upstream": "true"})
    assert plain.status_code == 200
    assert plain.json() == {
        "status": "ok",
        "input_shape": [4],
        "classes": [0, 1],
        "biases": ["bias"],
        "strength": 1.0,
        "rule_scale": [pytest.approx(eraser.rule_scale_[0])],
        "offset": [0.0, 0.0],
        "goal": None,
        "prior": "balanced",
        "class_prior": {
            "bias": {
                "0": pytest.approx(eraser.class_prior_[0, 0]),
                "1": pytest.approx(eraser.class_prior_[0, 1]),
            }
        },
        "max_rows": serve_module.DEFAULT_MAX_ROWS,
        "max_value": input_bound(eraser.patches_),
        "coalesce": True,
        "max_inflight": serve_module.DEFAULT_MAX_CONNECTIONS,
        "min_inflight": 1,
        "inflight_limit": 2,  # where it starts
        "upstream_fastest_ms": None,
        "max_batch_rows": serve_module.DEFAULT_MAX_ROWS,
        "requests": 0,
        "upstream_calls": 0,  # the probe is not counted
        "upstream_rows": 0,
        "internal_errors": 0,
        "upstream_checked": False,
    }
    assert probed.status_code == 200 and probed.json()["upstream_checked"] is True
    assert probed.json()["upstream_calls"] == 0
    with proxy(eraser_dir, upstream=f"http://127.0.0.1:{closed_port()}/predict") as client:
        dead = client.get("/healthz", params={"upstream": "true"})
    assert dead.status_code == 502 and "unreachable" in dead.json()["detail"]


@pytest.mark.parametrize("body", [b"", b"not json", b'{"instances": [[1, 2, 3, 4]]', b"{'a': 1}"])
def test_malformed_json_is_400(demo, eraser_dir, body):
    with proxy(eraser_dir, model_handler(demo.model)) as client:
        answer = client.post("/v1/predict", content=body)
    assert answer.status_code == 400
    assert "not valid JSON" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"instances": [[1, 2, 3]]}', "must hold 4 numbers"),
        ('{"instances": [[1, 2, 3, 4], [1, 2, 3, 4, 5]]}', "instances[1] with 5"),
        ('{"instances": [[]]}', "must hold 4 numbers"),
        ('{"instances": [[1, NaN, 3, 4]]}', "instances[0][1]: Input should be a finite number"),
        ('{"instances": [[1, 2, Infinity, 4]]}', "finite number"),
        ('{"instances": [[-Infinity, 2, 3, 4]]}', "finite number"),
        ('{"instances": [[1e400, 2, 3, 4]]}', "finite number"),
        ('{"instances": [[1e39, 2, 3, 4]]}', "less than or equal"),
        ('{"instances": [[3e38, 3e38, 3e38, 3e38]]}', "less than or equal to 1e+36"),
        ('{"instances": []}', "at least 1 item"),
        ('{"instances": [1, 2, 3, 4]}', "instances[0]: Input should be a valid array"),
        ('{"instances": [["1", 2, 3, 4]]}', "valid number"),
        ('{"instances": [[1, 2, 3, 4]], "return_original": "yes"}', "valid boolean"),
        ('{"instances": [[1, 2, 3, 4]], "extra": 1}', "extra: Extra inputs"),
        ('{"rows": [[1, 2, 3, 4]]}', "instances: Field required"),
        ("[[1, 2, 3, 4]]", "Input should be an object"),
    ],
)
def test_invalid_instances_are_422(demo, eraser_dir, body, message):
    calls = []

    def handler(request):
        calls.append(request)
        return model_handler(demo.model)(request)

    with proxy(eraser_dir, handler) as client:
        answer = client.post("/v1/predict", content=body)
    assert answer.status_code == 422, answer.text
    assert message in answer.json()["detail"]
    assert not calls  # nothing reaches the upstream


def test_limits_are_413(demo, eraser_dir):
    rows = demo.X_test[:11].tolist()
    with proxy(eraser_dir, model_handler(demo.model), max_rows=10, max_body_bytes=4000) as c:
        ok = c.post("/v1/predict", json={"instances": rows[:10]})
        too_many = c.post("/v1/predict", json={"instances": rows})
        huge = c.post("/v1/predict", content=b'{"instances": [' + b" " * 5000 + b"]}")
        chunks = (b'{"instances": [' if i == 0 else b" " * 100 for i in range(100))
        chunked = c.post("/v1/predict", content=chunks)  # no Content-Length
    assert ok.status_code == 200
    assert too_many.status_code == 413 and "at most 10" in too_many.json()["detail"]
    for answer in (huge, chunked):
        assert answer.status_code == 413
        assert answer.json()["detail"] == "request body exceeds 4000 bytes"


def test_slow_upstream_is_504(demo, eraser_dir):
    async def slow(request):
        await asyncio.sleep(10)

    with proxy(eraser_dir, slow, timeout=0.2) as client:
        start = time.monotonic()
        answer = client.post("/v1/predict", json={"instances": demo.X_test[:2].tolist()})
    assert time.monotonic() - start < 5
    assert answer.status_code == 504
    assert answer.json()["detail"] == "upstream did not answer within 0.2 s"


def test_silent_upstream_on_loopback_is_504(demo, eraser_dir):
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/predict"
        with proxy(eraser_dir, upstream=url, timeout=0.3) as client:
            answer = client.post("/v1/predict", json={"instances": demo.X_test[:2].tolist()})
    assert answer.status_code == 504 and "0.3 s" in answer.json()["detail"]


def test_dead_upstream_is_502(demo, eraser_dir):
    url = f"http://127.0.0.1:{closed_port()}/predict"
    with proxy(eraser_dir, upstream=url) as client:
        answer = client.post("/v1/predict", json={"instances": demo.X_test[:2].tolist()})
    assert answer.status_code == 502
    assert answer.json()["detail"].startswith("upstream unreachable (ClientConnectorError")


def _answer(status=200, **kwargs):
    return lambda request: httpx.Response(status, **kwargs)


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        (_answer(500, text="model crashed"), "upstream answered HTTP 500: 'model crashed'"),
        (_answer(404), "upstream answered HTTP 404"),
        (_answer(content=b"<html>"), "upstream answer is not JSON"),
        (_answer(json={"outputs": [[0.5, 0.5]] * 3}), "has no 'predictions'"),
        (_answer(json=[[0.5, 0.5]] * 3), "has no 'predictions'"),
        (_answer(json={"predictions": [[0.5, 0.5]] * 2}), "returned 2 rows for 3 inputs"),
        (_answer(json={"predictions": [[0.2, 0.3, 0.5]] * 3}), "answered 3 classes"),
        (_answer(content=b'{"predictions": [[NaN, 1], [0, 1], [0, 1]]}'), "NaN"),
        (_answer(json={"predictions": [[-0.5, 1.5]] * 3}), "negative"),
        (_answer(json={"predictions": [[0.5, 0.6]] * 3}), "do not sum to 1"),
        (_answer(json={"predictions": [["a", "b"]] * 3}), "not probabilities"),
        (_answer(json={"predictions": [{"a": 1}] * 3}), "not probabilities"),
        (_answer(json={"predictions": 1}), "not probabilities"),
    ],
)
def test_bad_upstream_answers_are_502(demo, eraser_dir, handler, message):
    with proxy(eraser_dir, handler) as client:
        answer = client.post(
            "/v1/predict", json={"instances": demo.X_test[:3].tolist(), "return_original": True}
        )
    assert answer.status_code == 502
    assert set(answer.json()) == {"detail"} and message in answer.json()["detail"]


class Recorder:
    """An upstream that answers after ``delay`` s and records the rows of every call and the
    most calls it had at once; ``answer(X)`` makes the answer (the model's by default)."""

    def __init__(self, model, delay=0.05, answer=None):
        self.model, self.delay, self.calls, self.busy, self.most_busy = model, delay, [], 0, 0
        self.bodies = []
        self.answer = answer or (
            lambda X: httpx.Response(200, json={"predictions": model.predict_proba(X).tolist()})
        )

    async def __call__(self, request):
        X = np.asarray(json.loads(request.content)["instances"], dtype=np.float64)
        self.calls.append(X)
        self.bodies.append(request.content)
        self.busy += 1
        self.most_busy = max(self.most_busy, self.busy)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.busy -= 1
        return self.answer(X)


@contextmanager
def proxy_on_loopback(eraser, upstream_handler, **options):
    """The proxy served on loopback in front of ``upstream_handler``, also on loopback."""
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(serving(handler_app(upstream_handler)))
        yield stack.enter_context(serving(create_app(eraser, f"{upstream}/predict", **options)))


def post_all(url, bodies, first=None):
    """POST every body at once (after ``first``, once it is out); the answers, in order."""

    async def send():
        limits = httpx.Limits(max_connections=len(bodies) + 1)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=20) as client:
            head = []
            if first is not None:  # occupies the upstream while the others queue
                head = [asyncio.ensure_future(client.post("/v1/predict", content=first))]
                await asyncio.sleep(0.02)
            rest = [client.post("/v1/predict", content=body) for body in bodies]
            answers = await asyncio.gather(*head, *rest)
            return answers, (await client.get("/healthz")).json()

    return asyncio.run(send())


# The patches compute in float32, whose matrix products round differently with the number
# of rows: Eraser.predict_proba itself moves by ~6e-8 between batchings of the same rows.
# A request that shared its upstream call (and its patch call) is equal up to that.
COALESCED_ATOL = 1e-6


def _body(rows, **extra):
    return json.dumps({"instances": np.asarray(rows).tolist(), **extra})


def test_coalesced_requests_each_get_their_own_answer(demo, eraser):
    upstream = Recorder(demo.model)
    sizes = [1, 2, 3, 1, 5] * 5
    starts = np.cumsum([0, *sizes])
    requests = [demo.X_test[a:b] for a, b in zip(starts[:-1], starts[1:], strict=True)]
    bodies = [_body(rows, return_original=i % 2 == 0) for i, rows in enumerate(requests)]
    with proxy_on_loopback(eraser, upstream, max_inflight=2) as url:
        answers, health = post_all(url, bodies)
    for i, (rows, answer) in enumerate(zip(requests, answers, strict=True)):
        assert answer.status_code == 200, answer.text
        body = answer.json()
        fair = eraser.predict_proba(rows)
        np.testing.assert_allclose(body["predictions"], fair, rtol=0, atol=COALESCED_ATOL)
        if i % 2 == 0:  # the upstream's own answer
            np.testing.assert_allclose(body["original"], demo.model.predict_proba(rows), atol=1e-12)
        else:
            assert "original" not in body
    assert len(upstream.calls) < len(requests)  # coalesced
    assert max(len(X) for X in upstream.calls) > 1
    assert upstream.most_busy <= 2
    np.testing.assert_array_equal(  # every row sent once, nothing else
        np.sort(np.concatenate(upstream.calls), axis=0), np.sort(demo.X_test[: starts[-1]], axis=0)
    )
    assert health["requests"] == len(requests)
    assert health["upstream_calls"] == len(upstream.calls)
    assert health["upstream_rows"] == starts[-1]


def test_without_coalescing_every_request_is_one_call(demo, eraser):
    upstream = Recorder(demo.model)
    bodies = [_body(demo.X_test[i : i + 1]) for i in range(12)]
    with proxy_on_loopback(eraser, upstream, coalesce=False) as url:
        answers, health = post_all(url, bodies)
    assert [a.status_code for a in answers] == [200] * 12
    assert len(upstream.calls) == 12 and upstream.most_busy > 2
    assert health["coalesce"] is False and health["max_inflight"] is None
    assert health["inflight_limit"] is None
    assert health["upstream_calls"] == health["requests"] == 12


class Opaque(torch.nn.Module):
    """A patch of a kind whose input range the proxy cannot work out."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


@pytest.fixture(scope="module")
def opaque(eraser):
    """The eraser with patches the proxy cannot bound: the schema allows any float32."""
    wrapped = copy.deepcopy(eraser)
    wrapped.patches_ = [Opaque(p) for p in wrapped.patches_]
    return wrapped


def test_a_bad_request_among_coalesced_ones_fails_alone(demo, opaque):
    eraser = opaque
    assert input_bound(eraser.patches_) == FLOAT32_MAX
    upstream = Recorder(demo.model, delay=0.3)
    good = [demo.X_test[i : i + 2] for i in range(0, 16, 2)]
    overflow = _body([[3e38] * 4, demo.X_test[0]])  # valid, but the patch overflows
    narrow = _body([[1.0, 2.0, 3.0]])
    bodies = [_body(good[0]), overflow, *map(_body, good[1:4]), narrow, *map(_body, good[4:])]
    with proxy_on_loopback(eraser, upstream, max_inflight=1) as url:
        answers, _ = post_all(url, bodies, first=_body(demo.X_test[100:101]))
    first, *answers = answers
    assert first.status_code == 200
    assert answers[1].status_code == 422
    assert "the patch has no finite output for 1 row(s)" in answers[1].json()["detail"]
    assert "the first is row 0" in answers[1].json()["detail"]  # its own row numbers
    assert answers[5].status_code == 422 and "must hold 4 numbers" in answers[5].json()["detail"]
    served = [a for i, a in enumerate(answers) if i not in (1, 5)]
    for rows, answer in zip(good, served, strict=True):
        assert answer.status_code == 200, answer.text
        np.testing.assert_allclose(
            answer.json()["predictions"], eraser.predict_proba(rows), rtol=0, atol=COALESCED_ATOL
        )
    assert len(upstream.calls) == 2  # the first request, then all the others together
    assert not any((np.abs(X) > 1e30).any() for X in upstream.calls)  # nor the overflow


class Serialising(Recorder):
    """An upstream that serves one call at a time (a one-worker model): each call holds a
    lock while it sleeps, so calls sent together wait for each other."""

    def __init__(self, model, delay=0.01):
        super().__init__(model, delay)
        self.lock = asyncio.Lock()

    async def __call__(self, request):
        async with self.lock:
            return await super().__call__(request)


def post_waves(url, bodies, concurrency):
    """POST ``bodies`` from ``concurrency`` clients, each sending its next once answered."""

    async def send():
        limits = httpx.Limits(max_connections=concurrency + 1)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=20) as client:
            todo, answers = list(bodies), []

            async def worker():
                while todo:
                    answers.append(await client.post("/v1/predict", content=todo.pop()))

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return answers, (await client.get("/healthz")).json()

    return asyncio.run(send())


def test_the_inflight_limit_grows_for_an_upstream_that_serves_calls_in_parallel(demo, eraser):
    upstream = Recorder(demo.model, delay=0.05)  # long beside the noise of busy cores
    bodies = [_body(demo.X_test[i % 100 : i % 100 + 1]) for i in range(240)]
    with proxy_on_loopback(eraser, upstream) as url:
        answers, health = post_waves(url, bodies, concurrency=12)
    assert [a.status_code for a in answers] == [200] * len(bodies)
    assert health["inflight_limit"] > 2 and upstream.most_busy > 4
    assert 45 < health["upstream_fastest_ms"] < 100
    assert health["upstream_calls"] > len(bodies) / 2  # requests barely wait for a call


def test_the_inflight_limit_stays_low_for_an_upstream_serving_one_call_at_a_time(demo, eraser):
    upstream = Serialising(demo.model, delay=0.01)
    rows = [demo.X_test[i % 100 : i % 100 + 1] for i in range(240)]
    with proxy_on_loopback(eraser, upstream) as url:
        answers, health = post_waves(url, list(map(_body, rows)), concurrency=12)
    for answer in answers:
        assert answer.status_code == 200, answer.text
    assert health["inflight_limit"] <= 3 and upstream.most_busy <= 4
    assert health["upstream_calls"] < len(rows) / 2  # coalesced: several requests per call


def test_inflight_limit_rules():
    limit = InflightLimit(1, 8, window=4)
    assert limit.value == 2
    limit.update(0.010, held_back=True)  # the first call: the fastest so far
    assert limit.value == 3
    limit.update(0.010, held_back=False)  # fast, but nobody was waiting
    assert limit.value == 3
    limit.update(0.030, held_back=True)  # two thirds of it behind other calls
    assert limit.value == 2
    limit.update(0.020, held_back=True)  # half: hold
    assert limit.value == 2 and limit.fastest == 0.010
    limit.update(0.0125, held_back=True)  # a fifth, as 8 parallel calls slowing each other
    assert limit.value == 3
    for _ in range(2):  # twice the fastest: hold
        limit.update(0.020, held_back=True)
    assert limit.value == 3
    limit.update(0.020, held_back=True)  # the 10 ms calls are two windows old: 3/8 waited
    assert limit.fastest == 0.0125 and limit.value == 3
    fixed = InflightLimit(3, 3)
    fixed.update(0.001, held_back=True)
    fixed.update(1.0, held_back=True)
    assert fixed.value == 3 and fixed.fastest == 0.001


@pytest.mark.parametrize(
    ("answer", "status", "message"),
    [
        (lambda X: httpx.Response(500, text="model crashed"), 502, "answered HTTP 500"),
        (
            lambda X: httpx.Response(200, json={"predictions": [[0.5, 0.5]] * (len(X) - 1)}),
            502,
            "rows for",
        ),
        (lambda X: httpx.Response(200, json={"predictions": [[2.0, -1.0]] * len(X)}), 502, "neg"),
    ],
)
def test_an_upstream_failure_fails_every_request_of_its_call(demo, eraser, answer, status, message):
    upstream = Recorder(demo.model, delay=0.3, answer=answer)
    bodies = [_body(demo.X_test[i : i + 3]) for i in range(0, 30, 3)]
    with proxy_on_loopback(eraser, upstream, max_inflight=1) as url:
        answers, _ = post_all(url, bodies, first=_body(demo.X_test[100:101]))
    assert len(upstream.calls) == 2 and len(upstream.calls[1]) == 30  # coalesced
    for answer_ in answers:
        assert answer_.status_code == status
        assert set(answer_.json()) == {"detail"} and message in answer_.json()["detail"]
    if "rows for" in message:
        assert "returned 29 rows for 30 inputs" in answers[-1].json()["detail"]


def test_requests_queued_past_the_timeout_are_504(demo, eraser):
    upstream = Recorder(demo.model, delay=1.0)
    bodies = [_body(demo.X_test[i : i + 1]) for i in range(4)]
    start = time.monotonic()
    with proxy_on_loopback(eraser, upstream, max_inflight=1, timeout=0.3) as url:
        answers, _ = post_all(url, bodies)
    assert time.monotonic() - start < 5
    for answer in answers:
        assert answer.status_code == 504
        assert answer.json()["detail"] == "upstream did not answer within 0.3 s"


def test_fair_probabilities_follow_the_eraser_strength(demo, eraser):
    half = copy.deepcopy(eraser).set_params(strength=0.5)
    rows = demo.X_test[:20]
    with proxy(half, model_handler(demo.model)) as client:
        answer = client.post("/v1/predict", json={"instances": rows.tolist()})
    fair = half.predict_proba(rows)
    assert not np.allclose(fair, eraser.predict_proba(rows))
    np.testing.assert_allclose(answer.json()["predictions"], fair, atol=1e-12)


def test_sigmoid_upstream_is_read_as_two_classes(demo, eraser, eraser_dir):
    rows = demo.X_test[:5]

    def sigmoid(request):
        X = np.asarray(json.loads(request.content)["instances"])
        return httpx.Response(200, json={"predictions": demo.model.predict_proba(X)[:, 1].tolist()})

    with proxy(eraser_dir, sigmoid) as client:
        answer = client.post("/v1/predict", json={"instances": rows.tolist()})
    np.testing.assert_allclose(answer.json()["predictions"], eraser.predict_proba(rows), atol=1e-9)


@pytest.fixture(scope="module")
def api(demo, eraser_dir):
    with serving(create_upstream_app(demo.model)) as upstream:
        yield _schema(create_app(eraser_dir, f"{upstream}/predict"))


def _schema(app):
    config = schemathesis.Config()
    rejection = config.projects.default.checks.negative_data_rejection
    rejection.expected_statuses = [*rejection.expected_statuses, "413"]  # too many instances
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode))
def test_fuzz_from_openapi_schema(api, mode):
    @given(case=api.as_strategy(generation_mode=mode))
    @settings(
        max_examples=500, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def check(case):
        # Every check schemathesis has, positive_data_acceptance included: the schema states
        # the range within which the patches compute, so every request it allows succeeds.
        response = case.call_and_validate()
        assert response.status_code < 500  # with a healthy upstream, no 502/504 either
        if mode == schemathesis.GenerationMode.POSITIVE:
            assert response.status_code == 200, response.text

    check()


def test_create_app_rejects_bad_settings(eraser):
    with pytest.raises(ValueError, match="http"):
        create_app(eraser, "ftp://model")
    with pytest.raises(ValueError, match="max_rows must be an int >= 1; got 0"):
        create_app(eraser, UPSTREAM, max_rows=0)
    with pytest.raises(RuntimeError, match="not fitted"):
        create_app(Eraser(lambda x: x), UPSTREAM)


def test_app_from_environment(demo, eraser_dir, monkeypatch):
    for name in ENV.values():
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match=ENV["eraser"]):
        create_app_from_env()
    monkeypatch.setenv(ENV["eraser"], str(eraser_dir))
    monkeypatch.setenv(ENV["upstream"], UPSTREAM)
    monkeypatch.setenv(ENV["max_rows"], "7")
    with TestClient(create_app_from_env()) as client:
        assert client.get("/healthz").json()["max_rows"] == 7


def test_serve_command_runs_uvicorn(eraser_dir, monkeypatch):
    calls = []

    def server_run(self, sockets):
        calls.append((self.config, sockets))

    def supervisor_run(self):
        calls.append((self.config, self.sockets))

    monkeypatch.setattr(uvicorn.Server, "run", server_run)
    monkeypatch.setattr(uvicorn.supervisors.Multiprocess, "run", supervisor_run)
    for name in ENV.values():
        monkeypatch.setenv(name, "")  # restored after the test
    parser = argparse.ArgumentParser()
    add_serve_parser(parser.add_subparsers())
    command = ["serve", "--eraser", str(eraser_dir), "--upstream", UPSTREAM, "--port", "0"]
    several = ["--workers", "3", "--max-rows", "5", "--timeout", "2", "--max-inflight", "3"]
    more = ["--max-batch-rows", "4", "--patch-threads", "2", "--min-inflight", "2"]
    for extra in ([], [*several, *more]):
        args = parser.parse_args(command + extra)
        assert args.run(args) == 0
    (single, [single_sock]), (multi, [multi_sock]) = calls
    for sock in (single_sock, multi_sock):
        assert sock.proto == socket.IPPROTO_TCP  # so that connections get TCP_NODELAY
        sock.close()
    assert callable(single.app) and single.workers == 1 and not single.factory
    assert not single.server_header and not single.date_header
    assert single.access_log and single.proxy_headers  # X-Forwarded-For, for the access log
    assert multi.app == "ruleeraser.serve:create_app_from_env"
    assert multi.factory and multi.workers == 3
    with TestClient(create_app_from_env()) as client:  # what each worker builds
        health = client.get("/healthz").json()
    assert health["max_rows"] == 5 and health["coalesce"] is True
    assert health["max_inflight"] == 3 and health["max_batch_rows"] == 4
    assert health["min_inflight"] == 2
    args = parser.parse_args([*command, "--workers", "2", "--no-coalesce", "--no-access-log"])
    assert args.run(args) == 0
    assert not calls[-1][0].access_log and not calls[-1][0].proxy_headers
    calls[-1][1][0].close()
    with TestClient(create_app_from_env()) as client:
        health = client.get("/healthz").json()
    assert health["coalesce"] is False and health["max_batch_rows"] is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--upstream", "ftp://model"], "upstream must be an http(s) URL"),
        (["--upstream", UPSTREAM, "--workers", "0"], "workers must be at least 1"),
        (["--upstream", UPSTREAM, "--max-rows", "0"], "max_rows must be an int >= 1"),
        (["--upstream", UPSTREAM, "--max-inflight", "0"], "max_inflight must be None or an int"),
        (["--upstream", UPSTREAM, "--max-batch-rows", "0"], "max_batch_rows must be None or an"),
        (["--upstream", UPSTREAM, "--max-inflight", "2", "--min-inflight", "3"], "must not exceed"),
    ],
)
def test_serve_command_reports_bad_settings(eraser_dir, capsys, options, message):
    parser = argparse.ArgumentParser()
    add_serve_parser(parser.add_subparsers())
    args = parser.parse_args(["serve", "--eraser", str(eraser_dir), *options])
    assert args.run(args) == 2
    assert message in capsys.readouterr().err


def test_serve_command_reports_a_missing_eraser(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_serve_parser(parser.add_subparsers())
    args = parser.parse_args(["serve", "--eraser", str(tmp_path), "--upstream", UPSTREAM])
    assert args.run(args) == 2
    assert "does not hold an eraser (eraser.json is missing)" in capsys.readouterr().err


def test_serve_is_a_ruleeraser_command(eraser_dir, capsys):
    from ruleeraser.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--help"])
    assert exit_.value.code == 0 and "--upstream" in capsys.readouterr().out
    assert main(["serve", "--eraser", str(eraser_dir), "--upstream", "ftp://model"]) == 2


def test_the_upstream_gets_the_rows_as_the_client_wrote_them(demo, eraser):
    rows = demo.X_test[:3]
    texts = [", ".join(f"{v:.17g}".replace("e", "E") for v in row) for row in rows]
    plain = ('{ "instances" : [ [' + "],[".join(texts) + "] ] }").encode()
    asking = ('{"return_original": true, "instances": [[' + "], [".join(texts) + "]]}").encode()
    upstream = Recorder(demo.model, delay=0.3)
    with proxy_on_loopback(eraser, upstream, max_inflight=1) as url:
        alone, _ = post_all(url, [plain])
        together, _ = post_all(url, [plain, asking], first=_body(demo.X_test[100:101]))
    assert upstream.bodies[0] == plain  # alone, holding the rows only: its body as it came
    joined = upstream.bodies[2]  # the others went together after the first
    assert joined.count(texts[0].encode()) == 2 and joined.startswith(b'{"instances":[')
    for answer in [*alone, *together]:
        assert answer.status_code == 200, answer.text
    fair = eraser.predict_proba(rows)
    np.testing.assert_allclose(alone[0].json()["predictions"], fair, rtol=0, atol=1e-12)
    for answer in together[1:]:
        np.testing.assert_allclose(answer.json()["predictions"], fair, rtol=0, atol=1e-6)
    np.testing.assert_allclose(together[2].json()["original"], demo.model.predict_proba(rows))


@pytest.mark.parametrize(
    "body",
    [
        '{"instances": [[9, 9, 9, 9]], "instances": ROWS}',  # the last one counts, as in pydantic
        '{"instances": ROWS, "return_original": false}',
        '\n\t{"instances":ROWS}\n',
    ],
)
def test_bodies_read_by_either_reader_answer_the_same(demo, eraser, eraser_dir, body):
    rows = demo.X_test[:4]
    content = body.replace("ROWS", json.dumps(rows.tolist()))
    with proxy(eraser_dir, model_handler(demo.model)) as client:
        answer = client.post("/v1/predict", content=content)
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json()["predictions"], eraser.predict_proba(rows), atol=1e-12)


def test_rows_at_the_stated_bound_are_answered_and_beyond_it_refused(demo, eraser, eraser_dir):
    bound = input_bound(eraser.patches_)
    assert 0 < bound < FLOAT32_MAX
    rows = np.array([[bound, -bound, bound, -bound], [-bound] * 4, [bound, 0, 0, 1]])
    with proxy(eraser_dir, model_handler(demo.model)) as client:
        schema = client.get("/openapi.json").json()
        answer = client.post("/v1/predict", json={"instances": rows.tolist()})
        beyond = client.post("/v1/predict", json={"instances": [[bound * 1.01, 0, 0, 0]]})
    number = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    number = number["application/json"]["schema"]["properties"]["instances"]["items"]["items"]
    assert number["maximum"] == bound and number["minimum"] == -bound
    assert answer.status_code == 200, answer.text
    fair = np.array(answer.json()["predictions"])
    assert np.isfinite(fair).all()
    np.testing.assert_allclose(fair, eraser.predict_proba(rows), rtol=0, atol=1e-12)
    assert beyond.status_code == 422
    assert f"instances[0][0]: Input should be less than or equal to {bound:.6g}" in beyond.text


def test_the_bound_holds_for_every_float32_operation_of_the_patches(eraser):
    """Interval arithmetic is an upper bound: the largest activation of each layer at inputs
    of ±bound stays below the float32 maximum, and the inputs 10 times larger would not."""
    bound = input_bound(eraser.patches_)
    patch = eraser.patches_[0].bias_net
    x = torch.full((64, 4), bound) * torch.sign(
        torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    )
    h = patch.standardize(x)
    for layer in patch.net:
        h = layer(h)
        assert torch.isfinite(h).all() and h.abs().max() < FLOAT32_MAX / 4
    assert math.isclose(bound, float(f"{bound:.2g}"))  # two significant digits


def test_healthz_and_answers_follow_a_broken_forward_pass(demo, eraser):
    broken = copy.deepcopy(eraser)
    with proxy(broken, model_handler(demo.model)) as client:
        assert client.get("/healthz").status_code == 200
        with torch.no_grad():
            broken.patches_[0].bias_net.net[0].weight.fill_(float("nan"))  # breaks while serving
        health = client.get("/healthz")
        answer = client.post("/v1/predict", json={"instances": demo.X_test[:2].tolist()})
        assert client.get("/openapi.json").status_code == 200
    assert health.status_code == 503 and "the forward pass fails" in health.json()["detail"]
    assert answer.status_code == 500 and "no finite output" in answer.json()["detail"]
    with pytest.raises(ValueError, match="the eraser cannot serve: the forward pass fails"):
        create_app(broken, UPSTREAM)


def _corrupt_eps(directory):
    config = json.loads((directory / "eraser.json").read_text())
    config["params"]["eps"] = 5
    (directory / "eraser.json").write_text(json.dumps(config))


def _flip_a_weight_byte(directory):
    weights = directory / "patches.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))


@pytest.mark.parametrize("corrupt", [_corrupt_eps, _flip_a_weight_byte])
def test_serve_refuses_an_eraser_that_fails_validation(eraser, tmp_path, capsys, corrupt):
    from ruleeraser.cli import main

    directory = eraser.save(tmp_path / "eraser")
    corrupt(directory)
    assert main(["serve", "--eraser", str(directory), "--upstream", UPSTREAM]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(directory) in err and "Traceback" not in err


def test_wide_rows_answer_as_the_eraser(tmp_path):
    wide = make_demo(1, n_train=1500, n_calib=400, n_test=40, n_features=404)
    eraser = Eraser(wide.model, random_state=0, max_epochs=5).fit(
        wide.X_calib, wide.y_calib, bias=wide.bias_calib
    )
    rows = wide.X_test
    upstream = Recorder(wide.model, delay=0.2)
    bodies = [_body(rows[i : i + 8]) for i in range(0, 40, 8)]
    with proxy_on_loopback(eraser, upstream, max_inflight=1) as url:
        answers, _ = post_all(url, bodies, first=_body(rows[:1]))
    first, *answers = answers
    # the coalesced call's body is large enough to go out in pieces after its headers
    assert len(upstream.bodies[-1]) >= SEPARATE_BODY_BYTES
    # every client's rows, whole (the clients' requests may reach the proxy in any order)
    assert sorted(json.loads(upstream.bodies[-1])["instances"]) == sorted(
        row for body in bodies for row in json.loads(body)["instances"]
    )
    fair = np.concatenate([a.json()["predictions"] for a in answers])
    assert np.abs(fair - eraser.predict_proba(rows)).max() <= 1e-6
    assert np.abs(np.array(first.json()["predictions"]) - eraser.predict_proba(rows[:1])).max() == 0


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_body_in_pieces_reaches_the_upstream_whole(demo, loop):
    """Pieces of a body of 64 KiB or more go out unjoined on uvloop (one writelines), joined
    on asyncio's loop; either way the upstream gets the body they make."""
    rows = np.tile(demo.X_test[:8], (150, 1))
    texts = [wire.dumps(row) for row in rows.tolist()]
    parts = [",".join(texts[:600]), ",".join(texts[600:])]
    pieces = wire.rows_body_pieces([parts[0], memoryview(parts[1].encode())])
    assert sum(len(piece) for piece in pieces) >= SEPARATE_BODY_BYTES
    recorder = Recorder(demo.model, delay=0)
    event_loop = (
        pytest.importorskip("uvloop").new_event_loop()
        if loop == "uvloop"
        else asyncio.new_event_loop()
    )
    try:
        with serving(handler_app(recorder)) as url:
            upstream = Upstream(f"{url}/predict", timeout=10, max_connections=2)
            proba = event_loop.run_until_complete(upstream.query(pieces, len(rows)))
            event_loop.run_until_complete(upstream.aclose())
    finally:
        event_loop.close()
    assert recorder.bodies == [wire.rows_body(parts)]
    assert np.allclose(proba, demo.model.predict_proba(rows))


class _Transport(asyncio.Transport):
    """A connection that drops what the server writes."""

    def get_extra_info(self, name, default=None):
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 9)}.get(name, default)

    def write(self, data):
        pass

    def is_closing(self):
        return False

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


@pytest.mark.parametrize("pieces", [1, 2, 5])
def test_the_protocol_hands_over_a_body_in_one_piece_as_read(pieces):
    body = json.dumps({"instances": [[0.25] * 404] * 8}).encode()
    head = b"POST /v1/predict HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(body)
    cuts = np.linspace(0, len(body), pieces + 1).astype(int)
    received = []

    async def app(scope, receive, send):
        while True:
            message = await receive()
            received.append(message["body"])
            if not message["more_body"]:
                break
        headers = [(b"content-length", b"0")]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def serve():
        config = uvicorn.Config(app, log_level="warning", **uvicorn_options(access_log=False))
        config.load()
        protocol = config.http_protocol_class(config, ServerState(), {})
        transport = _Transport()
        protocol.connection_made(transport)
        held = []
        for start, stop in zip(cuts[:-1], cuts[1:], strict=True):  # all before the app reads
            protocol.data_received((head if start == 0 else b"") + body[start:stop])
            held.append(type(protocol.cycle.body))
        await asyncio.wait_for(asyncio.gather(*protocol.tasks), 10)
        return held

    held = asyncio.run(serve())
    assert held == [bytes] + [bytearray] * (pieces - 1)  # uvicorn's buffer from a second piece
    assert b"".join(received) == body


READER = RequestReader((2,), 3, 1e30, api_models(2, 3, 1e30).request)


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [[1, 2.5]]}',
        b'{"instances": [[-0, 1E5], [1e-7, -3.25e2]], "return_original": true}',
        b' {"return_original": false, "instances": [ [0.1 , 0.2] ] } ',
        b'{"instances": [[1e30, -1e30]]}',
    ],
)
def test_the_fast_reader_reads_what_the_schema_reads(body):
    fast, checked = READER._fast(body), READER._checked(body)
    assert fast is not None
    assert fast.X.dtype == np.float32 and np.array_equal(fast.X, checked.X)
    assert fast.return_original == checked.return_original
    assert json.loads(b"[" + fast.text + b"]") == json.loads(body)["instances"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b'{"instances": [[[1], [2]], [3, 4]]}', 422, "instances[0][0]: Input should be a valid"),
        (b'{"instances": [[1, 2, 3], [4]]}', 422, "must hold 2 numbers"),
        (b'{"instances": [[1, true]]}', 422, "instances[0][1]: Input should be a valid number"),
        (b'{"instances": [[1, null]]}', 422, "instances[0][1]: Input should be a valid number"),
        (b'{"instances": [[1, {}]]}', 422, "instances[0][1]: Input should be a valid number"),
        (b'{"instances": [[1, "]"]]}', 422, "instances[0][1]: Input should be a valid number"),
        # as many numbers as the width, one of them in an array of its own
        (b'{"instances": [[[], [1, 2]]]}', 422, "instances[0][0]: Input should be a valid"),
        (b'{"instances": [[1, 2]], "instances": [[3, 4], [5]]}', 422, "must hold 2 numbers"),
        (b'{"instances": [[1, 2]], "instances": [[1, "2"]]}', 422, "valid number"),
        (b'{"instances": [[1, 2e30]]}', 422, "less than or equal to 1e+30"),
        (b'{"instances": [[1, 1e999]]}', 422, "finite number"),
        (b'{"instances": [[1, 2]] ', 400, "not valid JSON"),
        (b'{"instances": [[1, 2], [1, 2], [1, 2], [1, 2]]}', 413, "at most 3"),
        (b'{"instances": [[1, 2]], "return_original": 1}', 422, "valid boolean"),
    ],
)
def test_what_the_fast_reader_leaves_the_schema_names(body, status, message):
    assert READER._fast(body) is None
    with pytest.raises(Refusal) as refusal:
        READER.read(body)
    assert refusal.value.status == status and message in refusal.value.detail
