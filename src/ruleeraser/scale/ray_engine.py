"""Fair scoring on Ray: a Ray Data pipeline stage, and the partitioned Parquet job's workers.

Ray is imported only when these functions run (``pip install 'rule-eraser[ray]'``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ruleeraser.scale.batch import (
    FairScorer,
    RowBudget,
    check_columns,
    saved_columns,
    scorer_spec,
)
from ruleeraser.scale.budget import BudgetKeeper, RayBudget, split_budget
from ruleeraser.scale.dataset import Partition, write_partition


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError("the Ray engine needs Ray: pip install 'rule-eraser[ray]'") from exc
    return ray


def fair_predict_ray(
    dataset: Any,
    *,
    eraser: str | Path,
    model: str | Path,
    keys: Sequence[str] = (),
    features: Sequence[str] | None = None,
    keep_original: bool = False,
    concurrency: int = 1,
    batch_size: int = 4096,
    num_cpus: float = 1.0,
    **model_options: Any,
) -> Any:
    """Fair probabilities and decisions for a ``ray.data.Dataset``, as a lazy ``Dataset``.

    A :class:`~ruleeraser.scale.FairScorer` per actor (``concurrency`` actors, ``num_cpus``
    each) loads the eraser from its directory and the model from its spec once; batches of
    ``batch_size`` rows go through ``map_batches``, so nothing but rows crosses the wire.

    Parameters
    ----------
    dataset: the rows; it must have the eraser's feature columns and ``keys``.
    eraser: a saved eraser's directory, on storage every worker sees at the same path.
    model: an ``.onnx``, ``.skops`` or ``.pt2`` file (same path on every worker) or a URL.
    keys: columns copied to the output to join it back (e.g. an id).
    features: the model's input columns, only for an eraser fitted on arrays.
    keep_original: also output ``model_proba_<class>``.
    concurrency, batch_size, num_cpus: actors in the pool, rows per batch, CPUs per actor.
        Leave the read some CPUs: on a cluster of C CPUs, ``concurrency * num_cpus`` of C
        or more leaves the read tasks none, and the job waits forever.
    model_options: for ``load_model``; with a URL, ``budget`` is the whole job's row budget,
        handed out to the actors by one :class:`~ruleeraser.scale.budget.BudgetKeeper` actor.

    Returns
    -------
    A ``ray.data.Dataset`` with ``keys`` and the columns of
    :func:`~ruleeraser.scale.batch.output_columns`, one row per input row (row order is
    Ray's: join on ``keys``).
    """
    ray = _ray()
    from ray.data import ActorPoolStrategy

    options, budget = split_budget(model_options)
    spec = scorer_spec(
        eraser, model, keys=keys, features=features, keep_original=keep_original, **options
    )
    needed, _ = saved_columns(spec["eraser"], features, spec["keys"])
    check_columns(dataset.columns(), needed, "the dataset")
    if budget is not None:
        keeper = ray.remote(num_cpus=0)(BudgetKeeper).remote(budget)
        spec["job_budget"] = RayBudget(keeper)
    return dataset.map_batches(
        FairScorer,
        fn_constructor_kwargs=spec,
        batch_format="pandas",
        batch_size=batch_size,
        compute=ActorPoolStrategy(size=concurrency),
        num_cpus=num_cpus,
        zero_copy_batch=True,
    )


class PartitionWriter:
    """A Ray actor that writes whole partitions with one scorer, loaded once."""

    def __init__(
        self, scorer_class: type[FairScorer], spec: dict[str, Any], job_budget: RowBudget | None
    ) -> None:
        self.scorer = scorer_class(**spec)
        self.job_budget = job_budget

    def write(self, partition: Partition, out: str, batch_rows: int) -> dict[str, Any]:
        return write_partition(
            self.scorer, partition, out, batch_rows=batch_rows, job_budget=self.job_budget
        )


@contextmanager
def ray_connection(address: str | None, workers: int | None) -> Iterator[Any]:
    """Ray, connected: to the cluster at ``address``, or to a local one of ``workers`` CPUs
    started here and stopped after. A session already connected is used as it is."""
    ray = _ray()
    if ray.is_initialized():
        yield ray
        return
    if address:
        ray.init(address=address, logging_level="warning")
    else:
        ray.init(num_cpus=workers, include_dashboard=False, logging_level="warning")
    try:
        yield ray
    finally:
        ray.shutdown()


def write_partitions_ray(
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
    """Write ``partitions`` with ``workers`` actors (default: the cluster's CPUs), each a
    :class:`PartitionWriter`. An actor whose process dies is restarted and its partition
    redone (a partition is only ever renamed into place whole)."""
    from ray.util import ActorPool

    with ray_connection(address, workers) as ray:
        n = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        keeper = None
        if budget is not None:
            keeper = RayBudget(ray.remote(num_cpus=0)(BudgetKeeper).remote(budget))
        writer = ray.remote(PartitionWriter).options(
            num_cpus=1, max_restarts=-1, max_task_retries=-1
        )
        actors = [writer.remote(scorer_class, spec, keeper) for _ in range(min(n, len(partitions)))]
        pool = ActorPool(actors)
        try:
            for stats in pool.map_unordered(
                lambda actor, p: actor.write.remote(p, str(out), batch_rows), partitions
            ):
                on_done(stats)
        finally:
            for actor in actors:
                ray.kill(actor)
