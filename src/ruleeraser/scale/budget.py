"""One row budget for a whole job against a model behind a URL, however many workers send.

Each worker has its own HTTP client; before a batch goes out, the worker claims the rows it
would send (cached rows are free) from a single :class:`BudgetKeeper`, which runs as a Ray
actor or a Dask actor, so the budget holds across the job rather than per worker.
"""

from __future__ import annotations

from typing import Any

from ruleeraser.http_model import QueryBudgetExceeded


class JobBudgetExceeded(QueryBudgetExceeded):
    """The job's row budget would be overrun; nothing was sent (it pickles, as its base
    class does, so it reaches the driver intact from the worker that met it)."""


class BudgetKeeper:
    """Hands out a job's row budget; a claim that would overrun it is refused whole.

    Parameters
    ----------
    rows: the most rows the job may send to the model.

    Attributes
    ----------
    taken: rows claimed so far.

    Example
    -------
    >>> keeper = BudgetKeeper(100)
    >>> keeper.take(60)
    40
    >>> keeper.take(50)
    Traceback (most recent call last):
    ...
    ruleeraser.scale.budget.JobBudgetExceeded: query budget exceeded: 50 row(s) need ...
    """

    def __init__(self, rows: int) -> None:
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
            raise ValueError(f"budget must be a number of rows >= 0, got {rows!r}")
        self.rows = rows
        self.taken = 0

    def take(self, rows: int) -> int:
        """Claim ``rows``; returns the rows left. Raises :class:`JobBudgetExceeded`
        (claiming nothing) when fewer than ``rows`` are left."""
        if self.taken + rows > self.rows:
            raise JobBudgetExceeded(rows, self.rows, self.taken)
        self.taken += rows
        return self.rows - self.taken

    def used(self) -> int:
        """Rows claimed so far."""
        return self.taken


class RayBudget:
    """A worker's side of a :class:`BudgetKeeper` running as a Ray actor."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def take(self, rows: int) -> None:
        import ray

        ray.get(self.actor.take.remote(rows))


class DaskBudget:
    """A worker's side of a :class:`BudgetKeeper` running as a Dask actor."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def take(self, rows: int) -> None:
        self.actor.take(rows).result()


def split_budget(model_options: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    """A URL model's options without ``budget``, and the budget: with several workers the job
    holds it (one :class:`BudgetKeeper`) rather than each worker's HTTP client."""
    options = dict(model_options)
    return options, options.pop("budget", None)
