"""Headers the fair proxy sends on every upstream call (an API key, a bearer token), given by
reference so that their values stay off the command line, out of the logs and out of
``/healthz``.

A ``--header 'NAME: VALUE'`` whose whole value is ``$VAR`` takes the value of the environment
variable ``VAR``, read at start; ``--header-file FILE`` holds ``NAME: VALUE`` lines (blank
lines and ``#`` comments skipped, the same ``$VAR`` rule). Errors name the header, the
variable, the file and the line, never a value. The worker processes of ``--workers N`` get
the references (:meth:`UpstreamHeaders.to_env`), not the values, and read them again.

Example
-------
>>> refs = UpstreamHeaders(headers=("Authorization: $API_TOKEN", "X-Team: fairness"))
>>> refs.resolve({"API_TOKEN": "Bearer abc"})
{'Authorization': 'Bearer abc', 'X-Team': 'fairness'}
>>> refs.resolve({})
Traceback (most recent call last):
...
ValueError: --header Authorization: the environment variable API_TOKEN is not set
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ruleeraser.serve.settings import ENV

#: The header that carries a request's id, from the client to the upstream and back.
REQUEST_ID = "X-Request-Id"
_REFERENCE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110)
_SECRET = re.compile(r"auth|cookie|key|token|secret|passw", re.IGNORECASE)
#: Set by the proxy itself, per call.
_RESERVED = {"content-type", "content-length", "transfer-encoding", REQUEST_ID.lower()}


@dataclass(frozen=True)
class UpstreamHeaders:
    """The ``--header`` texts and ``--header-file`` paths, as given: references, not values."""

    headers: tuple[str, ...] = ()
    files: tuple[str, ...] = ()

    def resolve(self, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
        """The headers, ``$VAR`` values read from ``environ``; ``ValueError`` naming what is
        missing or malformed (a variable not set, a file, a line), never a value."""
        found: dict[str, tuple[str, str]] = {}  # by lower-case name: a later one replaces
        for path in self.files:
            for number, line in _lines(path):
                name, value = _header(line, f"--header-file {path}, line {number}", environ)
                found[name.lower()] = name, value
        for text in self.headers:
            name, value = _header(text, "--header", environ)
            found[name.lower()] = name, value
        return check_headers(dict(found.values()))

    def to_env(self) -> dict[str, str]:
        """The references as the ``RULEERASER_SERVE_HEADERS``/``..._HEADER_FILES`` variables
        (files by absolute path); :meth:`from_env` reads them back."""
        files = [str(Path(path).resolve()) for path in self.files]
        return {
            ENV["headers"]: json.dumps(list(self.headers)),
            ENV["header_files"]: json.dumps(files),
        }

    def secrets_on_command_line(self) -> list[str]:
        """The names of ``--header`` entries given a literal value under a name that looks
        secret (an authorisation, a key, a token), which ``ps`` shows."""
        return [
            name.strip()
            for name, _, value in (text.partition(":") for text in self.headers)
            if _SECRET.search(name) and not _REFERENCE.fullmatch(value.strip())
        ]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> UpstreamHeaders:
        lists = [json.loads(environ.get(ENV[k]) or "[]") for k in ("headers", "header_files")]
        return cls(tuple(lists[0]), tuple(lists[1]))


def check_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` as a dict, or ``ValueError`` for a name that is not an HTTP token, one the
    proxy sets itself, or a value with a line break (the value is not shown)."""
    for name, value in headers.items():
        if not _NAME.fullmatch(name):
            raise ValueError(f"upstream header name {name!r} is not a valid HTTP header name")
        if name.lower() in _RESERVED:
            raise ValueError(f"upstream header {name} is set by the proxy; it cannot be given")
        if any(c in value for c in "\r\n\0"):
            raise ValueError(f"upstream header {name}: the value holds a line break or NUL")
    return dict(headers)


def _header(text: str, where: str, environ: Mapping[str, str]) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not name:
        raise ValueError(f"{where}: must look like 'NAME: VALUE'")  # the text may be a secret
    reference = _REFERENCE.fullmatch(value)
    if reference:
        variable = reference.group(1)
        if not environ.get(variable):
            state = "is empty" if variable in environ else "is not set"
            raise ValueError(f"{where} {name}: the environment variable {variable} {state}")
        value = environ[variable].strip()
    return name, value


def _lines(path: str) -> list[tuple[int, str]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"--header-file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--header-file {path}: cannot be read ({type(exc).__name__})") from None
    numbered = enumerate(text.splitlines(), start=1)
    return [(n, line) for n, line in numbered if line.strip() and not line.lstrip().startswith("#")]
