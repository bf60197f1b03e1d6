"""POSTing JSON to a model's URL with retries: what :class:`ruleeraser.http_model.HTTPModel`
sends its requests with.

A 429, a 5xx, a timeout or a connection error is retried after ``backoff * 2**attempt``
seconds (times a random factor in [0.5, 1]) or what the ``Retry-After`` header asks, at most
``max_backoff``; any other status that is not 2xx fails at once. The connections are pooled
(httpx), one client for all the threads that send.

Example
-------
>>> poster = RetryingPoster("http://127.0.0.1:9000/predict", retries=2, backoff=0.5, seed=0)
>>> [round(poster.delay(attempt, None), 3) for attempt in range(3)]
[0.461, 0.879, 1.421]
>>> poster.delay(0, retry_after=7.0)  # the server's Retry-After wins
7.0
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

from ruleeraser import wire


class PostFailed(Exception):
    """The POST failed: ``problem`` says how, ``attempts`` how often it was tried;
    ``retryable`` is false for an answer that retrying would not change (a 4xx);
    ``retry_after`` is the answer's ``Retry-After`` header, if any."""

    def __init__(
        self, problem: str, attempts: int, retryable: bool, retry_after: str | None = None
    ) -> None:
        super().__init__(problem)
        self.problem, self.attempts, self.retryable = problem, attempts, retryable
        self.retry_after = retry_after


class RetryingPoster:
    """POST bodies to ``url``, retrying what may succeed later.

    Parameters
    ----------
    url: where to POST.
    timeout: seconds per attempt (connect, send, wait, read).
    max_connections: connections kept open at once.
    headers: extra request headers.
    retries, backoff, max_backoff: further attempts and their waits (see the module docstring).
    sleep: the function that waits between attempts (None: a wait the ``stop`` event ends).
    seed: the jitter's seed.

    Attributes
    ----------
    requests_sent: POSTs made, retries included.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        max_connections: int = 4,
        headers: Mapping[str, str] | None = None,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 60.0,
        sleep: Callable[[float], Any] | None = None,
        seed: int | None = None,
    ) -> None:
        self.url, self.timeout, self.max_connections = url, timeout, max_connections
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        self.sleep = sleep
        self.requests_sent = 0
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._client: Any = None

    def post(self, body: bytes, stop: threading.Event | None = None) -> bytes:
        """The body of the first 2xx answer; :class:`PostFailed` when none comes. Once
        ``stop`` is set no further attempt is made."""
        attempts = self.retries + 1
        for attempt in range(attempts):
            try:
                return self._attempt(body)
            except PostFailed as failed:
                if not failed.retryable or attempt + 1 == attempts:
                    raise PostFailed(failed.problem, attempt + 1, failed.retryable) from None
                self._pause(self.delay(attempt, _seconds(failed.retry_after)), stop)
                if stop is not None and stop.is_set():
                    raise PostFailed(failed.problem, attempt + 1, True) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0-based)."""
        if retry_after is not None:
            return min(self.max_backoff, retry_after)
        base = min(self.max_backoff, self.backoff * 2**attempt)
        return base * (0.5 + 0.5 * self._random.random())

    def close(self) -> None:
        """Close the connections (requests on them fail); a later post opens new ones."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _attempt(self, body: bytes) -> bytes:
        httpx = _httpx()
        with self._lock:
            self.requests_sent += 1
        try:
            response = self._get_client().post(self.url, content=body)
        except httpx.TimeoutException as exc:
            problem = f"timed out after {self.timeout:g} s ({type(exc).__name__})"
            raise PostFailed(problem, 1, True) from None
        except httpx.TransportError as exc:
            raise PostFailed(f"connection failed ({type(exc).__name__}: {exc})", 1, True) from None
        status = response.status_code
        if 200 <= status < 300:
            return response.content
        raise PostFailed(
            f"HTTP {status}: {wire.excerpt(response.text)}",
            1,
            retryable=status == 429 or status >= 500,
            retry_after=response.headers.get("Retry-After"),
        )

    def _pause(self, seconds: float, stop: threading.Event | None) -> None:
        if self.sleep is not None:
            self.sleep(seconds)
        elif stop is not None:
            stop.wait(seconds)
        else:
            time.sleep(seconds)

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                httpx = _httpx()
                self._client = httpx.Client(
                    timeout=httpx.Timeout(self.timeout),
                    limits=httpx.Limits(max_connections=self.max_connections),
                    headers=self.headers,
                )
            return self._client


def _httpx() -> Any:
    try:
        import httpx
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError("an HTTP model needs httpx: pip install 'rule-eraser[http]'") from exc
    return httpx


def _seconds(retry_after: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    value = retry_after
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
