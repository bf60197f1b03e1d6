"""The fair proxy's client of the deployed model (the *upstream*), and :class:`Refusal`, the
answer other than 200 that a request gets.

aiohttp's client is the one used: it spends far less CPU per request than httpx's, which
matters because the proxy shares the cores with the model (``benchmarks/proxy_overhead.py
--client`` compares them on the load side). A session belongs to one event loop; a new loop
(a test client) gets a new one.

Example
-------
>>> upstream = Upstream("http://127.0.0.1:9000/predict", timeout=2.0, max_connections=8)
>>> upstream.too_slow()
'upstream did not answer within 2 s'
>>> Refusal(504, upstream.too_slow()).status
504
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

import aiohttp
import numpy as np
from aiohttp.abc import AbstractStreamWriter

from ruleeraser import wire
from ruleeraser.blackbox import check_probabilities
from ruleeraser.serve.headers import REQUEST_ID

_JSON = {"content-type": "application/json"}
#: Bodies from this size on go out after the headers, their pieces not joined (:class:`_Pieces`).
SEPARATE_BODY_BYTES = 64 * 1024
#: A request body, or its pieces in order.
Body = bytes | Sequence[bytes | memoryview]
log = logging.getLogger("ruleeraser.serve")


class Refusal(Exception):
    """An answer other than 200: the HTTP ``status`` and the ``detail`` the client reads."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(status, detail)
        self.status, self.detail = status, detail


class Upstream:
    """POSTs instances to the model at ``url`` and reads its probabilities.

    Parameters
    ----------
    url: the model's predict endpoint (instances protocol).
    timeout: seconds a call may take unless told otherwise.
    max_connections: connections open at once.
    headers: sent on every call (:mod:`ruleeraser.serve.headers`; never logged).
    """

    #: What :meth:`post` raises when the upstream cannot be reached.
    failures = (aiohttp.ClientError, OSError)

    def __init__(
        self,
        url: str,
        timeout: float,
        max_connections: int,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url, self.timeout, self.max_connections = url, timeout, max_connections
        self.headers = {**_JSON, **(headers or {})}  # each call's, with its request id
        self.session: aiohttp.ClientSession | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # the session's

    async def post(
        self, body: Body, timeout: float, request_id: str | None = None
    ) -> tuple[int, bytes]:
        """POST ``body`` (or its pieces, in order) as JSON within ``timeout`` seconds, with
        the ``X-Request-Id`` ``request_id`` if any; the status and the answer body."""
        loop = asyncio.get_running_loop()
        if self.session is None or self.session.closed or self.loop is not loop:
            self.loop = loop
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections),
                skip_auto_headers=("User-Agent",),
            )
        pieces = [body] if isinstance(body, bytes) else body  # joining one bytes returns it
        size = sum(len(piece) for piece in pieces)
        data = _Pieces(pieces, size) if size >= SEPARATE_BODY_BYTES else b"".join(pieces)
        headers = self.headers
        if request_id is not None:
            headers = {**headers, REQUEST_ID: request_id}
        async with self.session.post(
            self.url, data=data, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as answer:
            return answer.status, await answer.read()

    async def query(
        self, body: Body, n: int, timeout: float | None = None, request_id: str | None = None
    ) -> np.ndarray:
        """The upstream's probabilities, ``(n, k)``, for a request ``body`` of ``n`` rows;
        :class:`Refusal` 502 (unreachable, not probabilities) or 504 (too slow)."""
        timeout = self.timeout if timeout is None else timeout
        try:
            status, content = await self.post(body, timeout, request_id)
        except TimeoutError:
            log.warning("upstream %s timed out", self.url)
            raise Refusal(504, self.too_slow()) from None
        except self.failures as exc:
            log.warning("upstream %s failed: %r", self.url, exc)
            raise Refusal(502, f"upstream unreachable ({type(exc).__name__}: {exc})") from None
        if not 200 <= status < 300:
            text = content[:200].decode(errors="replace")
            raise Refusal(502, f"upstream answered HTTP {status}: {text!r}")
        try:
            predictions = wire.lookup(wire.read_answer(content), wire.PREDICTIONS)
        except ValueError as exc:
            raise Refusal(502, f"upstream {exc}") from None
        try:
            return check_probabilities(predictions, n)
        except (ValueError, TypeError) as exc:
            raise Refusal(502, f"upstream answer is not probabilities: {exc}") from None

    def too_slow(self) -> str:
        return f"upstream did not answer within {self.timeout:g} s"

    async def aclose(self) -> None:
        if self.session is not None and not self.session.closed:
            await self.session.close()
        self.session = None


class _Pieces(aiohttp.Payload):
    """A body given in pieces (the coalesced requests' rows and the JSON around them),
    written after the request's headers. On uvloop's transports the pieces go out in one
    ``writelines``, a single ``writev`` of them where they lie; elsewhere they are joined
    into one write (asyncio's own ``writelines`` ignores the high-water mark on CPython
    3.12.0-3.12.8 and 3.13.0-3.13.1, CVE-2024-12254, and aiohttp joins every body with its
    headers before 3.12.9)."""

    _autoclose = True

    def __init__(self, pieces: Sequence[bytes | memoryview], size: int) -> None:
        super().__init__(pieces, content_type=_JSON["content-type"])
        self._size = size

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return b"".join(self._value).decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        writer.send_headers()
        transport = getattr(writer, "transport", None)
        if type(transport).__module__ == "uvloop.loop":
            transport.writelines(self._value)  # type: ignore[union-attr]
            await writer.drain()
        else:
            await writer.write(b"".join(self._value))

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        await self.write(writer)
