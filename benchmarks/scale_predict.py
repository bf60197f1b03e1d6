"""Benchmark: fair scoring of a Parquet dataset on the local, Ray and Dask engines.

Generates a COMPAS-shaped table (8 inputs: sex, age, race, three juvenile counts, priors,
charge degree; the deployed model leans on race), trains an MLP as the deployed model and
saves it as ONNX (skl2onnx), fits one eraser on 5,000 calibration rows, and writes N rows
(default 10,000,000) as a Parquet dataset of 10 files. Then, for each engine (local, ray,
dask) with 1 and 2 workers, scores the dataset twice through the same partitioned job
(``ruleeraser.scale.predict_dataset``, what ``ruleeraser predict --engine`` runs): with the
raw model alone (no eraser) and with the eraser. Each run is a fresh process that starts its
own local cluster. Printed per run: rows/s while scoring (first partition started to last
written, so cluster start and model loading are left out), rows/s of the whole job, and the
peak resident memory of each worker process and of the driver; then the issue's bars.
Every run has one compute thread per worker (``OMP_NUM_THREADS=1``, as Ray and Dask give
their workers), so that a worker is a core on every engine.

    python benchmarks/scale_predict.py [--rows 10000000] [--repeats 1] [--model-hidden 256 128]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

FEATURES = [
    "sex", "age", "race", "juv_fel_count", "juv_misd_count", "juv_other_count",
    "priors_count", "c_charge_degree",
]  # fmt: skip
FILES = 10


def compas_rows(n: int, rng: np.random.Generator, first_id: int = 0) -> pd.DataFrame:
    """A COMPAS-shaped table: ``race`` 1 for about half the people, more priors recorded for
    them, and a two-year recidivism label that depends on priors, age and (the bias) race."""
    race = (rng.random(n) < 0.51).astype(np.float32)
    sex = (rng.random(n) < 0.81).astype(np.float32)
    age = np.clip(18 + rng.gamma(2.0, 8.0, n), 18, 96).round().astype(np.float32)
    juv = [rng.poisson(0.07 + 0.06 * race) for _ in range(3)]
    priors = rng.negative_binomial(1, 1 / (1 + 2.5 + 1.5 * race)).astype(np.float32)
    degree = (rng.random(n) < 0.64).astype(np.float32)
    logit = -0.9 + 0.16 * priors - 0.045 * (age - 35) + 0.9 * race + 0.25 * juv[0] + 0.2 * sex
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    frame = pd.DataFrame(
        {
            "sex": sex, "age": age, "race": race,
            "juv_fel_count": juv[0].astype(np.float32),
            "juv_misd_count": juv[1].astype(np.float32),
            "juv_other_count": juv[2].astype(np.float32),
            "priors_count": priors, "c_charge_degree": degree,
        }
    )  # fmt: skip
    return frame.assign(two_year_recid=label, id=np.arange(first_id, first_id + n))


def build(root: Path, rows: int, seed: int, hidden: tuple[int, ...]) -> None:
    """The ONNX model, the eraser and the Parquet dataset under ``root``."""
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    from ruleeraser import Eraser
    from ruleeraser.model_files import load_model

    rng = np.random.default_rng(seed)
    train = compas_rows(20_000, rng)
    mlp = MLPClassifier(hidden, max_iter=200, random_state=seed)
    mlp.fit(train[FEATURES].to_numpy(), train["two_year_recid"])
    onnx = to_onnx(mlp, train[FEATURES].to_numpy()[:1], options={id(mlp): {"zipmap": False}})
    (root / "model.onnx").write_bytes(onnx.SerializeToString())
    calib = compas_rows(5_000, rng)
    eraser = Eraser(load_model(root / "model.onnx", classes=[0, 1]), random_state=seed)
    eraser.fit(calib[FEATURES], calib["two_year_recid"], bias=calib["race"])
    eraser.save(root / "eraser")
    widths = [len(FEATURES), *eraser.hidden_sizes]
    patch = sum(a * b for a, b in zip(widths, widths[1:], strict=False)) + widths[-1] * 2
    widths = [len(FEATURES), *hidden]
    model = sum(a * b for a, b in zip(widths, widths[1:], strict=False)) + widths[-1] * 2
    print(
        f"deployed MLP {hidden} (ONNX): {model:,} multiply-adds a row; the eraser's patch "
        f"MLP {tuple(eraser.hidden_sizes)} (torch): {patch:,}"
    )
    (root / "data").mkdir()
    start, per_file = time.perf_counter(), -(-rows // FILES)
    for i in range(FILES):
        n = min(per_file, rows - i * per_file)
        part = compas_rows(n, rng, first_id=i * per_file).drop(columns="two_year_recid")
        part.to_parquet(root / "data" / f"part-{i:02d}.parquet", row_group_size=50_000)
    print(f"{rows:,} rows in {FILES} Parquet files in {time.perf_counter() - start:.1f} s")


def run_one(config: dict[str, Any]) -> dict[str, Any]:
    """One job in this process: the raw model or the eraser, on one engine."""
    from ruleeraser.scale import FairScorer, predict_dataset
    from ruleeraser.scale.batch import PREDICTION, numpy_backed

    class RawModelScorer(FairScorer):
        """The deployed model's own probabilities and decision, no eraser."""

        def score(self, batch, *, where="a batch", first_row=0, job_budget=None):
            proba = self.eraser.blackbox_(numpy_backed(batch[self.features]))
            out = {f"proba_{c}": proba[:, j] for j, c in enumerate(self.eraser.classes_)}
            out[PREDICTION] = self.eraser.classes_[proba.argmax(axis=1)]
            return out

    root = Path(config["root"])
    start = time.perf_counter()
    result = predict_dataset(
        root / "data", config["out"], eraser=root / "eraser", model=root / "model.onnx",
        engine=config["engine"], workers=config["workers"], keys=["id"],
        partition_rows=config["partition_rows"], progress=False, classes=[0, 1],
        scorer_class=RawModelScorer if config["mode"] == "raw model" else FairScorer,
    )  # fmt: skip
    total = time.perf_counter() - start
    workers = {k: v for k, v in result.peak_mb.items() if k != "driver"}
    if config["engine"] == "local":
        workers = {"driver": result.peak_mb["driver"]}  # the threads share this process
    return {
        "rows": result.rows,
        "scoring_rows_per_s": result.rows / result.scoring_seconds,
        "job_rows_per_s": result.rows / total,
        "worker_peak_mb": max(workers.values()),
        "workers_seen": len(workers),
        "driver_peak_mb": result.peak_mb["driver"],
    }


def measure(config: dict[str, Any]) -> dict[str, Any]:
    # One compute thread per worker on every engine: Ray and Dask set OMP_NUM_THREADS=1 in
    # their workers; the local engine's threads get the same.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, __file__, "--one", json.dumps(config)],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode:
        raise SystemExit(f"failed: {config}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--engines", nargs="+", default=["local", "ray", "dask"])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--model-hidden", type=int, nargs="+", default=[256, 128],
        help="hidden layer widths of the deployed MLP (default 256 128)",
    )  # fmt: skip
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    print(f"{os.cpu_count()} CPUs, seed {args.seed}, {args.repeats} round(s)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build(root, args.rows, args.seed, tuple(args.model_hidden))
        runs = run_all(root, args)
    report(runs, args)


def run_all(root: Path, args: argparse.Namespace) -> dict[tuple, list[dict[str, Any]]]:
    """Every (engine, workers, raw model or eraser) run, ``args.repeats`` times, alternating."""
    partition_rows = max(1, args.rows // (2 * FILES))  # 20 partitions
    runs: dict[tuple, list[dict[str, Any]]] = {}
    for r in range(args.repeats):
        for engine in args.engines:
            for workers in args.workers:
                for mode in ("raw model", "eraser"):
                    out = root / f"out-{engine}-{workers}-{mode[0]}-{r}"
                    m = measure(
                        {"root": str(root), "out": str(out), "engine": engine,
                         "workers": workers, "mode": mode, "partition_rows": partition_rows}
                    )  # fmt: skip
                    runs.setdefault((engine, workers, mode), []).append(m)
                    print(
                        f"round {r + 1} {engine:>5} x{workers} {mode:>9}: "
                        f"{m['scoring_rows_per_s']:>10,.0f} rows/s scoring, "
                        f"{m['job_rows_per_s']:>10,.0f} rows/s job, worker peak "
                        f"{m['worker_peak_mb']:.0f} MB ({m['workers_seen']} process(es)), "
                        f"driver {m['driver_peak_mb']:.0f} MB",
                        flush=True,
                    )
                    subprocess.run(["rm", "-rf", str(out)], check=True)
    return runs


def report(runs: dict[tuple, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    def med(key: tuple, field: str) -> float:
        return float(np.median([m[field] for m in runs[key]]))

    def spread(key: tuple) -> float:
        return float(np.ptp([m["scoring_rows_per_s"] for m in runs[key]]))

    print(f"\nmedians over {args.repeats} round(s), {args.rows:,} rows (rows/s while scoring)")
    print("engine  workers  raw model rows/s  eraser rows/s (range)  eraser/raw  worker peak MB")
    for engine in args.engines:
        for w in args.workers:
            raw, fair = (engine, w, "raw model"), (engine, w, "eraser")
            print(
                f"{engine:>6} {w:>8} {med(raw, 'scoring_rows_per_s'):>17,.0f} "
                f"{med(fair, 'scoring_rows_per_s'):>14,.0f} ({spread(fair):,.0f}) "
                f"{med(fair, 'scoring_rows_per_s') / med(raw, 'scoring_rows_per_s'):>10.2f} "
                f"{max(m['worker_peak_mb'] for m in runs[fair] + runs[raw]):>15.0f}"
            )
    if "local" not in args.engines or 2 not in args.workers:
        return
    local = max(med(("local", w, "eraser"), "scoring_rows_per_s") for w in args.workers)
    for engine in [e for e in args.engines if e != "local"]:
        ratio = med((engine, 2, "eraser"), "scoring_rows_per_s") / local
        verdict = "ok" if ratio >= 0.8 else "MISSED"
        print(f"{engine} x2 / best local: {ratio:.2f} (bar >= 0.8: {verdict})")
    worst = min(
        med((e, w, "eraser"), "scoring_rows_per_s") / med((e, w, "raw model"), "scoring_rows_per_s")
        for e in args.engines
        for w in args.workers
    )
    print(f"lowest eraser/raw: {worst:.2f} (bar >= 0.5: {'ok' if worst >= 0.5 else 'MISSED'})")
    peak = max(m["worker_peak_mb"] for ms in runs.values() for m in ms)
    print(f"highest worker peak: {peak:.0f} MB (bar <= 1536: {'ok' if peak <= 1536 else 'MISSED'})")


if __name__ == "__main__":
    main()
