"""The partitioned Parquet job behind ``ruleeraser predict --engine``: plan the partitions,
skip those already complete, score the rest on the chosen engine, mark the output done."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ruleeraser.scale.batch import (
    FairScorer,
    check_columns,
    peak_memory_mb,
    saved_columns,
    scorer_spec,
)
from ruleeraser.scale.budget import split_budget
from ruleeraser.scale.dataset import (
    Partition,
    dataset_columns,
    finish_output,
    is_complete,
    job_manifest,
    open_output,
    plan_partitions,
    remove_temporaries,
    write_partition,
)

Engine = Literal["local", "ray", "dask"]
ENGINES = ("local", "ray", "dask")


@dataclass
class JobResult:
    """What a job did.

    Attributes
    ----------
    partitions: partitions in the dataset.
    skipped: partitions already complete in the output (from an earlier run).
    written: partitions written by this run; rows: their rows.
    rows_sent: rows sent to a URL model by this run.
    seconds: wall time of this run, cluster start and model loading included.
    scoring_seconds: from the first partition started to the last written (Unix clocks of
        the workers; across machines as good as their clocks agree).
    peak_mb: each process's peak resident memory in MB, by process id (``"driver"`` for
        this one).
    """

    partitions: int
    skipped: int
    written: int = 0
    rows: int = 0
    rows_sent: int = 0
    seconds: float = 0.0
    peak_mb: dict[str, float] = field(default_factory=dict)
    first_start: float = float("inf")
    last_end: float = float("-inf")

    @property
    def scoring_seconds(self) -> float:
        return max(0.0, self.last_end - self.first_start)

    def record(self, stats: dict[str, Any]) -> None:
        """Count one written partition (the stats :func:`write_partition` returns)."""
        self.written += 1
        self.rows += stats["rows"]
        self.rows_sent += stats["rows_sent"]
        pid = str(stats["pid"])
        self.peak_mb[pid] = max(self.peak_mb.get(pid, 0.0), stats["peak_mb"])
        self.first_start = min(self.first_start, stats["started"])
        self.last_end = max(self.last_end, stats["ended"])


def predict_dataset(
    data: str | Path,
    out: str | Path,
    *,
    eraser: str | Path,
    model: str | Path,
    engine: Engine = "local",
    workers: int | None = None,
    address: str | None = None,
    keys: Sequence[str] = (),
    features: Sequence[str] | None = None,
    keep_original: bool = False,
    partition_rows: int = 1_000_000,
    batch_rows: int = 65536,
    progress: bool = True,
    scorer_class: type[FairScorer] = FairScorer,
    **model_options: Any,
) -> JobResult:
    """Score a Parquet dataset (a directory or a glob) into a partitioned Parquet dataset.

    Each partition (:mod:`ruleeraser.scale.dataset`) is read and scored ``batch_rows`` rows at
    a time and renamed into place when whole; partitions already complete in ``out`` (an
    earlier, interrupted run of the same job) are skipped. ``engine``: ``"local"`` (``workers``
    threads of this process sharing one scorer), ``"ray"`` (``workers`` actors) or ``"dask"``
    (``workers`` single-threaded worker processes); ``address`` joins an existing cluster
    instead of starting a local one. ``scorer_class``: a :class:`FairScorer` subclass to run
    instead. Other parameters as :class:`FairScorer`; a URL model's ``budget`` holds for the
    whole job. Returns a :class:`JobResult`.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be positive, got {batch_rows}")
    if address and engine == "local":
        raise ValueError("address applies to the ray and dask engines, not local")
    spec = scorer_spec(
        eraser, model, keys=keys, features=features, keep_original=keep_original, **model_options
    )
    partitions = plan_partitions(data, partition_rows)
    needed, _ = saved_columns(spec["eraser"], features, spec["keys"])
    check_columns(dataset_columns(partitions), needed, str(partitions[0].source))
    settings = {k: spec[k] for k in ("model", "keys", "features", "keep_original")}
    manifest = job_manifest(partitions, eraser, partition_rows=partition_rows, **settings)
    open_output(out, manifest)
    remove_temporaries(out)
    todo = [p for p in partitions if not is_complete(p, out)]
    result = JobResult(len(partitions), len(partitions) - len(todo))
    start = time.perf_counter()
    if todo:
        _run(engine, todo, out, spec, result, progress, workers=workers, address=address,
             batch_rows=batch_rows, scorer_class=scorer_class)  # fmt: skip
    result.seconds = time.perf_counter() - start
    result.peak_mb["driver"] = peak_memory_mb()
    remove_temporaries(out)  # of attempts lost with a worker and redone elsewhere
    finish_output(partitions, out)
    return result


def _run(
    engine: Engine,
    todo: list[Partition],
    out: str | Path,
    spec: dict[str, Any],
    result: JobResult,
    progress: bool,
    **options: Any,
) -> None:
    from tqdm.auto import tqdm

    with tqdm(total=sum(p.rows for p in todo), unit="row", disable=not progress) as bar:

        def on_done(stats: dict[str, Any]) -> None:
            result.record(stats)
            bar.update(stats["rows"])

        if engine == "local":
            _write_local(todo, out, spec, on_done=on_done, **options)
            return
        spec, budget = split_budget(spec)
        if engine == "ray":
            from ruleeraser.scale.ray_engine import write_partitions_ray as write
        else:
            from ruleeraser.scale.dask_engine import write_partitions_dask as write
        write(todo, out, spec, on_done=on_done, budget=budget, **options)


def _write_local(
    todo: list[Partition],
    out: str | Path,
    spec: dict[str, Any],
    *,
    on_done: Any,
    workers: int | None,
    address: str | None,
    batch_rows: int,
    scorer_class: type[FairScorer],
) -> None:
    """``workers`` threads sharing one scorer (a URL model's own budget holds for all)."""
    scorer = scorer_class(**spec)
    try:
        with ThreadPoolExecutor(max_workers=workers or 1) as pool:
            futures = [
                pool.submit(write_partition, scorer, p, out, batch_rows=batch_rows) for p in todo
            ]
            try:
                for future in futures:
                    on_done(future.result())
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    finally:
        scorer.close()
