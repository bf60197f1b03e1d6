"""uvicorn's httptools protocol, handing the app a request body read in one piece as it was
read.

uvicorn gathers a body in a ``bytearray`` and hands the app ``bytes`` of it: two copies of
every body, whatever its size. :class:`BodyAsReadProtocol` holds the first piece of a body as
the ``bytes`` the HTTP parser gave it (``b"" + piece`` is ``piece`` itself, and so is
``bytes(piece)``), so a body read in one piece, as most are, reaches the app uncopied. A
second piece before the app takes the first turns the body into uvicorn's ``bytearray``,
and from there it is gathered as uvicorn does.

Example
-------
>>> import uvicorn
>>> uvicorn.Config("ruleeraser.serve:create_app_from_env", http=BodyAsReadProtocol).http
<class 'ruleeraser.serve.protocol.BodyAsReadProtocol'>
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class BodyAsReadProtocol(HttpToolsProtocol):
    """:class:`~uvicorn.protocols.http.httptools_impl.HttpToolsProtocol` that keeps a
    body's first piece as it was read."""

    def on_body(self, body: bytes) -> None:
        held = self.cycle.body
        if not held:
            self.cycle.body = b""  # type: ignore[assignment]
        elif type(held) is bytes:
            self.cycle.body = bytearray(held)
        super().on_body(body)
