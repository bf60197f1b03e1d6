"""The fair proxy (``ruleeraser serve``): an HTTP server in front of a deployed model's endpoint.

The upstream model speaks the *instances* protocol (TF Serving / KServe v1 style)::

    POST <upstream URL>  {"instances": [[x, ...], ...]}  ->  {"predictions": [[p, ...], ...]}

one probability row per instance (a single probability per row is read as ``[1 - p, p]``).
The proxy answers ``POST /v1/predict`` with the same body, plus an optional
``"return_original": true``::

    {"predictions": fair, "original": upstream (if asked), "classes": [...]}

where ``fair = softmax(log M(x) - strength * sum_j log G_j(x))`` with ``M(x)`` the upstream's
answer, i.e. :meth:`ruleeraser.Eraser.predict_proba`. Instances are flat rows of
``prod(eraser.input_shape_)`` finite numbers; they are forwarded as they came.

Concurrent requests are coalesced (:class:`_Proxy`): those that arrive while the upstream calls
allowed at once are busy go together in the next call, and each gets its own rows back. How
many calls are allowed at once is learnt from their times (:class:`_InflightLimit`): few for a
model that serves one call at a time, more for one that serves them in parallel. The
patches then run on the merged rows, in float32, whose rounding depends on the rows computed
together: a coalesced answer equals ``predict_proba`` of its rows to about 1e-7 (as
``predict_proba`` of different batchings do), a request sent alone exactly.

Errors answer ``{"detail": "..."}``, never a partial answer: 400 body is not JSON, 413 body or
row count over the limit, 422 invalid instances, 502 upstream unreachable or answering
something other than probabilities for every row, 504 upstream slower than the timeout.
``GET /healthz`` describes the eraser and the settings and counts requests, upstream calls and
rows; ``GET /healthz?upstream=true`` also sends the upstream a one-row probe. FastAPI, aiohttp
and uvicorn are imported only when an app is built, so the command line loads without the
``serve`` extra.
"""

import argparse
import asyncio
import collections
import gc
import json
import logging
import os
import socket
import sys
from collections.abc import Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ruleeraser.blackbox import check_probabilities
from ruleeraser.eraser import Eraser, check_is_fitted

if TYPE_CHECKING:
    from fastapi import FastAPI

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_ROWS = 1000
DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_MIN_INFLIGHT = 1
DEFAULT_PATCH_THREADS = 1
#: Environment variables read by :func:`create_app_from_env` (multi-worker mode).
ENV = {
    "eraser": "RULEERASER_SERVE_ERASER",
    "upstream": "RULEERASER_SERVE_UPSTREAM",
    "timeout": "RULEERASER_SERVE_TIMEOUT",
    "max_rows": "RULEERASER_SERVE_MAX_ROWS",
    "max_body_bytes": "RULEERASER_SERVE_MAX_BODY_BYTES",
    "coalesce": "RULEERASER_SERVE_COALESCE",
    "max_inflight": "RULEERASER_SERVE_MAX_INFLIGHT",
    "min_inflight": "RULEERASER_SERVE_MIN_INFLIGHT",
    "max_batch_rows": "RULEERASER_SERVE_MAX_BATCH_ROWS",
    "patch_threads": "RULEERASER_SERVE_PATCH_THREADS",
}
PREDICT_PATH = "/v1/predict"
_FLOAT32_MAX = float(np.finfo(np.float32).max)  # the patches compute in float32
_JSON = {"content-type": "application/json"}
log = logging.getLogger("ruleeraser.serve")


def _no_model(_: Any) -> None:
    raise RuntimeError("the proxy queries the deployed model over HTTP, not in process")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def _where(loc: Sequence[Any]) -> str:
    """A pydantic error location as ``instances[2][0]``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "body"


def _validation_detail(errors: list[dict[str, Any]], shown: int = 5) -> str:
    parts = [f"{_where(e['loc'])}: {e['msg']}" for e in errors[:shown]]
    more = f" (and {len(errors) - shown} more)" if len(errors) > shown else ""
    return "invalid request: " + "; ".join(parts) + more


def _route(scope: dict[str, Any]) -> str:
    """The path of an ASGI request below the app's root path (where it is mounted)."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class _Refusal(Exception):
    """An answer other than 200: the HTTP status and the ``detail`` the client reads."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(status, detail)
        self.status, self.detail = status, detail


class _Upstream:
    """An aiohttp session to the upstream, opened on first use in the serving event loop.

    aiohttp's client costs about a quarter of httpx's CPU per request (measured with
    ``benchmarks/proxy_overhead.py``), which matters because the proxy shares the cores with
    the model. A session belongs to one event loop; a new loop (a test client) gets a new one.
    """

    def __init__(self, url: str, timeout: float, max_connections: int) -> None:
        import aiohttp  # with the app, not on the first request: the import takes ~150 ms

        self.aiohttp = aiohttp
        #: What :meth:`post` raises when the upstream cannot be reached.
        self.failures = (aiohttp.ClientError, OSError)
        self.url, self.timeout, self.max_connections = url, timeout, max_connections
        self.session: aiohttp.ClientSession | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # the session's

    async def post(self, body: bytes, timeout: float) -> tuple[int, bytes]:
        """POST ``body`` as JSON within ``timeout`` seconds; the status and the answer body."""
        aiohttp = self.aiohttp
        loop = asyncio.get_running_loop()
        if self.session is None or self.session.closed or self.loop is not loop:
            self.loop = loop
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections),
                skip_auto_headers=("User-Agent",),
            )
        async with self.session.post(
            self.url, data=body, headers=_JSON, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as answer:
            return answer.status, await answer.read()

    async def aclose(self) -> None:
        if self.session is not None and not self.session.closed:
            await self.session.close()
        self.session = None


class _InflightLimit:
    """How many coalesced upstream calls may be out at once, learnt from their call times.

    A latency-based limiter in the spirit of TCP Vegas (and Netflix's concurrency limits):
    ``fastest`` is the shortest successful call time over the last ``window`` to
    ``2 * window`` calls, the upstream's time without load, so a call that took ``rtt``
    seconds spent about ``waited = 1 - fastest / rtt`` of it behind other calls at the
    upstream: ``1 - 1 / k`` with ``k`` calls out at a model that serves one call at a time,
    about 0 at one that serves them in parallel. After every call, the limit

    - goes down by one (not below ``low``) when ``waited > 0.5``: calls spend most of their
      time queueing at the upstream (three or more out at a one-call-at-a-time model), so
      requests had better wait here and go together in fewer calls;
    - goes up by one (not above ``high``) when ``waited < 0.25`` and the limit held requests
      back (they were waiting here when the call returned, or it took the last free call):
      more calls at once cost the upstream little, and a request held here waits a whole call.

    So a one-worker model settles at two calls (one computing, the next one waiting), and a
    model that serves calls in parallel gets as many as there is demand for, up to ``high``,
    unless they slow each other down to twice the time without load. The thresholds are on
    the share of a call's time, not on the calls queued (``k * waited``, as Vegas counts
    packets): with those, 16 parallel 20 ms calls, each a few ms slower for the others' CPU
    at the upstream, held the limit at 7-12 and the p99 latency at 56 ms (41 with these). Each
    call moves the limit by at most one; with ``low == high`` it is fixed. Call times include
    the rows' count (a larger call takes longer), which the window's minimum and the
    thresholds absorb for the small batches coalescing makes.
    """

    RAISE_BELOW, LOWER_ABOVE = 0.25, 0.5

    def __init__(self, low: int, high: int, initial: int = 2, window: int = 200) -> None:
        self.low, self.high, self.window = low, high, window
        self.value = min(max(initial, low), high)
        self.fastest = self._fastest_next = float("inf")
        self._samples = 0

    def update(self, rtt: float, held_back: bool) -> None:
        """Learn from one successful call of ``rtt`` seconds."""
        if not rtt > 0:
            return
        self._samples += 1
        self.fastest = min(self.fastest, rtt)
        self._fastest_next = min(self._fastest_next, rtt)
        if self._samples % self.window == 0:  # forget calls older than two windows
            self.fastest, self._fastest_next = self._fastest_next, float("inf")
        if self.low == self.high:
            return
        waited = 1.0 - self.fastest / rtt
        if waited > self.LOWER_ABOVE:
            self.value = max(self.low, self.value - 1)
        elif waited < self.RAISE_BELOW and held_back:
            self.value = min(self.high, self.value + 1)


class _Pending:
    """One client request waiting for its rows' answers: ``future`` gets ``(proba, fair)``."""

    __slots__ = ("X", "instances", "future", "deadline")

    def __init__(self, X: np.ndarray, instances: list, future: asyncio.Future, deadline: float):
        self.X, self.instances, self.future, self.deadline = X, instances, future, deadline

    def fail(self, status: int, detail: str) -> None:
        if not self.future.done():  # not given up by its client
            self.future.set_exception(_Refusal(status, detail))


class _Proxy:
    """What one app holds: the eraser, the limits, the upstream client and the request queue.

    With ``coalesce``, requests share upstream calls: at most ``limit.value`` calls are out at
    once (:class:`_InflightLimit`, between ``min_inflight`` and ``max_inflight``); a request
    that finds them all busy waits in the queue, and when a call returns the queue goes out
    together as the next one (at most ``max_batch_rows`` rows; a larger request goes alone).
    No timer: a request that finds a call free goes at once, alone. The patches run once per
    call on the merged rows, and each request gets exactly its own rows back.
    """

    def __init__(
        self,
        eraser: Eraser,
        upstream: _Upstream,
        max_rows: int,
        *,
        coalesce: bool,
        max_inflight: int,
        min_inflight: int,
        max_batch_rows: int,
    ) -> None:
        self.eraser = eraser
        self.upstream = upstream
        self.max_rows = max_rows
        self.coalesce = coalesce
        self.limit = _InflightLimit(min_inflight, max_inflight)
        self.max_batch_rows = max_batch_rows
        self.width = int(np.prod(eraser.input_shape_))
        self.classes = eraser.classes_.tolist()
        self.requests = self.upstream_calls = self.upstream_rows = 0  # predictions only
        self.loop: asyncio.AbstractEventLoop | None = None  # the queue's
        self.queue: collections.deque[_Pending] = collections.deque()
        self.inflight = 0
        self.tasks: set[asyncio.Task] = set()

    def rows(self, instances: list[list[float]]) -> np.ndarray:
        """The instances as an ``(n, width)`` array; 413 or 422 with the offending rows."""
        if len(instances) > self.max_rows:
            raise _Refusal(
                413,
                f"{len(instances)} instances in one request; this proxy takes at most "
                f"{self.max_rows}",
            )
        try:
            X = np.asarray(instances, dtype=np.float64)
        except ValueError:  # rows of different lengths
            X = np.empty((0, 0))
        if X.ndim == 2 and X.shape == (len(instances), self.width):
            return X
        bad = [i for i, row in enumerate(instances) if len(row) != self.width]
        raise _Refusal(
            422,
            f"every instance must hold {self.width} numbers (the eraser's input shape is "
            f"{self.eraser.input_shape_}); {len(bad)} do not, the first is instances[{bad[0]}] "
            f"with {len(instances[bad[0]])}",
        )

    async def predict(self, X: np.ndarray, instances: list) -> tuple[np.ndarray, np.ndarray]:
        """The upstream's and the fair probabilities of checked rows; raises :class:`_Refusal`."""
        loop = asyncio.get_running_loop()
        if loop is not self.loop:  # a new event loop (a test client): a new queue
            self.loop, self.queue, self.inflight = loop, collections.deque(), 0
        item = _Pending(X, instances, loop.create_future(), loop.time() + self.upstream.timeout)
        self.requests += 1
        if not self.coalesce:
            await self._forward([item])
        else:
            self.queue.append(item)
            if self.inflight < self.limit.value:
                self._launch()
        return await item.future

    def _launch(self) -> None:
        """Send the queue's first requests (up to ``max_batch_rows`` rows) as one call."""
        batch: list[_Pending] = []
        rows = 0
        while self.queue and (not batch or rows + len(self.queue[0].X) <= self.max_batch_rows):
            item = self.queue.popleft()
            if not item.future.done():  # its client gave up
                batch.append(item)
                rows += len(item.X)
        if batch:
            self.inflight += 1
            task = asyncio.get_running_loop().create_task(self._call(batch, self.inflight))
            self.tasks.add(task)  # a reference until it is done
            task.add_done_callback(self.tasks.discard)

    async def _call(self, batch: list[_Pending], sent_with: int) -> None:
        try:
            rtt = await self._forward(batch)
            if rtt is not None:
                held_back = bool(self.queue) or sent_with >= self.limit.value
                self.limit.update(rtt, held_back)
        except Exception:  # a bug: answer rather than leave the batch waiting
            log.exception("upstream call for %d request(s) failed", len(batch))
            for item in batch:
                item.fail(500, "internal error")
        except BaseException:  # cancelled (shutting down)
            for item in batch:
                item.future.cancel()
            raise
        finally:
            self.inflight -= 1
            while self.queue and self.inflight < self.limit.value:
                self._launch()

    async def _forward(self, batch: list[_Pending]) -> float | None:
        """One upstream call for ``batch``; every request gets its answer or its error.

        Returns the call's time in seconds when the upstream answered probabilities, else None.
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        late = [item for item in batch if item.deadline <= now]
        if late:  # waited the whole timeout in the queue
            for item in late:
                item.fail(504, self._too_slow())
            batch = [item for item in batch if item.deadline > now]
            if not batch:
                return None
        try:
            log_g = self._patch_log_proba(batch)
        except _Refusal as exc:  # some rows overflow a patch: find whose, the others go on
            if len(batch) == 1:
                batch[0].fail(exc.status, exc.detail)
                return None
            good, outputs = [], []
            for item in batch:
                try:
                    outputs.append(self._patch_log_proba([item]))
                    good.append(item)
                except _Refusal as refusal:
                    item.fail(refusal.status, refusal.detail)
            if not good:
                return None
            batch, log_g = good, [np.concatenate(p) for p in zip(*outputs, strict=True)]
        instances = (
            batch[0].instances
            if len(batch) == 1
            else [row for item in batch for row in item.instances]
        )
        self.upstream_calls += 1
        self.upstream_rows += len(instances)
        sent_at = loop.time()
        try:
            proba = await self.query(instances, min(item.deadline for item in batch) - now)
        except _Refusal as exc:
            for item in batch:  # no partial answers: the whole call failed
                item.fail(exc.status, exc.detail)
            return None
        rtt = loop.time() - sent_at
        fair = self.eraser.remove(proba, log_g)
        start = 0
        for item in batch:
            stop = start + len(item.X)
            if not item.future.done():
                item.future.set_result((proba[start:stop], fair[start:stop]))
            start = stop
        return rtt

    def _patch_log_proba(self, batch: list[_Pending]) -> list[np.ndarray]:
        """``log G_j(x)`` of each patch on the batch's rows (:meth:`Eraser.patch_log_proba`);
        422 for rows where a patch has no finite output."""
        X = batch[0].X if len(batch) == 1 else np.concatenate([item.X for item in batch])
        try:
            return self.eraser.patch_log_proba(X.reshape(len(X), *self.eraser.input_shape_))
        except ValueError as exc:
            raise _Refusal(422, str(exc)) from None

    def _too_slow(self) -> str:
        return f"upstream did not answer within {self.upstream.timeout:g} s"

    async def query(self, instances: list, timeout: float | None = None) -> np.ndarray:
        """The upstream's probabilities for ``instances``; 502 or 504 when it fails."""
        upstream = self.upstream
        try:
            status, content = await upstream.post(
                _dumps({"instances": instances}), upstream.timeout if timeout is None else timeout
            )
        except TimeoutError:
            log.warning("upstream %s timed out", upstream.url)
            raise _Refusal(504, self._too_slow()) from None
        except upstream.failures as exc:
            log.warning("upstream %s failed: %r", upstream.url, exc)
            raise _Refusal(502, f"upstream unreachable ({type(exc).__name__}: {exc})") from None
        if not 200 <= status < 300:
            text = content[:200].decode(errors="replace")
            raise _Refusal(502, f"upstream answered HTTP {status}: {text!r}")
        try:
            predictions = json.loads(content)["predictions"]
        except ValueError:
            raise _Refusal(502, "upstream answer is not JSON") from None
        except (KeyError, TypeError):
            raise _Refusal(502, "upstream answer has no 'predictions'") from None
        try:
            proba = check_probabilities(predictions, len(instances))
        except (ValueError, TypeError) as exc:
            raise _Refusal(502, f"upstream answer is not probabilities: {exc}") from None
        if proba.shape[1] != len(self.classes):
            raise _Refusal(
                502,
                f"upstream answered {proba.shape[1]} classes; the eraser was fitted for "
                f"{len(self.classes)}",
            )
        return proba


async def _read_body(receive: Any, headers: Sequence[tuple[bytes, bytes]], limit: int) -> bytes:
    """An ASGI request's body, or 413 as soon as it is known to exceed ``limit`` bytes."""
    for name, value in headers:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise _Refusal(413, f"request body exceeds {limit} bytes")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Refusal(499, "client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _Refusal(413, f"request body exceeds {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _schemas(width: int, max_rows: int) -> tuple[type, dict[str, Any], type, type, type]:
    """Pydantic models of the request, its OpenAPI schema, the answer, errors and health."""
    from typing import Annotated

    from pydantic import BaseModel, ConfigDict, Field

    Number = Annotated[float, Field(allow_inf_nan=False, ge=-_FLOAT32_MAX, le=_FLOAT32_MAX)]
    Label = str | int | float | bool

    class PredictRequest(BaseModel):
        model_config = ConfigDict(strict=True, extra="forbid")
        instances: list[list[Number]] = Field(
            min_length=1,
            description=f"rows of {width} finite numbers, at most {max_rows} rows",
        )
        return_original: bool = Field(False, description="also return the upstream's answer")

    schema = PredictRequest.model_json_schema()
    schema["properties"]["instances"]["maxItems"] = max_rows
    schema["properties"]["instances"]["items"].update(minItems=width, maxItems=width)

    class PredictResponse(BaseModel):
        predictions: list[list[float]] = Field(
            description="fair probabilities, one row per instance, columns as in classes"
        )
        original: list[list[float]] | None = Field(
            None, description="the upstream's probabilities (only with return_original)"
        )
        classes: list[Label]

    class ErrorResponse(BaseModel):
        detail: str

    class Health(BaseModel):
        status: str
        input_shape: list[int]
        classes: list[Label]
        biases: list[str]
        max_rows: int
        coalesce: bool = Field(description="concurrent requests share upstream calls")
        max_inflight: int | None = Field(
            description="most upstream calls out at once when coalescing (else no limit)"
        )
        min_inflight: int | None = Field(description="fewest the limit goes down to")
        inflight_limit: int | None = Field(
            description="upstream calls allowed out at once now, learnt from their call times"
        )
        upstream_fastest_ms: float | None = Field(
            description="shortest recent upstream call (the limit's no-load time), if any"
        )
        max_batch_rows: int | None = Field(description="most rows in one coalesced call")
        requests: int = Field(description="prediction requests sent on by this process")
        upstream_calls: int = Field(description="upstream calls this process made for them")
        upstream_rows: int = Field(description="rows in those calls")
        upstream_checked: bool

    return PredictRequest, schema, PredictResponse, ErrorResponse, Health


def create_app(
    eraser: str | Path | Eraser,
    upstream: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    coalesce: bool = True,
    max_inflight: int | None = None,
    min_inflight: int = DEFAULT_MIN_INFLIGHT,
    max_batch_rows: int | None = None,
    patch_threads: int | None = DEFAULT_PATCH_THREADS,
) -> "FastAPI":
    """The fair proxy as a FastAPI app.

    ``eraser``: a fitted :class:`~ruleeraser.Eraser` or a directory saved by ``Eraser.save``.
    ``upstream``: the URL the model answers instances on. ``timeout``: seconds a request may
    wait for the upstream, in the queue and on the wire. ``max_connections``: most upstream
    connections open at once. ``coalesce``: concurrent requests share upstream calls, each of at
    most ``max_batch_rows`` rows (default ``max_rows``: no more than one request may already
    send), as many at once as a limit learnt from the calls' times allows, between
    ``min_inflight`` and ``max_inflight`` (default ``max_connections``; equal: a fixed limit);
    see :class:`_Proxy` and :class:`_InflightLimit`.
    ``patch_threads``: torch threads while the app serves (restored after; None: leave them).
    One is right for a server: the patches are small, and on cores shared with the model
    torch's thread pool spends far more waking up than it saves (a 64-wide layer on 8 rows
    measured 4 ms instead of 7 µs on two busy cores).

    ``POST /v1/predict`` is answered by a lean ASGI handler in front of FastAPI (the same
    logic as the documented route, without the framework's per-request work); everything
    else, ``/docs``, ``/openapi.json`` and ``/healthz`` included, is FastAPI's.
    """
    from urllib.parse import urlsplit

    from fastapi import FastAPI, HTTPException, Query, Request, Response
    from pydantic import ValidationError

    from ruleeraser import __version__

    try:
        url = urlsplit(upstream)
        valid = url.scheme in ("http", "https") and bool(url.hostname) and url.port != 0
    except ValueError:  # a port out of range, a malformed IPv6 host
        valid = False
    if not valid:
        raise ValueError(f"upstream must be an http(s) URL, got {upstream!r}")
    batch_rows = max_rows if max_batch_rows is None else max_batch_rows
    max_inflight = max_connections if max_inflight is None else max_inflight
    limits = {"timeout": timeout, "max_rows": max_rows, "max_body_bytes": max_body_bytes}
    threads = 1 if patch_threads is None else patch_threads
    for name, value in {
        **limits, "max_connections": max_connections, "max_inflight": max_inflight,
        "min_inflight": min_inflight, "max_batch_rows": batch_rows, "patch_threads": threads,
    }.items():  # fmt: skip
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")
    if min_inflight > max_inflight:
        raise ValueError(
            f"min_inflight ({min_inflight}) must not exceed max_inflight ({max_inflight})"
        )
    if not isinstance(eraser, Eraser):
        eraser = Eraser.load(eraser, model=_no_model)
    check_is_fitted(eraser)
    proxy = _Proxy(
        eraser,
        _Upstream(upstream, timeout, max_connections),
        max_rows,
        coalesce=coalesce,
        max_inflight=max_inflight,
        min_inflight=min_inflight,
        max_batch_rows=batch_rows,
    )
    PredictRequest, request_schema, PredictResponse, ErrorResponse, Health = _schemas(
        proxy.width, max_rows
    )
    health = {
        "status": "ok",
        "input_shape": list(eraser.input_shape_),
        "classes": proxy.classes,
        "biases": list(eraser.bias_names_),
        "max_rows": max_rows,
        "coalesce": coalesce,
        "max_inflight": max_inflight if coalesce else None,
        "min_inflight": min_inflight if coalesce else None,
        "max_batch_rows": batch_rows if coalesce else None,
    }
    classes = proxy.classes

    async def answer(body: bytes) -> tuple[int, bytes]:
        """The status and JSON body ``POST /v1/predict`` answers ``body`` with."""
        try:
            try:
                parsed = PredictRequest.model_validate_json(body)
            except ValidationError as exc:
                errors = exc.errors(include_url=False, include_input=False)
                if errors[0]["type"] == "json_invalid":
                    raise _Refusal(400, f"body is not valid JSON: {errors[0]['msg']}") from None
                raise _Refusal(422, _validation_detail(errors)) from None
            X = proxy.rows(parsed.instances)
            proba, fair = await proxy.predict(X, parsed.instances)
        except _Refusal as refusal:
            return refusal.status, _dumps({"detail": refusal.detail})
        result: dict[str, Any] = {"predictions": fair.tolist()}
        if parsed.return_original:
            result["original"] = proba.tolist()
        result["classes"] = classes
        return 200, _dumps(result)

    async def lean_predict(scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            body = await _read_body(receive, scope["headers"], max_body_bytes)
        except _Refusal as refusal:
            if refusal.status == 499:  # nobody to answer
                return
            status, content = refusal.status, _dumps({"detail": refusal.detail})
        else:
            status, content = await answer(body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(content)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})

    class FairProxy(FastAPI):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if (
                scope["type"] == "http"
                and scope["method"] == "POST"
                and _route(scope) == PREDICT_PATH
            ):
                await lean_predict(scope, receive, send)
            else:
                await super().__call__(scope, receive, send)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        threads = torch.get_num_threads()
        if patch_threads is not None:
            torch.set_num_threads(patch_threads)
        # What is loaded by now (torch, FastAPI, the eraser: some 200,000 objects) lives as
        # long as the server: out of the cyclic collector's reach, a full collection takes
        # microseconds instead of stopping every request for about 0.1 s.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await proxy.upstream.aclose()
            torch.set_num_threads(threads)
            gc.unfreeze()

    app = FairProxy(
        title="rule-eraser fair proxy",
        version=__version__,
        description=(
            "Forwards instances to a deployed model and answers with its probabilities "
            "after the eraser removed the biased rule."
        ),
        lifespan=lifespan,
    )

    def error(description: str) -> dict[str, Any]:
        return {"model": ErrorResponse, "description": description}

    upstream_errors = {
        502: error("the upstream is unreachable or its answer is not probabilities per row"),
        504: error("the upstream did not answer in time"),
    }

    @app.post(
        PREDICT_PATH,
        response_model=PredictResponse,
        summary="Fair probabilities for a batch of instances",
        responses={
            400: error("the body is not JSON"),
            413: error("the body or the number of instances is over the limit"),
            422: error("the instances are not rows of finite numbers of the eraser's width"),
            **upstream_errors,
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": request_schema}},
            }
        },
    )
    async def predict(request: Request) -> Response:
        # Served by lean_predict in front of the app; this route documents it (and answers
        # the same way should a request reach it).
        try:
            body = await _read_body(request.receive, request.scope["headers"], max_body_bytes)
        except _Refusal as refusal:
            raise HTTPException(refusal.status, refusal.detail) from None
        status, content = await answer(body)
        return Response(content, status_code=status, media_type="application/json")

    @app.get(
        "/healthz",
        response_model=Health,
        summary="The eraser served, coalescing and counts; with upstream=true, a one-row probe",
        responses=upstream_errors,
    )
    async def healthz(
        upstream: bool = Query(False, description="also probe the upstream with one row"),
    ) -> dict[str, Any]:
        if upstream:
            try:
                await proxy.query([[0.0] * proxy.width])
            except _Refusal as refusal:
                raise HTTPException(refusal.status, refusal.detail) from None
        fastest = proxy.limit.fastest
        counts = {
            "inflight_limit": proxy.limit.value if coalesce else None,
            "upstream_fastest_ms": fastest * 1e3 if coalesce and fastest < float("inf") else None,
            "requests": proxy.requests,
            "upstream_calls": proxy.upstream_calls,
            "upstream_rows": proxy.upstream_rows,
        }
        return {**health, **counts, "upstream_checked": upstream}

    return app


def create_app_from_env() -> "FastAPI":
    """:func:`create_app` configured by the ``RULEERASER_SERVE_*`` variables (uvicorn workers)."""
    missing = [ENV[k] for k in ("eraser", "upstream") if not os.environ.get(ENV[k])]
    if missing:
        raise RuntimeError(f"set {' and '.join(missing)} to serve")
    casts = {"timeout": float, "max_rows": int, "max_body_bytes": int, "max_inflight": int}
    casts.update(min_inflight=int, max_batch_rows=int, patch_threads=int)
    casts["coalesce"] = lambda text: text.lower() not in ("0", "false")
    options = {
        name: cast(os.environ[ENV[name]])
        for name, cast in casts.items()
        if os.environ.get(ENV[name])
    }
    return create_app(os.environ[ENV["eraser"]], os.environ[ENV["upstream"]], **options)


def _listen(host: str, port: int) -> socket.socket:
    """A bound TCP socket whose accepted connections get TCP_NODELAY.

    asyncio sets TCP_NODELAY only on sockets of protocol IPPROTO_TCP, and uvicorn binds its
    multi-worker socket with protocol 0: every keep-alive answer would then wait for the
    client's delayed ACK, about 40 ms on Linux (Kludex/uvicorn#3149).
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.set_inheritable(True)
    return sock


def uvicorn_options(access_log: bool = True) -> dict[str, Any]:
    """uvicorn settings for the proxy (:func:`run`; ``benchmarks/proxy_overhead.py`` too).

    No ``Server`` or ``Date`` header on answers, and ``X-Forwarded-For`` is read only for the
    access log, the one place the client's address goes: without it uvicorn's
    proxy-headers middleware would wrap every request for nothing.
    """
    return {
        "access_log": access_log,
        "proxy_headers": access_log,
        "server_header": False,
        "date_header": False,
    }


def run(
    eraser_dir: str | Path,
    upstream: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    coalesce: bool = True,
    max_inflight: int | None = None,
    min_inflight: int = DEFAULT_MIN_INFLIGHT,
    max_batch_rows: int | None = None,
    patch_threads: int | None = DEFAULT_PATCH_THREADS,
    access_log: bool = True,
    log_level: str = "info",
) -> None:
    """Serve the fair proxy with uvicorn until interrupted.

    The app is built once here so that a bad eraser or setting fails before serving; with
    ``workers > 1`` each worker process builds its own from the environment.
    """
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    options: dict[str, Any] = {
        "timeout": timeout, "max_rows": max_rows, "max_body_bytes": max_body_bytes,
        "coalesce": coalesce, "max_inflight": max_inflight, "min_inflight": min_inflight,
        "max_batch_rows": max_batch_rows, "patch_threads": patch_threads,
    }  # fmt: skip
    app: Any = create_app(eraser_dir, upstream, **options)
    if workers > 1:
        os.environ[ENV["eraser"]] = str(Path(eraser_dir).resolve())
        os.environ[ENV["upstream"]] = upstream
        for name, value in options.items():
            os.environ[ENV[name]] = (
                "" if value is None else str(int(value) if isinstance(value, bool) else value)
            )
        app = "ruleeraser.serve:create_app_from_env"
    config = uvicorn.Config(
        app, host=host, port=port, workers=workers, factory=workers > 1,
        log_level=log_level, **uvicorn_options(access_log),
    )  # fmt: skip
    sock = _listen(host, port)
    logging.getLogger("uvicorn.error").info(
        "fair proxy on http://%s:%d%s, %d worker(s), upstream %s",
        host, sock.getsockname()[1], PREDICT_PATH, workers, upstream,
    )  # fmt: skip
    if workers == 1:
        uvicorn.Server(config).run(sockets=[sock])
    else:
        Multiprocess(config, sockets=[sock]).run()


def _serve_command(args: argparse.Namespace) -> int:
    try:
        run(
            args.eraser,
            args.upstream,
            host=args.host,
            port=args.port,
            workers=args.workers,
            timeout=args.timeout,
            max_rows=args.max_rows,
            max_body_bytes=args.max_body_bytes,
            coalesce=not args.no_coalesce,
            max_inflight=args.max_inflight,
            min_inflight=args.min_inflight,
            max_batch_rows=args.max_batch_rows,
            patch_threads=args.patch_threads,
            access_log=not args.no_access_log,
        )
    except (ValueError, OSError) as exc:  # bad settings, eraser directory, or port
        print(f"ruleeraser serve: {exc}", file=sys.stderr)
        return 2
    return 0


def add_serve_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``serve`` on an ``add_subparsers()`` object; its ``run`` default serves."""
    p = subparsers.add_parser(
        "serve",
        help="serve a fair proxy in front of a model endpoint",
        description=(
            f"Answer POST {PREDICT_PATH} {{'instances': [[...], ...]}} with fair probabilities: "
            "forward the instances to the upstream model (same protocol), subtract the "
            "eraser's patches from its answer. GET /healthz describes the eraser; /docs and "
            "/openapi.json describe the API."
        ),
    )
    p.add_argument("--eraser", required=True, help="directory written by Eraser.save / fit")
    p.add_argument("--upstream", required=True, help="URL of the model's predict endpoint")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (8000)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (1)")
    p.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT,
        help="seconds a request may wait for the upstream, queued or on the wire; slower "
        f"answers 504 ({DEFAULT_TIMEOUT:g})",
    )  # fmt: skip
    p.add_argument(
        "--max-rows", type=int, default=DEFAULT_MAX_ROWS,
        help=f"most instances per request; more answer 413 ({DEFAULT_MAX_ROWS})",
    )  # fmt: skip
    p.add_argument(
        "--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
        help=f"largest request body; larger answer 413 ({DEFAULT_MAX_BODY_BYTES})",
    )  # fmt: skip
    p.add_argument(
        "--max-inflight", type=int, default=None,
        help="most upstream calls out at once; requests that arrive while the calls allowed "
        "are busy wait and go together in the next one. The limit moves between "
        "--min-inflight and this with the calls' times: up while they stay near the fastest "
        "(the model serves them in parallel), down when they grow with the calls out (it "
        f"serves one at a time) ({DEFAULT_MAX_CONNECTIONS}, the upstream connections)",
    )  # fmt: skip
    p.add_argument(
        "--min-inflight", type=int, default=DEFAULT_MIN_INFLIGHT,
        help=f"fewest upstream calls the limit goes down to ({DEFAULT_MIN_INFLIGHT}; equal "
        "to --max-inflight: a fixed limit)",
    )  # fmt: skip
    p.add_argument(
        "--max-batch-rows", type=int, default=None,
        help="most rows in one coalesced upstream call (--max-rows)",
    )  # fmt: skip
    p.add_argument(
        "--no-coalesce", action="store_true",
        help="one upstream call per request, as many at once as requests",
    )  # fmt: skip
    p.add_argument(
        "--patch-threads", type=int, default=DEFAULT_PATCH_THREADS,
        help=f"torch threads for the patches ({DEFAULT_PATCH_THREADS}: the cores are the model's "
        "and the other requests')",
    )  # fmt: skip
    p.add_argument("--no-access-log", action="store_true", help="do not log every request")
    p.set_defaults(run=_serve_command)
    return p
