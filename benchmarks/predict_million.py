"""Benchmark: ``ruleeraser predict`` on a million rows against scoring the raw model alone.

Generates a biased table, trains a scikit-learn model (saved with skops), fits an eraser on a
calibration file, writes N rows (default 1,000,000) as Parquet or CSV, then times, in the same
run and alternating, (a) the raw model streaming the file chunk by chunk and writing its
probabilities, (b) ``ruleeraser predict`` on the same file. Each run is its own process, so
its peak resident memory (ru_maxrss) is its own. Prints rows/s and peak MB per run, their
medians, and the issue's bars: peak < 1 GB, eraser >= half the raw model's rows/s.

    python benchmarks/predict_million.py [--rows 1000000] [--format parquet] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

RAW_SCORER = """
import sys
import pandas as pd
from ruleeraser.model_files import load_skops
from ruleeraser.tables import TableWriter, iter_table
model, data, out, chunk = load_skops(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
features = sys.argv[5].split(",")
with TableWriter(out) as writer:
    for frame in iter_table(data, features, chunk):
        proba = model.predict_proba(frame.to_numpy())
        writer.write(pd.DataFrame({f"proba_{c}": proba[:, i]
                                   for i, c in enumerate(model.classes_)}))
"""

MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
elapsed = time.perf_counter() - start
if done.returncode:
    sys.exit(done.stderr)
peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"seconds": elapsed, "peak_mb": peak_kb / 1024}))
"""


def make_rows(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Eight features, a bias ``group`` that is also an input, a target agreeing with it 85%."""
    y = rng.integers(0, 2, n)
    group = np.where(rng.random(n) < 0.85, y, 1 - y)
    X = rng.normal(size=(n, 8)).astype(np.float32)
    X[:, 0] += y
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(8)])
    frame["group"] = group.astype(np.float32)
    frame["label"] = y
    return frame


def measure(cmd: list[str]) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{out.stderr}")
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from sklearn.linear_model import LogisticRegression
    from skops.io import dump

    rng = np.random.default_rng(args.seed)
    features = [f"x{i}" for i in range(8)] + ["group"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train = make_rows(20_000, rng)
        model = LogisticRegression().fit(train[features].to_numpy(), train["label"])
        dump(model, tmp / "model.skops")
        make_rows(5_000, rng).to_csv(tmp / "calibration.csv", index=False)
        fit = [sys.executable, "-m", "ruleeraser.cli", "fit", "--model", str(tmp / "model.skops")]
        fit += ["--data", str(tmp / "calibration.csv"), "--target", "label", "--bias", "group"]
        fit += ["--features", *features, "--out", str(tmp / "eraser"), "--quiet"]
        subprocess.run(fit, check=True, capture_output=True)
        data = tmp / f"rows.{args.format}"
        start = time.perf_counter()
        big = make_rows(args.rows, rng).drop(columns="label")
        if args.format == "parquet":
            big.to_parquet(data, row_group_size=args.chunk_rows)
        else:
            big.to_csv(data, index=False)
        del big
        print(f"{args.rows:,} rows written as {args.format} in {time.perf_counter() - start:.1f} s")

        raw = [sys.executable, "-c", RAW_SCORER, str(tmp / "model.skops"), str(data)]
        raw += [str(tmp / f"raw.{args.format}"), str(args.chunk_rows), ",".join(features)]
        erase = [sys.executable, "-m", "ruleeraser.cli", "predict", "--eraser", str(tmp / "eraser")]
        erase += ["--model", str(tmp / "model.skops"), "--data", str(data), "--quiet"]
        erase += ["--out", str(tmp / f"fair.{args.format}"), "--chunk-rows", str(args.chunk_rows)]
        runs: dict[str, list[dict[str, float]]] = {"raw model": [], "ruleeraser predict": []}
        for r in range(args.repeats):
            for name, cmd in (("raw model", raw), ("ruleeraser predict", erase)):
                m = measure(cmd)
                m["rows_per_s"] = args.rows / m["seconds"]
                runs[name].append(m)
                print(
                    f"round {r + 1} {name:>18}: {m['rows_per_s']:>10,.0f} rows/s "
                    f"({m['seconds']:.1f} s), peak {m['peak_mb']:.0f} MB"
                )
    med = {
        name: {k: float(np.median([m[k] for m in ms])) for k in ("rows_per_s", "peak_mb")}
        for name, ms in runs.items()
    }
    spread = {name: float(np.ptp([m["rows_per_s"] for m in ms])) for name, ms in runs.items()}
    for name, m in med.items():
        print(
            f"median {name:>18}: {m['rows_per_s']:>10,.0f} rows/s (range {spread[name]:,.0f}), "
            f"peak {m['peak_mb']:.0f} MB"
        )
    ratio = med["ruleeraser predict"]["rows_per_s"] / med["raw model"]["rows_per_s"]
    peak = max(m["peak_mb"] for m in runs["ruleeraser predict"])
    print(
        f"speed ratio eraser / raw: {ratio:.2f} (bar >= 0.5: {'ok' if ratio >= 0.5 else 'MISSED'})"
    )
    print(f"eraser peak memory: {peak:.0f} MB (bar < 1024: {'ok' if peak < 1024 else 'MISSED'})")
    print(f"seed {args.seed}, {args.repeats} rounds, chunk {args.chunk_rows:,} rows")


if __name__ == "__main__":
    main()
