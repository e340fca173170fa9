"""Configs validate on construction, name the bad field, and load from recipes."""

from __future__ import annotations

from pathlib import Path

import pytest

from dni_dist import ConfigError, ModelConfig, SplitConfig, config_from_dict, load_recipe

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("tree", "field"),
    [
        ({"model": {"kind": "transformer"}}, "model.kind"),
        ({"model": {"depth": -1}}, "model.depth"),
        ({"credit": {"method": "magic"}}, "credit.method"),
        ({"optim": {"lr": 0}}, "optim.lr"),
        ({"data": {"name": "cifar"}}, "data.name"),
        ({"split": {"placement": "explicit"}}, "split.cuts"),
        ({"split": {"placement": "explicit", "cuts": [3, 2]}}, "split.cuts"),
        ({"split": {"placement": "explicit", "cuts": [9]}, "model": {"depth": 3}}, "split.cuts"),
        ({"split": {"placement": "even", "stages": 9}, "model": {"depth": 3}}, "split.stages"),
        ({"credit": {"per_interface": ["sg", "bp"]}}, "credit.per_interface"),
        ({"synthetic": {"kind": "sigmoid", "conditioning": "label"}}, "synthetic.conditioning"),
        ({"model": {"width": "wide"}}, "model.width"),
        ({"model": {"colour": "red"}}, "model.colour"),
        ({"modle": {}}, "modle"),
        ({"runtime": {"max_inflight": 0}}, "runtime.max_inflight"),
        ({"runtime": {"overflow": "spill"}}, "runtime.overflow"),
        ({"runtime": {"peer_timeout_s": 0}}, "runtime.peer_timeout_s"),
        ({"runtime": {"checkpoint_every": -5}}, "runtime.checkpoint_every"),
    ],
)
def test_invalid_values_name_the_field(tree: dict, field: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        config_from_dict(tree)


def test_placements_resolve_to_cuts() -> None:
    layers = ModelConfig(kind="mlp", depth=6).num_layers
    assert layers == 7
    assert SplitConfig(placement="none").resolve(layers) == ()
    assert SplitConfig(placement="middle").resolve(layers) == (3,)
    assert SplitConfig(placement="every").resolve(layers) == (1, 2, 3, 4, 5, 6)
    assert SplitConfig(placement="even", stages=4).resolve(layers) == (2, 4, 5)
    assert SplitConfig(placement="output").resolve(layers) == (7,)
    assert SplitConfig(placement="explicit", cuts=(2, 5)).resolve(layers) == (2, 5)


def test_every_recipe_in_launch_loads_and_overrides_apply() -> None:
    recipes = sorted((ROOT / "launch").glob("*.toml"))
    assert recipes, "launch/ has no recipes"
    for path in recipes:
        load_recipe(path)
    cfg = load_recipe(
        recipes[0],
        overrides={
            "run.steps": "7",
            "credit.method": "dfa",
            "split.cuts": "[1, 2]",
            "split.placement": "explicit",
            "model.batch_norm": "false",
        },
    )
    assert (cfg.run.steps, cfg.credit.method, cfg.split.cuts, cfg.model.batch_norm) == (7, "dfa", (1, 2), False)


def test_recipe_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_recipe(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nkind = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_recipe(bad)
    with pytest.raises(ConfigError, match=r"overrides are 'section\.field'"):
        config_from_dict({}, {"steps": "3"})
