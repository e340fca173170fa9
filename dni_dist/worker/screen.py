"""What a block accepts from its neighbours beyond the wire format: values, steps and markers.

    screen = Screen(steps=500, window=48)
    screen.reason(msg, last_forward=41)   # None (use it), or why it is dropped: "nonfinite", ...

The wire decoder (messages.decode) has already checked the frames, the header, the dtype
allowlist and the sizes; the stage checks dtype and shape against what it expects. This screen
adds what only the running block knows:
- nonfinite: a tensor or label with NaN/Inf (one poisoned message would poison every later step);
- step_window: an activation outside (last step forwarded, that + window] or past the run's end,
  or a gradient / output error for a step this block has not forwarded yet;
- duplicate_step: an activation for a step already forwarded;
- early_end: an END marker before the run's last step, unless this block was asked to stop too
  (a stop ends every block at block 0's cut; the worker makes that exception); bad_marker: DONE or CHECKPOINT for a step
  this block has not reached.
"""

from __future__ import annotations

import logging
from collections import Counter

import torch

from dni_dist.messages import Kind, Marker, MarkerKind, Message

log = logging.getLogger(__name__)


class Screen:
    def __init__(self, *, steps: int, window: int, prefix: str = "") -> None:
        self.steps = steps  # the run's length: steps are 0 .. steps - 1
        self.window = window  # how far past its last step a block may be asked to jump
        self.prefix = prefix
        self.rejects: Counter[str] = Counter()  # what this block dropped, by reason

    def reject(self, reason: str, item: Message | Marker, detail: str) -> None:
        """Count a dropped message; log the first five of each reason, then every thousandth."""
        self.rejects[reason] += 1
        n = self.rejects[reason]
        if n <= 5 or n % 1000 == 0:
            log.warning(
                "%s dropped %s (%s: %s) [%d %s so far]", self.prefix, item.describe(), reason, detail, n, reason
            )

    def reason(self, item: Message | Marker, *, last_forward: int) -> str | None:
        if isinstance(item, Marker):
            if item.kind is MarkerKind.END:
                return "early_end" if item.step < self.steps - 1 else None
            return "bad_marker" if item.step > last_forward else None
        if item.kind is Kind.ACTIVATION:
            if item.step <= last_forward:
                return "duplicate_step"
            if item.step >= self.steps or (last_forward >= 0 and item.step > last_forward + self.window):
                return "step_window"
        elif item.step > last_forward:
            return "step_window"
        if not all(bool(torch.isfinite(t).all()) for t in (item.tensor, item.labels) if t is not None):
            return "nonfinite"
        return None
