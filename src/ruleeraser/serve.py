"""The fair proxy (``ruleeraser serve``): an HTTP server in front of a deployed model's endpoint.

The upstream model speaks the *instances* protocol (TF Serving / KServe v1 style)::

    POST <upstream URL>  {"instances": [[x, ...], ...]}  ->  {"predictions": [[p, ...], ...]}

one probability row per instance (a single probability per row is read as ``[1 - p, p]``).
The proxy answers ``POST /v1/predict`` with the same body, plus an optional
``"return_original": true``::

    {"predictions": fair, "original": upstream (if asked), "classes": [...]}

where ``fair = softmax(log M(x) - sum_j log G_j(x))`` with ``M(x)`` the upstream's answer, i.e.
exactly :meth:`ruleeraser.Eraser.predict_proba`. Instances are flat rows of
``prod(eraser.input_shape_)`` finite numbers; they are forwarded as they came.

Errors answer ``{"detail": "..."}``, never a partial answer: 400 body is not JSON, 413 body or
row count over the limit, 422 invalid instances, 502 upstream unreachable or answering
something other than probabilities for every row, 504 upstream slower than the timeout.
``GET /healthz`` describes the eraser; ``GET /healthz?upstream=true`` also sends the upstream
a one-row probe. FastAPI, aiohttp and uvicorn are imported only when an app is built, so the
command line loads without the ``serve`` extra.
"""

import argparse
import asyncio
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

from ruleeraser.blackbox import check_probabilities
from ruleeraser.distill import log_proba
from ruleeraser.eraser import Eraser
from ruleeraser.remove import remove_log

if TYPE_CHECKING:
    import aiohttp
    from fastapi import FastAPI

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_ROWS = 1000
DEFAULT_MAX_BODY_BYTES = 1 << 20
#: Environment variables read by :func:`create_app_from_env` (multi-worker mode).
ENV = {
    "eraser": "RULEERASER_SERVE_ERASER",
    "upstream": "RULEERASER_SERVE_UPSTREAM",
    "timeout": "RULEERASER_SERVE_TIMEOUT",
    "max_rows": "RULEERASER_SERVE_MAX_ROWS",
    "max_body_bytes": "RULEERASER_SERVE_MAX_BODY_BYTES",
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


class _Upstream:
    """An aiohttp session to the upstream, opened on first use in the serving event loop.

    aiohttp's client costs about a quarter of httpx's CPU per request (measured with
    ``benchmarks/proxy_overhead.py``), which matters because the proxy shares the cores with
    the model. A session belongs to one event loop; a new loop (a test client) gets a new one.
    """

    def __init__(self, url: str, timeout: float, max_connections: int) -> None:
        self.url, self.timeout, self.max_connections = url, timeout, max_connections
        self.session: aiohttp.ClientSession | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # the session's

    async def post(self, body: bytes) -> tuple[int, bytes]:
        """POST ``body`` as JSON; the status and the whole answer body."""
        import aiohttp

        loop = asyncio.get_running_loop()
        if self.session is None or self.session.closed or self.loop is not loop:
            self.loop = loop
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                skip_auto_headers=("User-Agent",),
            )
        async with self.session.post(self.url, data=body, headers=_JSON) as answer:
            return answer.status, await answer.read()

    async def aclose(self) -> None:
        if self.session is not None and not self.session.closed:
            await self.session.close()
        self.session = None


class _Proxy:
    """What one app holds: the eraser, the limits, and the upstream clients."""

    def __init__(self, eraser: Eraser, upstream: _Upstream, max_rows: int) -> None:
        self.eraser = eraser
        self.upstream = upstream
        self.max_rows = max_rows
        self.width = int(np.prod(eraser.input_shape_))
        self.classes = eraser.classes_.tolist()

    def rows(self, instances: list[list[float]]) -> np.ndarray:
        """The instances as an ``(n, width)`` array; 413 or 422 with the offending rows."""
        from fastapi import HTTPException

        if len(instances) > self.max_rows:
            raise HTTPException(
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
        raise HTTPException(
            422,
            f"every instance must hold {self.width} numbers (the eraser's input shape is "
            f"{self.eraser.input_shape_}); {len(bad)} do not, the first is instances[{bad[0]}] "
            f"with {len(instances[bad[0]])}",
        )

    def patch_log_proba(self, X: np.ndarray) -> list[np.ndarray]:
        """``log G_j(x)`` of each patch (:meth:`Eraser.patch_log_proba`); 422 for rows where a
        patch has no finite output."""
        from fastapi import HTTPException

        try:
            return self.eraser.patch_log_proba(X.reshape(len(X), *self.eraser.input_shape_))
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None

    async def query(self, instances: list[list[float]]) -> np.ndarray:
        """The upstream's probabilities for ``instances``; 502 or 504 when it fails."""
        import aiohttp
        from fastapi import HTTPException

        upstream = self.upstream
        try:
            status, content = await upstream.post(_dumps({"instances": instances}))
        except TimeoutError:
            log.warning("upstream %s timed out", upstream.url)
            raise HTTPException(
                504, f"upstream did not answer within {upstream.timeout:g} s"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("upstream %s failed: %r", upstream.url, exc)
            raise HTTPException(
                502, f"upstream unreachable ({type(exc).__name__}: {exc})"
            ) from None
        if not 200 <= status < 300:
            text = content[:200].decode(errors="replace")
            raise HTTPException(502, f"upstream answered HTTP {status}: {text!r}")
        try:
            predictions = json.loads(content)["predictions"]
        except ValueError:
            raise HTTPException(502, "upstream answer is not JSON") from None
        except (KeyError, TypeError):
            raise HTTPException(502, "upstream answer has no 'predictions'") from None
        try:
            proba = check_probabilities(predictions, len(instances))
        except (ValueError, TypeError) as exc:
            raise HTTPException(502, f"upstream answer is not probabilities: {exc}") from None
        if proba.shape[1] != len(self.classes):
            raise HTTPException(
                502,
                f"upstream answered {proba.shape[1]} classes; the eraser was fitted for "
                f"{len(self.classes)}",
            )
        return proba


async def _read_body(request: Any, limit: int) -> bytes:
    """The request body, or 413 as soon as it is known to exceed ``limit`` bytes."""
    from fastapi import HTTPException

    too_big = HTTPException(413, f"request body exceeds {limit} bytes")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


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
        upstream_checked: bool

    return PredictRequest, schema, PredictResponse, ErrorResponse, Health


def create_app(
    eraser: str | Path | Eraser,
    upstream: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_connections: int = 100,
) -> "FastAPI":
    """The fair proxy as a FastAPI app.

    ``eraser``: a fitted :class:`~ruleeraser.Eraser` or a directory saved by ``Eraser.save``.
    ``upstream``: the URL the model answers instances on. ``timeout``: seconds allowed for the
    whole upstream exchange, waiting for a free connection included. ``max_connections``: most
    upstream connections open at once.
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
    limits = {"timeout": timeout, "max_rows": max_rows, "max_body_bytes": max_body_bytes}
    for name, value in {**limits, "max_connections": max_connections}.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")
    if not isinstance(eraser, Eraser):
        eraser = Eraser.load(eraser, model=_no_model)
    eraser._check_fitted()
    proxy = _Proxy(eraser, _Upstream(upstream, timeout, max_connections), max_rows)
    PredictRequest, request_schema, PredictResponse, ErrorResponse, Health = _schemas(
        proxy.width, max_rows
    )
    health = {
        "status": "ok",
        "input_shape": list(eraser.input_shape_),
        "classes": proxy.classes,
        "biases": list(eraser.bias_names_),
        "max_rows": max_rows,
    }

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        try:
            yield
        finally:
            await proxy.upstream.aclose()

    app = FastAPI(
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
        body = await _read_body(request, max_body_bytes)
        try:
            parsed = PredictRequest.model_validate_json(body)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            if errors[0]["type"] == "json_invalid":
                raise HTTPException(400, f"body is not valid JSON: {errors[0]['msg']}") from None
            raise HTTPException(422, _validation_detail(errors)) from None
        X = proxy.rows(parsed.instances)
        log_g = proxy.patch_log_proba(X)
        proba = await proxy.query(parsed.instances)
        answer: dict[str, Any] = {
            "predictions": remove_log(log_proba(proba, eraser.eps), *log_g).tolist()
        }
        if parsed.return_original:
            answer["original"] = proba.tolist()
        answer["classes"] = proxy.classes
        return Response(_dumps(answer), media_type="application/json")

    @app.get(
        "/healthz",
        response_model=Health,
        summary="The eraser served; with upstream=true, a one-row probe of the upstream",
        responses=upstream_errors,
    )
    async def healthz(
        upstream: bool = Query(False, description="also probe the upstream with one row"),
    ) -> dict[str, Any]:
        if upstream:
            await proxy.query([[0.0] * proxy.width])
        return {**health, "upstream_checked": upstream}

    return app


def create_app_from_env() -> "FastAPI":
    """:func:`create_app` configured by the ``RULEERASER_SERVE_*`` variables (uvicorn workers)."""
    missing = [ENV[k] for k in ("eraser", "upstream") if not os.environ.get(ENV[k])]
    if missing:
        raise RuntimeError(f"set {' and '.join(missing)} to serve")
    options = {
        name: cast(os.environ[ENV[name]])
        for name, cast in [("timeout", float), ("max_rows", int), ("max_body_bytes", int)]
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
    options = {"timeout": timeout, "max_rows": max_rows, "max_body_bytes": max_body_bytes}
    app: Any = create_app(eraser_dir, upstream, **options)
    if workers > 1:
        os.environ[ENV["eraser"]] = str(Path(eraser_dir).resolve())
        os.environ[ENV["upstream"]] = upstream
        for name, value in options.items():
            os.environ[ENV[name]] = str(value)
        app = "ruleeraser.serve:create_app_from_env"
    config = uvicorn.Config(
        app, host=host, port=port, workers=workers, factory=workers > 1,
        access_log=access_log, log_level=log_level,
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
        help=f"seconds allowed for each upstream call; slower answers 504 ({DEFAULT_TIMEOUT:g})",
    )  # fmt: skip
    p.add_argument(
        "--max-rows", type=int, default=DEFAULT_MAX_ROWS,
        help=f"most instances per request; more answer 413 ({DEFAULT_MAX_ROWS})",
    )  # fmt: skip
    p.add_argument(
        "--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
        help=f"largest request body; larger answer 413 ({DEFAULT_MAX_BODY_BYTES})",
    )  # fmt: skip
    p.add_argument("--no-access-log", action="store_true", help="do not log every request")
    p.set_defaults(run=_serve_command)
    return p
