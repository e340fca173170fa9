"""Stop requests of one worker: the first ends the run early at a consistent cut, a later one now.

    stop = Stopping(drain_timeout_s=60)
    stop.request()                 # from a signal handler or the launcher's `stop` (only counts)
    if stop.take_first(): ...      # in the loop: True once, when the first request is handled
    stop.now, stop.overdue(ended=False)

A request only counts, so a signal handler never touches a socket; the loop acts on it. The
launcher stops a block with a control message *and* SIGTERM, and Ctrl-C in a terminal reaches
every process of the group: requests within `SAME_REQUEST_S` of the first are that one request.
A later one (a second Ctrl-C under torchrun) means: leave now, without a checkpoint. So does a
first request that waits more than `drain_timeout_s` for the `end` marker (`overdue`), or on a
neighbour whose connection is gone (`neighbour_gone`: torchrun stopping the gang after a death).
"""

from __future__ import annotations

import time

SAME_REQUEST_S = 2.0
GONE_GRACE_S = 1.0  # what a neighbour sent before it went is read within this (it precedes the event)


class Stopping:
    def __init__(self, drain_timeout_s: float) -> None:
        self.drain_timeout_s = drain_timeout_s
        self.requests = 0
        self._handled = 0
        self.first_at: float | None = None
        self.now = False  # leave the loop at once, without a checkpoint
        self.gone_since: float | None = None

    @property
    def requested(self) -> bool:
        return self.first_at is not None

    def request(self) -> None:
        self.requests += 1

    def take_first(self) -> bool:
        """Handle the requests that arrived since the last call; True if the first one is among them."""
        now, first = time.monotonic(), False
        while self._handled < self.requests:
            self._handled += 1
            if self.first_at is None:
                self.first_at, first = now, True
            elif now - self.first_at >= SAME_REQUEST_S:
                self.now = True
        return first

    def overdue(self, *, ended: bool) -> bool:
        """Stopping, the end marker has not come within drain_timeout_s: give up on a clean end."""
        return self.first_at is not None and not ended and time.monotonic() > self.first_at + self.drain_timeout_s

    def neighbour_gone(self, down: list[str], *, ended: bool, pending: bool) -> None:
        """Stopping, and the neighbour the stop waits on has lost its connection for GONE_GRACE_S:
        before `end`, the upstream one (no `end` can come); after it, with steps still waiting for
        their targets, the downstream one (no target can come). Leave now, without a checkpoint."""
        edge = "activations out" if ended else "activations in"
        if self.first_at is None or self.now or edge not in down or (ended and not pending):
            self.gone_since = None
            return
        self.gone_since = self.gone_since or time.monotonic()
        self.now = time.monotonic() - self.gone_since >= GONE_GRACE_S
