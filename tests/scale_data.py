"""What the scale-out tests share: a biased table split into a Parquet dataset, a skops model,
a saved eraser, the single-process eraser's answers, and a model served over HTTP."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import skops.io as sio
from sklearn.linear_model import LogisticRegression

from ruleeraser import Eraser
from ruleeraser.model_files import load_model

FEATURES = ["x0", "x1", "x2", "b"]
PROBA = ["proba_0", "proba_1"]


def make_rows(n, align, rng, first_id=0):
    y = rng.integers(0, 2, n)
    b = np.where(rng.random(n) < align, y, 1 - y)
    frame = pd.DataFrame(
        np.c_[y + rng.normal(0, 1, n), rng.normal(0, 1, (n, 2))], columns=FEATURES[:3]
    )
    return frame.assign(b=b.astype(float), y=y, id=np.arange(first_id, first_id + n))


def make_setup(root: Path, *, rows: int, files: int, row_group: int):
    """``root/model.skops``, ``root/eraser``, ``root/data/part-*.parquet`` (``files`` files,
    row groups of ``row_group`` rows); returns (root, the rows, their fair probabilities)."""
    rng = np.random.default_rng(0)
    train = make_rows(3000, 0.85, rng)
    model = LogisticRegression().fit(train[FEATURES], train["y"])
    sio.dump(model, root / "model.skops")
    calib = make_rows(600, 0.85, rng)
    eraser = Eraser(load_model(root / "model.skops"), max_epochs=20, random_state=0)
    eraser.fit(calib[FEATURES], calib["y"], bias=calib["b"]).save(root / "eraser")
    table = make_rows(rows, 0.5, rng, first_id=10_000)
    (root / "data").mkdir()
    for i, rows_of_file in enumerate(np.array_split(np.arange(rows), files)):
        part = table.iloc[rows_of_file]
        part.to_parquet(root / "data" / f"part-{i:03d}.parquet", row_group_size=row_group)
    expected = Eraser.load(root / "eraser", load_model(root / "model.skops"))
    return root, table, expected.predict_proba(table[FEATURES])


def check_output(got: pd.DataFrame, table: pd.DataFrame, fair: np.ndarray, tol=1e-6):
    """Every input row once, matched by id, with the single-process eraser's probabilities."""
    assert len(got) == len(table)
    assert got["id"].is_unique and set(got["id"]) == set(table["id"])
    got = got.set_index("id").loc[table["id"]]
    assert np.abs(got[PROBA].to_numpy() - fair).max() <= tol
    np.testing.assert_array_equal(got["prediction"], fair.argmax(axis=1))


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        server = self.server
        rows = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["instances"]
        with server.lock:
            must_wait = server.rows_seen >= server.open_rows
            server.requests += 1
            server.rows_seen += len(rows)
        if must_wait:
            server.gate.wait()
        X = pd.DataFrame(rows, columns=server.model.feature_names_in_)
        body = json.dumps({"predictions": server.model.predict_proba(X).tolist()})
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class ModelServer(ThreadingHTTPServer):
    """``model`` over the instances protocol on loopback; once ``open_rows`` rows have come,
    each further request waits until ``gate`` is set."""

    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client killed while its request waited

    def __init__(self, model, open_rows=10**12):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.model, self.lock, self.gate = model, threading.Lock(), threading.Event()
        self.requests = self.rows_seen = 0
        self.open_rows = open_rows
        self.url = f"http://127.0.0.1:{self.server_address[1]}/predict"
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()

    def settle(self, quiet=1.0, limit=60.0):
        """Wait until no request has come for ``quiet`` seconds (work still in flight after
        a job failed)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            seen = self.requests
            time.sleep(quiet)
            if self.requests == seen:
                return

    def stop(self):
        self.gate.set()
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=5)
