import json
import os
import pickle
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from ruleeraser import Eraser
from ruleeraser.fingerprint import N_PROBES
from ruleeraser.http_model import (
    CACHE_FILE,
    CacheFileError,
    HTTPModel,
    HTTPModelError,
    QueryBudgetExceeded,
    QueryInterrupted,
)
from ruleeraser.model_files import load_model, sklearn_blackbox

COLUMNS = ["x0", "x1", "x2", "b"]


def make_data(n, rng):
    y = rng.integers(0, 2, n)
    b = np.where(rng.random(n) < 0.85, y, 1 - y)
    X = np.c_[y + rng.normal(0, 1, n), rng.normal(0, 1, (n, 2)), b]
    return X, y, b


class Handler(BaseHTTPRequestHandler):
    """Answers with the server's model; ``server.script`` queues (status, headers, body)
    answers to give first."""

    def do_POST(self):
        server = self.server
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with server.lock:
            scripted = server.script.pop(0) if server.script else None
        if scripted is not None:
            return self._reply(*scripted)
        if self.path == "/fail":
            return self._reply(500, {}, "boom: the model is down")
        if self.path == "/missing":
            return self._reply(404, {}, "no such model")
        if self.path == "/slow":
            time.sleep(0.6)
        if self.path.startswith("/v2/"):
            (tensor,) = request["inputs"]
            X = np.asarray(tensor["data"], dtype=float).reshape(tensor["shape"])
        elif self.path == "/custom":
            X = np.asarray(request["data"]["rows"], dtype=float)
        elif self.path == "/records":
            X = pd.DataFrame(request["instances"])[COLUMNS].to_numpy()
        else:
            X = np.asarray(request["instances"], dtype=float)
        with server.lock:
            server.rows.append(len(X))
        proba = server.model.predict_proba(X)
        if self.path == "/short":
            proba = proba[:-1]
        if self.path.startswith("/v2/"):
            outputs = [
                {"name": "label", "shape": [len(X)], "datatype": "INT64", "data": [0] * len(X)},
                {
                    "name": "probabilities",
                    "shape": list(proba.shape),
                    "datatype": "FP64",
                    "data": proba.reshape(-1).tolist(),
                },
            ]
            return self._reply(200, {}, {"outputs": outputs})
        if self.path == "/custom":
            return self._reply(200, {}, {"result": [{"scores": proba.tolist()}]})
        return self._reply(200, {}, {"predictions": proba.tolist()})

    def _reply(self, status, headers, body):
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the client gave up (timeout test)

    def log_message(self, *args):
        pass


class ModelServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    model = LogisticRegression().fit(*make_data(2000, rng)[:2])
    return model, make_data(200, rng)


@pytest.fixture
def server(data):
    httpd = ModelServer(("127.0.0.1", 0), Handler)
    httpd.model, httpd.lock, httpd.script, httpd.rows = data[0], threading.Lock(), [], []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


def test_instances_protocol_matches_the_model(server, data):
    model, (X, _, _) = data
    with HTTPModel(server.url + "/instances", rows_per_request=64) as http:
        out = http(X)
    np.testing.assert_allclose(out, model.predict_proba(X), rtol=1e-12)
    assert (http.rows_sent, http.requests_sent, http.cache_hits) == (200, 4, 0)
    assert sorted(server.rows) == [8, 64, 64, 64]


def test_kserve_v2_needs_the_output_name_when_there_are_several(server, data):
    model, (X, _, _) = data
    url = server.url + "/v2/models/m/infer"
    with pytest.raises(HTTPModelError, match=r"outputs \['label', 'probabilities'\]"):
        HTTPModel(url, protocol="kserve-v2")(X[:5])
    box = load_model(url, protocol="kserve-v2", output_name="probabilities", rows_per_request=50)
    np.testing.assert_allclose(box(X), model.predict_proba(X), rtol=1e-6)
    assert box.n_queries == 200 and box.fn.requests_sent == 4


def test_custom_mapping_and_records(server, data):
    model, (X, _, _) = data
    custom = HTTPModel(
        server.url + "/custom",
        protocol="custom",
        request_key="data.rows",
        response_key="result.0.scores",
    )
    np.testing.assert_allclose(custom(X), model.predict_proba(X), rtol=1e-12)
    records = HTTPModel(server.url + "/records", row_format="records")
    frame = pd.DataFrame(X, columns=COLUMNS)[["b", "x2", "x1", "x0"]]  # keyed, not ordered
    np.testing.assert_allclose(records(frame), model.predict_proba(X), rtol=1e-12)
    with pytest.raises(TypeError, match="needs a DataFrame"):
        records(X)
    with pytest.raises(ValueError, match="request_key and response_key"):
        HTTPModel(server.url, protocol="custom")


def test_500_then_success_is_retried(server, data):
    model, (X, _, _) = data
    server.script += [(500, {}, "overloaded"), (503, {}, "again")]
    sleeps = Sleeps()
    http = HTTPModel(
        server.url, rows_per_request=1000, retries=3, backoff=0.5, sleep=sleeps, seed=0
    )
    np.testing.assert_allclose(http(X), model.predict_proba(X), rtol=1e-12)
    assert http.requests_sent == 3 and http.rows_sent == 200  # retries resend, count once
    assert len(sleeps) == 2 and 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0


def test_429_honours_retry_after(server, data):
    model, (X, _, _) = data
    server.script.append((429, {"Retry-After": "7"}, "slow down"))
    sleeps = Sleeps()
    http = HTTPModel(server.url, rows_per_request=1000, sleep=sleeps)
    np.testing.assert_allclose(http(X), model.predict_proba(X), rtol=1e-12)
    assert sleeps == [7.0]


def test_persistent_500_names_the_rows_and_stops_sending(server, data):
    X = data[1][0]
    sleeps = Sleeps()
    http = HTTPModel(server.url + "/fail", rows_per_request=10, max_concurrency=1, sleep=sleeps)
    with pytest.raises(HTTPModelError, match=r"rows 0-9: HTTP 500: 'boom.*' after 4 attempts"):
        http(X[:30])
    assert http.requests_sent == 4 and len(sleeps) == 3  # later batches never sent


def test_client_errors_are_not_retried(server, data):
    http = HTTPModel(server.url + "/missing", sleep=Sleeps())
    with pytest.raises(HTTPModelError, match="rows 0-4: HTTP 404: 'no such model'"):
        http(data[1][0][:5])
    assert http.requests_sent == 1


def test_wrong_row_count_is_an_error(server, data):
    http = HTTPModel(server.url + "/short", rows_per_request=10, max_concurrency=1)
    with pytest.raises(HTTPModelError, match=r"rows 0-9: the model returned 9 row\(s\).*10"):
        http(data[1][0][:20])
    assert http.requests_sent == 1


def test_slow_response_times_out(server, data):
    http = HTTPModel(server.url + "/slow", timeout=0.2, retries=0)
    with pytest.raises(HTTPModelError, match=r"rows 0-4: timed out after 0.2 s"):
        http(data[1][0][:5])


def test_connection_errors_are_retried():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    sleeps = Sleeps()
    http = HTTPModel(f"http://127.0.0.1:{port}", retries=2, sleep=sleeps)
    with pytest.raises(HTTPModelError, match="connection failed.*after 3 attempts"):
        http(np.zeros((3, 4)))
    assert len(sleeps) == 2


def test_budget_is_never_exceeded(server, data):
    X = data[1][0]
    http = HTTPModel(server.url, budget=150, rows_per_request=32)
    with pytest.raises(QueryBudgetExceeded, match="200 row.*150 of the budget of 150"):
        http(X)
    assert server.rows == [] and http.rows_sent == 0
    http(X[:150])
    with pytest.raises(QueryBudgetExceeded, match="1 row"):
        http(X[150:151])
    assert sum(server.rows) == http.rows_sent == 150


def test_bad_rows_are_refused_before_sending(server):
    X = np.zeros((4, 4))
    X[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite.*rows 2"):
        HTTPModel(server.url)(X)
    assert server.rows == []


def test_cache_sends_only_missing_rows(server, data, tmp_path):
    model, (X, _, _) = data
    http = HTTPModel(server.url, cache_dir=tmp_path, rows_per_request=16)
    http(X[:50])
    out = http(np.r_[X[:100], X[:10]])  # 50 cached, 50 new, 10 repeated
    np.testing.assert_allclose(out[:100], model.predict_proba(X[:100]), rtol=1e-12)
    assert (http.rows_sent, http.cache_hits) == (100, 60)
    again = HTTPModel(server.url, cache_dir=tmp_path, budget=0)  # a new process, same cache
    assert again.pending(X[:120]) == 20
    np.testing.assert_array_equal(again(X[:100]), out[:100])
    assert again.rows_sent == 0 and sum(server.rows) == 100
    other = HTTPModel(server.url + "/records", row_format="records", cache_dir=tmp_path)
    assert other.pending(pd.DataFrame(X[:5], columns=COLUMNS)) == 5  # other URL, other key


def test_error_keeps_the_answers_received(server, data, tmp_path):
    X = data[1][0]
    server.script += [(200, {}, {"predictions": [[0.5, 0.5]] * 10}), (400, {}, "bad batch")]
    http = HTTPModel(server.url, cache_dir=tmp_path, rows_per_request=10, max_concurrency=1)
    with pytest.raises(HTTPModelError, match="rows 10-19: HTTP 400"):
        http(X[:30])
    assert http.pending(X[:30]) == 20


def test_fitting_twice_with_the_cache_queries_once(server, data, tmp_path):
    model, (X, y, b) = data
    frame = pd.DataFrame(X, columns=COLUMNS)

    def fit():
        box = load_model(server.url, cache_dir=tmp_path / "cache", rows_per_request=64)
        return Eraser(box, random_state=0, max_epochs=3).fit(frame, y, bias=b), box.fn

    first, http = fit()
    paid = len(X) + N_PROBES  # the calibration rows and the fingerprint's probe rows
    assert http.rows_sent == first.n_queries_ + N_PROBES == paid and sum(server.rows) == paid
    second, http = fit()
    assert http.rows_sent == 0 and http.cache_hits == paid and sum(server.rows) == paid
    reference = Eraser(sklearn_blackbox(model), random_state=0, max_epochs=3).fit(frame, y, bias=b)
    np.testing.assert_allclose(second.predict_proba(frame), reference.predict_proba(frame))
    assert http.rows_sent == 0
    http.close()
    with pytest.raises(RuntimeError, match="is closed"):
        http(X)


def test_command_line_fit_twice_queries_once(server, data, tmp_path, capsys):
    from ruleeraser.cli import main

    X, y, b = data[1]
    pd.DataFrame(X, columns=COLUMNS).assign(y=y).to_csv(tmp_path / "calib.csv", index=False)
    args = [
        "fit", "--model", server.url, "--data", str(tmp_path / "calib.csv"), "--target", "y",
        "--bias", "b", "--features", *COLUMNS, "--out", str(tmp_path / "eraser"),
        "--cache-dir", str(tmp_path / "cache"), "--max-epochs", "2", "--quiet",
    ]  # fmt: skip
    assert main(args) == 0  # the calibration rows, then the fingerprint's probe rows
    assert "216 rows sent in 2 request(s), 0 answered" in capsys.readouterr().out
    assert main([*args, "--budget", "0", "--overwrite"]) == 0
    assert "0 rows sent in 0 request(s), 216 answered" in capsys.readouterr().out
    assert sum(server.rows) == 216
    assert main([*args, "--budget", "0", "--protocol", "kserve-v2", "--overwrite"]) == 1
    assert "200 row(s) need an answer" in capsys.readouterr().err and sum(server.rows) == 216


def test_batch_size_is_the_deprecated_name_of_rows_per_request(server, data):
    with pytest.warns(DeprecationWarning, match="use rows_per_request"):
        http = HTTPModel(server.url, batch_size=64)
    assert http.rows_per_request == 64
    http(data[1][0])
    assert sorted(server.rows) == [8, 64, 64, 64]


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("url", "ftp://model", ValueError),
        ("protocol", "grpc", ValueError),
        ("row_format", "columns", ValueError),
        ("rows_per_request", 0, ValueError),
        ("rows_per_request", 2.5, TypeError),
        ("max_concurrency", 0, ValueError),
        ("timeout", 0, ValueError),
        ("timeout", "30", TypeError),
        ("retries", -1, ValueError),
        ("backoff", float("nan"), ValueError),
        ("max_backoff", -1.0, ValueError),
        ("budget", -5, ValueError),
        ("cache_dir", 5, TypeError),
        ("headers", ["Authorization: x"], TypeError),
        ("progress", "yes", TypeError),
        ("sleep", 1.0, TypeError),
        ("input_name", 3, TypeError),
    ],
)
def test_every_parameter_is_checked_by_name(name, value, error):
    params = {"url": "http://127.0.0.1:9/predict", name: value}
    with pytest.raises(error, match=rf"^{name} must be "):
        HTTPModel(**params)


def test_a_damaged_cache_file_is_named_and_left_alone(server, data, tmp_path, capsys):
    from ruleeraser.cli import main

    damaged = tmp_path / "cache" / CACHE_FILE
    damaged.parent.mkdir()
    damaged.write_bytes(b"these are not the answers you are looking for\n" * 100)
    before = damaged.read_bytes()
    with pytest.raises(CacheFileError, match=r"move it aside \(mv .*http-cache.sqlite3 ") as info:
        HTTPModel(server.url, cache_dir=damaged.parent)
    assert info.value.path == damaged and str(damaged) in str(info.value)
    X, y, b = data[1]
    pd.DataFrame(X, columns=COLUMNS).assign(y=y).to_csv(tmp_path / "calib.csv", index=False)
    status = main(
        ["fit", "--model", server.url, "--data", str(tmp_path / "calib.csv"), "--target", "y",
         "--bias", "b", "--features", *COLUMNS, "--out", str(tmp_path / "eraser"),
         "--cache-dir", str(damaged.parent), "--quiet"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert status != 0 and len(err.splitlines()) == 1 and str(damaged) in err
    assert damaged.read_bytes() == before and server.rows == []  # kept, and nothing sent


def test_command_line_batch_size_still_works_with_a_warning(server, data, tmp_path, capsys):
    from ruleeraser.cli import main

    X, y, b = data[1]
    pd.DataFrame(X, columns=COLUMNS).assign(y=y).to_csv(tmp_path / "calib.csv", index=False)
    args = [
        "fit", "--model", server.url, "--data", str(tmp_path / "calib.csv"), "--target", "y",
        "--bias", "b", "--features", *COLUMNS, "--out", str(tmp_path / "eraser"),
        "--max-epochs", "2", "--quiet",
    ]  # fmt: skip
    assert main([*args, "--batch-size", "64"]) == 0
    captured = capsys.readouterr()
    assert "--batch-size is deprecated and will be removed in 0.3; use --rows-per-request" in (
        captured.err
    )
    assert "216 rows sent in 5 request(s)" in captured.out  # 16 probe rows in the last
    assert main([*args, "--rows-per-request", "100", "--overwrite"]) == 0
    captured = capsys.readouterr()
    assert "216 rows sent in 3 request(s)" in captured.out and "deprecated" not in captured.err


class SlowModelHandler(BaseHTTPRequestHandler):
    """The server's model, ``server.delay`` seconds per request; ``server.paid`` counts the
    rows of every request received (answered or not)."""

    def do_POST(self):
        rows = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["instances"]
        with self.server.lock:
            self.server.paid.append(len(rows))
        time.sleep(self.server.delay)
        proba = self.server.model.predict_proba(np.asarray(rows, dtype=float))
        data = json.dumps({"predictions": proba.tolist()}).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass

    def log_message(self, *args):
        pass


def test_ctrl_c_during_an_http_fit_keeps_every_answer_and_a_rerun_pays_only_the_rest(
    data, tmp_path
):
    rng = np.random.default_rng(5)
    X, y, b = make_data(600, rng)
    pd.DataFrame(X, columns=COLUMNS).assign(y=y).to_csv(tmp_path / "calib.csv", index=False)
    httpd = ModelServer(("127.0.0.1", 0), SlowModelHandler)
    httpd.model, httpd.lock, httpd.paid, httpd.delay = data[0], threading.Lock(), [], 0.25
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    command = [
        sys.executable, "-m", "ruleeraser.cli", "fit",
        "--model", f"http://127.0.0.1:{httpd.server_address[1]}/predict",
        "--data", str(tmp_path / "calib.csv"), "--target", "y", "--bias", "b",
        "--features", *COLUMNS, "--out", str(tmp_path / "eraser"),
        "--cache-dir", str(tmp_path / "cache"), "--rows-per-request", "20",
        "--max-concurrency", "2", "--max-epochs", "2", "--quiet",
    ]  # fmt: skip
    # A background job's SIGINT is ignored, and an ignored signal stays ignored in the child;
    # a handler in this process is reset to the default there, as from a terminal.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        fit = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while len(httpd.paid) < 6:  # three rounds of two requests are out
            assert fit.poll() is None and time.monotonic() < deadline, fit.communicate()
            time.sleep(0.01)
        with httpd.lock:
            os.kill(fit.pid, signal.SIGINT)
            interrupted_at, paid_at_signal = time.monotonic(), sum(httpd.paid)
        line = fit.stderr.readline().strip()
        said_at = time.monotonic()
        out, rest = fit.communicate(timeout=60)
        exited_at = time.monotonic()
        paid_first = sum(httpd.paid)
        httpd.delay = 0.0
        rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    finally:
        signal.signal(signal.SIGINT, previous)
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
    said, exited = said_at - interrupted_at, exited_at - interrupted_at
    print(f"after SIGINT: its line {said:.2f} s, exit {exited:.2f} s; {paid_at_signal} rows paid")
    assert fit.returncode == 130 and not out and not rest  # one line, no traceback
    assert line.startswith("ruleeraser fit: error: interrupted: stopped sending to the model")
    assert said_at - interrupted_at < 1.0
    assert paid_first - paid_at_signal <= 2 * 20  # at most the requests already on their way
    cached = int(line.split(" rows cached in ")[0].rsplit("(", 1)[1])
    assert cached == paid_first < 600  # every row paid for was answered and cached
    assert rerun.returncode == 0, rerun.stderr
    paid_rerun = 600 - cached + N_PROBES  # the rest, then the fingerprint's probe rows
    assert f"{paid_rerun} rows sent" in rerun.stdout and f"{cached} answered from the" in (
        rerun.stdout
    )
    assert sum(httpd.paid) == 600 + N_PROBES  # distinct rows, not one paid twice


@pytest.mark.parametrize(
    "error",
    [
        HTTPModelError("model at http://x answered 500 for rows 3-9", (3, 9)),
        QueryBudgetExceeded(needed=50, budget=100, sent=80),
        QueryInterrupted(answered=4, unanswered=6, cached=4, cache=Path("c/http-cache.sqlite3")),
        CacheFileError(
            Path("c/http-cache.sqlite3"), sqlite3.DatabaseError("file is not a database")
        ),
    ],
    ids=lambda error: type(error).__name__,
)
def test_errors_cross_process_boundaries(error):
    """Ray and Dask pickle a worker's exception to re-raise it in the caller: the copy keeps
    its type, message and fields."""
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error)
    assert {k: str(v) for k, v in vars(copy).items()} == {k: str(v) for k, v in vars(error).items()}
