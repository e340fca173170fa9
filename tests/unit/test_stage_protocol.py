"""A stage refuses messages it cannot use, says why, and keeps its state: training goes on."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dni_dist import Kind, Message, ProtocolError, config_from_dict
from dni_dist.topology import Topology


def stages(method: str):  # type: ignore[no-untyped-def]
    cfg = config_from_dict(
        {
            "model": {"depth": 2, "width": 8},
            "split": {"placement": "every"},
            "credit": {"method": method},
            "run": {"steps": 10},
        }
    )
    topo = Topology.from_config(cfg, input_dim=4, num_classes=3)
    return topo.build_stages(cfg, input_dim=4, num_classes=3)


X, Y = torch.randn(5, 4), F.one_hot(torch.arange(5) % 3, 3).float()


def test_sg_stage_rejects_bad_targets_and_keeps_training() -> None:
    s0 = stages("sg")[0]
    act = s0.forward(0, X, Y)[0]
    with pytest.raises(ProtocolError, match="no forward pending"):
        s0.receive(Message(Kind.GRADIENT, 7, 1, torch.zeros(5, 8)))
    with pytest.raises(ProtocolError, match="expected shape"):
        s0.receive(Message(Kind.GRADIENT, 0, 1, torch.zeros(5, 9)))
    with pytest.raises(ProtocolError, match="interface method is sg"):
        s0.receive(Message(Kind.OUTPUT_ERROR, 0, 2, torch.zeros(5, 3)))
    with pytest.raises(ProtocolError, match="already forwarded"):
        s0.forward(0, X, Y)
    with pytest.raises(ProtocolError, match=r"expected input \[N, 4\]"):
        s0.forward(1, torch.randn(5, 6), Y)
    assert s0.receive(Message(Kind.GRADIENT, 0, 1, torch.ones_like(act.tensor))) == []
    with pytest.raises(ProtocolError, match="no forward pending"):  # a duplicate target
        s0.receive(Message(Kind.GRADIENT, 0, 1, torch.ones_like(act.tensor)))
    assert len(s0.stats.sg) == 1 and s0.stats.updates == 1
    s0.forward(1, X, Y)
    assert s0.stats.updates == 2


def test_locked_stage_refuses_the_next_forward_until_its_gradient_arrives() -> None:
    s0 = stages("bp")[0]
    act = s0.forward(0, X, Y)[0]
    assert not s0.ready_for_forward and s0.awaiting is Kind.GRADIENT
    with pytest.raises(ProtocolError, match="still waits for its gradient"):
        s0.forward(1, X, Y)
    s0.receive(Message(Kind.GRADIENT, 0, 1, torch.zeros_like(act.tensor)))
    assert s0.ready_for_forward
    s0.forward(1, X, Y)


def test_dfa_stage_only_takes_the_output_error() -> None:
    s = stages("dfa")
    s0 = s[0]
    s0.forward(0, X, Y)
    with pytest.raises(ProtocolError, match="interface method is dfa"):
        s0.receive(Message(Kind.GRADIENT, 0, 1, torch.zeros(5, 8)))
    with pytest.raises(ProtocolError, match="expected shape"):
        s0.receive(Message(Kind.OUTPUT_ERROR, 0, 2, torch.zeros(5, 8)))
    assert s0.receive(Message(Kind.OUTPUT_ERROR, 0, 2, torch.zeros(5, 3))) == []  # stage 0 sends nothing up
    assert s0.stats.waits == {"output_error": 1}
