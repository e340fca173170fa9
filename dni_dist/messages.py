"""Messages between stages: what travels forward (activations) and backward (gradients, errors).

The stage logic consumes and produces these; channels move them (in memory, or over ZeroMQ
with the wire format of DESIGN.md §3). A message names its sender stage and the training step
it belongs to, which is what makes lag measurable and duplicates detectable.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch


class Kind(str, enum.Enum):
    ACTIVATION = "activation"  # h_i (and labels y) from stage i to stage i+1
    GRADIENT = "gradient"  # δ_i = ∂L/∂h_i (or its bootstrapped estimate) from stage i+1 to stage i
    OUTPUT_ERROR = "output_error"  # e = ∂L/∂ŷ, broadcast by the last stage for DFA / Kickback


@dataclass(frozen=True)
class Message:
    kind: Kind
    step: int
    sender: int  # stage index
    tensor: torch.Tensor
    labels: torch.Tensor | None = None  # one-hot targets, carried with activations

    def describe(self) -> str:
        return f"{self.kind.value} step {self.step} from stage {self.sender} {tuple(self.tensor.shape)}"
