"""The per-batch function every engine runs: the eraser and the model are loaded once, from
the eraser's directory and the model's spec, and each batch of rows goes through the
eraser's public API (:meth:`ruleeraser.Eraser.model_and_fair_proba`)."""

from __future__ import annotations

import json
import resource
import sys
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from ruleeraser.inputs import fitted_columns

PREDICTION = "prediction"
#: Scorers a worker process keeps loaded (the last ones used), for engines that run tasks.
CACHE_SIZE = 4


class RowBudget(Protocol):
    """A job-wide limit on the rows sent to a model behind a URL (see
    :class:`ruleeraser.scale.budget.BudgetKeeper`)."""

    def take(self, rows: int) -> None:
        """Claim ``rows`` rows, or raise ``QueryBudgetExceeded`` claiming none."""


def output_columns(classes: Sequence[Any], *, keep_original: bool = False) -> list[str]:
    """The result columns, after the key columns: ``proba_<class>`` (fair probabilities),
    ``prediction`` (the fair decision) and, with ``keep_original``, ``model_proba_<class>``.

    Example
    -------
    >>> output_columns(["no", "yes"], keep_original=True)
    ['proba_no', 'proba_yes', 'prediction', 'model_proba_no', 'model_proba_yes']
    """
    names = [str(c) for c in classes]
    columns = [f"proba_{c}" for c in names] + [PREDICTION]
    return columns + ([f"model_proba_{c}" for c in names] if keep_original else [])


def numpy_backed(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with Arrow-backed or nullable numeric columns (as Ray Data and pandas 3
    hand them over) as plain numpy columns of the same kind; call it once missing values
    have been refused."""
    convert = {
        c: t.numpy_dtype
        for c, t in frame.dtypes.items()
        if not isinstance(t, np.dtype) and hasattr(t, "numpy_dtype")
    }
    return frame.astype(convert) if convert else frame


def peak_memory_mb() -> float:
    """This process's peak resident memory so far, in MB: Linux's ``VmHWM``, which starts
    afresh at ``exec`` (``ru_maxrss`` keeps the peak of the process that forked it), else
    ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


class FairScorer:
    """Fair probabilities and decisions for batches of rows; the eraser and the model are
    loaded once, when the scorer is built (once per Ray actor, once per Dask worker).

    Parameters
    ----------
    eraser: the directory of a saved eraser (:meth:`ruleeraser.Eraser.save`); each worker
        reads it from there, so on a cluster it must be on storage every worker sees.
    model: the deployed model, as :func:`ruleeraser.model_files.load_model` takes it: an
        ``.onnx``, ``.skops`` or ``.pt2`` file (the same path on every worker) or an
        ``http(s)://`` URL (then each scorer has its own HTTP client).
    keys: input columns copied to the output, to join it back to the input (e.g. an id).
    features: the model's input columns, only for an eraser fitted on arrays.
    keep_original: also output the model's own probabilities (``model_proba_<class>``).
    job_budget: a job-wide row budget for a URL model, claimed before each batch is sent
        (``budget`` in ``model_options`` is this scorer's own HTTP client's).
    model_options: passed to ``load_model`` (``allow_pickle``, ``output``, ``output_name``,
        ``classes``, and a URL model's options such as ``batch_size`` or ``headers``).

    Attributes
    ----------
    eraser: the loaded :class:`ruleeraser.Eraser`.
    features: the columns the model and the patches take, in order.
    columns: the output's columns, keys first.

    Example
    -------
    >>> import tempfile, numpy as np, pandas as pd, skops.io as sio
    >>> from sklearn.linear_model import LogisticRegression
    >>> from ruleeraser import Eraser
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 600); b = np.where(rng.random(600) < 0.9, y, 1 - y)
    >>> X = pd.DataFrame({"x": y + rng.normal(0, 1.5, 600), "b": b})
    >>> model = LogisticRegression().fit(X, y)
    >>> tmp = tempfile.TemporaryDirectory()
    >>> sio.dump(model, f"{tmp.name}/model.skops")
    >>> eraser = Eraser(model, max_epochs=3, random_state=0).fit(X, y, bias=b)
    >>> _ = eraser.save(f"{tmp.name}/eraser")
    >>> scorer = FairScorer(f"{tmp.name}/eraser", f"{tmp.name}/model.skops", keys=["id"])
    >>> out = scorer(X.assign(id=np.arange(600)))
    >>> out.columns.tolist()
    ['id', 'proba_0', 'proba_1', 'prediction']
    >>> bool(np.allclose(out[["proba_0", "proba_1"]], eraser.predict_proba(X)))
    True
    >>> tmp.cleanup()
    """

    def __init__(
        self,
        eraser: str | Path,
        model: str | Path,
        *,
        keys: Sequence[str] = (),
        features: Sequence[str] | None = None,
        keep_original: bool = False,
        job_budget: RowBudget | None = None,
        **model_options: Any,
    ) -> None:
        from ruleeraser.eraser import Eraser
        from ruleeraser.model_files import load_model, takes_threads

        if takes_threads(model):  # a worker is one core (as Ray and Dask set)
            model_options.setdefault("threads", 1)
        loaded = load_model(model, **model_options)
        try:
            fitted = Eraser.load(eraser, loaded, check_model=False)  # the caller checks it once
            self._setup(fitted, keys, features, keep_original, job_budget)
        except BaseException:
            close = getattr(loaded.fn, "close", None)
            if close is not None:
                close()
            raise

    @classmethod
    def around(
        cls,
        eraser: Any,
        *,
        keys: Sequence[str] = (),
        features: Sequence[str] | None = None,
        keep_original: bool = False,
        job_budget: RowBudget | None = None,
    ) -> FairScorer:
        """A scorer around an :class:`~ruleeraser.Eraser` already loaded in front of its
        model (closing the scorer closes that model's HTTP client)."""
        scorer = cls.__new__(cls)
        scorer._setup(eraser, keys, features, keep_original, job_budget)
        return scorer

    def _setup(
        self,
        eraser: Any,
        keys: Sequence[str],
        features: Sequence[str] | None,
        keep_original: bool,
        job_budget: RowBudget | None,
    ) -> None:
        self.eraser = eraser
        self.keys = list(dict.fromkeys(keys))
        self.keep_original = keep_original
        self.job_budget = job_budget
        self.features = fitted_columns(getattr(eraser, "feature_names_in_", None), features)
        self.results = output_columns(eraser.classes_, keep_original=keep_original)
        if clash := sorted(set(self.results) & set(self.keys)):
            raise ValueError(f"keys {clash} clash with the output columns")
        self.columns = [*self.keys, *self.results]

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        """The keys and the results for the rows of ``batch`` (a DataFrame), in its order;
        a URL model's rows are claimed from ``job_budget``."""
        return self.frame(batch, job_budget=self.job_budget)

    def frame(
        self,
        batch: pd.DataFrame,
        *,
        where: str | None = None,
        first_row: int = 0,
        job_budget: RowBudget | None = None,
    ) -> pd.DataFrame:
        """The keys and the results for the rows of ``batch``, claiming from ``job_budget``
        (``where`` and ``first_row`` as :meth:`score`)."""
        where = self._describe(batch) if where is None else where
        results = self.score(batch, where=where, first_row=first_row, job_budget=job_budget)
        return pd.concat([batch[self.keys].reset_index(drop=True), pd.DataFrame(results)], axis=1)

    def score(
        self,
        batch: pd.DataFrame,
        *,
        where: str = "a batch",
        first_row: int = 0,
        job_budget: RowBudget | None = None,
    ) -> dict[str, np.ndarray]:
        """The result columns (:func:`output_columns`) for the rows of ``batch``. A
        ``ValueError`` names ``where`` (e.g. the file and rows) and the offending rows,
        numbered from ``first_row``."""
        from ruleeraser.tables import check_features

        missing = [c for c in [*self.features, *self.keys] if c not in batch.columns]
        if missing:
            raise ValueError(f"{where}: no column(s) {missing}; columns: {list(batch.columns)}")
        X = batch[self.features]
        try:
            check_features(X, first_row)
            X = numpy_backed(X)
            self._claim(X, job_budget)
            proba, fair = self.eraser.model_and_fair_proba(X)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from exc
        classes = self.eraser.classes_
        out = {name: fair[:, j] for j, name in enumerate(self.results[: len(classes)])}
        out[PREDICTION] = classes[fair.argmax(axis=1)]
        if self.keep_original:
            for j, c in enumerate(classes):
                out[f"model_proba_{c}"] = proba[:, j]
        return out

    @property
    def rows_sent(self) -> int:
        """Rows this scorer's HTTP client sent to a URL model (0 for a model file)."""
        http = self._http()
        return 0 if http is None else http.rows_sent

    def close(self) -> None:
        """Close a URL model's connection pool and cache."""
        close = getattr(self.eraser.blackbox_.fn, "close", None)
        if close is not None:
            close()

    def _http(self) -> Any:
        from ruleeraser.http_model import HTTPModel

        fn = self.eraser.blackbox_.fn
        return fn if isinstance(fn, HTTPModel) else None

    def _claim(self, X: pd.DataFrame, job_budget: RowBudget | None) -> None:
        """Claim from the job's budget the rows this batch would send (cached rows are free).
        Rows of a batch that fails are not given back: the budget is never overrun."""
        http = self._http()
        if job_budget is not None and http is not None:
            job_budget.take(http.pending(X))

    def _describe(self, batch: pd.DataFrame) -> str:
        if not self.keys or self.keys[0] not in batch.columns or batch.empty:
            return f"a batch of {len(batch)} rows"
        key = batch[self.keys[0]]
        return f"a batch of {len(batch)} rows ({self.keys[0]} {key.iloc[0]} to {key.iloc[-1]})"


_CACHE: OrderedDict[str, FairScorer] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def cached_scorer(scorer_class: type[FairScorer] = FairScorer, **spec: Any) -> FairScorer:
    """The scorer for ``spec`` (the keyword arguments of :class:`FairScorer` but ``job_budget``),
    built once per process and kept for the next batches and jobs (the last
    :data:`CACHE_SIZE`)."""
    name = f"{scorer_class.__module__}.{scorer_class.__qualname__}"
    key = json.dumps([name, spec], sort_keys=True, default=str)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        scorer = scorer_class(**spec)
        _CACHE[key] = scorer
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)[1].close()
        return scorer


def scorer_spec(
    eraser: str | Path,
    model: str | Path,
    *,
    keys: Sequence[str] = (),
    features: Sequence[str] | None = None,
    keep_original: bool = False,
    **model_options: Any,
) -> dict[str, Any]:
    """The keyword arguments of :class:`FairScorer` as plain values for the workers: the
    eraser's directory and a model file as absolute paths (the workers read them there)."""
    if not Path(eraser).is_dir():
        raise FileNotFoundError(f"no eraser directory {eraser}")
    text = str(model)
    if not text.startswith(("http://", "https://")):
        text = str(Path(text).resolve())
    return {
        "eraser": str(Path(eraser).resolve()),
        "model": text,
        "keys": list(dict.fromkeys(keys)),
        "features": None if features is None else list(features),
        "keep_original": keep_original,
        **model_options,
    }


def empty_results(classes: Sequence[Any], *, keep_original: bool = False) -> pd.DataFrame:
    """The result columns with their types and no rows (an engine's output schema)."""
    labels = np.asarray(classes)
    columns = output_columns(labels, keep_original=keep_original)
    frame = {name: np.empty(0) for name in columns}
    frame[PREDICTION] = labels[:0]
    return pd.DataFrame(frame, columns=columns)


def saved_columns(
    eraser: str | Path, features: Sequence[str] | None, keys: Sequence[str]
) -> tuple[list[str], np.ndarray]:
    """The input columns a job needs (keys, then features) and the classes, read from the
    eraser's directory alone (no model), to check a dataset before any worker starts."""
    from ruleeraser.persist import read_eraser

    config, _, _ = read_eraser(eraser)
    columns = fitted_columns(config["features"], features)
    needed = list(dict.fromkeys([*keys, *columns]))
    return needed, np.asarray(config["classes"])


def check_columns(available: Sequence[str], needed: Sequence[str], what: str) -> None:
    """``ValueError`` naming the columns of ``needed`` that ``what`` lacks."""
    missing = [c for c in needed if c not in set(available)]
    if missing:
        raise ValueError(f"{what} has no column(s) {missing}; its columns: {list(available)}")
