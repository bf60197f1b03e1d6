"""Fair scoring on Dask: ``map_partitions`` over a Dask DataFrame, and the partitioned
Parquet job's tasks. Each worker process keeps the loaded eraser and model
(:func:`~ruleeraser.scale.batch.cached_scorer`).

Dask is imported only when these functions run (``pip install 'rule-eraser[dask]'``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from ruleeraser.scale.batch import (
    FairScorer,
    RowBudget,
    cached_scorer,
    check_columns,
    empty_results,
    saved_columns,
    scorer_spec,
)
from ruleeraser.scale.budget import BudgetKeeper, DaskBudget, split_budget
from ruleeraser.scale.dataset import Partition, write_partition

# Dask's setting for the environment its nanny gives a worker process before starting it.
_TRIM_THRESHOLD = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError(
            "the Dask engine needs dask and distributed: pip install 'rule-eraser[dask]'"
        ) from exc
    return distributed


def fair_predict_dask(
    ddf: Any,
    *,
    eraser: str | Path,
    model: str | Path,
    keys: Sequence[str] = (),
    features: Sequence[str] | None = None,
    keep_original: bool = False,
    **model_options: Any,
) -> Any:
    """Fair probabilities and decisions for a Dask DataFrame, as a lazy Dask DataFrame.

    Each partition goes through :meth:`~ruleeraser.scale.FairScorer.frame` on the worker's
    cached scorer: the eraser (read from its directory) and the model are loaded once per
    worker process and kept for later partitions and jobs.

    Parameters
    ----------
    ddf: the rows; it must have the eraser's feature columns and ``keys``.
    eraser: a saved eraser's directory, on storage every worker sees at the same path.
    model: an ``.onnx``, ``.skops`` or ``.pt2`` file (same path on every worker) or a URL.
    keys: columns copied to the output to join it back (e.g. an id).
    features: the model's input columns, only for an eraser fitted on arrays.
    keep_original: also output ``model_proba_<class>``.
    model_options: for ``load_model``; with a URL, ``budget`` is the whole job's row budget,
        held by one :class:`~ruleeraser.scale.budget.BudgetKeeper` Dask actor (this needs a
        ``distributed.Client``).

    Returns
    -------
    A Dask DataFrame with ``keys`` and the columns of
    :func:`~ruleeraser.scale.batch.output_columns`, partition for partition with ``ddf``.
    """
    options, budget = split_budget(model_options)
    spec = scorer_spec(
        eraser, model, keys=keys, features=features, keep_original=keep_original, **options
    )
    needed, classes = saved_columns(spec["eraser"], features, spec["keys"])
    check_columns(list(ddf.columns), needed, "the Dask DataFrame")
    keeper = None
    if budget is not None:
        client = _distributed().get_client()
        keeper = DaskBudget(client.submit(BudgetKeeper, budget, actor=True).result())
    key_types = ddf[spec["keys"]].dtypes
    meta = pd.concat(
        [
            pd.DataFrame({k: pd.Series(dtype=t) for k, t in key_types.items()}),
            empty_results(classes, keep_original=keep_original),
        ],
        axis=1,
    )
    return ddf.map_partitions(score_partition, spec, keeper, meta=meta)


def score_partition(frame: pd.DataFrame, spec: dict[str, Any], job_budget: RowBudget | None) -> Any:
    """One Dask partition through this worker's cached scorer for ``spec``."""
    return cached_scorer(**spec).frame(frame, job_budget=job_budget)


@contextmanager
def dask_client(address: str | None, workers: int | None) -> Iterator[Any]:
    """A ``distributed.Client``: of the scheduler at ``address``, or of a local cluster of
    ``workers`` single-threaded worker processes on loopback, started here and closed after.

    The local cluster's workers keep glibc's own malloc thresholds: Dask's default
    ``MALLOC_TRIM_THRESHOLD_=65536`` hands every freed batch buffer back to the operating
    system, so each batch's buffers are page-faulted in anew (docs/scale.md)."""
    distributed = _distributed()
    import dask

    if address:
        if workers is not None:
            raise ValueError(
                "--workers sizes a local cluster; the cluster at --address runs the job on "
                "its own workers"
            )
        with distributed.Client(address) as client:
            yield client
        return
    with (
        dask.config.set({_TRIM_THRESHOLD: None}),
        distributed.LocalCluster(
            n_workers=workers or 1,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def _write_one(
    partition: Partition,
    *,
    out: str,
    spec: dict[str, Any],
    scorer_class: type[FairScorer],
    batch_rows: int,
    job_budget: RowBudget | None,
) -> dict[str, Any]:
    scorer = cached_scorer(scorer_class, **spec)
    return write_partition(scorer, partition, out, batch_rows=batch_rows, job_budget=job_budget)


def write_partitions_dask(
    partitions: list[Partition],
    out: str | Path,
    spec: dict[str, Any],
    *,
    on_done: Callable[[dict[str, Any]], None],
    workers: int | None = None,
    address: str | None = None,
    batch_rows: int = 65536,
    budget: int | None = None,
    scorer_class: type[FairScorer] = FairScorer,
) -> None:
    """Write ``partitions`` as Dask tasks, one per partition. A task lost with its worker is
    rerun elsewhere (a partition is only ever renamed into place whole)."""
    distributed = _distributed()
    with dask_client(address, workers) as client:
        keeper = None
        if budget is not None:
            keeper = DaskBudget(client.submit(BudgetKeeper, budget, actor=True).result())
        futures = client.map(
            _write_one,
            partitions,
            out=str(out),
            spec=spec,
            scorer_class=scorer_class,
            batch_rows=batch_rows,
            job_budget=keeper,
            pure=False,
        )
        for future in distributed.as_completed(futures):
            on_done(future.result())
