"""The fair proxy as an ASGI app (FastAPI): ``POST /v1/predict``, ``GET /healthz`` and the
OpenAPI schema at ``/openapi.json`` and ``/docs``.

``POST /v1/predict`` is answered by a lean ASGI handler in front of FastAPI (the same logic as
the documented route, without the framework's per-request work); everything else is FastAPI's.
"""

from __future__ import annotations

import gc
import math
import uuid
from collections.abc import Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch
from fastapi import FastAPI, HTTPException, Query, Request, Response

from ruleeraser import __version__
from ruleeraser.eraser import Eraser, check_is_fitted
from ruleeraser.report_files import prior_in_force, removal_in_force
from ruleeraser.serve.bodies import RequestReader, error_body
from ruleeraser.serve.bound import input_bound
from ruleeraser.serve.headers import REQUEST_ID, check_headers
from ruleeraser.serve.proxy import Proxy
from ruleeraser.serve.schemas import ApiModels, api_models
from ruleeraser.serve.settings import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_ROWS,
    DEFAULT_MIN_INFLIGHT,
    DEFAULT_PATCH_THREADS,
    DEFAULT_TIMEOUT,
    PREDICT_PATH,
    Settings,
)
from ruleeraser.serve.upstream import Refusal, Upstream


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
    strength: float | None = None,
    headers: Mapping[str, str] | None = None,
) -> FastAPI:
    """The fair proxy as a FastAPI app.

    Parameters
    ----------
    eraser: a fitted :class:`~ruleeraser.Eraser` or a directory saved by ``Eraser.save``.
    upstream: the URL the model answers instances on.
    timeout, max_rows, max_body_bytes, max_connections, coalesce, max_inflight, min_inflight,
        max_batch_rows, patch_threads, strength: see
        :class:`ruleeraser.serve.settings.Settings`;
        ``patch_threads`` is restored when the app stops.
    headers: sent to the upstream on every call (an API key, a token): their names are
        listed in ``/healthz``, their values nowhere (see :mod:`ruleeraser.serve.headers`).

    Returns
    -------
    The app. It refuses to be built (``ValueError``) for a bad setting, an eraser that fails
    to load, or one whose forward pass fails on a row of zeros.

    Example
    -------
    >>> create_app("demo-eraser", "http://127.0.0.1:9000/predict", max_rows=0)
    Traceback (most recent call last):
    ...
    ValueError: max_rows must be an int >= 1; got 0
    """
    settings = Settings(
        timeout=timeout, max_rows=max_rows, max_body_bytes=max_body_bytes,
        max_connections=max_connections, coalesce=coalesce, max_inflight=max_inflight,
        min_inflight=min_inflight, max_batch_rows=max_batch_rows, patch_threads=patch_threads,
        strength=strength,
    )  # fmt: skip
    _check_url(upstream)
    if not isinstance(eraser, Eraser):
        eraser = Eraser.load(eraser, model=_no_model, check_model=False)  # see serve.command
    check_is_fitted(eraser)
    if settings.strength is not None:
        eraser.set_strength(settings.strength)
    bound = input_bound(eraser.patches_)
    api = api_models(math.prod(eraser.input_shape_), settings.max_rows, bound)
    reader = RequestReader(tuple(eraser.input_shape_), settings.max_rows, bound, api.request)
    client = Upstream(
        upstream, settings.timeout, settings.max_connections, check_headers(headers or {})
    )
    proxy = Proxy(eraser, client, reader, settings)
    try:  # before anything is served
        proxy.check_forward()
    except Refusal as refusal:
        raise ValueError(f"the eraser cannot serve: {refusal.detail}") from None
    app = _FairProxy(
        title="rule-eraser fair proxy",
        version=__version__,
        description=(
            "Forwards instances to a deployed model and answers with its probabilities "
            "after the eraser removed the biased rule."
        ),
        lifespan=_lifespan(proxy, settings.patch_threads),
    )
    app.state.predict = _lean_predict(proxy, settings.max_body_bytes)
    _add_predict_route(app, proxy, api, settings.max_body_bytes)
    _add_health_route(app, proxy, api, bound)
    return app


class _FairProxy(FastAPI):
    """FastAPI with ``POST /v1/predict`` taken off before the framework sees it."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and _route(scope) == PREDICT_PATH:
            await self.state.predict(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def _lean_predict(proxy: Proxy, max_body_bytes: int) -> Any:
    """The ASGI handler of ``POST /v1/predict``."""

    async def predict(scope: dict[str, Any], receive: Any, send: Any) -> None:
        request_id = read_request_id(scope["headers"])
        try:
            body = await read_body(receive, scope["headers"], max_body_bytes)
        except Refusal as refusal:
            if refusal.status == 499:  # nobody to answer
                return
            status, content = refusal.status, error_body(refusal.detail)
        else:
            status, content = await proxy.answer(body, request_id.decode())
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(content)).encode()),
            (b"x-request-id", request_id),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    return predict


def _add_predict_route(app: FastAPI, proxy: Proxy, api: ApiModels, max_body_bytes: int) -> None:
    """The documented ``POST /v1/predict`` (served by the lean handler; answers the same way
    should a request reach it)."""
    upstream_errors = _upstream_errors(api)

    @app.post(
        PREDICT_PATH,
        response_model=api.response,
        summary="Fair probabilities for a batch of instances",
        responses={
            400: _error(api, "the body is not JSON"),
            413: _error(api, "the body or the number of instances is over the limit"),
            422: _error(
                api,
                "the instances are not rows of finite numbers of the eraser's width within the "
                "stated range, or a row a patch of a kind the range is not known for cannot "
                "compute",
            ),
            500: _error(api, "the eraser's forward pass failed (see /healthz)"),
            **upstream_errors,
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": api.request_schema}},
            }
        },
    )
    async def predict(request: Request) -> Response:
        request_id = read_request_id(request.scope["headers"]).decode()
        echo = {REQUEST_ID: request_id}
        try:
            body = await read_body(request.receive, request.scope["headers"], max_body_bytes)
        except Refusal as refusal:
            raise HTTPException(refusal.status, refusal.detail, headers=echo) from None
        status, content = await proxy.answer(body, request_id)
        return Response(content, status_code=status, media_type="application/json", headers=echo)


def _add_health_route(app: FastAPI, proxy: Proxy, api: ApiModels, bound: float) -> None:
    eraser, settings = proxy.eraser, proxy.settings
    coalesce = settings.coalesce
    described = {
        "status": "ok",
        "input_shape": list(eraser.input_shape_),
        "classes": proxy.classes,
        "biases": list(eraser.bias_names_),
        **removal_in_force(eraser),
        **prior_in_force(eraser),
        "max_rows": settings.max_rows,
        "max_value": bound,
        "coalesce": coalesce,
        "max_inflight": settings.max_inflight if coalesce else None,
        "min_inflight": settings.min_inflight if coalesce else None,
        "max_batch_rows": settings.max_batch_rows if coalesce else None,
    }
    sent = [name for name in proxy.upstream.headers if name != "content-type"]
    if sent:  # listed only when there are some (the names, never the values)
        described["upstream_headers"] = sent

    @app.get(
        "/healthz",
        response_model=api.health,
        response_model_exclude_unset=True,  # upstream_headers, when there are none
        summary="The eraser served, coalescing and counts; 503 if its forward pass fails; "
        "with upstream=true, a one-row probe of the upstream too",
        responses={
            503: _error(api, "the eraser's forward pass fails on a row of zeros"),
            **_upstream_errors(api),
        },
    )
    async def healthz(
        upstream: bool = Query(False, description="also probe the upstream with one row"),
    ) -> dict[str, Any]:
        try:
            await proxy.check(upstream)
        except Refusal as refusal:
            raise HTTPException(refusal.status, refusal.detail) from None
        fastest = proxy.limit.fastest
        counts = {
            "inflight_limit": proxy.limit.value if coalesce else None,
            "upstream_fastest_ms": fastest * 1e3 if coalesce and fastest < float("inf") else None,
            "requests": proxy.requests,
            "upstream_calls": proxy.upstream_calls,
            "upstream_rows": proxy.upstream_rows,
            "internal_errors": proxy.internal_errors,
        }
        return {**described, **counts, "upstream_checked": upstream}


def _lifespan(proxy: Proxy, patch_threads: int | None) -> Any:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        threads = torch.get_num_threads()
        if patch_threads is not None:
            torch.set_num_threads(patch_threads)
        # What is loaded by now (torch, FastAPI, the eraser) lives as long as the server:
        # out of the cyclic collector's reach, a full collection does not stop every request.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await proxy.upstream.aclose()
            torch.set_num_threads(threads)
            gc.unfreeze()

    return lifespan


def read_request_id(headers: Sequence[tuple[bytes, bytes]]) -> bytes:
    """A request's ``X-Request-Id`` (ASCII, at most 200 bytes), else a new one
    (uuid4, hex).

    >>> read_request_id([(b"x-request-id", b"abc-1")])
    b'abc-1'
    >>> len(read_request_id([]))
    32
    """
    for name, value in headers:
        if name == b"x-request-id":
            if 0 < len(value) <= 200 and value.isascii():
                return value
            break
    return uuid.uuid4().hex.encode()


async def read_body(receive: Any, headers: Sequence[tuple[bytes, bytes]], limit: int) -> bytes:
    """An ASGI request's body, or :class:`Refusal` 413 as soon as it is known to exceed
    ``limit`` bytes (499 when the client left)."""
    for name, value in headers:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise Refusal(413, f"request body exceeds {limit} bytes")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Refusal(499, "client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise Refusal(413, f"request body exceeds {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _check_url(upstream: str) -> None:
    try:
        url = urlsplit(upstream)
        valid = url.scheme in ("http", "https") and bool(url.hostname) and url.port != 0
    except ValueError:  # a port out of range, a malformed IPv6 host
        valid = False
    if not valid:
        raise ValueError(f"upstream must be an http(s) URL, got {upstream!r}")


def _error(api: ApiModels, description: str) -> dict[str, Any]:
    return {"model": api.error, "description": description}


def _upstream_errors(api: ApiModels) -> dict[int | str, dict[str, Any]]:
    return {
        502: _error(api, "the upstream is unreachable or its answer is not probabilities per row"),
        504: _error(api, "the upstream did not answer in time"),
    }


def _route(scope: dict[str, Any]) -> str:
    """The path of an ASGI request below the app's root path (where it is mounted)."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _no_model(_: Any) -> None:
    raise RuntimeError("the proxy queries the deployed model over HTTP, not in process")
