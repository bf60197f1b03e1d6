"""A deployed model behind an HTTP endpoint speaking JSON, as a black-box function.

:class:`HTTPModel` maps a batch of rows to the model's outputs: it splits the batch into
requests of ``rows_per_request`` rows, sends up to ``max_concurrency`` at a time, retries on
429, 5xx and connection errors with exponential backoff, never sends more rows than ``budget``,
and, with ``cache_dir``, keeps every answer on disk (:mod:`ruleeraser.http_cache`) so that the
same rows are never sent twice. Ctrl-C stops the sending: the requests already on the wire are
waited for and their answers kept, then :class:`QueryInterrupted` says what is cached. Wrap it
with :func:`ruleeraser.as_blackbox` (or use :func:`ruleeraser.model_files.load_model`) to
validate its outputs as probabilities.

Protocols (``protocol=``, the bodies in :mod:`ruleeraser.wire`):

- ``"instances"``: ``{"instances": rows}`` -> ``{"predictions": outputs}`` (TensorFlow Serving,
  KServe v1, Vertex AI, MLflow). ``row_format="records"`` sends each row as an object keyed by
  column name (DataFrames only).
- ``"kserve-v2"``: the Open Inference Protocol; ``url`` is the full infer URL
  (``.../v2/models/NAME/infer``). The batch is one input tensor ``input_name`` of shape
  ``[n, d]``; the answer is the output tensor ``output_name`` (optional when there is one).
- ``"custom"``: ``request_key`` and ``response_key`` are dotted paths, e.g.
  ``request_key="data.rows"`` sends ``{"data": {"rows": rows}}`` and
  ``response_key="result.0.scores"`` reads ``body["result"][0]["scores"]``.

Outputs are one row per input row: k numbers (probabilities, or logits with
``as_blackbox(..., output="logits")``) or one number (a sigmoid).
"""

from __future__ import annotations

import hashlib
import json
import threading
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, as_completed, wait
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from ruleeraser import wire
from ruleeraser.http_cache import CACHE_FILE, AnswerCache, CacheFileError
from ruleeraser.http_client import PostFailed, RetryingPoster
from ruleeraser.params import InstanceOf, Interval, Options, Satisfies, validate_params

Protocol = Literal["instances", "kserve-v2", "custom"]
RowFormat = Literal["values", "records"]

PROTOCOLS = ("instances", "kserve-v2", "custom")
__all__ = [
    "CACHE_FILE",
    "CacheFileError",
    "HTTPModel",
    "HTTPModelError",
    "QueryBudgetExceeded",
    "QueryInterrupted",
]


class HTTPModelError(RuntimeError):
    """A request to the model failed; ``rows`` is the ``(first, last)`` row of the batch."""

    def __init__(self, message: str, rows: tuple[int, int]) -> None:
        super().__init__(message)
        self.rows = rows

    def __reduce__(self) -> tuple[Any, ...]:  # by its arguments: Ray and Dask pickle errors
        return type(self), (str(self), self.rows)


class QueryBudgetExceeded(RuntimeError):
    """Answering would send more rows than the budget allows; nothing was sent."""

    def __init__(self, needed: int, budget: int, sent: int) -> None:
        super().__init__(
            f"query budget exceeded: {needed} row(s) need an answer from the model but only "
            f"{budget - sent} of the budget of {budget} remain ({sent} already sent); "
            "nothing was sent (raise the budget, or use a cache that already holds the rows)"
        )
        self.needed, self.budget, self.sent = needed, budget, sent

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.needed, self.budget, self.sent)


class QueryInterrupted(KeyboardInterrupt):
    """Ctrl-C while querying: no request was sent after it, and the answers of the requests
    already on the wire were waited for and cached. ``answered`` rows of the call have an
    answer, ``unanswered`` do not; ``cached`` of the call's rows are in the cache file
    ``cache`` (None: no cache)."""

    def __init__(self, answered: int, unanswered: int, cached: int, cache: Path | None) -> None:
        kept = f"{cached} rows cached in {cache}: a rerun with this cache sends only the rest"
        if cache is None:
            kept = "no cache_dir, so a rerun sends them again"
        super().__init__(
            f"stopped sending to the model; {answered} rows answered, {unanswered} not ({kept})"
        )
        self.answered, self.unanswered = answered, unanswered
        self.cached, self.cache = cached, cache

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.answered, self.unanswered, self.cached, self.cache)


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


_POSITIVE_INT, _COUNT = Interval(int, 1, None), Interval(int, 0, None)
_SECONDS = Interval(float, 0, None)


class HTTPModel:
    """A model behind ``url``, called on a batch of rows, returning a float64 array.

    Parameters
    ----------
    url: the endpoint that answers a POST of JSON.
    protocol: ``"instances"``, ``"kserve-v2"`` or ``"custom"`` (see the module docstring).
    row_format: ``"values"`` (each row a list of numbers, DataFrames in column order) or
        ``"records"`` (each row an object keyed by column name; ``instances``/``custom``).
    request_key, response_key: dotted paths of the rows and the outputs (``custom`` only).
    input_name, input_datatype, output_name: the tensors of the ``kserve-v2`` protocol.
    rows_per_request: rows in one HTTP request. max_concurrency: requests in flight at once.
    timeout: seconds allowed per request (connect, send, wait, read).
    retries, backoff, max_backoff: further attempts after a 429, a 5xx, a timeout or a
        connection error, and their waits (:mod:`ruleeraser.http_client`). Other statuses
        fail at once.
    budget: the most rows ever sent to the model by this object (retries of the same rows
        count once). A call that needs more raises :class:`QueryBudgetExceeded` before
        sending anything.
    cache_dir: keep every answer in ``cache_dir/http-cache.sqlite3``, keyed by the URL, the
        request format and the row's content; cached rows are not sent again, identical rows
        are sent once. Use it only for a model that does not change behind the URL.
    headers: extra request headers (e.g. authorisation).
    progress: show a progress bar of the rows sent.
    sleep, seed: the function waiting between retries (None: a wait that Ctrl-C ends) and
        the jitter's seed (for tests).
    batch_size: deprecated name of ``rows_per_request``.

    Attributes
    ----------
    rows_sent: rows sent to the model. requests_sent: HTTP requests, retries included.
    cache_hits: rows answered without sending them.

    Example
    -------
    >>> model = HTTPModel("http://127.0.0.1:9000/predict", rows_per_request=64, retries=1)
    >>> model
    HTTPModel('http://127.0.0.1:9000/predict', protocol='instances')
    >>> HTTPModel("http://127.0.0.1:9000/predict", rows_per_request=0)
    Traceback (most recent call last):
    ...
    ValueError: rows_per_request must be an int >= 1; got 0
    """

    _parameter_constraints: dict[str, list] = {
        "url": [Satisfies(_is_url, "an http:// or https:// URL", kind=(str,))],
        "protocol": [Options(PROTOCOLS)],
        "row_format": [Options(("values", "records"))],
        "request_key": [None, InstanceOf((str,), "a dotted path")],
        "response_key": [None, InstanceOf((str,), "a dotted path")],
        "input_name": [InstanceOf((str,), "a tensor name")],
        "input_datatype": [InstanceOf((str,), "a KServe v2 datatype such as 'FP32'")],
        "output_name": [None, InstanceOf((str,), "a tensor name")],
        "rows_per_request": [_POSITIVE_INT],
        "max_concurrency": [_POSITIVE_INT],
        "timeout": [Interval(float, 0, None, closed="neither")],
        "retries": [_COUNT],
        "backoff": [_SECONDS],
        "max_backoff": [_SECONDS],
        "budget": [None, _COUNT],
        "cache_dir": [None, InstanceOf((str, PathLike), "a directory")],
        "headers": [None, InstanceOf((Mapping,), "a mapping of header names to values")],
        "progress": [Options((True, False))],
        "sleep": [None, Satisfies(callable, "a function of seconds")],
        "seed": [None, Interval(int, None, None)],
        "batch_size": [None, _POSITIVE_INT],
    }

    def __init__(
        self,
        url: str,
        *,
        protocol: Protocol = "instances",
        row_format: RowFormat = "values",
        request_key: str | None = None,
        response_key: str | None = None,
        input_name: str = "input-0",
        input_datatype: str = "FP32",
        output_name: str | None = None,
        rows_per_request: int = 256,
        max_concurrency: int = 4,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 60.0,
        budget: int | None = None,
        cache_dir: str | PathLike | None = None,
        headers: Mapping[str, str] | None = None,
        progress: bool = False,
        sleep: Callable[[float], Any] | None = None,
        seed: int | None = None,
        batch_size: int | None = None,
    ) -> None:
        params = dict(locals())
        del params["self"]
        validate_params(params, self._parameter_constraints)
        _check_protocol(protocol, row_format, request_key, response_key)
        if batch_size is not None:
            warnings.warn(
                "HTTPModel(batch_size=...) is deprecated and will be removed in 0.3: use "
                "rows_per_request",
                DeprecationWarning,
                stacklevel=2,
            )
            rows_per_request = batch_size
        for name in ("url", "protocol", "row_format", "request_key", "response_key"):
            setattr(self, name, params[name])
        self.input_name, self.input_datatype = input_name, input_datatype
        self.output_name, self.rows_per_request = output_name, rows_per_request
        self.max_concurrency, self.timeout, self.retries = max_concurrency, timeout, retries
        self.budget, self.progress = budget, progress
        self.rows_sent = self.cache_hits = 0
        self._poster = RetryingPoster(
            url, timeout=timeout, max_connections=max_concurrency, headers=headers,
            retries=retries, backoff=backoff, max_backoff=max_backoff, sleep=sleep, seed=seed,
        )  # fmt: skip
        self._lock = threading.Lock()
        self._reserved = 0
        self._closed = False
        self._cache = None if cache_dir is None else AnswerCache(Path(cache_dir))
        signature = [url, protocol, row_format, request_key, response_key]
        if protocol == "kserve-v2":
            signature += [input_name, input_datatype, output_name]
        self._signature = json.dumps(signature)

    # -- the call ----------------------------------------------------------------------------

    def __call__(self, X: Any) -> np.ndarray:
        """The model's outputs for the rows of ``X``: ``(n, k)`` or ``(n,)`` float64."""
        self._check_open()
        rows, texts = self._encode(X)
        n = len(texts)
        if n == 0:
            raise ValueError("no rows to send")
        answers: list[np.ndarray | None] = [None] * n
        keys: list[str] | None = None
        todo, copies = list(range(n)), {}
        if self._cache is not None:
            keys = [self._key(t) for t in texts]
            with self._lock:
                cached = self._cache.get(keys)
            first: dict[str, int] = {}
            copies, todo = {}, []  # copies: row -> the row of the same content that is sent
            for i, key in enumerate(keys):
                if key in cached:
                    answers[i] = np.asarray(json.loads(cached[key]), dtype=np.float64)
                elif key in first:
                    copies[i] = first[key]
                else:
                    first[key] = i
                    todo.append(i)
            with self._lock:
                self.cache_hits += n - len(todo)
        if todo:
            self._reserve(len(todo))
            try:
                self._send(rows, texts, todo, answers, keys)
            finally:
                with self._lock:
                    self._reserved -= len(todo)
        for i, j in copies.items():
            answers[i] = answers[j]
        shapes = {a.shape for a in answers}  # type: ignore[union-attr]
        if len(shapes) > 1:
            raise ValueError(f"the model returned rows of different shapes: {sorted(shapes)}")
        return np.stack(answers)  # type: ignore[arg-type]

    def pending(self, X: Any) -> int:
        """How many rows of ``X`` a call would send (not in the cache, duplicates once)."""
        self._check_open()
        _, texts = self._encode(X)
        if self._cache is None:
            return len(texts)
        keys = list(dict.fromkeys(self._key(t) for t in texts))
        with self._lock:
            return len(keys) - len(self._cache.get(keys))

    def close(self) -> None:
        """Close the connection pool and the cache; the model cannot be called after."""
        self._closed = True
        self._poster.close()
        if self._cache is not None:
            self._cache.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")

    def __enter__(self) -> HTTPModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def requests_sent(self) -> int:
        """HTTP requests sent, retries included."""
        return self._poster.requests_sent

    def __repr__(self) -> str:
        return f"HTTPModel({self.url!r}, protocol={self.protocol!r})"

    # -- encoding ----------------------------------------------------------------------------

    def _encode(self, X: Any) -> tuple[np.ndarray | list[dict], list[str]]:
        """The rows as sent (an array, or records) and each row's canonical JSON text."""
        if hasattr(X, "detach"):  # a torch tensor
            X = X.detach().cpu().numpy()
        if self.row_format == "records":
            if not hasattr(X, "columns"):
                raise TypeError("row_format='records' needs a DataFrame (rows keyed by column)")
            rows: Any = X.to_dict(orient="records")
            return rows, wire.row_texts(rows)
        arr = X.to_numpy() if hasattr(X, "to_numpy") else np.asarray(X)
        if arr.ndim < 2:
            raise ValueError(f"expected a 2-D batch of rows, got shape {arr.shape}")
        if arr.dtype.kind not in "biuf":
            if self.protocol == "kserve-v2":
                raise TypeError(
                    f"kserve-v2 sends a numeric tensor; the rows have dtype {arr.dtype}"
                )
            return arr, wire.row_texts(arr.tolist())
        bad = ~np.isfinite(arr.reshape(len(arr), -1).astype(np.float64)).all(axis=1)
        if bad.any():
            shown = ", ".join(map(str, np.flatnonzero(bad)[:10]))
            raise ValueError(
                f"{int(bad.sum())} row(s) hold NaN or infinite values, which JSON cannot "
                f"carry: rows {shown}{' ...' if bad.sum() > 10 else ''}"
            )
        return arr, [wire.dumps(row) for row in arr.tolist()]

    def _key(self, text: str) -> str:
        return hashlib.sha256(f"{self._signature}\n{text}".encode()).hexdigest()

    def _body(self, rows: np.ndarray | list[dict], texts: list[str], idx: list[int]) -> bytes:
        if self.protocol == "kserve-v2":
            return wire.kserve_v2_body(rows[idx], self.input_name, self.input_datatype)  # type: ignore[index]
        path = wire.INSTANCES if self.protocol == "instances" else self.request_key
        return wire.rows_body([texts[i] for i in idx], path)  # type: ignore[arg-type]

    def _decode(self, content: bytes, m: int) -> np.ndarray:
        """The outputs in a response body, checked: ``m`` rows of finite numbers."""
        body = wire.read_answer(content)
        if self.protocol == "kserve-v2":
            values = wire.kserve_v2_output(body, self.output_name)
        else:
            path = wire.PREDICTIONS if self.protocol == "instances" else self.response_key
            values = wire.read_outputs(body, path)  # type: ignore[arg-type]
        if values.ndim not in (1, 2) or values.shape[0] != m:
            got = f"{values.shape[0]} row(s)" if values.ndim else "a scalar"
            raise ValueError(
                f"the model returned {got} of shape {values.shape[1:]} for {m} input rows"
            )
        if not np.isfinite(values).all():
            raise ValueError("the model returned NaN or infinite values")
        return values

    # -- sending -----------------------------------------------------------------------------

    def _reserve(self, needed: int) -> None:
        with self._lock:
            used = self.rows_sent + self._reserved
            if self.budget is not None and used + needed > self.budget:
                raise QueryBudgetExceeded(needed, self.budget, used)
            self._reserved += needed

    def _send(
        self,
        rows: np.ndarray | list[dict],
        texts: list[str],
        todo: list[int],
        answers: list[np.ndarray | None],
        keys: list[str] | None,
    ) -> None:
        """Send rows ``todo`` in requests of ``rows_per_request``, ``max_concurrency`` at once,
        filling ``answers`` and the cache; the first failure stops the sending."""
        size = self.rows_per_request
        batches = [todo[s : s + size] for s in range(0, len(todo), size)]
        stop = threading.Event()  # set by a failure or Ctrl-C: send no more
        bar = tqdm(total=len(todo), unit="row", desc="querying", disable=not self.progress)
        pool = ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(batches)))
        futures = {pool.submit(self._request, rows, texts, idx, stop): idx for idx in batches}
        kept: set[Future] = set()
        error: BaseException | None = None
        try:
            for future in as_completed(futures):
                error = error or self._keep(future, futures[future], answers, keys, bar)
                kept.add(future)
        except KeyboardInterrupt:
            stop.set()
            for future in futures:
                future.cancel()  # those not sent yet
            self._wait_on_the_wire(list(futures))
            for future in futures:
                if future.done() and future not in kept and not future.cancelled():
                    self._keep(future, futures[future], answers, keys, bar)
            raise self._interrupted(answers, todo, keys) from None
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            bar.close()
        if error is not None:
            raise error

    def _keep(
        self,
        future: Future,
        idx: list[int],
        answers: list[np.ndarray | None],
        keys: list[str] | None,
        bar: Any,
    ) -> BaseException | None:
        """Store a finished request's answers (in the cache too); its error, if it failed."""
        if future.exception() is not None:
            return future.exception()
        values = future.result()
        if values is None:  # not sent: the sending had stopped
            return None
        for i, value in zip(idx, values, strict=True):
            answers[i] = value
        if keys is not None:  # answers received are kept, even if another request fails
            items = [(keys[i], wire.dumps(answers[i].tolist())) for i in idx]  # type: ignore[union-attr]
            with self._lock:
                self._cache.put(items)  # type: ignore[union-attr]
        bar.update(len(idx))
        return None

    def _wait_on_the_wire(self, futures: list[Future]) -> None:
        """After Ctrl-C: wait for the requests already sent (their rows are paid for); a
        second Ctrl-C gives them up, closing their connections."""
        try:
            wait(futures)
        except KeyboardInterrupt:
            self._poster.close()

    def _interrupted(
        self, answers: list[np.ndarray | None], todo: list[int], keys: list[str] | None
    ) -> QueryInterrupted:
        answered = sum(answers[i] is not None for i in todo)
        cached = 0
        if keys is not None:
            with self._lock:
                cached = len(self._cache.get(list(dict.fromkeys(keys))))  # type: ignore[union-attr]
        path = None if self._cache is None else self._cache.path
        return QueryInterrupted(answered, len(todo) - answered, cached, path)

    def _request(
        self,
        rows: np.ndarray | list[dict],
        texts: list[str],
        idx: list[int],
        stop: threading.Event,
    ) -> np.ndarray | None:
        """Send rows ``idx`` in one request, retrying; their decoded answers (None when the
        sending stopped before they went)."""
        if stop.is_set():
            return None
        span = (idx[0], idx[-1])
        where = f"rows {span[0]}-{span[1]}"
        if span[1] - span[0] + 1 != len(idx):
            where += f" ({len(idx)} rows not in the cache)"
        body = self._body(rows, texts, idx)
        with self._lock:
            self.rows_sent += len(idx)
        try:
            return self._decode(self._poster.post(body, stop), len(idx))
        except PostFailed as failed:
            stop.set()
            tries = f" after {failed.attempts} attempts" if failed.retryable else ""
            raise HTTPModelError(f"{where}: {failed.problem}{tries}", span) from None
        except ValueError as exc:
            stop.set()
            raise HTTPModelError(f"{where}: {exc}", span) from None


def _check_protocol(
    protocol: str, row_format: str, request_key: str | None, response_key: str | None
) -> None:
    """The parameters that must go together, each valid alone."""
    if protocol == "kserve-v2" and row_format == "records":
        raise ValueError("the kserve-v2 protocol sends a tensor: use row_format='values'")
    if protocol == "custom":
        if not request_key or not response_key:
            raise ValueError("protocol='custom' needs request_key and response_key")
    elif request_key is not None or response_key is not None:
        raise ValueError(f"request_key/response_key apply to protocol='custom', not {protocol!r}")
