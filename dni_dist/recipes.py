"""Recipes: TOML files and `section.field=value` overrides turned into a validated TrainConfig.

    from dni_dist.recipes import load_recipe
    cfg = load_recipe("launch/mnist-sg.toml", overrides={"run.steps": "200", "runtime.max_inflight": "4"})

Every field of every section (dni_dist/config.py) can be set in a recipe table or with the CLI's
`--set section.field=value`; values are parsed by the field's declared type, and unknown
sections or fields are a ConfigError that lists the valid ones.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dni_dist.config import (
    GIVEN_STAGES,
    ConfigError,
    CreditConfig,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    RuntimeConfig,
    SplitConfig,
    SyntheticConfig,
    TrainConfig,
)
from dni_dist.network import resolve_factory
from dni_dist.topology import Topology

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

_SECTION_TYPES = {
    "model": ModelConfig,
    "split": SplitConfig,
    "credit": CreditConfig,
    "synthetic": SyntheticConfig,
    "optim": OptimConfig,
    "data": DataConfig,
    "run": RunConfig,
    "runtime": RuntimeConfig,
}


def _coerce(value: Any, annotation: Any, name: str) -> Any:
    """Convert a TOML value or a CLI string to the type a field declares."""
    hint = annotation
    if isinstance(hint, str):
        hint = eval(hint, {"tuple": tuple, "int": int, "str": str, "float": float, "bool": bool})
    origin = typing.get_origin(hint)
    if origin in (tuple,):
        (item, _) = typing.get_args(hint)
        if isinstance(value, str):
            value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        return tuple(_coerce(v, item, name) for v in value)
    if origin in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    try:
        if hint is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return low in ("true", "1", "yes")
            if not isinstance(value, bool):
                raise ValueError(value)
            return value
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            if not isinstance(value, str):
                raise ValueError(value)
            return value.strip()
    except ValueError:
        raise ConfigError(f"{name}: cannot read {value!r} as {hint.__name__}") from None
    raise ConfigError(f"{name}: unsupported field type {hint!r}")  # pragma: no cover


def _build_section(section: str, values: Mapping[str, Any]) -> Any:
    cls = _SECTION_TYPES[section]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{section}.{key}: unknown field; {section} has {', '.join(sorted(fields))}")
        kwargs[key] = _coerce(value, fields[key].type, f"{section}.{key}")
    return cls(**kwargs)


def config_from_dict(tree: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Build a TrainConfig from nested mappings, then apply "section.field" overrides."""
    merged: dict[str, dict[str, Any]] = {s: {} for s in _SECTION_TYPES}
    for section, values in tree.items():
        if section not in _SECTION_TYPES:
            raise ConfigError(f"{section}: unknown section; expected {', '.join(_SECTION_TYPES)}")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{section}: expected a table of fields, got {values!r}")
        merged[section].update(values)
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if section not in _SECTION_TYPES or not key:
            raise ConfigError(f"{dotted}: overrides are 'section.field', sections: {', '.join(_SECTION_TYPES)}")
        merged[section][key] = value
    return resolve(TrainConfig(**{s: _build_section(s, v) for s, v in merged.items()}))


def resolve(cfg: TrainConfig) -> TrainConfig:
    """A config whose model can be built: a factory (`model.factory`) is called once to learn its
    layers and split points, and a cnn or factory model is checked on one sample batch
    (ConfigError when a method cannot apply to it)."""
    if cfg.model.factory and cfg.model.factory != GIVEN_STAGES:
        model, split = resolve_factory(cfg)  # how many layers, and the factory's split points
        cfg = dataclasses.replace(cfg, model=model, split=split)
    if cfg.model.kind == "cnn" or cfg.model.factory not in ("", GIVEN_STAGES):
        Topology.for_data(cfg)
    return cfg


def load_recipe(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Load a TOML recipe (or the defaults when `path` is None) and apply overrides."""
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"recipe {p}: no such file (recipes live in launch/*.toml)")
        try:
            tree = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"recipe {p}: not valid TOML: {e}") from None
    return config_from_dict(tree, overrides)
