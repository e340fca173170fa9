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
- early_end: an END marker before the run's last step; bad_marker: DONE for a step not reached.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from dni_dist.messages import Kind, Marker, MarkerKind, Message


class Screen:
    def __init__(self, *, steps: int, window: int) -> None:
        self.steps = steps  # the run's length: steps are 0 .. steps - 1
        self.window = window  # how far past its last step a block may be asked to jump

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


def finite_state(states: Iterable[Any]) -> bool:
    """Whether every floating-point tensor in nested state dicts/lists is finite (checkpoints)."""
    for value in states:
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                return False
        elif isinstance(value, dict):
            if not finite_state(value.values()):
                return False
        elif isinstance(value, (list, tuple)) and not finite_state(value):
            return False
    return True
