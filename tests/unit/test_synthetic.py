"""SG modules: they can learn a gradient field, start at zero, and imply the right loss."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from dni_dist import OptimConfig, Stage, StageSpec, SyntheticConfig, SyntheticGradient
from dni_dist.config import ConfigError
from dni_dist.messages import Kind, Message


def test_linear_sg_recovers_a_fixed_linear_gradient_field() -> None:
    g = torch.Generator().manual_seed(0)
    d, c = 6, 3
    A, C, b = torch.randn(d, d, generator=g), torch.randn(c, d, generator=g), torch.randn(d, generator=g)
    sg = SyntheticGradient(kind="linear", conditioning="activation+label", act_dim=d, label_dim=c)
    opt = torch.optim.Adam(sg.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=3000)
    for _ in range(3000):
        h = torch.randn(64, d, generator=g)
        y = F.one_hot(torch.randint(0, c, (64,), generator=g), c).float()
        loss = F.mse_loss(sg(h, y), h @ A + y @ C + b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    h = torch.randn(512, d, generator=g)
    y = F.one_hot(torch.randint(0, c, (512,), generator=g), c).float()
    err = F.mse_loss(sg(h, y), h @ A + y @ C + b).item()
    assert err < 1e-4, err


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_fresh_sg_predicts_zero_and_leaves_the_lower_stage_unchanged(kind: str) -> None:
    spec = StageSpec(index=0, num_stages=2, in_method=None, out_method="sg", in_dim=5, out_dim=4, num_classes=3)
    block = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU())
    before = copy.deepcopy(block.state_dict())
    stage = Stage(spec, block, optim=OptimConfig(lr=0.1), synthetic=SyntheticConfig(kind=kind), total_steps=10, seed=0)
    x, y = torch.randn(8, 5), F.one_hot(torch.arange(8) % 3, 3).float()
    out = stage.forward(0, x, y)
    assert [m.kind for m in out] == [Kind.ACTIVATION]
    assert stage.sg is not None and torch.count_nonzero(stage.sg(out[0].tensor, y)) == 0
    for k, v in block.state_dict().items():
        torch.testing.assert_close(v, before[k], msg=f"{k} moved on a zero synthetic gradient")
    assert stage.stats.waits == {"none": 1}


def test_implied_loss_gradient_is_the_synthetic_gradient_for_symmetric_A() -> None:
    sg = SyntheticGradient(kind="linear", conditioning="activation+label", act_dim=4, label_dim=2)
    with torch.no_grad():
        assert sg.A is not None and sg.C is not None
        m = torch.randn(4, 4)
        sg.A.copy_(m + m.T)
        sg.C.normal_()
        sg.b.normal_()
    h = torch.randn(5, 4, requires_grad=True)
    y = F.one_hot(torch.tensor([0, 1, 1, 0, 1]), 2).float()
    (grad,) = torch.autograd.grad(sg.implied_loss(h, y).sum(), h)
    torch.testing.assert_close(grad, sg(h, y).detach())


def test_conditioning_selects_inputs() -> None:
    h, y = torch.randn(3, 4), F.one_hot(torch.tensor([0, 1, 0]), 2).float()
    for cond, has_a, has_c in [("activation+label", True, True), ("activation", True, False), ("label", False, True)]:
        sg = SyntheticGradient(kind="linear", conditioning=cond, act_dim=4, label_dim=2)
        assert (sg.A is not None, sg.C is not None) == (has_a, has_c)
        assert sg(h, y).shape == (3, 4)
    mlp = SyntheticGradient(kind="mlp", conditioning="label", act_dim=4, label_dim=2, hidden=8, layers=1)
    assert mlp(h, y).shape == (3, 4)


def test_sigmoid_head_predicts_p_minus_y_at_the_output_and_behind_a_map_inside() -> None:
    sg = SyntheticGradient(kind="sigmoid", conditioning="activation+label", act_dim=2, label_dim=2)
    y = F.one_hot(torch.tensor([0, 1]), 2).float()
    torch.testing.assert_close(sg(torch.randn(2, 2), y), 0.5 - y)  # σ(0) − y at initialisation
    hidden = SyntheticGradient(kind="sigmoid", conditioning="activation+label", act_dim=8, label_dim=2)
    h = torch.randn(2, 8)
    assert torch.equal(hidden(h, y), torch.zeros(2, 8))  # B = 0: a fresh SG leaves the block unchanged
    # it can express a deep linear classifier's hidden gradient exactly: (softmax(hW) − y)·Wᵀ
    W = torch.randn(8, 2)
    with torch.no_grad():
        hidden.A.copy_(W @ torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))  # σ(z₁ − z₂) = softmax(z)₁ for 2 logits
        hidden.B.copy_(W.T)
    expected = (torch.softmax(h @ W, dim=1) - y) @ W.T
    torch.testing.assert_close(hidden(h, y), expected)


@pytest.mark.parametrize("rank", [0, 2])
@pytest.mark.parametrize("conditioning", ["activation+label", "activation", "label"])
def test_closed_form_sg_gradients_equal_autograd(conditioning: str, rank: int) -> None:
    """The graph-free SG step the stage uses computes exactly the gradient autograd would
    (full A, and the low-rank A = U·V of `synthetic.rank`)."""
    torch.manual_seed(3)
    sg = SyntheticGradient(kind="linear", conditioning=conditioning, act_dim=6, label_dim=3, rank=rank)
    with torch.no_grad():
        for p in sg.parameters():
            p.normal_()
    h, y, target = torch.randn(5, 6), torch.eye(3)[torch.tensor([0, 2, 1, 1, 0])], torch.randn(5, 6)
    pred, loss = sg.regression_grads(h, y, target)
    fast = {name: p.grad.clone() for name, p in sg.named_parameters()}  # type: ignore[union-attr]
    sg.zero_grad(set_to_none=True)
    reference = torch.nn.functional.mse_loss(sg(h, y), target)
    reference.backward()  # type: ignore[no-untyped-call]
    assert loss == pytest.approx(float(reference.detach()), rel=1e-6)
    torch.testing.assert_close(pred, sg(h, y).detach())
    for name, p in sg.named_parameters():
        torch.testing.assert_close(fast[name], p.grad, msg=f"gradient of {name}")
    with pytest.raises(ValueError, match="linear SG"):
        SyntheticGradient(kind="mlp", conditioning=conditioning, act_dim=6, label_dim=3).regression_grads(h, y, target)


def test_low_rank_sg_starts_at_zero_learns_and_implies_its_product() -> None:
    """rank r: A = U·V starts at 0 (V zero), learns a rank-r field, and implied_loss uses U·V."""
    g = torch.Generator().manual_seed(1)
    d, c, r = 8, 3, 2
    A = torch.randn(d, r, generator=g) @ torch.randn(r, d, generator=g)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        sg = SyntheticGradient(kind="linear", conditioning="activation+label", act_dim=d, label_dim=c, rank=r)
    assert sg.A is None and sg.U is not None and sg.U.shape == (d, r)
    h, y = torch.randn(4, d, generator=g), torch.eye(c)[torch.tensor([0, 1, 2, 0])]
    assert torch.count_nonzero(sg(h, y)) == 0
    opt = torch.optim.Adam(sg.parameters(), lr=1e-2)
    for _ in range(2000):
        h = torch.randn(64, d, generator=g)
        sg.regression_grads(h, torch.zeros(64, c), h @ A)
        opt.step()
    h = torch.randn(256, d, generator=g)
    assert F.mse_loss(sg(h, torch.zeros(256, c)), h @ A).item() < 1e-3
    full, _, _ = sg.linear_terms()
    assert full is not None
    torch.testing.assert_close(full, (sg.U @ sg.V).detach())  # type: ignore[operator]
    with pytest.raises(ValueError, match="linear or conv SG"):
        SyntheticGradient(kind="mlp", conditioning="activation", act_dim=d, label_dim=c, rank=r)


def test_update_every_trains_the_sg_on_every_kth_target_only() -> None:
    """synthetic.update_every = 3: of steps 0..5 the SG learns from the targets of 0 and 3; the
    others still free their step (nothing stays pending)."""
    spec = StageSpec(index=0, num_stages=2, in_method=None, out_method="sg", in_dim=5, out_dim=4, num_classes=3)
    block = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU())
    cfg = SyntheticConfig(update_every=3)
    stage = Stage(spec, block, optim=OptimConfig(), synthetic=cfg, total_steps=10, seed=0)
    g = torch.Generator().manual_seed(0)
    for step in range(6):
        x, y = torch.randn(8, 5, generator=g), F.one_hot(torch.arange(8) % 3, 3).float()
        h = stage.forward(step, x, y)[0].tensor
        stage.receive(Message(Kind.GRADIENT, step, 1, torch.randn(h.shape, generator=g), None))
    assert [r.step for r in stage.stats.sg] == [0, 3]
    assert not stage.pending
    with pytest.raises(ConfigError, match=r"synthetic\.update_every"):
        SyntheticConfig(update_every=0)
    with pytest.raises(ConfigError, match=r"synthetic\.rank"):
        SyntheticConfig(kind="mlp", rank=4)
