"""How many coalesced upstream calls the fair proxy lets out at once, learnt from their times.

Example
-------
>>> limit = InflightLimit(low=1, high=8)
>>> limit.value                                  # where it starts
2
>>> limit.update(0.010, held_back=True)          # as fast as the fastest: room for more
>>> limit.update(0.030, held_back=True)          # two thirds of it queued at the upstream
>>> limit.value
2
"""

from __future__ import annotations


class InflightLimit:
    """A latency-based limit in the spirit of TCP Vegas (and Netflix's concurrency limits).

    ``fastest`` is the shortest successful call time over the last ``window`` to
    ``2 * window`` calls, the upstream's time without load, so a call that took ``rtt``
    seconds spent about ``waited = 1 - fastest / rtt`` of it behind other calls at the
    upstream: ``1 - 1 / k`` with ``k`` calls out at a model that serves one call at a time,
    about 0 at one that serves them in parallel. After every call, the limit

    - goes down by one (not below ``low``) when ``waited > 0.5``: calls spend most of their
      time queueing at the upstream (three or more out at a one-call-at-a-time model), so
      requests had better wait here and go together in fewer calls;
    - goes up by one (not above ``high``) when ``waited < 0.25`` and the limit held requests
      back (they were waiting here when the call returned, or it took the last free call):
      more calls at once cost the upstream little, and a request held here waits a whole call.

    So a one-worker model settles at two calls (one computing, the next one waiting), and a
    model that serves calls in parallel gets as many as there is demand for, up to ``high``,
    unless they slow each other down to twice the time without load. The thresholds are on
    the share of a call's time, not on the calls queued (``k * waited``, as Vegas counts
    packets), which would let calls that each slow down a little for the others' CPU at the
    upstream hold the limit far below the demand. Each call moves the limit by at most one;
    with ``low == high`` it is fixed. Call times include the rows' count (a larger call takes
    longer), which the window's minimum and the thresholds absorb for the small batches
    coalescing makes.

    Parameters
    ----------
    low, high: the range of the limit.
    initial: where it starts (within the range).
    window: calls after which the fastest time starts to be forgotten.

    Attributes
    ----------
    value: the limit now. fastest: the shortest recent call time, seconds (inf before any).
    """

    RAISE_BELOW, LOWER_ABOVE = 0.25, 0.5

    def __init__(self, low: int, high: int, initial: int = 2, window: int = 200) -> None:
        self.low, self.high, self.window = low, high, window
        self.value = min(max(initial, low), high)
        self.fastest = self._fastest_next = float("inf")
        self._samples = 0

    def update(self, rtt: float, held_back: bool) -> None:
        """Learn from one successful call of ``rtt`` seconds; ``held_back``: the limit kept
        requests waiting."""
        if not rtt > 0:
            return
        self._samples += 1
        self.fastest = min(self.fastest, rtt)
        self._fastest_next = min(self._fastest_next, rtt)
        if self._samples % self.window == 0:  # forget calls older than two windows
            self.fastest, self._fastest_next = self._fastest_next, float("inf")
        if self.low == self.high:
            return
        waited = 1.0 - self.fastest / rtt
        if waited > self.LOWER_ABOVE:
            self.value = max(self.low, self.value - 1)
        elif waited < self.RAISE_BELOW and held_back:
            self.value = min(self.high, self.value + 1)
