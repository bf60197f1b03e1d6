"""Benchmark: one 65,536-row batch through ``FairScorer`` in a plain process and in a Dask
worker, with and without Dask's ``MALLOC_TRIM_THRESHOLD_=65536`` (docs/scale.md).

Builds the deployed MLP (ONNX) and the eraser of ``benchmarks/scale_predict.py``, then scores
the same batch ``--calls`` times in each setting and prints the median of all but the first
three calls, ``--repeats`` times each (a fresh process or cluster every time).

    python benchmarks/dask_malloc.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from scale_predict import FEATURES, build, compas_rows  # noqa: E402

TRIM = "MALLOC_TRIM_THRESHOLD_"


def batch_ms(root: str, calls: int, rows: int = 65_536) -> float:
    """Median milliseconds of ``FairScorer.score`` on one batch, after three warm-up calls."""
    from ruleeraser.scale import FairScorer

    scorer = FairScorer(f"{root}/eraser", f"{root}/model.onnx", classes=[0, 1])
    batch = compas_rows(rows, np.random.default_rng(1))[[*FEATURES, "id"]]
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        scorer.score(batch)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[3:])


def in_dask(root: str, calls: int, trim: bool) -> float:
    """In a worker of Dask's own local cluster (``trim``: Dask's default environment) or of
    the one the job starts (:func:`~ruleeraser.scale.dask_engine.dask_client`)."""
    import distributed

    from ruleeraser.scale.dask_engine import dask_client

    cluster = (
        distributed.Client(
            n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
        )
        if trim
        else dask_client(None, 1)
    )
    with cluster as client:
        client.run(sys.path.insert, 0, str(Path(__file__).parent))
        return client.submit(batch_ms, root, calls, pure=False).result()


def in_plain(root: str, calls: int, trim: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k != TRIM}
    if trim:
        env[TRIM] = "65536"
    code = f"from dask_malloc import batch_ms; print(batch_ms({root!r}, {calls}))"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=Path(__file__).parent,
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calls", type=int, default=15)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"  # one compute thread, as in Dask's workers
    with tempfile.TemporaryDirectory() as root:
        build(Path(root), 1_000, 0, (256, 128))
        print(f"{'process':<12} {TRIM:<24} ms a batch ({args.repeats} runs)")
        for where, run in (("plain", in_plain), ("dask worker", in_dask)):
            for trim in (False, True):
                ms = [run(root, args.calls, trim) for _ in range(args.repeats)]
                label = "65536" if trim else "unset"
                print(f"{where:<12} {label:<24} " + ", ".join(f"{m:.0f}" for m in ms))


if __name__ == "__main__":
    main()
