"""A deployed model behind an HTTP endpoint speaking JSON, as a black-box function.

:class:`HTTPModel` maps a batch of rows to the model's outputs: it splits the batch into
requests of ``batch_size`` rows, sends up to ``max_concurrency`` at a time, retries on 429,
5xx and connection errors with exponential backoff, never sends more rows than ``budget``,
and, with ``cache_dir``, keeps every answer on disk so that the same rows are never sent
twice. Wrap it with :func:`ruleeraser.as_blackbox` (or use
:func:`ruleeraser.model_files.load_model`) to validate its outputs as probabilities.

Protocols (``protocol=``):

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
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

Protocol = Literal["instances", "kserve-v2", "custom"]
RowFormat = Literal["values", "records"]

PROTOCOLS = ("instances", "kserve-v2", "custom")
CACHE_FILE = "http-cache.sqlite3"
_EXCERPT = 300


class HTTPModelError(RuntimeError):
    """A request to the model failed; ``rows`` is the ``(first, last)`` row of the batch."""

    def __init__(self, message: str, rows: tuple[int, int]) -> None:
        super().__init__(message)
        self.rows = rows


class QueryBudgetExceeded(RuntimeError):
    """Answering would send more rows than the budget allows; nothing was sent."""

    def __init__(self, needed: int, budget: int, sent: int) -> None:
        super().__init__(
            f"query budget exceeded: {needed} row(s) need an answer from the model but only "
            f"{budget - sent} of the budget of {budget} remain ({sent} already sent); "
            "nothing was sent (raise the budget, or use a cache that already holds the rows)"
        )
        self.needed, self.budget, self.sent = needed, budget, sent


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
    batch_size: rows per request. max_concurrency: requests in flight at once.
    timeout: seconds allowed per request (connect, send, wait, read).
    retries: further attempts after a 429, a 5xx, a timeout or a connection error, waiting
        ``backoff * 2**attempt`` seconds (times a random factor in [0.5, 1]) or what the
        ``Retry-After`` header asks, at most ``max_backoff``. Other statuses fail at once.
    budget: the most rows ever sent to the model by this object (retries of the same rows
        count once). A call that needs more raises :class:`QueryBudgetExceeded` before
        sending anything.
    cache_dir: keep every answer in ``cache_dir/http-cache.sqlite3``, keyed by the URL, the
        request format and the row's content; cached rows are not sent again, identical rows
        are sent once. Use it only for a model that does not change behind the URL.
    headers: extra request headers (e.g. authorisation).
    progress: show a progress bar of the rows sent.
    sleep, seed: the waiting function and the jitter's seed (for tests).

    Counters: ``rows_sent`` (rows sent to the model), ``requests_sent`` (HTTP requests,
    retries included), ``cache_hits`` (rows answered without sending them).
    """

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
        batch_size: int = 256,
        max_concurrency: int = 4,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 60.0,
        budget: int | None = None,
        cache_dir: str | Path | None = None,
        headers: Mapping[str, str] | None = None,
        progress: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        seed: int | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if row_format not in ("values", "records"):
            raise ValueError(f"row_format must be 'values' or 'records', got {row_format!r}")
        if protocol == "kserve-v2" and row_format == "records":
            raise ValueError("the kserve-v2 protocol sends a tensor: use row_format='values'")
        if protocol == "custom":
            if not request_key or not response_key:
                raise ValueError("protocol='custom' needs request_key and response_key")
        elif request_key is not None or response_key is not None:
            raise ValueError(
                f"request_key/response_key apply to protocol='custom', not {protocol!r}"
            )
        for name, value, low in [
            ("batch_size", batch_size, 1),
            ("max_concurrency", max_concurrency, 1),
            ("retries", retries, 0),
        ]:
            if value < low:
                raise ValueError(f"{name} must be at least {low}, got {value}")
        if timeout <= 0 or backoff < 0 or max_backoff < 0:
            raise ValueError("timeout must be positive, backoff and max_backoff not negative")
        if budget is not None and budget < 0:
            raise ValueError(f"budget must not be negative, got {budget}")
        self.url = url
        self.protocol = protocol
        self.row_format = row_format
        self.request_key = request_key
        self.response_key = response_key
        self.input_name = input_name
        self.input_datatype = input_datatype
        self.output_name = output_name
        self.batch_size = batch_size
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.budget = budget
        self.headers = dict(headers or {})
        self.progress = progress
        self.sleep = sleep
        self.rows_sent = 0
        self.requests_sent = 0
        self.cache_hits = 0
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._reserved = 0
        self._client: Any = None
        self._closed = False
        self._cache = None if cache_dir is None else _Cache(Path(cache_dir))
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
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cache is not None:
            self._cache.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")

    def __enter__(self) -> HTTPModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
            return rows, _texts(rows)
        arr = X.to_numpy() if hasattr(X, "to_numpy") else np.asarray(X)
        if arr.ndim < 2:
            raise ValueError(f"expected a 2-D batch of rows, got shape {arr.shape}")
        if arr.dtype.kind not in "biuf":
            if self.protocol == "kserve-v2":
                raise TypeError(
                    f"kserve-v2 sends a numeric tensor; the rows have dtype {arr.dtype}"
                )
            return arr, _texts(arr.tolist())
        bad = ~np.isfinite(arr.reshape(len(arr), -1).astype(np.float64)).all(axis=1)
        if bad.any():
            shown = ", ".join(map(str, np.flatnonzero(bad)[:10]))
            raise ValueError(
                f"{int(bad.sum())} row(s) hold NaN or infinite values, which JSON cannot "
                f"carry: rows {shown}{' ...' if bad.sum() > 10 else ''}"
            )
        return arr, [_dumps(row) for row in arr.tolist()]

    def _key(self, text: str) -> str:
        return hashlib.sha256(f"{self._signature}\n{text}".encode()).hexdigest()

    def _body(self, rows: np.ndarray | list[dict], texts: list[str], idx: list[int]) -> bytes:
        if self.protocol == "kserve-v2":
            batch = rows[idx]  # type: ignore[index]
            tensor = {
                "name": self.input_name,
                "shape": list(batch.shape),
                "datatype": self.input_datatype,
                "data": batch.reshape(-1).tolist(),
            }
            return json.dumps({"inputs": [tensor]}, separators=(",", ":")).encode()
        keys = ["instances"] if self.protocol == "instances" else self.request_key.split(".")
        payload = "[" + ",".join(texts[i] for i in idx) + "]"
        head = "".join("{" + json.dumps(k) + ":" for k in keys)
        return (head + payload + "}" * len(keys)).encode()

    def _decode(self, body: Any, m: int) -> np.ndarray:
        """The outputs in a response body, checked: ``m`` rows of finite numbers."""
        if self.protocol == "kserve-v2":
            out = _pick_output(body, self.output_name)
            try:
                values = np.asarray(out["data"], dtype=np.float64).reshape(out["shape"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"output tensor cannot be read: {exc}") from None
        else:
            path = "predictions" if self.protocol == "instances" else self.response_key
            found = _lookup(body, path)
            try:
                values = np.asarray(found, dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError(
                    f"{path!r} is not an array of numbers: {_excerpt(json.dumps(found))}"
                ) from None
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
        batches = [todo[s : s + self.batch_size] for s in range(0, len(todo), self.batch_size)]
        failed = threading.Event()

        def request(idx: list[int]) -> np.ndarray | None:
            if failed.is_set():
                return None  # a request failed: send no more
            try:
                return self._request(rows, texts, idx)
            except BaseException:
                failed.set()
                raise

        bar = tqdm(total=len(todo), unit="row", desc="querying", disable=not self.progress)
        error: BaseException | None = None
        with bar, ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(batches))) as pool:
            futures = {pool.submit(request, idx): idx for idx in batches}
            for future in as_completed(futures):
                if future.exception() is not None:
                    error = error or future.exception()
                    continue
                idx, values = futures[future], future.result()
                if values is None:
                    continue
                for i, value in zip(idx, values, strict=True):
                    answers[i] = value
                if keys is not None:  # answers received are kept, even if another fails
                    items = [(keys[i], _dumps(answers[i].tolist())) for i in idx]
                    with self._lock:
                        self._cache.put(items)  # type: ignore[union-attr]
                bar.update(len(idx))
        if error is not None:
            raise error

    def _request(self, rows: np.ndarray | list[dict], texts: list[str], idx: list[int]) -> Any:
        """Send rows ``idx`` in one request, retrying; their decoded answers."""
        span = (idx[0], idx[-1])
        where = f"rows {span[0]}-{span[1]}"
        if span[1] - span[0] + 1 != len(idx):
            where += f" ({len(idx)} rows not in the cache)"
        body = self._body(rows, texts, idx)
        with self._lock:
            self.rows_sent += len(idx)
        attempts = self.retries + 1
        for attempt in range(attempts):
            try:
                return self._attempt(body, len(idx))
            except _Retry as retry:
                problem = retry.problem
                if attempt + 1 < attempts:
                    self.sleep(self._delay(attempt, retry.after))
            except ValueError as exc:
                raise HTTPModelError(f"{where}: {exc}", span) from None
        raise HTTPModelError(f"{where}: {problem} after {attempts} attempts", span)

    def _attempt(self, body: bytes, m: int) -> np.ndarray:
        """One POST and its decoded answer; ``_Retry`` when it may be retried, ``ValueError``
        when it may not."""
        httpx = _httpx()
        with self._lock:
            self.requests_sent += 1
        try:
            response = self._get_client().post(self.url, content=body)
        except httpx.TimeoutException as exc:
            raise _Retry(f"timed out after {self.timeout:g} s ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise _Retry(f"connection failed ({type(exc).__name__}: {exc})") from None
        status = response.status_code
        if status == 429 or status >= 500:
            after = _retry_after(response.headers.get("Retry-After"))
            raise _Retry(f"HTTP {status}: {_excerpt(response.text)}", after)
        if not 200 <= status < 300:
            raise ValueError(f"HTTP {status}: {_excerpt(response.text)}")
        try:
            payload = response.json()
        except ValueError:
            raise ValueError(
                f"HTTP {status} but the body is not JSON: {_excerpt(response.text)}"
            ) from None
        return self._decode(payload, m)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(self.max_backoff, retry_after)
        base = min(self.max_backoff, self.backoff * 2**attempt)
        return base * (0.5 + 0.5 * self._random.random())

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                httpx = _httpx()
                self._client = httpx.Client(
                    timeout=httpx.Timeout(self.timeout),
                    limits=httpx.Limits(max_connections=self.max_concurrency),
                    headers={"Content-Type": "application/json", **self.headers},
                )
            return self._client


class _Retry(Exception):
    """A failed attempt that may be retried, after ``after`` seconds if the server said."""

    def __init__(self, problem: str, after: float | None = None) -> None:
        super().__init__(problem)
        self.problem, self.after = problem, after


class _Cache:
    """Answers by key in a SQLite file; callers hold the model's lock."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / CACHE_FILE
        self.db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        with self.db:
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer TEXT NOT NULL)"
            )

    def get(self, keys: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for s in range(0, len(keys), 500):
            chunk = list(keys[s : s + 500])
            marks = ",".join("?" * len(chunk))
            query = f"SELECT key, answer FROM answers WHERE key IN ({marks})"
            found.update(self.db.execute(query, chunk).fetchall())
        return found

    def put(self, items: list[tuple[str, str]]) -> None:
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?)", items)

    def close(self) -> None:
        self.db.close()


def _httpx() -> Any:
    try:
        import httpx
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError("an HTTP model needs httpx: pip install 'rule-eraser[http]'") from exc
    return httpx


def _dumps(value: Any) -> str:
    return json.dumps(
        value, separators=(",", ":"), sort_keys=True, allow_nan=False, default=_json_scalar
    )


def _texts(rows: list) -> list[str]:
    """Each row's JSON text; a row JSON cannot carry (NaN, unknown types) is named."""
    texts = []
    for i, row in enumerate(rows):
        try:
            texts.append(_dumps(row))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"row {i} cannot be sent as JSON: {exc}") from None
    return texts


def _json_scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= _EXCERPT else text[:_EXCERPT] + "...")


def _lookup(body: Any, path: str) -> Any:
    """``body`` at a dotted ``path``; integer parts index lists."""
    node = body
    for i, part in enumerate(path.split(".")):
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, TypeError, ValueError):
            at = ".".join(path.split(".")[:i]) or "the body"
            has = list(node)[:10] if isinstance(node, dict) else type(node).__name__
            raise ValueError(f"the response has no {part!r} in {at} ({has})") from None
    return node


def _pick_output(body: Any, name: str | None) -> dict:
    outputs = body.get("outputs") if isinstance(body, dict) else None
    if not isinstance(outputs, list) or not outputs:
        raise ValueError(f"the response has no 'outputs' list: {_excerpt(json.dumps(body))}")
    names = [o.get("name") for o in outputs]
    if name is not None:
        if name not in names:
            raise ValueError(f"no output named {name!r}; outputs: {names}")
        return outputs[names.index(name)]
    if len(outputs) > 1:
        raise ValueError(f"the model has outputs {names}; choose one with output_name")
    return outputs[0]


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
