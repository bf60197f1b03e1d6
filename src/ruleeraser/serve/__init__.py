"""The fair proxy (``ruleeraser serve``): an HTTP server in front of a deployed model's endpoint.

The upstream model speaks the *instances* protocol (TF Serving / KServe v1 style,
:mod:`ruleeraser.wire`)::

    POST <upstream URL>  {"instances": [[x, ...], ...]}  ->  {"predictions": [[p, ...], ...]}

one probability row per instance (a single probability per row is read as ``[1 - p, p]``).
The proxy answers ``POST /v1/predict`` with the same body, plus an optional
``"return_original": true``::

    {"predictions": fair, "original": upstream (if asked), "classes": [...]}

where ``fair = softmax(log M(x) - strength * sum_j log G_j(x))`` with ``M(x)`` the upstream's
answer, i.e. :meth:`ruleeraser.Eraser.predict_proba`. Instances are flat rows of
``prod(eraser.input_shape_)`` finite numbers within the range the schema states (where the
patches' float32 arithmetic cannot overflow, :mod:`ruleeraser.serve.bound`); the upstream gets
them as the client wrote them. Concurrent requests are coalesced into shared upstream calls
(:mod:`ruleeraser.serve.proxy`), as many at once as a limit learnt from the calls' times allows
(:mod:`ruleeraser.serve.limit`).

Errors answer ``{"detail": "..."}``, never a partial answer: 400 body is not JSON, 413 body or
row count over the limit, 422 invalid instances, 500 the eraser's forward pass failed, 502
upstream unreachable or answering something other than probabilities for every row, 504
upstream slower than the timeout. ``GET /healthz`` runs the forward pass on a row of zeros
(503 if it fails), describes the eraser and the settings and counts requests, upstream calls
and rows; ``GET /healthz?upstream=true`` sends the upstream that row too.

The modules: :mod:`~ruleeraser.serve.app` (the ASGI app, :func:`create_app`),
:mod:`~ruleeraser.serve.schemas` (its pydantic models), :mod:`~ruleeraser.serve.bodies` (the
request and answer bodies), :mod:`~ruleeraser.serve.proxy` (coalescing),
:mod:`~ruleeraser.serve.limit`, :mod:`~ruleeraser.serve.upstream` (the model's client),
:mod:`~ruleeraser.serve.settings` and :mod:`~ruleeraser.serve.command` (the command line).
Importing this package loads none of FastAPI, aiohttp or uvicorn: :func:`create_app` imports
them when it is first used.
"""

from typing import Any

from ruleeraser.serve.command import (
    APP_FACTORY,
    add_serve_parser,
    create_app_from_env,
    run,
    uvicorn_options,
)
from ruleeraser.serve.settings import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_ROWS,
    DEFAULT_MIN_INFLIGHT,
    DEFAULT_PATCH_THREADS,
    DEFAULT_TIMEOUT,
    ENV,
    PREDICT_PATH,
    Settings,
)

__all__ = [
    "APP_FACTORY",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_ROWS",
    "DEFAULT_MIN_INFLIGHT",
    "DEFAULT_PATCH_THREADS",
    "DEFAULT_TIMEOUT",
    "ENV",
    "PREDICT_PATH",
    "Settings",
    "add_serve_parser",
    "create_app",
    "create_app_from_env",
    "run",
    "uvicorn_options",
]


def __getattr__(name: str) -> Any:
    """``create_app`` on first use, with the server libraries it needs."""
    if name == "create_app":
        from ruleeraser.serve.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
