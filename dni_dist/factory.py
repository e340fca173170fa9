"""Your own model: load and call `[model] factory = "pkg.module:build"` or "path/to/file.py:build".

    python -c "from dni_dist.factory import call_factory; \\
        print(call_factory('tests/unit/factories.py:three_stages', input_shape=(1, 28, 28), num_classes=10, seed=0))"

The function is called with the keyword arguments it declares among `input_shape` (one
example, e.g. (1, 28, 28) for an image set or (100,) for vector data), `num_classes` (labels)
and `num_outputs` (width the loss wants from the last layer: num_classes, or 1 for `bce`);
a `**kwargs` parameter gets all three. It must return one of:

- a list (or tuple) of modules: one stage each, in order;
- an nn.Sequential: its children are the layers, and `[split]` cuts them;
- (nn.Sequential, split points): split point k starts a new stage at child k (0-based), i.e.
  a cut after layer k (1-based), as `split.cuts` counts.

It runs under torch.random.fork_rng seeded from run.seed, so every worker that builds the
model gets the same weights; randomness from other generators (numpy, random) is its own.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dni_dist.config import ConfigError

ARGUMENTS = ("input_shape", "num_classes", "num_outputs")


def _split_ref(ref: str) -> tuple[str, str]:
    target, sep, attr = ref.strip().rpartition(":")
    if not sep or not target or not attr:
        raise ConfigError(f"model.factory: got {ref!r}; expected 'pkg.module:function' or 'path/to/file.py:function'")
    return target, attr


def is_file_ref(ref: str) -> bool:
    return _split_ref(ref)[0].endswith(".py")


def file_stamp(ref: str) -> tuple[str, int, int] | None:
    """(absolute path, mtime, size) of a file factory, None for a module factory (for caches)."""
    if not is_file_ref(ref):
        return None
    path = Path(_split_ref(ref)[0]).expanduser().resolve()
    try:
        st = path.stat()
    except OSError:
        return (str(path), -1, -1)
    return (str(path), st.st_mtime_ns, st.st_size)


def load_factory(ref: str) -> Callable[..., Any]:
    """The function `ref` names; ConfigError saying what is wrong when it cannot be found."""
    target, attr = _split_ref(ref)
    if target.endswith(".py"):
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            cwd = Path.cwd()
            raise ConfigError(f"model.factory: no file {path} (from {ref!r}; a relative path is read from {cwd})")
        name = "dni_factory_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:  # pragma: no cover - only for non-Python suffix tricks
            raise ConfigError(f"model.factory: cannot load {path} as a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickling-free introspection look modules up here
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            del sys.modules[name]
            raise ConfigError(f"model.factory: running {path} raised {type(e).__name__}: {e}") from e
        where = str(path)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise ConfigError(
                f"model.factory: cannot import {target!r} ({e}); put its package on PYTHONPATH, or name a file "
                "ending in .py"
            ) from e
        where = f"module {target}"
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n in vars(module) if not n.startswith("_") and callable(getattr(module, n)))
            defined = ", ".join(names) or "nothing callable"
            raise ConfigError(f"model.factory: {where} has no {attr!r}; it defines {defined}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"model.factory: {attr} in {where} is a {type(obj).__name__}, not a function")
    return obj  # type: ignore[no-any-return]


def _arguments(fn: Callable[..., Any], ref: str, values: dict[str, Any]) -> dict[str, Any]:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature: call it bare
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(values)
    unknown = [
        n
        for n, p in params.items()
        if n not in values
        and p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    if unknown:
        raise ConfigError(
            f"model.factory: {ref} requires {', '.join(unknown)}; a factory may only ask for {', '.join(ARGUMENTS)}"
        )
    return {n: v for n, v in values.items() if n in params}


def as_layers(result: Any, ref: str) -> tuple[list[nn.Module], tuple[int, ...] | None]:
    """(layers, split points or None) from what a factory returned."""
    if (
        isinstance(result, tuple)
        and len(result) == 2
        and isinstance(result[0], nn.Sequential)
        and isinstance(result[1], (list, tuple))
        and all(isinstance(c, int) and not isinstance(c, bool) for c in result[1])
    ):
        seq, points = result
        layers = list(seq.children())
        cuts = tuple(int(c) for c in points)
        if list(cuts) != sorted(set(cuts)) or any(not 1 <= c < len(layers) for c in cuts):
            raise ConfigError(
                f"model.factory: {ref} returned split points {list(cuts)} for an nn.Sequential of {len(layers)} "
                f"layers; they must be strictly increasing in 1..{len(layers) - 1} (a new stage starts at each)"
            )
        return layers, cuts
    if isinstance(result, nn.Sequential):
        return list(result.children()), None
    if isinstance(result, (list, tuple)) and result and all(isinstance(m, nn.Module) for m in result):
        return list(result), tuple(range(1, len(result)))
    got = type(result).__name__
    if isinstance(result, nn.Module):
        got = f"a single {got}"
    raise ConfigError(
        f"model.factory: {ref} returned {got}; return a list of stage modules, an nn.Sequential, or "
        "(nn.Sequential, [split points])"
    )


def call_factory(
    ref: str, *, input_shape: tuple[int, ...], num_classes: int, seed: int, num_outputs: int | None = None
) -> tuple[list[nn.Module], tuple[int, ...] | None]:
    """Build the factory's model with torch's RNG seeded from `seed`: (layers, split points or None)."""
    fn = load_factory(ref)
    values = {"input_shape": tuple(input_shape), "num_classes": num_classes, "num_outputs": num_outputs or num_classes}
    kwargs = _arguments(fn, ref, values)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            result = fn(**kwargs)
        except ConfigError:
            raise
        except Exception as e:
            raise ConfigError(f"model.factory: {ref} raised {type(e).__name__}: {e}") from e
    if not result:
        raise ConfigError(f"model.factory: {ref} returned no layers")
    return as_layers(result, ref)
