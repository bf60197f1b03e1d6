"""The fair proxy's settings: their defaults, their checks, and the environment variables that
carry them to the worker processes of ``ruleeraser serve --workers N``.

Example
-------
>>> settings = Settings(max_rows=100)
>>> settings.max_batch_rows, settings.max_inflight   # resolved from max_rows, max_connections
(100, 100)
>>> Settings(max_rows=0)
Traceback (most recent call last):
...
ValueError: max_rows must be an int >= 1; got 0
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from typing import Any

from ruleeraser.params import Interval, Options, validate_params

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_ROWS = 1000
DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_MIN_INFLIGHT = 1
DEFAULT_PATCH_THREADS = 1
PREDICT_PATH = "/v1/predict"
#: Environment variables read by :meth:`Settings.from_env` (multi-worker mode).
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
    "strength": "RULEERASER_SERVE_STRENGTH",
    # references to the upstream headers, not their values (ruleeraser.serve.headers)
    "headers": "RULEERASER_SERVE_HEADERS",
    "header_files": "RULEERASER_SERVE_HEADER_FILES",
}

_COUNT = Interval(int, 1, None)


@dataclass(frozen=True)
class Settings:
    """How the proxy serves; checked and resolved at construction.

    Attributes
    ----------
    timeout: seconds a request may wait for the upstream, in the queue and on the wire.
    max_rows: most instances per request. max_body_bytes: largest request body.
    max_connections: most upstream connections open at once.
    coalesce: concurrent requests share upstream calls.
    max_inflight, min_inflight: the range of the learnt limit on upstream calls out at once
        (None: ``max_connections``; equal: a fixed limit).
    max_batch_rows: most rows in one coalesced call (None: ``max_rows``).
    patch_threads: torch threads while the app serves (None: leave them as they are).
    strength: the removal's strength, overriding the eraser's (None: the eraser's).
    """

    timeout: float = DEFAULT_TIMEOUT
    max_rows: int = DEFAULT_MAX_ROWS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    coalesce: bool = True
    max_inflight: int | None = None
    min_inflight: int = DEFAULT_MIN_INFLIGHT
    max_batch_rows: int | None = None
    patch_threads: int | None = DEFAULT_PATCH_THREADS
    strength: float | None = None

    _constraints = {
        "timeout": [Interval(float, 0, None, closed="neither")],
        "max_rows": [_COUNT],
        "max_body_bytes": [_COUNT],
        "max_connections": [_COUNT],
        "coalesce": [Options((True, False))],
        "max_inflight": [None, _COUNT],
        "min_inflight": [_COUNT],
        "max_batch_rows": [None, _COUNT],
        "patch_threads": [None, _COUNT],
        "strength": [None, Interval(float, 0, None)],
    }

    def __post_init__(self) -> None:
        validate_params(asdict(self), self._constraints)
        if self.max_inflight is None:
            object.__setattr__(self, "max_inflight", self.max_connections)
        if self.max_batch_rows is None:
            object.__setattr__(self, "max_batch_rows", self.max_rows)
        if self.min_inflight > self.max_inflight:  # type: ignore[operator]
            raise ValueError(
                f"min_inflight ({self.min_inflight}) must not exceed max_inflight "
                f"({self.max_inflight})"
            )

    def to_env(self) -> dict[str, str]:
        """The settings as the ``RULEERASER_SERVE_*`` variables :meth:`from_env` reads."""
        return {ENV[f.name]: _text(getattr(self, f.name)) for f in fields(self) if f.name in ENV}

    @classmethod
    def from_env(cls, environ: dict[str, str] | os._Environ = os.environ) -> Settings:
        """The settings set in ``environ`` (the others at their defaults)."""
        casts: dict[str, Any] = {f.name: _cast(f.type) for f in fields(cls) if f.name in ENV}
        return cls(
            **{
                name: cast(environ[ENV[name]])
                for name, cast in casts.items()
                if environ.get(ENV[name])
            }
        )


def _text(value: Any) -> str:
    return "" if value is None else str(int(value) if isinstance(value, bool) else value)


def _cast(annotation: Any) -> Any:
    kind = str(annotation)
    if kind.startswith("bool"):
        return lambda text: text.lower() not in ("0", "false")
    return float if kind.startswith("float") else int
