"""``ruleeraser serve``: the fair proxy behind uvicorn, from the command line.

FastAPI, aiohttp and uvicorn are imported only when an app is built or served, so that the
command line loads without the ``serve`` extra.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ruleeraser.serve.headers import UpstreamHeaders
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

if TYPE_CHECKING:
    import numpy as np
    from fastapi import FastAPI

#: The factory uvicorn's worker processes build their app with (``--workers`` > 1).
APP_FACTORY = "ruleeraser.serve:create_app_from_env"


def create_app_from_env() -> FastAPI:
    """:func:`~ruleeraser.serve.create_app` configured by the ``RULEERASER_SERVE_*``
    variables (:data:`ruleeraser.serve.settings.ENV`): what each uvicorn worker builds."""
    from dataclasses import asdict

    from ruleeraser.serve.app import create_app

    missing = [ENV[k] for k in ("eraser", "upstream") if not os.environ.get(ENV[k])]
    if missing:
        raise RuntimeError(f"set {' and '.join(missing)} to serve")
    settings = asdict(Settings.from_env())
    headers = UpstreamHeaders.from_env().resolve()  # the worker reads the references again
    return create_app(
        os.environ[ENV["eraser"]], os.environ[ENV["upstream"]], headers=headers, **settings
    )


def uvicorn_options(access_log: bool = True) -> dict[str, Any]:
    """uvicorn settings for the proxy (:func:`run`; ``benchmarks/proxy_overhead.py`` too).

    No ``Server`` or ``Date`` header on answers, and ``X-Forwarded-For`` is read only for the
    access log, the one place the client's address goes: without it uvicorn's
    proxy-headers middleware would wrap every request for nothing. A body read in one piece
    reaches the app uncopied (:class:`~ruleeraser.serve.protocol.BodyAsReadProtocol`).

    >>> uvicorn_options(access_log=False)["proxy_headers"]
    False
    """
    from ruleeraser.serve.protocol import BodyAsReadProtocol

    return {
        "http": BodyAsReadProtocol,
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
    access_log: bool = True,
    log_level: str = "info",
    force: bool = False,
    headers: UpstreamHeaders | None = None,
    ssl_keyfile: str | Path | None = None,
    ssl_certfile: str | Path | None = None,
    **settings: Any,
) -> None:
    """Serve the fair proxy with uvicorn until interrupted.

    ``settings`` are :func:`~ruleeraser.serve.create_app`'s. The app is built once here so
    that a bad eraser or setting fails before serving, and the upstream is checked against
    the eraser's model fingerprint (:func:`check_upstream`; ``force``: served all the same);
    with ``workers > 1`` each worker process builds its own from the environment
    (:func:`create_app_from_env`). ``headers`` go on every upstream call, the check's
    too; the workers get their references, not their values. ``ssl_certfile`` (with
    ``ssl_keyfile`` unless it holds the key) serves over HTTPS.
    """
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from ruleeraser.eraser import Eraser
    from ruleeraser.serve.app import create_app

    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    headers = headers or UpstreamHeaders()
    sent = headers.resolve()  # a variable not set, a file missing: refused before anything
    tls = ssl_options(ssl_keyfile, ssl_certfile)
    timeout = settings.get("timeout", DEFAULT_TIMEOUT)
    fitted = Eraser.load(eraser_dir, upstream_model(upstream, timeout, sent), check_model=False)
    app: Any = create_app(fitted, upstream, headers=sent, **settings)
    check_upstream(fitted, eraser_dir, upstream, force=force)
    if workers > 1:
        os.environ[ENV["eraser"]] = str(Path(eraser_dir).resolve())
        os.environ[ENV["upstream"]] = upstream
        os.environ.update(Settings(**settings).to_env())
        os.environ.update(headers.to_env())  # references: the values stay where they are
        app = APP_FACTORY
    config = uvicorn.Config(
        app, host=host, port=port, workers=workers, factory=workers > 1,
        log_level=log_level, **tls, **uvicorn_options(access_log),
    )  # fmt: skip
    sock = _listen(host, port)
    logging.getLogger("uvicorn.error").info(
        "fair proxy on %s://%s:%d%s, %d worker(s), upstream %s, upstream headers %s",
        "https" if tls else "http", host, sock.getsockname()[1], PREDICT_PATH, workers,
        upstream, ", ".join(sent) or "none",
    )  # fmt: skip
    if workers == 1:
        uvicorn.Server(config).run(sockets=[sock])
    else:
        Multiprocess(config, sockets=[sock]).run()


def upstream_model(
    upstream: str, timeout: float, headers: dict[str, str] | None = None
) -> Callable[[Any], np.ndarray]:
    """The model behind ``upstream`` as a function of a batch of rows: one call each (with
    ``headers``), for the check at start (:func:`check_upstream`), not for serving. An
    upstream that does not answer with probabilities raises
    :class:`~ruleeraser.serve.upstream.Refusal`."""
    import asyncio

    from ruleeraser import wire
    from ruleeraser.serve.upstream import Upstream

    async def ask(rows: list[list[float]]) -> np.ndarray:
        client = Upstream(upstream, timeout, 1, headers)
        try:
            return await client.query(wire.rows_body([wire.dumps(r) for r in rows]), len(rows))
        finally:
            await client.aclose()

    def model(X: Any) -> np.ndarray:
        import numpy as np

        return asyncio.run(ask(np.asarray(X, dtype=np.float64).reshape(len(X), -1).tolist()))

    return model


def check_upstream(eraser: Any, where: str | Path, upstream: str, *, force: bool = False) -> None:
    """Send the eraser's probe rows to its model, the :func:`upstream_model` of ``upstream``,
    once; refuse (``ValueError``, one line) a model whose answers differ from those of the
    model the eraser was fitted on, unless ``force``. An upstream that does not answer (it
    may start after the proxy) is not checked, with a warning."""
    import warnings

    from ruleeraser.fingerprint import check_model
    from ruleeraser.serve.upstream import Refusal

    name = f"at {upstream}"
    try:
        check_model(eraser, where, name=name, force=force, hint="pass --force to serve it anyway")
    except Refusal as refusal:
        warnings.warn(
            f"the model {name} is not checked against {where}'s fingerprint: {refusal.detail}",
            stacklevel=2,
        )


def ssl_options(keyfile: str | Path | None, certfile: str | Path | None) -> dict[str, str]:
    """uvicorn's TLS settings (``ssl_keyfile``, ``ssl_certfile``; none for plain HTTP), the
    pair loaded once to check it: ``ValueError`` naming a file missing, a key without its
    certificate, a pair that does not load or an encrypted key (uvicorn would ask for its
    password on the terminal).

    >>> ssl_options(None, None)
    {}
    >>> ssl_options("key.pem", None)
    Traceback (most recent call last):
    ...
    ValueError: --ssl-keyfile needs --ssl-certfile
    """
    import ssl

    if keyfile is None and certfile is None:
        return {}
    if certfile is None:
        raise ValueError("--ssl-keyfile needs --ssl-certfile")
    given = {"ssl_certfile": certfile, "ssl_keyfile": keyfile}
    options = {key: str(Path(path).resolve()) for key, path in given.items() if path is not None}
    for key, path in given.items():
        if path is not None and not Path(path).is_file():
            raise ValueError(f"--{key.replace('_', '-')} {path}: no such file")
    files = " and ".join(f"--{k.replace('_', '-')} {p}" for k, p in given.items() if p)

    def encrypted() -> bytes:
        raise ValueError(f"{files}: the key is encrypted; give a key file without a password")

    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"), encrypted)
    except ssl.SSLError as exc:
        raise ValueError(f"{files}: not a certificate and its key ({exc})") from None
    return options


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


def _serve_command(args: argparse.Namespace) -> int:
    settings = {
        "timeout": args.timeout, "max_rows": args.max_rows,
        "max_body_bytes": args.max_body_bytes, "coalesce": not args.no_coalesce,
        "max_inflight": args.max_inflight, "min_inflight": args.min_inflight,
        "max_batch_rows": args.max_batch_rows, "patch_threads": args.patch_threads,
        "strength": args.strength,
    }  # fmt: skip
    headers = UpstreamHeaders(tuple(args.header or ()), tuple(args.header_file or ()))
    for name in headers.secrets_on_command_line():
        print(
            f"ruleeraser serve: warning: --header {name} is given on the command line, where "
            f"ps shows it; give '{name}: $VARIABLE' or --header-file instead",
            file=sys.stderr,
        )
    try:
        run(
            args.eraser, args.upstream, host=args.host, port=args.port, workers=args.workers,
            access_log=not args.no_access_log, force=args.force, headers=headers,
            ssl_keyfile=args.ssl_keyfile, ssl_certfile=args.ssl_certfile, **settings,
        )  # fmt: skip
    except (ValueError, TypeError, OSError, RuntimeError, ImportError) as exc:
        # a bad setting, an eraser that fails to load or to compute, a port in use
        text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"ruleeraser serve: error: {text}", file=sys.stderr)
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
    _add_upstream_options(p)
    _add_limit_options(p)
    _add_coalescing_options(p)
    p.add_argument(
        "--patch-threads", type=int, default=DEFAULT_PATCH_THREADS,
        help=f"torch threads for the patches ({DEFAULT_PATCH_THREADS}: the cores are the model's "
        "and the other requests', and the patches are small)",
    )  # fmt: skip
    p.add_argument(
        "--strength", type=float, metavar="S",
        help="override the eraser's strength by hand (0: the model itself; default: the "
        "strength saved, the goal's choice where it has one)",
    )  # fmt: skip
    p.add_argument("--no-access-log", action="store_true", help="do not log every request")
    p.add_argument(
        "--force", action="store_true",
        help="serve even an upstream whose answers on the eraser's probe rows differ from "
        "those of the model the eraser was fitted on (by default refused at start)",
    )  # fmt: skip
    p.set_defaults(run=_serve_command)
    return p


def _add_upstream_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--header", action="append", metavar="'NAME: VALUE'",
        help="a header sent on every upstream call (repeatable); a VALUE of the form $VAR is "
        "read from the environment variable VAR at start, so that a secret stays off the "
        "command line: --header 'Authorization: $MODEL_TOKEN'",
    )  # fmt: skip
    p.add_argument(
        "--header-file", action="append", metavar="FILE",
        help="upstream headers from FILE, one 'NAME: VALUE' a line ($VAR as for --header; "
        "# comments); repeatable. Header values are never logged nor shown in /healthz",
    )  # fmt: skip
    p.add_argument(
        "--ssl-certfile", metavar="FILE",
        help="serve HTTPS with this PEM certificate (chain); with --ssl-keyfile unless it "
        "holds the key too",
    )  # fmt: skip
    p.add_argument("--ssl-keyfile", metavar="FILE", help="the certificate's PEM private key")


def _add_limit_options(p: argparse.ArgumentParser) -> None:
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


def _add_coalescing_options(p: argparse.ArgumentParser) -> None:
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
