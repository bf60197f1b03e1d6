"""The scale-out package without a cluster: the per-batch scorer, the partitioned Parquet job
on the local engine, its resumption after a killed run, and what the core install imports."""

import argparse
import os
import signal
import subprocess
import sys
import time
from importlib.metadata import requires
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scale_data import FEATURES, PROBA, ModelServer, check_output, make_setup

from ruleeraser import Eraser
from ruleeraser.cli import predict
from ruleeraser.fingerprint import N_PROBES
from ruleeraser.http_model import QueryBudgetExceeded
from ruleeraser.model_files import load_model, load_skops
from ruleeraser.scale import FairScorer, predict_dataset
from ruleeraser.scale.dataset import MANIFEST, SUCCESS


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return make_setup(tmp_path_factory.mktemp("scale"), rows=100_000, files=4, row_group=5000)


def run_predict(*args):
    """``ruleeraser predict`` with these arguments, errors raised rather than printed."""
    parser = argparse.ArgumentParser()
    predict.add_parser(parser.add_subparsers())
    ns = parser.parse_args(["predict", *map(str, args)])
    return ns.run(ns)


def outputs(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*.parquet") if not p.name.startswith("."))


def test_importing_the_package_imports_neither_ray_nor_dask():
    code = (
        "import sys, ruleeraser, ruleeraser.scale, ruleeraser.cli.predict; "
        "print(sorted(m for m in ('ray', 'dask', 'distributed') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_core_install_pulls_neither_ray_nor_dask():
    wanted = requires("rule-eraser")
    core = [r for r in wanted if "extra ==" not in r]
    assert core and not [r for r in core if r.startswith(("ray", "dask", "distributed"))]
    assert any(r.startswith("ray[data]") and 'extra == "ray"' in r for r in wanted)
    for name in ("dask[dataframe]", "distributed"):
        assert any(r.startswith(name) and 'extra == "dask"' in r for r in wanted)


def test_scorer_equals_the_eraser_on_100k_rows(setup):
    root, table, fair = setup
    scorer = FairScorer(root / "eraser", root / "model.skops", keys=["id"], keep_original=True)
    got = scorer(table.sample(frac=1.0, random_state=1))  # order-independent: by key
    assert list(got.columns) == ["id", *PROBA, "prediction", "model_proba_0", "model_proba_1"]
    check_output(got, table, fair)


def test_a_torch_export_model_file(setup, tmp_path):
    root, table, _ = setup
    rows = table.head(3000)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    batch = torch.export.Dim("batch")
    program = torch.export.export(net, (torch.randn(8, 4),), dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "net.pt2")
    model = load_model(tmp_path / "net.pt2", output="logits")
    with torch.no_grad():
        direct = torch.softmax(net(torch.tensor(rows[FEATURES].to_numpy(), dtype=torch.float32)), 1)
    np.testing.assert_allclose(model(rows[FEATURES]), direct.numpy(), rtol=1e-5)
    eraser = Eraser(model, max_epochs=5, random_state=0)
    eraser.fit(rows[FEATURES], rows["y"], bias=rows["b"]).save(tmp_path / "eraser")
    scorer = FairScorer(tmp_path / "eraser", tmp_path / "net.pt2", keys=["id"], output="logits")
    check_output(scorer(rows), rows, eraser.predict_proba(rows[FEATURES]))


def test_local_job_writes_every_partition_once(setup, tmp_path):
    root, table, fair = setup
    out = tmp_path / "out"
    result = predict_dataset(
        root / "data", out, eraser=root / "eraser", model=root / "model.skops", keys=["id"],
        workers=2, partition_rows=10_000, batch_rows=4096, progress=False,
    )  # fmt: skip
    # 4 files of 25,000 rows in row groups of 5,000: each cut into 3 partitions (10k, 10k, 5k)
    assert (result.partitions, result.written, result.skipped) == (12, 12, 0)
    assert result.rows == 100_000 and result.rows_sent == 0
    assert [p.relative_to(out).as_posix() for p in outputs(out)][:3] == [
        "part-000-rg00000.parquet", "part-000-rg00002.parquet", "part-000-rg00004.parquet",
    ]  # fmt: skip
    assert (out / SUCCESS).is_file() and (out / MANIFEST).is_file()
    check_output(pd.read_parquet(out), table, fair)
    again = predict_dataset(
        root / "data", out, eraser=root / "eraser", model=root / "model.skops", keys=["id"],
        partition_rows=10_000, progress=False,
    )  # fmt: skip
    assert (again.written, again.skipped) == (0, 12)


def test_cli_reads_a_glob_and_mirrors_the_input_files(setup, tmp_path):
    root, table, fair = setup
    out = tmp_path / "out"
    rc = run_predict(
        "--eraser", root / "eraser", "--model", root / "model.skops", "--data",
        root / "data" / "part-00[12].parquet", "--out", out, "--keep-columns", "id", "--quiet",
    )  # fmt: skip
    assert rc == 0
    assert [p.name for p in outputs(out)] == ["part-001.parquet", "part-002.parquet"]
    picked = table.iloc[25_000:75_000]
    check_output(pd.read_parquet(out), picked, fair[25_000:75_000])


def test_bad_inputs_are_named(setup, tmp_path):
    root, table, _ = setup
    common = dict(eraser=root / "eraser", model=root / "model.skops", progress=False)
    with pytest.raises(ValueError, match=r"has no column\(s\) \['account'\]"):
        predict_dataset(root / "data", tmp_path / "a", keys=["account"], **common)
    holes = tmp_path / "holes"
    holes.mkdir()
    bad = table.iloc[:300].copy()
    bad.loc[bad.index[[150, 250]], "x1"] = np.nan
    bad.to_parquet(holes / "one.parquet", row_group_size=100)
    with pytest.raises(ValueError, match=r"one.parquet rows 100-199: .*data rows from 0\): 150$"):
        predict_dataset(holes, tmp_path / "b", keys=["id"], batch_rows=100, **common)
    assert not list((tmp_path / "b").rglob("*.parquet"))  # no partial file left behind
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="--out .*c is not empty and holds no"):
        predict_dataset(root / "data", tmp_path / "c", **common)
    with pytest.raises(FileNotFoundError, match="no Parquet files"):
        predict_dataset(tmp_path / "c", tmp_path / "d", **common)
    with pytest.raises(ValueError, match="--engine, --workers and --address score a Parquet"):
        run_predict("--eraser", root / "eraser", "--model", root / "model.skops",
                    "--data", root / "data" / "part-000.parquet", "--out", tmp_path / "e.parquet",
                    "--engine", "ray")  # fmt: skip


def test_another_job_is_not_mixed_into_an_output(setup, tmp_path):
    root, _, _ = setup
    common = dict(eraser=root / "eraser", model=root / "model.skops", progress=False)
    predict_dataset(root / "data" / "part-003.parquet*", tmp_path / "out", **common)
    with pytest.raises(ValueError, match=r"another job \(it differs in \['keep_original'\]\)"):
        predict_dataset(
            root / "data" / "part-003.parquet*", tmp_path / "out", keep_original=True, **common
        )


def test_a_job_stops_at_its_budget_and_a_rerun_finishes_it(setup, tmp_path):
    root, table, fair = setup
    server = ModelServer(load_skops(root / "model.skops"))
    common = dict(eraser=root / "eraser", model=server.url, keys=["id"], partition_rows=5000,
                  progress=False)  # fmt: skip
    first_file = root / "data" / "part-000.parquet"  # 25,000 rows, 5 partitions of 5,000
    try:
        with pytest.raises(QueryBudgetExceeded, match="only 2000 of the budget of 12000 remain"):
            predict_dataset(first_file, tmp_path / "out", budget=12_000, **common)
        assert server.rows_seen == 10_000 and len(outputs(tmp_path / "out")) == 2
        done = partition_files(tmp_path / "out")
        result = predict_dataset(first_file, tmp_path / "out", budget=15_000, **common)
    finally:
        server.stop()
    assert (result.skipped, result.written, result.rows_sent) == (2, 3, 15_000)
    assert server.rows_seen == 25_000
    assert all(partition_files(tmp_path / "out")[p] == v for p, v in done.items())
    check_output(pd.read_parquet(tmp_path / "out"), table.iloc[:25_000], fair[:25_000])


def test_a_rerun_after_a_killed_command_redoes_only_the_unfinished_partitions(setup, tmp_path):
    root, table, fair = setup
    first = 10_000 + N_PROBES  # two partitions, after the probe rows that check the model
    server = ModelServer(load_skops(root / "model.skops"), open_rows=first)
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "ruleeraser.cli", "predict", "--eraser", root / "eraser",
        "--model", server.url, "--data", root / "data" / "part-000.parquet*", "--out", out,
        "--keep-columns", "id", "--partition-rows", "5000", "--quiet",
    ]  # fmt: skip
    command = [str(c) for c in command]
    try:
        job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while server.rows_seen <= first and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.05)  # the third partition's requests wait at the gate
        assert server.rows_seen > first, job.communicate()
        os.kill(job.pid, signal.SIGKILL)
        job.wait()
        done = partition_files(out)
        assert len(done) == 2 and not (out / SUCCESS).exists()
        server.gate.set()
        seen = server.rows_seen
        rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    finally:
        server.stop()
    assert rerun.returncode == 0, rerun.stderr
    assert "wrote 15000 rows in 3 partition(s)" in rerun.stdout
    assert "(2 of 5 already complete)" in rerun.stdout
    # the two finished partitions were not sent again; the probe rows checked the model once
    assert server.rows_seen - seen == 15_000 + N_PROBES
    assert all(partition_files(out)[p] == v for p, v in done.items())
    assert not [p for p in out.rglob(".*") if p.name != f".{MANIFEST}"]  # no temporary left
    assert (out / SUCCESS).is_file()
    check_output(pd.read_parquet(out), table.iloc[:25_000], fair[:25_000])


def partition_files(out):
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in outputs(out)}
