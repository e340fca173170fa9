"""FA, DFA, Kickback and conspiring SG do exactly what their formulas say, and the locking
each method implies (the paper's Table 1) is what the stages record."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from dni_dist import TrainConfig, config_from_dict, train
from dni_dist.block import Block
from dni_dist.data import load_dataset
from dni_dist.feedback import FeedbackLinear
from dni_dist.locking import TABLE1, locking
from dni_dist.models import build_layers
from dni_dist.topology import Topology

LR = 0.5


def tiny(method: str) -> TrainConfig:
    return config_from_dict(
        {
            "model": {"kind": "mlp", "depth": 2, "width": 4, "activation": "tanh", "batch_norm": False},
            "split": {"placement": "every"},
            "credit": {"method": method},
            "optim": {"name": "sgd", "lr": LR},
            "run": {"steps": 1, "seed": 7},
        }
    )


def one_step(method: str) -> tuple[list[torch.Tensor], list[torch.Tensor], Topology, list]:  # type: ignore[type-arg]
    cfg = tiny(method)
    topo = Topology.from_config(cfg, input_dim=5, num_classes=3)
    stages = topo.build_stages(cfg, input_dim=5, num_classes=3)
    layers, _ = build_layers(cfg.model, input_dim=5, num_classes=3, seed=7)
    init = [copy.deepcopy(p.detach()) for layer in layers for p in layer.parameters()]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 5, generator=g)
    y = F.one_hot(torch.randint(0, 3, (6,), generator=g), 3).float()
    Block(topo, stages, first=0).feed(0, x, y)
    after = [p.detach() for s in stages for p in s.module.parameters()]
    return [x, y, *init], after, topo, stages


def forward(x: torch.Tensor, y: torch.Tensor, W1, b1, W2, b2, W3, b3):  # type: ignore[no-untyped-def]
    h1 = torch.tanh(x @ W1.T + b1)
    h2 = torch.tanh(h1 @ W2.T + b2)
    z = h2 @ W3.T + b3
    e = (torch.softmax(z, dim=1) - y) / x.shape[0]
    return h1, h2, e


def sgd(params: list[torch.Tensor], grads: list[torch.Tensor]) -> list[torch.Tensor]:
    return [p - LR * g for p, g in zip(params, grads)]


def test_feedback_alignment_update_matches_formula() -> None:
    (x, y, W1, b1, W2, b2, W3, b3), after, _, stages = one_step("fa")
    B = [m.feedback for s in stages for m in s.module.modules() if isinstance(m, FeedbackLinear)]
    assert len(B) == 3
    h1, h2, e = forward(x, y, W1, b1, W2, b2, W3, b3)
    d2 = (e @ B[2]) * (1 - h2**2)  # error reaches layer 2 through B3, not W3ᵀ
    d1 = (d2 @ B[1]) * (1 - h1**2)
    expected = sgd([W1, b1, W2, b2, W3, b3], [d1.T @ x, d1.sum(0), d2.T @ h1, d2.sum(0), e.T @ h2, e.sum(0)])
    for got, want in zip(after, expected):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("method", ["dfa", "kb"])
def test_direct_feedback_update_matches_formula(method: str) -> None:
    (x, y, W1, b1, W2, b2, W3, b3), after, _, stages = one_step(method)
    B0, B1 = stages[0].feedback, stages[1].feedback
    assert B0 is not None and B1 is not None and B0.shape == (3, 4)
    if method == "kb":
        assert torch.equal(B0, torch.ones(3, 4)) and torch.equal(B1, torch.ones(3, 4))
    h1, h2, e = forward(x, y, W1, b1, W2, b2, W3, b3)
    d2 = (e @ B1) * (1 - h2**2)  # output error projected straight to each hidden layer
    d1 = (e @ B0) * (1 - h1**2)
    expected = sgd([W1, b1, W2, b2, W3, b3], [d1.T @ x, d1.sum(0), d2.T @ h1, d2.sum(0), e.T @ h2, e.sum(0)])
    for got, want in zip(after, expected):
        torch.testing.assert_close(got, want)


def test_backprop_update_matches_autograd() -> None:
    (x, y, W1, b1, W2, b2, W3, b3), after, _, _ = one_step("bp")
    params = [p.clone().requires_grad_(True) for p in (W1, b1, W2, b2, W3, b3)]
    h1 = torch.tanh(x @ params[0].T + params[1])
    h2 = torch.tanh(h1 @ params[2].T + params[3])
    F.cross_entropy(h2 @ params[4].T + params[5], y).backward()
    for got, p in zip(after, params):
        assert p.grad is not None
        torch.testing.assert_close(got, p.detach() - LR * p.grad)


def _mnist_cfg(method: str, beta: float = 1.0, steps: int = 30) -> TrainConfig:
    return config_from_dict(
        {
            "model": {"depth": 4, "width": 64},
            "split": {"placement": "even", "stages": 3},
            "credit": {"method": method, "beta": beta},
            "synthetic": {"lr": 1e-3},
            "data": {"name": "mnist", "subset": True, "batch_size": 32},
            "run": {"steps": steps, "seed": 5},
        }
    )


def test_conspiring_sg_with_beta_zero_equals_plain_sg() -> None:
    ds = load_dataset("mnist", subset=True)
    plain = train(_mnist_cfg("sg"), dataset=ds)
    conspiring = train(_mnist_cfg("sg_beta", beta=0.0), dataset=ds)
    for (n, a), (_, b) in zip(plain.model.named_parameters(), conspiring.model.named_parameters()):
        torch.testing.assert_close(a, b, msg=lambda m, n=n: f"{n}: {m}")
    for s, c in zip(plain.stages[:-1], conspiring.stages[:-1]):
        assert s.sg is not None and c.sg is not None
        for a, b in zip(s.sg.parameters(), c.sg.parameters()):
            torch.testing.assert_close(a, b)
    beta = train(_mnist_cfg("sg_beta", beta=1.0), dataset=ds)
    moved = [not torch.allclose(a, b) for a, b in zip(plain.model.parameters(), beta.model.parameters())]
    assert any(moved), "beta > 0 must change the updates"


@pytest.mark.parametrize("method", list(TABLE1))
def test_measured_locking_matches_table1(method: str) -> None:
    result = train(_mnist_cfg(method, steps=5), dataset=load_dataset("mnist", subset=True))
    for interface in result.locking():
        got = (interface["update_locked"], interface["backward_locked"], interface["direct_error"])
        assert got == TABLE1[method]


# what every update of stage i used, as (kind, producing stage, step offset from the update's step)
EXPECTED_DEPS = {
    "sg": lambda i, last: [("activation", i - 1)] if i else [],
    "sg_beta": lambda i, last: [("activation", i - 1)] * bool(i) + [("gradient", i + 1)],
    "bp": lambda i, last: [("activation", i - 1)] * bool(i) + [("gradient", i + 1)],
    "fa": lambda i, last: [("activation", i - 1)] * bool(i) + [("gradient", i + 1)],
    "dfa": lambda i, last: [("activation", i - 1)] * bool(i) + [("output_error", last)],
    "kb": lambda i, last: [("activation", i - 1)] * bool(i) + [("output_error", last)],
}


@pytest.mark.parametrize("method", list(TABLE1))
def test_every_update_records_the_messages_it_used(method: str) -> None:
    """The record Table 1 is derived from: each update names the messages (kind, step, producing
    stage) its weight change used, all of the step it applied."""
    steps = 6
    result = train(_mnist_cfg(method, steps=steps), dataset=load_dataset("mnist", subset=True))
    last = len(result.stages) - 1
    for stage in result.stages[:-1]:
        i = stage.spec.index
        log = list(stage.stats.updates_log)
        assert [r.step for r in log] == list(range(steps)) and stage.stats.updates == steps
        for r in log:
            assert sorted((d.kind, d.stage) for d in r.deps) == sorted(EXPECTED_DEPS[method](i, last)), r
            assert {d.step for d in r.deps} <= {r.step}, r
        assert sum(stage.stats.dependencies.values()) == steps


def test_locking_follows_from_the_record_not_from_the_method() -> None:
    """The derivation reads only who produced the messages an update used."""
    assert locking(0, {"none": 5}) == {"update_locked": False, "backward_locked": False, "direct_error": False}
    assert locking(2, {"activation@1": 5}) == {"update_locked": False, "backward_locked": False, "direct_error": False}
    # a gradient from two stages down is update-locking but is not the neighbour's backward pass
    assert locking(1, {"activation@0+gradient@3": 1}) == {
        "update_locked": True,
        "backward_locked": False,
        "direct_error": False,
    }
    assert locking(1, {"activation@0+gradient@2": 1, "activation@0": 9})["backward_locked"]
    assert locking(0, {"output_error@3": 2}) == {"update_locked": True, "backward_locked": False, "direct_error": True}
    assert locking(1, {"activation@0+gradient@2": 0}) == locking(1, {})  # signatures that never occurred
    with pytest.raises(ValueError, match="kind@stage"):
        locking(0, {"gradient": 3})


def test_fifty_layer_mlp_with_sg_between_every_pair_of_layers_trains() -> None:
    cfg = config_from_dict(
        {
            "model": {"depth": 50, "width": 32},
            "split": {"placement": "every"},
            "credit": {"method": "sg"},
            "data": {"name": "mnist", "subset": True, "batch_size": 64},
            "run": {"steps": 20},
        }
    )
    result = train(cfg, dataset=load_dataset("mnist", subset=True))
    assert len(result.stages) == 51 and len(result.locking()) == 50
    assert all(len(s.stats.sg) == 20 for s in result.stages[:-1])  # every SG got every target
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
