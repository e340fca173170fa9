"""When a block may take its next step, and what it waits for otherwise. No sockets here.

    adm = Admission(cfg.runtime, blocks=4)
    why = adm.why_not(block, next_step=12, end_step=499, send_backlog=0, hwm=4)
    # None: go (feed a batch / take an activation); else the wait reason, e.g. "credit"

The policies it applies:
- credit window: an sg interface may run at most `window(block)` steps ahead of the targets it
  has received: `runtime.max_inflight`, or with `runtime.window = "auto"` enough steps to cover
  the link's round trip (the fastest target round trip seen over the block's own step time, + 1;
  at most `runtime.max_window`). The fastest round trip is the link plus the blocks below
  without queueing, so a slower block below does not widen the window. Full window: `block` waits
  (and, with `target_timeout_s`, gives up on targets that late); `drop-oldest` forgets the
  oldest step and goes on at once.
- lockstep: block 0 feeds step t+1 only once step t has finished in every block (DONE markers
  flow upstream), which reproduces the in-process schedule.
- send backlog: no new step while the outgoing edge still holds `hwm` unsent messages.
Every dropped entry is counted in `dropped` by what was dropped.
"""

from __future__ import annotations

import logging
import math
from collections import Counter

from dni_dist.block import Block
from dni_dist.config import RuntimeConfig

log = logging.getLogger(__name__)


class Admission:
    def __init__(self, runtime: RuntimeConfig, *, blocks: int, prefix: str = "") -> None:
        self.runtime = runtime
        self.blocks = blocks
        self.prefix = prefix
        self.dropped: Counter[str] = Counter()
        self.dropped_steps: set[int] = set()  # given up on: their targets may still arrive, late
        self.done_below = -1  # lockstep: every block below this one has finished this step
        self.done_sent = -1
        self.restarted = False  # this is a restarted incarnation of the block
        self.first_step: int | None = None  # the first step it forwarded
        self.step_s = 0.0  # the block's own compute per step (moving average), for the auto window

    def forwarded(self, step: int, seconds: float) -> None:
        """A step left this block after `seconds` of compute."""
        if self.first_step is None:  # a restarted block: targets for earlier steps are stale
            self.first_step = step
        self.step_s = seconds if not self.step_s else 0.9 * self.step_s + 0.1 * seconds

    def window(self, block: Block) -> int:
        """How many steps an sg interface of `block` may have in flight now."""
        rt = self.runtime
        rtt = min((s.stats.lags.min_seconds for s in block.stages if s.spec.out_method == "sg"), default=math.inf)
        if rt.window == "fixed" or not math.isfinite(rtt) or self.step_s <= 0:
            return rt.max_inflight
        return min(rt.max_window, max(rt.max_inflight, math.ceil(rtt / self.step_s) + 1))

    # -- the gate -------------------------------------------------------------------------------
    def why_not(
        self, block: Block, *, next_step: int | None, end_step: int | None, send_backlog: int, hwm: int
    ) -> str | None:
        """None if a new step may start now, else what the block waits for. `next_step` is the
        batch block 0 would feed (None for the other blocks, which take activations)."""
        if not block.ready:
            awaited = block.awaiting()
            return awaited.value if awaited is not None else "local"
        if not self.credit_ok(block):
            return "credit"
        if next_step is not None:
            if next_step > (end_step if end_step is not None else -1):
                return "drain"
            if not self.lockstep_ok(next_step):
                return "lockstep"
        if send_backlog >= hwm:
            return "send"
        return None

    def credit_ok(self, block: Block) -> bool:
        """Whether the credit window has room, after applying the overflow policy."""
        rt = self.runtime
        if block.inflight() < self.window(block):
            return True
        if rt.overflow == "block":
            if not (rt.target_timeout_s and block.oldest_pending_age() > rt.target_timeout_s):
                return False
            self._remember_oldest(block)
            n = block.drop_oldest_pending()
            self.dropped["timeout"] += n
            log.warning("%s gave up on %d target(s) older than %.0fs", self.prefix, n, rt.target_timeout_s)
            return True
        self._remember_oldest(block)
        self.dropped["pending"] += block.drop_oldest_pending()
        return True

    def _remember_oldest(self, block: Block) -> None:
        self.remember([next(iter(s.pending)) for s in block.stages if s.spec.out_method == "sg" and s.pending])

    def remember(self, steps: list[int], what: str | None = None) -> None:
        """Steps given up on (counted under `what`, if given): a late target for one is stale.
        Bounded: beyond 10 windows of entries only the newest window is kept."""
        if what is not None:
            self.dropped[what] += len(steps)
        self.dropped_steps.update(steps)
        if len(self.dropped_steps) > 10 * self.runtime.window_bound:
            self.dropped_steps = set(sorted(self.dropped_steps)[-self.runtime.window_bound :])

    def expire(self, block: Block) -> None:
        """runtime.target_timeout_s: forget every step (any method) whose gradient, target or output
        error is that late; a locked stage then moves on without that update."""
        if not self.runtime.target_timeout_s:
            return
        steps = block.expire(self.runtime.target_timeout_s)
        if steps:
            self.remember(steps, "timeout")
            log.warning("%s gave up on %d step(s) whose target is over %.0fs late (%d..%d)", self.prefix, len(steps),
                        self.runtime.target_timeout_s, steps[0], steps[-1])  # fmt: skip

    def lockstep_ok(self, next_step: int) -> bool:
        return not self.runtime.lockstep or self.blocks == 1 or self.done_sent >= next_step - 1

    # -- what arrives and what leaves -------------------------------------------------------------
    def stale_target(self, step: int) -> bool:
        """A target for a step this block gave up on, or (restarted) one only its previous
        incarnation forwarded: count it as stale instead of an error."""
        before = self.restarted and (self.first_step is None or step < self.first_step)
        if step not in self.dropped_steps and not before:
            return False
        self.dropped_steps.discard(step)
        self.dropped["stale_target"] += 1
        return True

    def trim_gradient_queue(self, backlog: int) -> bool:
        """drop-oldest: whether to discard the oldest unsent gradient before queueing another."""
        if self.runtime.overflow == "drop-oldest" and backlog >= self.runtime.queue_limit:
            self.dropped["gradient_queue"] += 1
            return True
        return False

    def finished_below(self, step: int) -> None:
        """Every block below has finished `step` (a DONE marker arrived, or this is the last block)."""
        self.done_below = max(self.done_below, step)

    def done_to_send(self, block: Block) -> int | None:
        """lockstep: the step to announce upstream as finished here and below, if a new one is."""
        if not self.runtime.lockstep or self.done_below <= self.done_sent or block.pending_through(self.done_below):
            return None
        self.done_sent = self.done_below
        return self.done_sent
