"""What every ``ruleeraser reproduce`` runner shares on the way out: summaries over seeds, the
seed and output options, jobs in worker processes, and ``NAME.json`` / ``NAME.md`` (and a
figure, ``NAME.png``) written to ``--out``."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

T = TypeVar("T")

#: The paper's group metrics (Sec. V-A), in percent.
METRICS = ("avg_acc", "worst_acc", "model_bias")


def stat(values: Iterable[float]) -> dict:
    """``{"mean", "std" (ddof 1; 0 for one value), "runs"}`` of one metric over seeds.

    Example
    -------
    >>> stat([1.0, 3.0])
    {'mean': 2.0, 'std': 1.4142135623730951, 'runs': [1.0, 3.0]}
    """
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


def cut(after: float, before: float) -> float:
    """How much of ``before`` is gone in ``after``, in percent (``nan`` when ``before`` is 0).

    Example
    -------
    >>> cut(5.0, 20.0)
    75.0
    """
    return 100.0 * (1.0 - after / before) if before > 0 else float("nan")


def seeds_of(args: argparse.Namespace) -> list[int]:
    """The seeds ``--seed0`` .. ``--seed0 + --seeds - 1``."""
    return list(range(args.seed0, args.seed0 + args.seeds))


def add_common_options(parser: argparse.ArgumentParser, name: str, *, seeds: int = 3) -> None:
    """``--seeds`` (default ``seeds``), ``--seed0``, ``--out`` and ``--quiet``."""
    parser.add_argument(
        "--seeds", type=int, default=seeds, help=f"number of seeds (default {seeds})"
    )
    parser.add_argument("--seed0", type=int, default=0, help="first seed (default 0)")
    parser.add_argument(
        "--out", default="results",
        help=f"output folder for {name}.json and its table or figure (default results)",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_threads_option(parser: argparse.ArgumentParser, default: int = 1) -> None:
    """``--threads``: torch CPU threads."""
    parser.add_argument(
        "--threads", type=int, default=default,
        help=f"torch CPU threads (default {default})",
    )  # fmt: skip


def add_jobs_option(parser: argparse.ArgumentParser) -> None:
    """``--jobs``: worker processes of one torch thread each."""
    parser.add_argument(
        "--jobs", type=int, default=2,
        help="worker processes, one torch thread each (default 2)",
    )  # fmt: skip


def _one_thread_call(job: tuple[Callable[[Any], T], Any]) -> T:
    function, task = job
    torch.set_num_threads(1)
    return function(task)


def map_jobs(
    function: Callable[[Any], T],
    tasks: Sequence[Any],
    *,
    jobs: int = 1,
    desc: str = "",
    progress: bool = True,
) -> Iterator[T]:
    """``function(task)`` for every task, in order, with a progress bar.

    Parameters
    ----------
    function: a module-level function (worker processes pickle it).
    tasks: its arguments, one per call.
    jobs: worker processes of one torch thread each; 1 runs in this process, on this
        process's torch threads.
    desc: the progress bar's label.
    progress: show the bar.

    Returns
    -------
    The results, in the order of ``tasks``, as they come.

    Example
    -------
    >>> list(map_jobs(abs, [-1, 2, -3], progress=False))
    [1, 2, 3]
    """
    with tqdm(total=len(tasks), desc=desc, disable=not progress) as bar:
        if jobs <= 1:
            for task in tasks:
                yield function(task)
                bar.update()
            return
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for result in pool.map(_one_thread_call, [(function, t) for t in tasks]):
                yield result
                bar.update()


def write_results(
    rows: Any,
    out: str | Path,
    name: str,
    to_markdown: Callable[[Any], str],
    plot: Callable[[Any, Path], Path] | None = None,
) -> list[Path]:
    """Write ``rows`` to ``out/NAME.json``, their Markdown to ``out/NAME.md`` and, with
    ``plot``, the figure ``plot(rows, out/NAME.png)``; returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(rows, indent=2))
    (out / f"{name}.md").write_text(to_markdown(rows))
    paths = [out / f"{name}.json", out / f"{name}.md"]
    if plot is not None:
        paths.append(plot(rows, out / f"{name}.png"))
    return paths


def run_and_write(
    args: argparse.Namespace,
    name: str,
    run: Callable[[list[int]], Any],
    to_markdown: Callable[[Any], str],
    workers: str,
    plot: Callable[[Any, Path], Path] | None = None,
) -> int:
    """Command-line body of ``ruleeraser reproduce NAME``: run the seeds of :func:`seeds_of`,
    print the Markdown, write the files of :func:`write_results` to ``--out``."""
    start = time.perf_counter()
    rows = run(seeds_of(args))
    elapsed = time.perf_counter() - start
    print(to_markdown(rows))
    paths = write_results(rows, args.out, name, to_markdown, plot)
    print(f"wrote {', '.join(map(str, paths))} ({elapsed:.0f} s, {workers})")
    return 0


def run_with_grid(
    args: argparse.Namespace,
    name: str,
    measure: Callable[..., dict],
    to_markdown: Callable[[Any], str],
    plot: Callable[[dict, Path, Any], Path],
) -> int:
    """:func:`run_and_write` for a runner whose result holds ``"shown"``, an image grid that
    is drawn by ``plot(result, path, grid)`` but not written to the JSON."""
    grid: list = []

    def result(seeds: list[int]) -> dict:
        measured = measure(seeds, jobs=args.jobs, progress=not args.quiet)
        grid.append(measured.pop("shown"))
        return measured

    def draw(measured: dict, path: Path) -> Path:
        return plot(measured, path, grid[0])

    return run_and_write(args, name, result, to_markdown, f"{args.jobs} process(es)", draw)
