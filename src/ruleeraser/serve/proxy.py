"""What the fair proxy does with a request: its rows go to the upstream, alone or coalesced
with other requests' rows, and come back with the eraser's fair probabilities.

With ``coalesce``, requests share upstream calls: at most ``limit.value`` calls are out at
once (:class:`ruleeraser.serve.limit.InflightLimit`, between ``min_inflight`` and
``max_inflight``); a request that finds them all busy waits in the queue, and when a call
returns the queue goes out together as the next one (at most ``max_batch_rows`` rows; a larger
request goes alone). No timer: a request that finds a call free goes at once, alone. The
patches run once per call on the merged rows (in float32, whose rounding depends on the rows
computed together: a coalesced answer equals ``Eraser.predict_proba`` of its rows to about
1e-7, a request sent alone exactly), and each request gets exactly its own rows back. The
upstream gets the clients' own JSON text of the rows, joined, never encoded again. A call
carries the ``X-Request-Id`` of its first request (the others' ids are not sent: a call's
header holds one id).
"""

from __future__ import annotations

import asyncio
import collections
import logging

import numpy as np

from ruleeraser import wire
from ruleeraser.eraser import Eraser
from ruleeraser.serve.bodies import RequestReader, Rows, answer_body, error_body
from ruleeraser.serve.bound import FLOAT32_MAX
from ruleeraser.serve.limit import InflightLimit
from ruleeraser.serve.settings import Settings
from ruleeraser.serve.upstream import Body, Refusal, Upstream

log = logging.getLogger("ruleeraser.serve")


class Pending:
    """One client request waiting for its rows' answers: ``future`` gets ``(proba, fair)``;
    ``request_id``: its ``X-Request-Id``, if any."""

    __slots__ = ("rows", "future", "deadline", "request_id")

    def __init__(
        self, rows: Rows, future: asyncio.Future, deadline: float, request_id: str | None = None
    ) -> None:
        self.rows, self.future, self.deadline = rows, future, deadline
        self.request_id = request_id

    def fail(self, status: int, detail: str) -> None:
        if not self.future.done():  # not given up by its client
            self.future.set_exception(Refusal(status, detail))


class Proxy:
    """The eraser, the settings, the upstream client and the request queue of one app.

    Parameters
    ----------
    eraser: a fitted eraser (its model is the upstream; only the patches run here).
    upstream: the client of the model.
    reader: reads the request bodies.
    settings: coalescing and limits.

    Attributes
    ----------
    requests, upstream_calls, upstream_rows: prediction requests, the upstream calls made
        for them and the rows in those calls. internal_errors: requests answered 500.
    """

    def __init__(
        self, eraser: Eraser, upstream: Upstream, reader: RequestReader, settings: Settings
    ) -> None:
        self.eraser, self.upstream, self.reader, self.settings = eraser, upstream, reader, settings
        self.limit = InflightLimit(settings.min_inflight, settings.max_inflight)  # type: ignore[arg-type]
        self.classes = eraser.classes_.tolist()
        self.requests = self.upstream_calls = self.upstream_rows = self.internal_errors = 0
        self.loop: asyncio.AbstractEventLoop | None = None  # the queue's
        self.queue: collections.deque[Pending] = collections.deque()
        self.inflight = 0
        self.tasks: set[asyncio.Task] = set()

    async def answer(self, body: bytes, request_id: str | None = None) -> tuple[int, bytes]:
        """The status and JSON body ``POST /v1/predict`` answers ``body`` with; its upstream
        call carries ``request_id`` (when the request is the call's first)."""
        try:
            rows = self.reader.read(body)
            proba, fair = await self.predict(rows, request_id)
        except Refusal as refusal:
            if refusal.status == 500:
                self.internal_errors += 1
            return refusal.status, error_body(refusal.detail)
        return 200, answer_body(fair, proba if rows.return_original else None, self.classes)

    async def predict(
        self, rows: Rows, request_id: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The upstream's and the fair probabilities of a request's rows; raises
        :class:`Refusal`."""
        loop = asyncio.get_running_loop()
        if loop is not self.loop:  # a new event loop (a test client): a new queue
            self.loop, self.queue, self.inflight = loop, collections.deque(), 0
        item = Pending(rows, loop.create_future(), loop.time() + self.upstream.timeout, request_id)
        self.requests += 1
        if not self.settings.coalesce:
            await self._forward([item])
        else:
            self.queue.append(item)
            if self.inflight < self.limit.value:
                self._launch()
        return await item.future

    def _launch(self) -> None:
        """Send the queue's first requests (up to ``max_batch_rows`` rows) as one call."""
        batch: list[Pending] = []
        rows, most = 0, self.settings.max_batch_rows
        while self.queue and (not batch or rows + len(self.queue[0].rows.X) <= most):  # type: ignore[operator]
            item = self.queue.popleft()
            if not item.future.done():  # its client gave up
                batch.append(item)
                rows += len(item.rows.X)
        if batch:
            self.inflight += 1
            task = asyncio.get_running_loop().create_task(self._call(batch, self.inflight))
            self.tasks.add(task)  # a reference until it is done
            task.add_done_callback(self.tasks.discard)

    async def _call(self, batch: list[Pending], sent_with: int) -> None:
        try:
            rtt = await self._forward(batch)
            if rtt is not None:
                held_back = bool(self.queue) or sent_with >= self.limit.value
                self.limit.update(rtt, held_back)
        except Exception:  # a bug: answer rather than leave the batch waiting
            log.exception("upstream call for %d request(s) failed", len(batch))
            for item in batch:
                item.fail(500, "internal error")
        except BaseException:  # cancelled (shutting down)
            for item in batch:
                item.future.cancel()
            raise
        finally:
            self.inflight -= 1
            while self.queue and self.inflight < self.limit.value:
                self._launch()

    async def _forward(self, batch: list[Pending]) -> float | None:
        """One upstream call for ``batch``; every request gets its answer or its error.

        Returns the call's time in seconds when the upstream answered probabilities, else None.
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        for item in batch:
            if item.deadline <= now:  # waited the whole timeout in the queue
                item.fail(504, self.upstream.too_slow())
        batch = [item for item in batch if item.deadline > now]
        batch, log_g = self._patched(batch)
        if not batch:
            return None
        n = sum(len(item.rows.X) for item in batch)
        self.upstream_calls += 1
        self.upstream_rows += n
        sent_at = loop.time()
        try:
            timeout = min(i.deadline for i in batch) - now
            proba = await self.query(self._body(batch), n, timeout, batch[0].request_id)
            fair = self.fair(proba, log_g)
        except Refusal as exc:
            for item in batch:  # no partial answers: the whole call failed
                item.fail(exc.status, exc.detail)
            return None
        rtt = loop.time() - sent_at
        start = 0
        for item in batch:
            stop = start + len(item.rows.X)
            if not item.future.done():
                item.future.set_result((proba[start:stop], fair[start:stop]))
            start = stop
        return rtt

    @staticmethod
    def _body(batch: list[Pending]) -> Body:
        """The upstream request: a lone request's own body when it holds the rows alone,
        else the pieces of one with the requests' rows as their clients wrote them."""
        if len(batch) == 1 and batch[0].rows.body is not None:
            return batch[0].rows.body
        return wire.rows_body_pieces([item.rows.text for item in batch])

    def _patched(self, batch: list[Pending]) -> tuple[list[Pending], list[np.ndarray]]:
        """``log G_j(x)`` of each patch on the batch's rows; a request with a row a patch
        cannot compute fails alone (422), the others go on."""
        if not batch:
            return batch, []
        try:
            return batch, self.patch_log_proba([item.rows.X for item in batch])
        except Refusal as exc:
            if len(batch) == 1:
                batch[0].fail(exc.status, exc.detail)
                return [], []
        good, outputs = [], []
        for item in batch:
            try:
                outputs.append(self.patch_log_proba([item.rows.X]))
                good.append(item)
            except Refusal as refusal:
                item.fail(refusal.status, refusal.detail)
        return good, [np.concatenate(p) for p in zip(*outputs, strict=True)] if good else []

    def patch_log_proba(self, parts: list[np.ndarray]) -> list[np.ndarray]:
        """``log G_j(x)`` of each patch (:meth:`Eraser.patch_log_proba`) on the rows of
        ``parts``. Where a patch has no finite output: 500 if the rows were within the range
        the patches compute (the eraser is broken), else 422 (the row is out of reach)."""
        X = parts[0] if len(parts) == 1 else np.concatenate(parts)
        try:
            return self.eraser.patch_log_proba(X.reshape(len(X), *self.eraser.input_shape_))
        except ValueError as exc:
            if self.reader.bound < FLOAT32_MAX:
                raise Refusal(500, f"internal error: {exc}") from None
            raise Refusal(422, str(exc)) from None

    async def query(
        self, body: Body, n: int, timeout: float | None = None, request_id: str | None = None
    ) -> np.ndarray:
        """The upstream's probabilities for a request body of ``n`` rows; 502 or 504."""
        proba = await self.upstream.query(body, n, timeout, request_id)
        if proba.shape[1] != len(self.classes):
            raise Refusal(
                502,
                f"upstream answered {proba.shape[1]} classes; the eraser was fitted for "
                f"{len(self.classes)}",
            )
        return proba

    def fair(self, proba: np.ndarray, log_g: list[np.ndarray]) -> np.ndarray:
        """The fair probabilities (:meth:`Eraser.remove`); 500 if they are not finite."""
        fair = self.eraser.remove(proba, log_g)
        if not np.isfinite(fair).all():
            raise Refusal(500, "internal error: the fair probabilities are not finite")
        return fair

    async def check(self, upstream: bool) -> None:
        """:meth:`check_forward`, with the upstream's answer for the row when ``upstream``
        (:class:`Refusal` 502/504 if the upstream fails)."""
        proba = None
        if upstream:
            zeros = wire.dumps([0.0] * self.reader.width)
            proba = await self.query(wire.rows_body([zeros]), 1)
        self.check_forward(proba)

    def check_forward(self, proba: np.ndarray | None = None) -> None:
        """The patches and the removal on a row of zeros, with the model's ``proba`` for it
        (None: uniform); :class:`Refusal` 503 saying what fails."""
        if proba is None:
            proba = np.full((1, len(self.classes)), 1.0 / len(self.classes))
        X = np.zeros((1, self.reader.width), dtype=np.float32)
        try:
            self.fair(proba, self.patch_log_proba([X]))
        except Refusal as refusal:
            raise Refusal(503, f"the forward pass fails: {refusal.detail}") from None
        except Exception as exc:  # a broken eraser: say what, not a 500
            raise Refusal(503, f"the forward pass fails: {type(exc).__name__}: {exc}") from None
