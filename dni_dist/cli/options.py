"""Command-line options shared by several commands, defined once, and how they become a config.

    @app.command()
    @with_options(CONFIG, RUNTIME)
    def launch(config: ConfigFlags, blocks: int = 4) -> None:
        cfg = config.build()            # recipe + --set + the named flags (which win), validated

Each group is a list of (name, type, config key, help). `with_options` adds its flags to the
command's signature (so Typer shows them in --help and parses them) and hands the command one
ConfigFlags holding what was given; a flag left out keeps the recipe's value.
"""

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from dni_dist.config import METHODS, MODEL_KINDS, OVERFLOW_POLICIES, ConfigError, TrainConfig
from dni_dist.recipes import config_from_dict, load_recipe

console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Flag:
    name: str  # the Python name; the flag is --name-with-dashes
    type: Any
    key: str | None  # "section.field" it overrides (None: handled by the command)
    help: str
    decls: tuple[str, ...] = ()


CONFIG = (
    Flag("recipe", Path | None, None, "TOML recipe (launch/*.toml); built-in defaults when omitted"),
    Flag("method", str | None, "credit.method", f"credit assignment at every interface: {', '.join(METHODS)}"),
    Flag("model", str | None, "model.kind", f"model kind: {', '.join(MODEL_KINDS)}"),
    Flag("depth", int | None, "model.depth", "hidden layers"),
    Flag("width", int | None, "model.width", "units per hidden layer"),
    Flag("dataset", str | None, "data.name", "mnist (bundled subset when offline), grid2, linear2, noisy100, ..."),
    Flag("steps", int | None, "run.steps", "training steps"),
    Flag("batch_size", int | None, "data.batch_size", "examples per step (0 = full batch)", ("--batch-size",)),
    Flag("seed", int | None, "run.seed", "seed of everything random: initialisation, SG modules, batching"),
    Flag("set_", list[str] | None, None, "override any config field: section.field=value (repeatable)", ("--set",)),
)
RUNTIME = (
    Flag("lockstep", bool | None, "runtime.lockstep",
         "zmq: follow the in-process schedule exactly (bit for bit with --backend inproc at equal --threads)",
         ("--lockstep/--no-lockstep",)),
    Flag("max_inflight", int | None, "runtime.max_inflight", "steps an sg interface may run ahead of its targets"),
    Flag("overflow", str | None, "runtime.overflow", f"when that window is full: {' or '.join(OVERFLOW_POLICIES)}"),
    Flag("target_timeout", float | None, "runtime.target_timeout_s",
         "with overflow=block: forget targets this late (seconds; 0 = never)"),
    Flag("checkpoint_every", int | None, "runtime.checkpoint_every",
         "checkpoint every N steps (0: at the end / on stop)"),
    Flag("peer_timeout", float | None, "runtime.peer_timeout_s",
         "liveness (s): a block silent this long is declared hung and restarted; a worker without a "
         "launcher gives up when nothing arrives for this long"),
    Flag("max_restarts", int | None, "runtime.max_restarts",
         "restart a dead or hung block alone from its latest checkpoint, up to N times per block (0 = fail)"),
    Flag("keep_checkpoints", int | None, "runtime.keep_checkpoints", "complete checkpoint generations to keep"),
    Flag("inject_fault", str | None, "runtime.inject_fault",
         "tests: block=I,step=S,kind=kill|exit|hang|drop, or partition|delay with seconds=T[,ms=M]; ';' separates"),
)  # fmt: skip


@dataclass(frozen=True)
class ConfigFlags:
    """What the shared flags were given (None: not given)."""

    values: Mapping[str, Any] = field(default_factory=dict)

    def overrides(self) -> dict[str, Any]:
        out: dict[str, Any] = parse_sets(self.values.get("set_") or [])
        for flag in (*CONFIG, *RUNTIME):
            value = self.values.get(flag.name)
            if flag.key is not None and value is not None:
                out[flag.key] = value
        return out

    def build(self, base: Mapping[str, Any] | None = None) -> TrainConfig:
        """The recipe (or `base`, a config tree such as config.json) + --set + named flags, validated."""
        if base is not None:
            return config_from_dict(base, self.overrides())
        return load_recipe(self.values.get("recipe"), self.overrides())


def parse_sets(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected section.field=value, e.g. --set model.depth=20")
        out[key.strip()] = value
    return out


def with_options(*groups: tuple[Flag, ...]) -> Callable[[F], F]:
    """Add the flags of `groups` to a command; it gets them as `config: ConfigFlags`."""
    flags = [f for g in groups for f in g]

    def decorate(fn: F) -> F:
        sig = inspect.signature(fn, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name != "config"]
        added = [
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                              annotation=Annotated[f.type, typer.Option(*f.decls, help=f.help)])
            for f in flags
        ]  # fmt: skip

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = {f.name: kwargs.pop(f.name, None) for f in flags}
            return fn(*args, config=ConfigFlags(given), **kwargs)

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + added
        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper  # type: ignore[return-value]

    return decorate


def fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)
