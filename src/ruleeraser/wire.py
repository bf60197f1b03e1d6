"""The JSON a deployed model speaks over HTTP, for :class:`ruleeraser.http_model.HTTPModel`
and the fair proxy (:mod:`ruleeraser.serve`).

- *instances* (TensorFlow Serving, KServe v1, Vertex AI, MLflow):
  ``{"instances": rows}`` -> ``{"predictions": outputs}``, one output row per input row;
- *KServe v2* (the Open Inference Protocol): ``{"inputs": [tensor]}`` -> ``{"outputs":
  [tensor, ...]}``, a tensor being ``{"name", "shape", "datatype", "data"}``;
- *custom*: rows and outputs at dotted paths of the bodies (``data.rows``, ``result.0.scores``).

A request body is built from the rows' JSON texts joined as they are (:func:`rows_body`), so
that rows encoded once (for a cache key, or by the client of the proxy) are never encoded
again. Errors are ``ValueError`` whose message starts with ``answer``, so that a caller can
prefix who answered.

Example
-------
>>> rows = [dumps(row) for row in [[1.5, 2], [0.25, -1]]]
>>> rows_body(rows)
b'{"instances":[[1.5,2],[0.25,-1]]}'
>>> answer = read_answer(b'{"predictions": [[0.9, 0.1], [0.2, 0.8]]}')
>>> lookup(answer, "predictions")
[[0.9, 0.1], [0.2, 0.8]]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Where the instances protocol puts the rows and the outputs.
INSTANCES, PREDICTIONS = "instances", "predictions"
_EXCERPT = 300


def dumps(value: Any) -> str:
    """Canonical compact JSON (sorted keys; NaN and infinities refused; numpy scalars as
    numbers): equal values give equal texts, which is what a cache key needs.

    >>> dumps({"b": np.float32(0.5), "a": [1, 2]})
    '{"a":[1,2],"b":0.5}'
    """
    return json.dumps(
        value, separators=(",", ":"), sort_keys=True, allow_nan=False, default=_scalar
    )


def row_texts(rows: Sequence[Any]) -> list[str]:
    """Each row's :func:`dumps` text; a row JSON cannot carry raises ``ValueError`` naming it.

    >>> row_texts([[1, 2], {"x": 3}])
    ['[1,2]', '{"x":3}']
    """
    texts = []
    for i, row in enumerate(rows):
        try:
            texts.append(dumps(row))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"row {i} cannot be sent as JSON: {exc}") from None
    return texts


def rows_body(parts: Sequence[str | bytes | memoryview], path: str = INSTANCES) -> bytes:
    """A request body with the rows at ``path`` (dotted), from the JSON texts of its parts.

    A part is one row's text or the text of several rows with the brackets of their array
    taken off; the parts are joined by commas as they are, so no number is encoded again.

    >>> rows_body([b"[1,2],[3,4]", "[5,6]"], "data.rows")
    b'{"data":{"rows":[[1,2],[3,4],[5,6]]}}'
    """
    return b"".join(rows_body_pieces(parts, path))  # one copy of the rows: MB for wide rows


def rows_body_pieces(
    parts: Sequence[str | bytes | memoryview], path: str = INSTANCES
) -> list[bytes | memoryview]:
    """The pieces of :func:`rows_body`, in order, the parts among them as given (encoded to
    UTF-8 where text), for a writer that sends pieces without joining them.

    >>> rows_body_pieces([b"[1,2]", memoryview(b"[3,4]")])
    [b'{"instances":[', b'[1,2]', b',', <memory at 0x...>, b']}']
    """
    keys = path.split(".")
    pieces: list[bytes | memoryview] = [
        "".join("{" + json.dumps(key) + ":" for key in keys).encode() + b"["
    ]
    for i, part in enumerate(parts):
        if i:
            pieces.append(b",")
        pieces.append(part.encode() if isinstance(part, str) else part)
    pieces.append(b"]" + b"}" * len(keys))
    return pieces


def kserve_v2_body(batch: np.ndarray, input_name: str, datatype: str) -> bytes:
    """A KServe v2 request: the batch as one input tensor of shape ``batch.shape``.

    >>> kserve_v2_body(np.array([[1.0, 2.0]]), "input-0", "FP32")
    b'{"inputs":[{"name":"input-0","shape":[1,2],"datatype":"FP32","data":[1.0,2.0]}]}'
    """
    tensor = {
        "name": input_name,
        "shape": list(batch.shape),
        "datatype": datatype,
        "data": batch.reshape(-1).tolist(),
    }
    return json.dumps({"inputs": [tensor]}, separators=(",", ":")).encode()


def read_answer(content: bytes | str) -> Any:
    """An answer body parsed as JSON; ``ValueError`` with an excerpt when it is not JSON."""
    try:
        return json.loads(content)
    except ValueError:
        text = content.decode(errors="replace") if isinstance(content, bytes) else content
        raise ValueError(f"answer is not JSON: {excerpt(text)}") from None


def lookup(body: Any, path: str) -> Any:
    """``body`` at a dotted ``path``; integer parts index lists.

    >>> lookup({"result": [{"scores": [0.5]}]}, "result.0.scores")
    [0.5]
    """
    node = body
    for i, part in enumerate(path.split(".")):
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, TypeError, ValueError):
            at = ".".join(path.split(".")[:i]) or "the body"
            has = list(node)[:10] if isinstance(node, dict) else type(node).__name__
            raise ValueError(f"answer has no {part!r} in {at} ({has})") from None
    return node


def read_outputs(body: Any, path: str = PREDICTIONS) -> np.ndarray:
    """The outputs at ``path`` of a parsed answer as a float64 array.

    >>> read_outputs({"predictions": [[0.9, 0.1]]})
    array([[0.9, 0.1]])
    """
    found = lookup(body, path)
    try:
        return np.asarray(found, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"answer's {path!r} is not an array of numbers: {excerpt(json.dumps(found))}"
        ) from None


def kserve_v2_output(body: Any, name: str | None) -> np.ndarray:
    """The output tensor ``name`` (None: the only one) of a KServe v2 answer, in its shape.

    >>> kserve_v2_output({"outputs": [{"name": "p", "shape": [1, 2], "data": [0.3, 0.7]}]}, None)
    array([[0.3, 0.7]])
    """
    outputs = body.get("outputs") if isinstance(body, dict) else None
    if not isinstance(outputs, list) or not outputs:
        raise ValueError(f"answer has no 'outputs' list: {excerpt(json.dumps(body))}")
    names = [o.get("name") if isinstance(o, dict) else None for o in outputs]
    if name is not None and name not in names:
        raise ValueError(f"answer has no output named {name!r}; outputs: {names}")
    if name is None and len(outputs) > 1:
        raise ValueError(f"answer has outputs {names}; choose one with output_name")
    out = outputs[0 if name is None else names.index(name)]
    try:
        return np.asarray(out["data"], dtype=np.float64).reshape(out["shape"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"answer's output tensor cannot be read: {exc}") from None


def excerpt(text: str) -> str:
    """The start of a text on one line, quoted, for an error message."""
    text = " ".join(text.split())
    return repr(text if len(text) <= _EXCERPT else text[:_EXCERPT] + "...")


def _scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
