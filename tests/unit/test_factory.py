"""Your own model: factories (file or module), what they may return, the errors that say which
method cannot apply, and `train(stages=[...])`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from dni_dist import ConfigError, config_from_dict, train
from dni_dist.config import GIVEN_STAGES, METHODS, TrainConfig
from dni_dist.feedback import FeedbackConv2d, FeedbackLinear
from dni_dist.topology import Topology

HERE = Path(__file__).parent
MODULE = "tests.unit.factories"
DATA = {"name": "mnist", "subset": True, "batch_size": 16}


def _cfg(factory: str, method: str = "sg", steps: int = 6, **sections: dict) -> TrainConfig:  # type: ignore[type-arg]
    tree: dict = {  # type: ignore[type-arg]
        "model": {"factory": factory},
        "credit": {"method": method},
        "synthetic": {"channels": 4, "layers": 1},
        "data": DATA,
        "run": {"steps": steps, "seed": 1},
    }
    for k, v in sections.items():
        tree[k] = {**tree.get(k, {}), **v}
    return config_from_dict(tree)


def test_a_list_of_stages_from_a_file_is_one_stage_each(tmp_path: Path) -> None:
    path = tmp_path / "mine.py"
    path.write_text(
        "from torch import nn\n"
        "def build(input_shape, num_classes):\n"
        "    c, h, w = input_shape\n"
        "    return [nn.Sequential(nn.Conv2d(c, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),\n"
        "            nn.Sequential(nn.Flatten(), nn.Linear(3 * (h // 2) * (w // 2), 32), nn.ReLU()),\n"
        "            nn.Linear(32, num_classes)]\n"
    )
    cfg = _cfg(f"{path}:build", steps=30)
    assert cfg.model.layers == 3 and cfg.split.placement == "explicit" and cfg.split.cuts == (1, 2)
    result = train(cfg)
    assert [s.spec.out_shape for s in result.stages] == [(3, 14, 14), (32,), (10,)]
    assert [s.sg.kind if s.sg else None for s in result.stages] == ["conv", "linear", None]
    assert result.train_loss[-1] < result.train_loss[0]
    again = train(cfg)  # the factory runs under the run's seed: same weights, same run
    for a, b in zip(result.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)


def test_sequential_with_split_points_and_plain_sequential_cut_by_the_recipe() -> None:
    cfg = _cfg(f"{MODULE}:sequential_with_splits")
    assert cfg.model.layers == 5 and cfg.split.cuts == (2, 4)
    topo = Topology.from_config(cfg, input_dim=784, num_classes=10)
    assert [s.out_shape for s in topo.specs] == [(32,), (16,), (10,)]
    plain = _cfg(f"{MODULE}:plain_sequential", split={"placement": "even", "stages": 2})
    assert plain.model.layers == 4 and Topology.from_config(plain, input_dim=784, num_classes=10).cuts == (2,)
    # a [split] in the recipe wins over the factory's own split points
    mine = _cfg(f"{MODULE}:sequential_with_splits", split={"placement": "explicit", "cuts": [3]})
    assert Topology.from_config(mine, input_dim=784, num_classes=10).cuts == (3,)


def test_file_factory_is_seeded_from_the_run_and_leaves_the_global_rng_alone(tmp_path: Path) -> None:
    path = tmp_path / "rng.py"
    path.write_text(
        "import torch\nfrom torch import nn\n"
        "def build():\n"
        "    torch.randn(100)  # consumes the (forked) global generator\n"
        "    return [nn.Sequential(nn.Flatten(), nn.Linear(784, 8)), nn.Linear(8, 10)]\n"
    )
    state = torch.random.get_rng_state()
    a = Topology.from_config(cfg := _cfg(f"{path}:build"), input_dim=784, num_classes=10).build_stages(
        cfg, input_dim=784, num_classes=10
    )
    assert torch.equal(state, torch.random.get_rng_state())
    b = Topology.from_config(cfg, input_dim=784, num_classes=10).build_stages(cfg, input_dim=784, num_classes=10)
    c = Topology.from_config(cfg2 := _cfg(f"{path}:build", run={"seed": 2}), input_dim=784, num_classes=10)
    c_stages = c.build_stages(cfg2, input_dim=784, num_classes=10)
    w = [s.module[1][1].weight for s in (a[0], b[0], c_stages[0])]  # behind the Unflatten
    assert torch.equal(w[0], w[1]) and not torch.equal(w[0], w[2])


def test_lazy_layers_are_materialised_under_the_run_seed() -> None:
    cfg = _cfg(f"{MODULE}:lazy_head")
    stages = [
        Topology.from_config(cfg, input_dim=784, num_classes=10).build_stages(cfg, input_dim=784, num_classes=10)
        for _ in range(2)
    ]
    w = [s[1].module[0].weight for s in stages]
    assert w[0].shape == (10, 24) and torch.equal(w[0], w[1])
    assert train(cfg).stages[0].optimizer is not None


@pytest.mark.parametrize("method", METHODS)
def test_every_method_applies_to_a_conv_factory(method: str) -> None:
    result = train(_cfg(f"{MODULE}:three_stages", method))
    assert all(s.stats.updates == 6 for s in result.stages) and torch.isfinite(torch.tensor(result.train_loss)).all()
    if method == "fa":
        assert isinstance(result.stages[1].module[0][0], FeedbackConv2d)
        assert isinstance(result.stages[2].module[0][1], FeedbackLinear)


@pytest.mark.parametrize(
    ("factory", "sections", "field", "says"),
    [
        ("nowhere/missing.py:build", {}, "model.factory", "no file"),
        (f"{HERE / 'factories.py'}:nope", {}, "model.factory", "has no 'nope'; it defines .*three_stages"),
        ("not_a_package_anywhere:build", {}, "model.factory", "cannot import"),
        (f"{MODULE}:not_a_list", {}, "model.factory", "returned a single Linear"),
        (f"{MODULE}:wrong_output", {}, "model", r"last layer gives \[N, 7\]"),
        (f"{MODULE}:recurrent_middle", {"credit": {"method": "fa"}}, "credit.method", r"gru \(GRU\)"),
        (
            f"{MODULE}:recurrent_middle",
            {"credit": {"per_interface": ["fa", "bp"]}},
            r"credit.per_interface\[0\]",
            "stage 1 has layers",
        ),
        (f"{MODULE}:sequential_with_splits", {"synthetic": {"kind": "conv"}}, "synthetic.kind", "'conv' needs"),
        (f"{MODULE}:three_stages", {"model": {"layers": 5}}, "model.layers", "yields 3 layers"),
    ],
)
def test_errors_say_what_cannot_apply_and_why(factory: str, sections: dict, field: str, says: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match=f"{field}: .*{says}"):
        _cfg(factory, **sections)


def test_gru_stage_trains_with_the_methods_that_apply() -> None:
    for method in ("bp", "dfa", "sg"):
        result = train(_cfg(f"{MODULE}:recurrent_middle", method, steps=3))
        assert result.stages[1].stats.updates == 3
    # fa only where the stage below the interface can be mirrored
    ok = _cfg(f"{MODULE}:recurrent_middle", credit={"per_interface": ["bp", "fa"]})
    assert train(ok).stages[1].stats.updates == 6


def test_train_takes_stage_modules_and_trains_them_in_place() -> None:
    torch.manual_seed(4)
    stages = [
        nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU()),
        nn.Sequential(nn.Flatten(), nn.Linear(4 * 13 * 13, 10)),
    ]
    before = stages[1][1].weight.detach().clone()
    result = train(stages=stages, overrides={"data.subset": "true", "data.batch_size": "16", "run.steps": "10"})
    assert result.config.model.factory == GIVEN_STAGES and result.topology.cuts == (1,)
    assert result.stages[0].module[1] is stages[0] and result.stages[1].module[0] is stages[1]
    assert not torch.equal(before, stages[1][1].weight)  # trained in place
    assert result.stages[0].sg is not None and result.stages[0].sg.kind == "conv"
    with pytest.raises(ConfigError, match="exist only in that process"):
        Topology.from_config(result.config, input_dim=784, num_classes=10).build_stages(
            result.config, input_dim=784, num_classes=10
        )
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        train(stages=[])
