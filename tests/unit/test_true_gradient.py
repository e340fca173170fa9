"""The Figure 4 probe: how close each SG is to the gradient backprop would give."""

from __future__ import annotations

import torch

from dni_dist import config_from_dict
from dni_dist.experiments.true_gradient import TrueGradientProbe, true_gradient_cosines
from dni_dist.topology import Topology


def _stages():  # type: ignore[no-untyped-def]
    cfg = config_from_dict(
        {
            "model": {"kind": "linear", "loss": "mse"},
            "split": {"placement": "output"},  # the SG between the linear model's output and the loss
            "credit": {"method": "sg"},
            "run": {"seed": 1},
        }
    )
    topo = Topology.from_config(cfg, input_dim=5, num_classes=3)
    return topo.build_stages(cfg, input_dim=5, num_classes=3)


def test_an_sg_equal_to_the_true_gradient_scores_one_and_a_fresh_one_zero() -> None:
    stages = _stages()
    x, y = torch.randn(16, 5), torch.eye(3)[torch.arange(16) % 3]
    sg = stages[0].sg
    assert sg is not None
    assert true_gradient_cosines(stages, x, y) == [0.0]  # zero-initialised: predicts nothing yet
    with torch.no_grad():  # mse = mean over N·C of (z − y)²: N·∂L/∂z = 2(z − y)/C, which zA + yC + b can be
        sg.A.copy_(torch.eye(3) * 2 / 3)
        sg.C.copy_(-torch.eye(3) * 2 / 3)
    (cos,) = true_gradient_cosines(stages, x, y)
    assert abs(cos - 1) < 1e-6
    with torch.no_grad():
        sg.A.neg_()
        sg.C.neg_()
    assert abs(true_gradient_cosines(stages, x, y)[0] + 1) < 1e-6  # pointing the wrong way


def test_probe_measures_every_kth_step_and_leaves_the_stages_alone() -> None:
    stages = _stages()
    before = [p.clone() for s in stages for p in s.module.parameters()]
    probe = TrueGradientProbe(torch.randn(8, 5), torch.eye(3)[torch.arange(8) % 3], every=3)
    for step in range(7):
        probe(step, stages)
    assert sorted(probe.cosines) == [2, 5]
    assert all(torch.equal(a, b) for a, b in zip(before, [p for s in stages for p in s.module.parameters()]))
    assert all(p.grad is None for s in stages for p in s.module.parameters())
