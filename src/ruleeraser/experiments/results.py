"""An experiment's rows: summaries over seeds, written as ``NAME.json`` and ``NAME.md``."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np


def stat(values: Iterable[float]) -> dict:
    """``{"mean", "std" (ddof 1; 0 for one value), "runs"}`` of one metric over seeds."""
    arr = np.asarray(list(values), dtype=float)
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
        "runs": arr.tolist(),
    }


def summarise(runs: list[dict[str, float]], metrics: Iterable[str]) -> dict[str, dict]:
    """``{metric: stat(...)}`` over the runs (seeds)."""
    return {metric: stat(run[metric] for run in runs) for metric in metrics}


def cell(value: dict) -> str:
    """A :func:`stat` as Markdown: ``mean ± std``."""
    return f"{value['mean']:.2f} ± {value['std']:.2f}"


def write_results(
    rows: list[dict], out: str | Path, name: str, to_markdown: Callable[[list[dict]], str]
) -> tuple[Path, Path]:
    """Write ``rows`` to ``out/NAME.json`` and their Markdown to ``out/NAME.md``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(rows, indent=2))
    (out / f"{name}.md").write_text(to_markdown(rows))
    return out / f"{name}.json", out / f"{name}.md"


def run_and_write(
    args: argparse.Namespace,
    name: str,
    run: Callable[[list[int]], list[dict]],
    to_markdown: Callable[[list[dict]], str],
    workers: str,
) -> int:
    """Command-line body of ``ruleeraser reproduce NAME``: run the seeds ``--seed0`` ..
    ``--seed0 + --seeds - 1``, print the Markdown, write both files to ``--out``."""
    seeds = list(range(args.seed0, args.seed0 + args.seeds))
    start = time.perf_counter()
    rows = run(seeds)
    elapsed = time.perf_counter() - start
    print(to_markdown(rows))
    json_path, md_path = write_results(rows, args.out, name, to_markdown)
    print(f"wrote {json_path} and {md_path} ({elapsed:.0f} s, {workers})")
    return 0
