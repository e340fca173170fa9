"""What a block refuses beyond the wire format, with the reason it is counted under."""

from __future__ import annotations

import torch

from dni_dist.messages import Kind, Marker, MarkerKind, Message
from dni_dist.worker.screen import Screen

X, Y = torch.zeros(4, 8), torch.zeros(4, 10)


def act(step: int, x: torch.Tensor = X, y: torch.Tensor = Y) -> Message:
    return Message(Kind.ACTIVATION, step, 0, x, y)


def test_activations_outside_the_window_or_poisoned_are_refused() -> None:
    s = Screen(steps=100, window=10)
    assert s.reason(act(5), last_forward=4) is None
    assert s.reason(act(0), last_forward=-1) is None and s.reason(act(90), last_forward=-1) is None  # fresh block
    assert s.reason(act(4), last_forward=4) == "duplicate_step"
    assert s.reason(act(15), last_forward=4) == "step_window"
    assert s.reason(act(2**62), last_forward=-1) == "step_window"
    assert s.reason(act(100), last_forward=98) == "step_window"  # past the run's end
    assert s.reason(act(5, x=X.index_fill(0, torch.tensor([2]), float("nan"))), last_forward=4) == "nonfinite"
    assert s.reason(act(5, y=Y.index_fill(1, torch.tensor([0]), float("-inf"))), last_forward=4) == "nonfinite"


def test_targets_only_for_forwarded_steps_and_finite() -> None:
    s = Screen(steps=100, window=10)
    grad = Message(Kind.GRADIENT, 3, 1, X)
    assert s.reason(grad, last_forward=3) is None
    assert s.reason(Message(Kind.GRADIENT, 4, 1, X), last_forward=3) == "step_window"
    assert s.reason(Message(Kind.OUTPUT_ERROR, 2, 3, X.fill_(float("inf"))), last_forward=3) == "nonfinite"


def test_markers_only_at_the_real_end_and_for_steps_reached() -> None:
    s = Screen(steps=100, window=10)
    assert s.reason(Marker(MarkerKind.END, 99, 0), last_forward=99) is None
    assert s.reason(Marker(MarkerKind.END, 0, 0), last_forward=5) == "early_end"
    assert s.reason(Marker(MarkerKind.DONE, 5, 2), last_forward=5) is None
    assert s.reason(Marker(MarkerKind.DONE, 6, 2), last_forward=5) == "bad_marker"
