"""The bodies of ``POST /v1/predict``: the request read once into a float32 array, the answer
written once from the arrays.

A request ``{"instances": rows, "return_original": bool}`` is parsed by simdjson, whose numbers
go straight into an array (no Python object per number), and numpy checks their range by the
array's minimum and maximum; the rows' JSON text is kept as it came, so that the upstream gets
the client's own numbers, never encoded again (:func:`ruleeraser.wire.rows_body`). The answer
is written by orjson from the arrays.
A body this reader does not take whole goes to the API's pydantic model, which names what is
wrong (``instances[0][1]: Input should be a finite number``); whatever that model accepts is
read from its values instead.

Example
-------
>>> from ruleeraser.serve.schemas import api_models
>>> reader = RequestReader((2,), max_rows=10, bound=1e30, model=api_models(2, 10, 1e30).request)
>>> rows = reader.read(b'{"instances": [[0.5, 1], [2, 3.25]]}')
>>> rows.X.dtype, rows.X.shape, bytes(rows.text)
(dtype('float32'), (2, 2), b'[0.5, 1], [2, 3.25]')
>>> reader.read(b'{"instances": [[0.5, "1"]]}')
Traceback (most recent call last):
...
ruleeraser.serve.upstream.Refusal: (422, 'invalid request: instances[0][1]: Input should be ...')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import simdjson
from pydantic import BaseModel, ValidationError

from ruleeraser import wire
from ruleeraser.serve.upstream import Refusal

_KEYS = frozenset(("instances", "return_original"))


@dataclass(frozen=True)
class Rows:
    """A request read: ``X`` ``(n, width)`` float32; ``text`` the rows' JSON without the
    array's brackets (a view into the body, not a copy); ``body`` the client's body when it
    holds the rows alone (it can go to the upstream as it came), else None."""

    X: np.ndarray
    text: bytes | memoryview
    return_original: bool
    body: bytes | None


class RequestReader:
    """Reads request bodies of rows of the eraser's ``input_shape`` (flattened: ``width``
    numbers) within ``±bound``, at most ``max_rows``; ``model`` is the API's pydantic request
    model, for the errors."""

    def __init__(
        self, input_shape: tuple[int, ...], max_rows: int, bound: float, model: type[BaseModel]
    ) -> None:
        self.input_shape, self.width = input_shape, int(np.prod(input_shape))
        self.max_rows, self.bound, self.model = max_rows, bound, model
        self._parser = simdjson.Parser()

    def read(self, body: bytes) -> Rows:
        """The request's rows; :class:`Refusal` 400, 413 or 422 saying what is wrong."""
        return self._fast(body) or self._checked(body)

    def _fast(self, body: bytes) -> Rows | None:
        """The rows of a valid request, parsed straight into an array (no Python object per
        number); None for anything else (the model then says what)."""
        start, stop = body.find(b"[") + 1, body.rfind(b"]")  # the keys hold no bracket
        try:
            doc = self._parser.parse(body)
            if type(doc) is not simdjson.Object or not _KEYS.issuperset(doc.keys()):
                return None
            alone = len(doc) == 1
            instances = doc["instances"]
            original = False if alone else doc["return_original"]
            if type(instances) is not simdjson.Array or type(original) is not bool:
                return None
            n = len(instances)
            if not 0 < n <= self.max_rows or not _opens(body, start, stop, n):  # nested
                return None
            if any(len(row) != self.width for row in instances):
                return None
            # a string, boolean, null or object among the numbers: TypeError
            flat = np.frombuffer(instances.as_buffer(of_type="d"), dtype=np.float64)
        except (ValueError, TypeError, KeyError, RuntimeError):  # not JSON, out of range
            return None
        finally:
            doc = instances = None  # the parser is reused: no reference may outlive the call
        if not (flat.max() <= self.bound and flat.min() >= -self.bound):
            return None
        X = flat.astype(np.float32).reshape(n, self.width)
        return Rows(X, memoryview(body)[start:stop], original, body if alone else None)

    def _checked(self, body: bytes) -> Rows:
        try:
            parsed = self.model.model_validate_json(body)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            if errors[0]["type"] == "json_invalid":
                raise Refusal(400, f"body is not valid JSON: {errors[0]['msg']}") from None
            raise Refusal(422, _validation_detail(errors)) from None
        instances = parsed.instances  # type: ignore[attr-defined]
        if len(instances) > self.max_rows:
            raise Refusal(
                413,
                f"{len(instances)} instances in one request; this proxy takes at most "
                f"{self.max_rows}",
            )
        bad = [i for i, row in enumerate(instances) if len(row) != self.width]
        if bad:
            raise Refusal(
                422,
                f"every instance must hold {self.width} numbers (the eraser's input shape is "
                f"{self.input_shape}); {len(bad)} do not, the first is instances[{bad[0]}] with "
                f"{len(instances[bad[0]])}",
            )
        text = ",".join(wire.row_texts(instances)).encode()
        X = np.asarray(instances, dtype=np.float32)
        return Rows(X, text, parsed.return_original, None)  # type: ignore[attr-defined]


def _opens(body: bytes, start: int, stop: int, n: int) -> bool:
    """Whether ``body[start:stop]`` holds exactly ``n`` opening brackets (one a row: none
    nested). ``bytes.find`` runs memchr; ``bytes.count`` reads a byte at a time, and numpy's
    comparison allocates a mask of the body's size."""
    at = start - 1
    for _ in range(n):
        at = body.find(b"[", at + 1, stop)
        if at < 0:
            return False
    return body.find(b"[", at + 1, stop) < 0


def answer_body(fair: np.ndarray, original: np.ndarray | None, classes: list[Any]) -> bytes:
    """``{"predictions": fair, "original": original (if given), "classes": classes}``."""
    answer: dict[str, Any] = {"predictions": fair}
    if original is not None:
        answer["original"] = original
    answer["classes"] = classes
    return orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)


def error_body(detail: str) -> bytes:
    """``{"detail": detail}``."""
    return orjson.dumps({"detail": detail})


def _where(loc: Any) -> str:
    """A pydantic error location as ``instances[2][0]``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "body"


def _message(error: dict[str, Any]) -> str:
    """pydantic's message, with a range's bound as a float (not 37 digits of an integer)."""
    bounds = {"less_than_equal": ("less", "le"), "greater_than_equal": ("greater", "ge")}
    if error["type"] not in bounds:
        return error["msg"]
    word, key = bounds[error["type"]]
    return f"Input should be {word} than or equal to {float(error['ctx'][key]):.6g}"


def _validation_detail(errors: list[dict[str, Any]], shown: int = 5) -> str:
    parts = [f"{_where(e['loc'])}: {_message(e)}" for e in errors[:shown]]
    more = f" (and {len(errors) - shown} more)" if len(errors) > shown else ""
    return "invalid request: " + "; ".join(parts) + more
