"""Fair batch scoring on the engines that already run a team's big jobs: Ray Data and Dask.

The eraser runs inside the engine's workers: each worker loads the eraser from its
directory and the deployed model from its spec once, then scores batches through the
eraser's public API (:class:`FairScorer`). Nothing here imports Ray or Dask until a function
that needs one runs (``pip install 'rule-eraser[ray]'`` or ``'rule-eraser[dask]'``).

- :func:`fair_predict_ray`: a ``ray.data.Dataset`` in, a lazy ``Dataset`` of fair
  probabilities out (``map_batches`` with one scorer per actor).
- :func:`fair_predict_dask`: a Dask DataFrame in and out (``map_partitions``, one scorer
  cached per worker process).
- :func:`predict_dataset`: a Parquet dataset (a directory or a glob) into a partitioned
  Parquet dataset, one atomic file per partition, resumable; ``ruleeraser predict --engine``.
"""

from ruleeraser.scale.batch import FairScorer, output_columns
from ruleeraser.scale.budget import BudgetKeeper
from ruleeraser.scale.dask_engine import fair_predict_dask
from ruleeraser.scale.job import JobResult, predict_dataset
from ruleeraser.scale.ray_engine import fair_predict_ray

__all__ = [
    "BudgetKeeper",
    "FairScorer",
    "JobResult",
    "fair_predict_dask",
    "fair_predict_ray",
    "output_columns",
    "predict_dataset",
]
