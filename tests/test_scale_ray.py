"""Fair scoring on a local Ray cluster (2 CPUs, started and stopped here): Ray Data's
``map_batches`` and the partitioned Parquet job equal the single-process eraser, survive an
actor killed mid-request, and hold a URL model's row budget across actors."""

import os
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
from scale_data import PROBA, ModelServer, check_output, make_setup

from ruleeraser.http_model import QueryBudgetExceeded
from ruleeraser.model_files import load_skops
from ruleeraser.scale import fair_predict_ray, predict_dataset

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return make_setup(tmp_path_factory.mktemp("ray"), rows=100_000, files=4, row_group=5000)


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def kill_one_mid_request(server, title, done):
    """SIGKILL one Ray worker whose title holds ``title`` while a request of it waits at the
    server's gate; then open the gate. Returns the killed process id."""
    port = server.server_address[1]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not done.is_set():
        for proc in psutil.process_iter(["pid", "cmdline"]):
            if title not in " ".join(proc.info["cmdline"] or []):
                continue
            try:
                waiting = [
                    c for c in proc.net_connections("tcp") if c.raddr and c.raddr.port == port
                ]
            except psutil.Error:
                continue
            if waiting:
                os.kill(proc.pid, signal.SIGKILL)
                server.gate.set()
                return proc.pid
        time.sleep(0.05)
    server.gate.set()
    raise AssertionError(f"no {title} process was seen waiting on the model")


def test_ray_data_equals_the_eraser_on_100k_rows(setup, cluster):
    root, table, fair = setup
    rows = ray.data.read_parquet(str(root / "data"), override_num_blocks=8)
    got = fair_predict_ray(
        rows, eraser=root / "eraser", model=root / "model.skops", keys=["id"],
        concurrency=2, num_cpus=0.5, batch_size=10_000,
    ).to_pandas()  # fmt: skip
    assert list(got.columns) == ["id", *PROBA, "prediction"]
    check_output(got, table, fair)


def test_ray_data_refuses_a_dataset_without_the_features(setup, cluster):
    root, table, _ = setup
    rows = ray.data.from_pandas(table.drop(columns="x1").head(10))
    with pytest.raises(ValueError, match=r"the dataset has no column\(s\) \['x1'\]"):
        fair_predict_ray(rows, eraser=root / "eraser", model=root / "model.skops")


def run_in_thread(fn):
    done, box = threading.Event(), {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as exc:  # handed to the test
            box["error"] = exc
        finally:
            done.set()

    thread = threading.Thread(target=target)
    thread.start()
    return thread, done, box


@pytest.mark.parametrize("path", ["ray data", "parquet job"])
def test_an_actor_killed_mid_request_leaves_a_complete_output(setup, cluster, tmp_path, path):
    root, table, fair = setup
    server = ModelServer(load_skops(root / "model.skops"), open_rows=0)  # every request waits
    first = root / "data" / "part-000.parquet"  # 25,000 rows in 5 row groups
    common = dict(eraser=root / "eraser", model=server.url, keys=["id"])
    if path == "ray data":
        rows = ray.data.read_parquet(str(first), override_num_blocks=5)
        job = lambda: fair_predict_ray(  # noqa: E731
            rows, concurrency=2, num_cpus=0.5, batch_size=2500, **common
        ).to_pandas()
        title = "MapBatches(FairScorer)"
    else:
        out = tmp_path / "out"
        job = lambda: predict_dataset(  # noqa: E731
            first, out, engine="ray", workers=2, partition_rows=5000, progress=False, **common
        )
        title = "PartitionWriter"
    try:
        thread, done, box = run_in_thread(job)
        kill_one_mid_request(server, title, done)
        thread.join(timeout=300)
    finally:
        server.stop()
    assert "error" not in box, box.get("error")
    got = box["result"] if path == "ray data" else pd.read_parquet(out)
    check_output(got, table.iloc[:25_000], fair[:25_000])
    assert server.rows_seen > 25_000  # the killed actor's rows were sent again


def test_the_row_budget_holds_across_actors(setup, cluster, tmp_path):
    root, _, _ = setup
    server = ModelServer(load_skops(root / "model.skops"))
    try:
        with pytest.raises(QueryBudgetExceeded, match="budget of 12000"):
            predict_dataset(
                root / "data" / "part-000.parquet", tmp_path / "out", eraser=root / "eraser",
                model=server.url, engine="ray", workers=2, partition_rows=5000, budget=12_000,
                progress=False,
            )  # fmt: skip
        server.settle()
    finally:
        server.stop()
    # 5 partitions of 5,000 rows: two fit in the job's budget; a budget per actor would
    # have let each actor send two, 20,000 rows in all
    assert 5_000 <= server.rows_seen <= 12_000


def test_the_command_joins_a_running_cluster(setup, cluster, tmp_path):
    root, table, fair = setup
    command = [
        sys.executable, "-m", "ruleeraser.cli", "predict", "--engine", "ray",
        "--address", cluster, "--workers", "1", "--eraser", root / "eraser",
        "--model", root / "model.skops", "--data", root / "data" / "part-00[01].parquet",
        "--out", tmp_path / "out", "--keep-columns", "id", "--quiet",
    ]  # fmt: skip
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "wrote 50000 rows in 2 partition(s)" in done.stdout
    check_output(pd.read_parquet(tmp_path / "out"), table.iloc[:50_000], fair[:50_000])
