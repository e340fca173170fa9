"""The cnn, the conv synthetic gradient, conv feedback alignment and 4-D activations through
every method and the wire."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dni_dist import ConfigError, SyntheticConfig, config_from_dict, train
from dni_dist.cnn import build_cnn_layers
from dni_dist.config import METHODS, TrainConfig
from dni_dist.data import BatchStream, load_dataset
from dni_dist.feedback import FeedbackConv2d, to_feedback_alignment, unmirrorable_layers
from dni_dist.messages import Kind, Message, decode, encode
from dni_dist.synthetic import make_synthetic_gradient, resolve_kind
from dni_dist.topology import Topology

CNN = {"kind": "cnn", "depth": 3, "channels": [4, 8, 8], "pool": [1, 2]}


def _cfg(method: str = "sg", steps: int = 20, **sections: dict) -> TrainConfig:  # type: ignore[type-arg]
    tree = {
        "model": CNN,
        "split": {"placement": "even", "stages": 4},
        "credit": {"method": method},
        "synthetic": {"channels": 8, "layers": 1},
        "data": {"name": "mnist", "subset": True, "batch_size": 16},
        "run": {"steps": steps, "seed": 2},
    }
    for k, v in sections.items():
        tree[k] = {**tree.get(k, {}), **v}
    return config_from_dict(tree)


def test_cnn_is_cut_between_conv_layers_and_fed_images() -> None:
    cfg = _cfg()
    topo = Topology.from_config(cfg, input_dim=784, num_classes=10)
    assert cfg.model.num_layers == 4 and topo.cuts == (1, 2, 3)
    assert [s.in_shape for s in topo.specs] == [(784,), (4, 14, 14), (8, 7, 7), (8, 7, 7)]
    assert [s.out_shape for s in topo.specs] == [(4, 14, 14), (8, 7, 7), (8, 7, 7), (10,)]
    stages = topo.build_stages(cfg, input_dim=784, num_classes=10)
    first = stages[0].module
    assert isinstance(first[0], nn.Unflatten) and isinstance(first[1], nn.Sequential)
    assert isinstance(first[1][0], nn.Conv2d) and first[1][0].bias is None  # BatchNorm follows
    assert isinstance(stages[-1].module[-1][-1], nn.Linear)
    again = topo.build_stages(cfg, input_dim=784, num_classes=10)
    for a, b in zip(stages, again):
        for k, v in a.module.state_dict().items():
            assert torch.equal(v, b.module.state_dict()[k]), k
    seed3 = _cfg(run={"seed": 3})
    topo3 = Topology.from_config(seed3, input_dim=784, num_classes=10)
    other = topo3.build_stages(seed3, input_dim=784, num_classes=10)
    assert not torch.equal(stages[0].module[1][0].weight, other[0].module[1][0].weight)
    assert stages[0].module(torch.rand(5, 784)).shape == (5, 4, 14, 14)  # flat rows in, images inside


@pytest.mark.parametrize(
    ("tree", "field"),
    [
        ({"model": CNN, "data": {"name": "noisy100"}}, "model.kind"),
        ({"model": {**CNN, "depth": 6, "channels": [2] * 6, "pool": [1, 2, 3, 4, 5, 6]}}, "model.pool"),
        ({"model": {**CNN, "channels": [4, 8]}}, "model.channels"),
        ({"model": {**CNN, "pool": [2, 1]}}, "model.pool"),
        ({"model": {"kind": "mlp", "pool": [1]}}, "model.pool"),
        ({"model": {"kind": "mlp"}, "synthetic": {"kind": "conv"}}, "synthetic.kind"),
        ({"model": CNN, "synthetic": {"kernel": 2}}, "synthetic.kernel"),
        ({"model": CNN, "data": {"name": "fashion-mnist", "subset": True}}, "data.subset"),
    ],
)
def test_bad_cnn_configs_name_the_field(tree: dict, field: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        config_from_dict(tree)


def test_bp_cnn_four_stages_equals_single_graph() -> None:
    cfg = _cfg("bp", steps=15, optim={"lr": 1e-2, "schedule": "cosine", "weight_decay": 1e-4})
    ds = load_dataset("mnist", subset=True)
    layers = build_cnn_layers(cfg.model, image_shape=(1, 28, 28), num_classes=10, seed=2)
    reference = nn.Sequential(nn.Unflatten(1, (1, 28, 28)), *copy.deepcopy(layers))
    opt = torch.optim.Adam(reference.parameters(), lr=1e-2, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=15)
    batches = iter(BatchStream(ds.x_train, ds.labels_train, 10, 16, seed=2))
    for _ in range(15):
        x, y = next(batches)
        opt.zero_grad()
        F.cross_entropy(reference(x), y).backward()
        opt.step()
        sched.step()
    result = train(cfg, dataset=ds)
    staged, plain = dict(result.model.named_parameters()), dict(reference.named_parameters())
    assert staged.keys() == plain.keys()
    for name in plain:
        torch.testing.assert_close(staged[name], plain[name], msg=lambda m, n=name: f"{n}: {m}")
    for (name, buf), (_, ref) in zip(result.model.named_buffers(), reference.named_buffers()):
        torch.testing.assert_close(buf, ref, msg=lambda m, n=name: f"buffer {n}: {m}")


def test_sg_kind_follows_the_activation_rank_unless_named() -> None:
    assert resolve_kind("auto", (8, 7, 7)) == "conv" and resolve_kind("auto", (64,)) == "linear"
    assert resolve_kind("mlp", (8, 7, 7)) == "mlp"
    with pytest.raises(ValueError, match="'conv' needs"):
        resolve_kind("conv", (64,))
    stages = train(_cfg(steps=1)).stages
    assert [s.sg.kind if s.sg else None for s in stages] == ["conv", "conv", "conv", None]
    named = train(_cfg(steps=1, synthetic={"kind": "linear"})).stages
    assert [s.sg.kind if s.sg else None for s in named] == ["linear", "linear", "linear", None]


def test_conv_sg_starts_at_zero_and_conditions_on_the_label() -> None:
    torch.manual_seed(0)
    sg = make_synthetic_gradient(SyntheticConfig(channels=6, layers=1), act_shape=(3, 5, 5), label_dim=4)
    h, y = torch.randn(8, 3, 5, 5), torch.eye(4)[torch.arange(8) % 4]
    assert sg(h, y).shape == (8, 3, 5, 5) and torch.count_nonzero(sg(h, y)) == 0
    # a label-only conv SG learns a different, position-dependent gradient map for each label (shared
    # conv weights on constant label channels alone could not: that is what the per-label map is for)
    sg = make_synthetic_gradient(
        SyntheticConfig(kind="conv", conditioning="label", layers=0), act_shape=(3, 5, 5), label_dim=4
    )
    target = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(1))[y.argmax(1)]
    opt = torch.optim.Adam(sg.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        F.mse_loss(sg(h, y), target).backward()
        opt.step()
    assert F.mse_loss(sg(h, y), target).item() < 1e-2


def test_feedback_conv_sends_errors_through_its_fixed_kernel() -> None:
    g = torch.Generator().manual_seed(123)  # not the seed the conv was initialised from: B would equal W
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1)
    model = nn.Sequential(conv)
    assert to_feedback_alignment(model, g) == 1
    fa = model[0]
    assert isinstance(fa, FeedbackConv2d) and fa.weight is conv.weight
    x = torch.randn(4, 3, 9, 9, requires_grad=True)
    out = fa(x)
    torch.testing.assert_close(out, F.conv2d(x, conv.weight, conv.bias, stride=2, padding=1))
    grad = torch.randn_like(out)
    out.backward(grad)
    x2 = x.detach().requires_grad_(True)
    w2 = conv.weight.detach().requires_grad_(True)
    F.conv2d(x2, w2, None, stride=2, padding=1).backward(grad)
    assert fa.weight.grad is not None and fa.bias is not None and fa.bias.grad is not None
    torch.testing.assert_close(fa.weight.grad, w2.grad)  # the exact local weight gradient
    torch.testing.assert_close(fa.bias.grad, grad.sum(dim=(0, 2, 3)))
    xb = x.detach().requires_grad_(True)
    F.conv2d(xb, fa.feedback, None, stride=2, padding=1).backward(grad)
    torch.testing.assert_close(x.grad, xb.grad)  # the input gradient goes through B, not W
    assert not torch.allclose(x.grad, x2.grad)  # type: ignore[arg-type]


def test_unmirrorable_layers_are_named() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Conv1d(2, 2, 1), nn.Conv2d(2, 2, 3, padding="same"))
    assert unmirrorable_layers(model) == ["2 (Conv1d)", "3 (Conv2d with padding='same', padding_mode='zeros')"]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_a_cnn_with_4d_interfaces(method: str) -> None:
    result = train(_cfg(method, steps=12))
    assert all(len(s.stats.train) == 0 for s in result.stages[:-1]) and len(result.train_loss) == 12
    assert all(torch.isfinite(torch.tensor(result.train_loss)))
    assert all(s.stats.updates == 12 for s in result.stages)
    if method in ("sg", "sg_beta"):
        assert all(len(s.stats.sg) == 12 for s in result.stages[:-1])
    if method == "fa":
        assert isinstance(result.stages[1].module[0][0], FeedbackConv2d)
    first = result.train_loss[0]
    assert result.train_loss[-1] < first or method in ("kb",), result.train_loss


def test_wire_carries_4d_activations_and_their_gradients() -> None:
    h = torch.randn(16, 8, 7, 7)
    y = torch.eye(10)[torch.arange(16) % 10]
    for msg in (Message(Kind.ACTIVATION, 3, 1, h, y), Message(Kind.GRADIENT, 3, 2, h)):
        frames = [bytes(f) for f in encode(msg, run="r", block=1)]
        back = decode(frames, run="r", expect_block=1)
        assert isinstance(back, Message) and back.kind is msg.kind
        assert torch.equal(back.tensor, h) and (back.labels is None) == (msg.labels is None)


def test_conv_sg_global_low_rank_term_starts_at_zero_and_sees_the_whole_map() -> None:
    """synthetic.rank on a conv SG adds flat(h)·U·V: zero at first, and able to fit a gradient at
    one corner that depends on the opposite corner, which a 3x3 conv cannot."""
    torch.manual_seed(0)
    cfg = SyntheticConfig(kind="conv", conditioning="activation", layers=0, rank=4)
    sg = make_synthetic_gradient(cfg, act_shape=(2, 6, 6), label_dim=3)
    g = torch.Generator().manual_seed(2)
    h, y = torch.randn(64, 2, 6, 6, generator=g), torch.eye(3)[torch.arange(64) % 3]
    assert torch.count_nonzero(sg(h, y)) == 0
    target = torch.zeros_like(h)
    target[:, 0, 0, 0] = 3 * h[:, 1, 5, 5]  # far outside any 3x3 neighbourhood
    opt = torch.optim.Adam(sg.parameters(), lr=0.02)
    for _ in range(400):
        opt.zero_grad()
        F.mse_loss(sg(h, y), target).backward()
        opt.step()
    assert F.mse_loss(sg(h, y), target).item() < 0.2 * target.pow(2).mean().item()
    with pytest.raises(ValueError, match=r"synthetic\.rank"):
        SyntheticConfig(kind="mlp", rank=4)
