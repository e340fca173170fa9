"""Model factories the tests name as `tests.unit.factories:<name>` (a module reference); the
file-reference tests write their own into tmp_path.

    PYTHONPATH=. python -m dni_dist train --set model.factory=tests.unit.factories:three_stages \\
        --set data.subset=true --set run.steps=50
"""

from __future__ import annotations

from torch import nn


def three_stages(input_shape: tuple[int, ...], num_classes: int) -> list[nn.Module]:
    """A small conv net as three stage modules: conv+pool, conv+pool, linear head."""
    c, h, w = input_shape
    return [
        nn.Sequential(nn.Conv2d(c, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Flatten(), nn.Linear(8 * (h // 4) * (w // 4), num_classes)),
    ]


def sequential_with_splits(input_shape: tuple[int, ...], num_outputs: int) -> tuple[nn.Sequential, list[int]]:
    """An MLP as one nn.Sequential of 5 children, split into stages starting at children 2 and 4."""
    dim = 1
    for d in input_shape:
        dim *= d
    seq = nn.Sequential(nn.Flatten(), nn.Linear(dim, 32), nn.ReLU(), nn.Linear(32, 16), nn.Linear(16, num_outputs))
    return seq, [2, 4]


def plain_sequential(**kwargs: object) -> nn.Sequential:
    """Four linear layers and no split points: the recipe's [split] cuts them."""
    shape = kwargs["input_shape"]
    assert isinstance(shape, tuple)
    return nn.Sequential(
        nn.Sequential(nn.Flatten(), nn.Linear(shape[0] * shape[1] * shape[2], 16), nn.Tanh()),
        nn.Sequential(nn.Linear(16, 16), nn.Tanh()),
        nn.Sequential(nn.Linear(16, 16), nn.Tanh()),
        nn.Linear(16, int(str(kwargs["num_outputs"]))),
    )


def recurrent_middle(input_shape: tuple[int, ...], num_classes: int) -> list[nn.Module]:
    """A stage with a GRU, whose weights feedback alignment cannot mirror."""

    class LastStep(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = nn.GRU(28, 16, batch_first=True)

        def forward(self, x):  # type: ignore[no-untyped-def]
            out, _ = self.gru(x.flatten(1).view(x.shape[0], 28, 28))
            return out[:, -1]

    return [nn.Sequential(nn.Conv2d(input_shape[0], 1, 1)), LastStep(), nn.Linear(16, num_classes)]


def lazy_head(num_classes: int) -> list[nn.Module]:
    """A lazy layer: its weights appear on the first batch (the sample batch, under the run's seed)."""
    return [nn.Sequential(nn.Flatten(), nn.LazyLinear(24), nn.ReLU()), nn.LazyLinear(num_classes)]


def not_a_list() -> nn.Module:
    return nn.Linear(784, 10)


def wrong_output(input_shape: tuple[int, ...]) -> list[nn.Module]:
    return [nn.Flatten(), nn.Linear(784, 7)]
