"""``ruleeraser serve`` in front of an upstream that needs credentials: headers given by
reference (``$VAR``, ``--header-file``) whose values leak into no log, no command line, no
``/healthz`` and no worker variable; ``X-Request-Id`` passed through; HTTPS."""

import argparse
import asyncio
import os
import re
import shutil
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
import uvicorn
import uvicorn.supervisors
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from ruleeraser import Eraser
from ruleeraser.serve import ENV, add_serve_parser, create_app, create_app_from_env, uvicorn_options
from ruleeraser.serve.headers import UpstreamHeaders

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from example_upstream import make_demo  # noqa: E402

SECRET = "s3cret"
TOKEN = f"Bearer {SECRET}"
HEX_ID = re.compile(r"[0-9a-f]{32}")


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


class Guarded:
    """An upstream answering 401 unless ``Authorization: Bearer s3cret``; it records the
    headers of every call (after ``delay`` seconds)."""

    def __init__(self, model, delay=0.0):
        self.model, self.delay, self.calls = model, delay, []
        self.app = FastAPI()
        self.app.post("/predict")(self.predict)

    async def predict(self, request: Request):
        self.calls.append(dict(request.headers))
        await asyncio.sleep(self.delay)
        if request.headers.get("authorization") != TOKEN:
            return JSONResponse({"detail": "unauthorised"}, status_code=401)
        X = np.asarray((await request.json())["instances"], dtype=np.float64)
        return {"predictions": self.model.predict_proba(X).tolist()}

    def ids(self):
        return [call.get("x-request-id") for call in self.calls]


@contextmanager
def serving(app, config=None, sockets=None):
    """Serve ``app`` (or a ready ``config`` on ``sockets``) with uvicorn in a thread; the URL."""
    if config is None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        sockets = [sock]
        config = uvicorn.Config(app, log_level="warning", **uvicorn_options(access_log=False))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=SERVER_RUN, args=(server, sockets), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.01)
    try:
        yield f"127.0.0.1:{sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)


SERVER_RUN = uvicorn.Server.run  # the real one, should a test replace it


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_args(*options):
    parser = argparse.ArgumentParser()
    add_serve_parser(parser.add_subparsers())
    return parser.parse_args(["serve", *options])


def test_serve_sends_the_token_from_the_environment_and_shows_it_nowhere(
    demo, eraser, eraser_dir, tmp_path
):
    """A real ``ruleeraser serve`` process: 200 and ``Eraser.predict_proba``; the token is in
    no log line, not on its command line, not in /healthz."""
    rows = demo.X_test[:20]
    upstream = Guarded(demo.model)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RULEERASER_SERVE_")}
    env["MODEL_TOKEN"] = TOKEN
    port = free_port()
    with serving(upstream.app) as where, open(tmp_path / "serve.log", "wb") as log:
        command = [
            sys.executable, "-m", "ruleeraser.cli", "serve", "--eraser", str(eraser_dir),
            "--upstream", f"http://{where}/predict", "--port", str(port),
            "--header", "Authorization: $MODEL_TOKEN",
        ]  # fmt: skip
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                _wait_until_up(client, server)
                cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes()
                named = client.post(
                    "/v1/predict",
                    json={"instances": rows.tolist()},
                    headers={"X-Request-Id": "client-7"},
                )
                unnamed = client.post("/v1/predict", json={"instances": rows[:2].tolist()})
                health = client.get("/healthz", params={"upstream": "true"})
        finally:
            server.terminate()
            server.wait(20)
    assert SECRET not in cmdline.decode() and "$MODEL_TOKEN" in cmdline.decode()
    assert named.status_code == 200, named.text
    np.testing.assert_allclose(
        named.json()["predictions"], eraser.predict_proba(rows), rtol=0, atol=1e-6
    )
    assert named.headers["x-request-id"] == "client-7" and "client-7" in upstream.ids()
    assert unnamed.status_code == 200 and HEX_ID.fullmatch(unnamed.headers["x-request-id"])
    assert unnamed.headers["x-request-id"] in upstream.ids()
    assert health.status_code == 200 and health.json()["upstream_headers"] == ["Authorization"]
    assert SECRET not in health.text
    logged = (tmp_path / "serve.log").read_text()
    assert "upstream headers Authorization" in logged and "POST /v1/predict" in logged
    assert "not checked" not in logged  # the check at start sent the token too
    assert SECRET not in logged
    assert all(call["authorization"] == TOKEN for call in upstream.calls)


def _wait_until_up(client, server):
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert server.poll() is None, "ruleeraser serve exited"
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("ruleeraser serve did not start")


def test_without_the_header_the_upstream_refuses_and_with_it_answers(demo, eraser_dir):
    upstream = Guarded(demo.model)
    rows = {"instances": demo.X_test[:3].tolist()}
    with serving(upstream.app) as where:
        with TestClient(create_app(eraser_dir, f"http://{where}/predict")) as client:
            refused = client.post("/v1/predict", json=rows)
            health = client.get("/healthz").json()
        app = create_app(eraser_dir, f"http://{where}/predict", headers={"Authorization": TOKEN})
        with TestClient(app) as client:
            answered = client.post("/v1/predict", json=rows)
    assert refused.status_code == 502 and "HTTP 401" in refused.json()["detail"]
    assert "upstream_headers" not in health  # none sent
    assert answered.status_code == 200, answered.text
    for bad in ({"Content-Length": "1"}, {"X-Request-Id": "a"}, {"Bad Name": "x"}):
        with pytest.raises(ValueError, match="upstream header"):
            create_app(eraser_dir, f"http://{where}/predict", headers=bad)
    with pytest.raises(ValueError, match="Authorization: the value holds a line break") as info:
        create_app(eraser_dir, f"http://{where}/predict", headers={"Authorization": "a\r\nb"})
    assert "a\r\nb" not in str(info.value)


def test_a_missing_variable_or_file_is_refused_naming_it_never_a_value(
    eraser_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.delenv("RULEERASER_TEST_NO_TOKEN", raising=False)
    monkeypatch.setenv("RULEERASER_TEST_EMPTY", "")
    empty_variable = tmp_path / "empty.headers"
    empty_variable.write_text("# the gateway's\nAuthorization: $RULEERASER_TEST_EMPTY\n")
    secret_line = tmp_path / "bad.headers"
    secret_line.write_text(f"# the token\n\nX-Team: fairness\n{TOKEN}\n")
    missing = tmp_path / "none"
    base = ["--eraser", str(eraser_dir), "--upstream", "http://127.0.0.1:9/predict"]
    for options, message in [
        (["--header", "Authorization: $RULEERASER_TEST_NO_TOKEN"],
         "--header Authorization: the environment variable RULEERASER_TEST_NO_TOKEN is not set"),
        (["--header", "Authorization: $RULEERASER_TEST_EMPTY"],
         "the environment variable RULEERASER_TEST_EMPTY is empty"),
        (["--header-file", str(missing)], f"--header-file {missing}: no such file"),
        (["--header-file", str(empty_variable)],
         f"--header-file {empty_variable}, line 2 Authorization: the environment variable "
         "RULEERASER_TEST_EMPTY is empty"),
        (["--header-file", str(secret_line)], f"{secret_line}, line 4: must look like"),
        (["--header", TOKEN], "--header: must look like 'NAME: VALUE'"),
    ]:  # fmt: skip
        args = serve_args(*base, *options)
        assert args.run(args) == 2, options
        err = capsys.readouterr().err
        assert message in err and SECRET not in err, (options, err)
        assert err.startswith("ruleeraser serve: error:") and len(err.splitlines()) == 1
    assert UpstreamHeaders(headers=("X-Team: $5",)).resolve() == {"X-Team": "$5"}  # literal
    later = UpstreamHeaders(headers=("X-Team: a", "x-team: b"))  # replaces, any case
    assert later.resolve() == {"x-team": "b"}


def test_header_files_and_workers_get_references_not_values(
    demo, eraser_dir, tmp_path, monkeypatch, capsys
):
    """``--workers 2``: the worker variables name ``$MODEL_TOKEN`` and the file; the worker's
    app (built from them) sends every header."""
    calls = []
    monkeypatch.setattr(uvicorn.supervisors.Multiprocess, "run", lambda s: calls.append(s))
    for name in ENV.values():
        monkeypatch.setenv(name, "")  # restored after the test
    monkeypatch.setenv("MODEL_TOKEN", TOKEN)
    header_file = tmp_path / "upstream.headers"
    header_file.write_text(
        "# for the model's gateway\n\nAuthorization: $MODEL_TOKEN\n  X-Team:  fairness \n"
    )
    upstream = Guarded(demo.model)
    with serving(upstream.app) as where:
        args = serve_args(
            "--eraser", str(eraser_dir), "--upstream", f"http://{where}/predict", "--port", "0",
            "--workers", "2", "--header-file", str(header_file), "--header", "X-Client: proxy",
            "--header", "X-Api-Key: k3y-literal",
        )  # fmt: skip
        assert args.run(args) == 0
        [supervisor] = calls
        supervisor.sockets[0].close()
        err = capsys.readouterr().err
        assert "--header X-Api-Key is given on the command line" in err and "k3y" not in err
        holding = [k for k, v in os.environ.items() if SECRET in v]
        assert holding == ["MODEL_TOKEN"]  # the workers' variables hold references
        assert os.environ[ENV["header_files"]] == f'["{header_file.resolve()}"]'
        assert "$MODEL_TOKEN" not in os.environ[ENV["headers"]]  # it came from the file
        with TestClient(create_app_from_env()) as client:  # what each worker builds
            answer = client.post("/v1/predict", json={"instances": demo.X_test[:2].tolist()})
            health = client.get("/healthz").json()
    assert answer.status_code == 200, answer.text
    sent = upstream.calls[-1]
    assert sent["authorization"] == TOKEN and sent["x-team"] == "fairness"
    assert sent["x-client"] == "proxy" and sent["x-api-key"] == "k3y-literal"
    assert health["upstream_headers"] == ["Authorization", "X-Team", "X-Client", "X-Api-Key"]


def test_request_ids_pass_through_to_the_upstream_and_come_back(demo, eraser_dir):
    upstream = Guarded(demo.model)
    rows = {"instances": demo.X_test[:2].tolist()}
    with serving(upstream.app) as where:
        app = create_app(eraser_dir, f"http://{where}/predict", headers={"Authorization": TOKEN})
        with TestClient(app) as client:
            named = client.post("/v1/predict", json=rows, headers={"X-Request-Id": "abc-123"})
            unnamed = client.post("/v1/predict", json=rows)
            too_long = client.post("/v1/predict", json=rows, headers={"X-Request-Id": "x" * 201})
            refused = client.post("/v1/predict", content=b"{", headers={"X-Request-Id": "bad-1"})
    assert named.status_code == unnamed.status_code == too_long.status_code == 200
    assert named.headers["x-request-id"] == "abc-123"
    generated = [unnamed.headers["x-request-id"], too_long.headers["x-request-id"]]
    assert all(HEX_ID.fullmatch(i) for i in generated) and generated[0] != generated[1]
    assert upstream.ids() == ["abc-123", *generated]  # one call each, its request's id
    assert refused.status_code == 400 and refused.headers["x-request-id"] == "bad-1"


def test_a_coalesced_call_carries_one_of_its_requests_ids(demo, eraser_dir):
    upstream = Guarded(demo.model, delay=0.2)  # slow: the requests queue and share calls
    rows = {"instances": demo.X_test[:1].tolist()}

    async def post_all(url):
        async with httpx.AsyncClient(base_url=url, timeout=20) as client:
            posts = [
                client.post("/v1/predict", json=rows, headers={"X-Request-Id": f"r{i}"})
                for i in range(8)
            ]
            return await asyncio.gather(*posts)

    with serving(upstream.app) as where:
        app = create_app(eraser_dir, f"http://{where}/predict", headers={"Authorization": TOKEN})
        with serving(app) as proxy:
            answers = asyncio.run(post_all(f"http://{proxy}"))
    assert [a.status_code for a in answers] == [200] * 8
    assert [a.headers["x-request-id"] for a in answers] == [f"r{i}" for i in range(8)]
    ids = upstream.ids()
    assert len(ids) < 8 and set(ids) <= {f"r{i}" for i in range(8)}  # the first of each call


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate and its key for 127.0.0.1, made by openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (needed to make a self-signed certificate)")
    where = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(where / "key.pem"), "-out", str(where / "cert.pem"),
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return where / "cert.pem", where / "key.pem"


def test_serve_over_https(demo, eraser_dir, certificate, monkeypatch, capsys):
    cert, key = certificate
    calls = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda s, sockets: calls.append((s, sockets)))
    upstream = Guarded(demo.model)
    with serving(upstream.app) as where:
        base = ["--eraser", str(eraser_dir), "--upstream", f"http://{where}/predict"]
        monkeypatch.setenv("MODEL_TOKEN", TOKEN)
        tls = ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
        args = serve_args(*base, "--port", "0", "--header", "Authorization: $MODEL_TOKEN", *tls)
        assert args.run(args) == 0
        [(server, sockets)] = calls
        assert server.config.ssl_certfile == str(cert) and server.config.ssl_keyfile == str(key)
        with serving(None, server.config, sockets) as proxy:
            with httpx.Client(base_url=f"https://{proxy}", verify=False, timeout=10) as client:
                health = client.get("/healthz")
            with pytest.raises(httpx.TransportError):  # plain HTTP is not answered
                httpx.get(f"http://{proxy}/healthz", timeout=5)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    for options, message in [
        (["--ssl-certfile", str(cert.with_name("none.pem"))], "none.pem: no such file"),
        (["--ssl-certfile", str(cert), "--ssl-keyfile", "gone.pem"],
         "--ssl-keyfile gone.pem: no such file"),
        (["--ssl-keyfile", str(key)], "--ssl-keyfile needs --ssl-certfile"),
        (["--ssl-certfile", str(key), "--ssl-keyfile", str(key)], "not a certificate and its key"),
    ]:  # fmt: skip
        args = serve_args(*base, *options)
        assert args.run(args) == 2
        assert message in capsys.readouterr().err
    assert len(calls) == 1
