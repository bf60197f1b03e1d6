"""Fair scoring on a local Dask cluster (2 single-threaded worker processes on loopback,
started and stopped here): ``map_partitions`` and the partitioned Parquet job equal the
single-process eraser, survive a worker killed mid-request, and hold a URL model's row budget
across workers."""

import os
import signal
import threading
import time

import pandas as pd
import pytest
from scale_data import PROBA, ModelServer, check_output, make_setup

from ruleeraser.http_model import QueryBudgetExceeded
from ruleeraser.model_files import load_skops
from ruleeraser.scale import fair_predict_dask, predict_dataset
from ruleeraser.scale.dask_engine import dask_client

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")
psutil = pytest.importorskip("psutil")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return make_setup(tmp_path_factory.mktemp("dask"), rows=100_000, files=4, row_group=5000)


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def test_dask_equals_the_eraser_on_100k_rows(setup, client):
    root, table, fair = setup
    rows = dd.read_parquet(str(root / "data"))
    scored = fair_predict_dask(
        rows, eraser=root / "eraser", model=root / "model.skops", keys=["id"]
    )
    assert list(scored.columns) == ["id", *PROBA, "prediction"]
    got = scored.compute()
    assert list(got.dtypes) == list(scored.dtypes)  # the promised types are the real ones
    check_output(got, table, fair)


def test_dask_refuses_a_frame_without_the_features(setup, client):
    root, table, _ = setup
    rows = dd.from_pandas(table.drop(columns="x1").head(10), npartitions=1)
    with pytest.raises(ValueError, match=r"the Dask DataFrame has no column\(s\) \['x1'\]"):
        fair_predict_dask(rows, eraser=root / "eraser", model=root / "model.skops")


def kill_worker_mid_request(client, server, done):
    """SIGKILL a worker process while one of its requests waits at the server's gate; then
    open the gate."""
    port = server.server_address[1]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not done.is_set():
        for pid in client.run(os.getpid).values():
            try:
                connections = psutil.Process(pid).net_connections("tcp")
            except psutil.Error:
                continue
            if any(c.raddr and c.raddr.port == port for c in connections):
                os.kill(pid, signal.SIGKILL)
                server.gate.set()
                return pid
        time.sleep(0.05)
    server.gate.set()
    raise AssertionError("no worker was seen waiting on the model")


@pytest.mark.parametrize("path", ["map_partitions", "parquet job"])
def test_a_worker_killed_mid_request_leaves_a_complete_output(setup, client, tmp_path, path):
    root, table, fair = setup
    server = ModelServer(load_skops(root / "model.skops"), open_rows=0)  # every request waits
    first = root / "data" / "part-000.parquet"  # 25,000 rows in 5 row groups
    common = dict(eraser=root / "eraser", model=server.url, keys=["id"])
    out = tmp_path / "out"
    if path == "map_partitions":
        rows = dd.from_pandas(pd.read_parquet(first), npartitions=5)
        job = lambda: fair_predict_dask(rows, **common).compute()  # noqa: E731
    else:
        address = client.scheduler.address
        job = lambda: predict_dataset(  # noqa: E731
            first, out, engine="dask", address=address, partition_rows=5000, progress=False,
            **common,
        )  # fmt: skip
    done, box = threading.Event(), {}

    def target():
        try:
            box["result"] = job()
        except BaseException as exc:  # handed to the test
            box["error"] = exc
        finally:
            done.set()

    thread = threading.Thread(target=target)
    try:
        thread.start()
        kill_worker_mid_request(client, server, done)
        thread.join(timeout=300)
    finally:
        server.stop()
    assert "error" not in box, box.get("error")
    got = box["result"] if path == "map_partitions" else pd.read_parquet(out)
    check_output(got, table.iloc[:25_000], fair[:25_000])
    assert server.rows_seen > 25_000  # the killed worker's rows were sent again
    client.wait_for_workers(2, timeout=120)  # the nanny brings the worker back


def test_the_row_budget_holds_across_workers(setup, client, tmp_path):
    root, _, _ = setup
    server = ModelServer(load_skops(root / "model.skops"))
    try:
        with pytest.raises(QueryBudgetExceeded, match="budget of 12000"):
            predict_dataset(
                root / "data" / "part-000.parquet", tmp_path / "out", eraser=root / "eraser",
                model=server.url, engine="dask", address=client.scheduler.address,
                partition_rows=5000, budget=12_000, progress=False,
            )  # fmt: skip
        server.settle()
    finally:
        server.stop()
    # 5 partitions of 5,000 rows: two fit in the job's budget; a budget per worker would
    # have let each worker send two, 20,000 rows in all
    assert 5_000 <= server.rows_seen <= 12_000


def test_a_local_cluster_is_started_and_stopped(setup, tmp_path):
    root, table, fair = setup
    result = predict_dataset(
        root / "data" / "part-001.parquet", tmp_path / "out", eraser=root / "eraser",
        model=root / "model.skops", engine="dask", workers=1, keys=["id"], progress=False,
    )  # fmt: skip
    assert result.written == 1 and len(result.peak_mb) == 2  # one worker and this process
    check_output(pd.read_parquet(tmp_path / "out"), table.iloc[25_000:50_000], fair[25_000:50_000])


def test_the_local_cluster_keeps_glibcs_malloc_thresholds(monkeypatch):
    # Dask gives its workers MALLOC_TRIM_THRESHOLD_=65536 unless told otherwise; with it,
    # every batch's freed buffers go back to the OS (a third of the scoring's speed, see
    # docs/scale.md). The cluster the job starts leaves glibc's default.
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    dask = pytest.importorskip("dask")
    assert "MALLOC_TRIM_THRESHOLD_" in dask.config.get("distributed.nanny.pre-spawn-environ")
    with dask_client(None, 1) as client:
        seen = client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
    assert list(seen.values()) == [None]
