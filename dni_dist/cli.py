"""Command line: train a recipe in one process and print what it reached.

    python -m dni_dist train --recipe launch/demo.toml
    python -m dni_dist train --recipe launch/mnist-sg.toml --method bp --steps 500 --out runs/bp
    python -m dni_dist train --set model.depth=20 --set split.placement=every --set data.subset=true

Flags map onto the config dataclasses (dni_dist/config.py); `--set section.field=value`
reaches every field. The distributed runtime (`dni-launch`) takes the same recipes.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from dni_dist.config import METHODS, ConfigError, load_recipe
from dni_dist.trainer import TrainResult, train

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(stderr=True)


def parse_sets(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected section.field=value, e.g. --set model.depth=20")
        out[key.strip()] = value
    return out


def print_result(result: TrainResult) -> None:
    table = Table(title="dni_dist: in-process training", show_header=True)
    table.add_column("stage")
    table.add_column("interface after")
    table.add_column("updates", justify="right")
    table.add_column("waited for", justify="left")
    table.add_column("SG cosine (last)", justify="right")
    for i, stage in enumerate(result.stages):
        s = stage.stats
        method = stage.spec.out_method or "loss"
        waits = ", ".join(f"{k}: {v}" for k, v in sorted(s.waits.items()))
        cosine = f"{s.sg[-1].cosine:.3f}" if s.sg else "-"
        table.add_row(str(i), method, str(s.updates), waits, cosine)
    console.print(table)
    print(
        f"steps {len(result.train_loss)}  train loss {result.train_loss[-1]:.4f}  "
        f"test loss {result.test_loss:.4f}  test accuracy {result.test_accuracy:.4f}  "
        f"wall {result.wall_seconds:.1f}s  data: {result.dataset_source}"
    )


@app.command("train")
def train_cmd(
    recipe: Annotated[Path | None, typer.Option(help="TOML recipe (launch/*.toml); defaults when omitted")] = None,
    method: Annotated[
        str | None, typer.Option(help=f"credit assignment at every interface: {', '.join(METHODS)}")
    ] = None,
    steps: Annotated[int | None, typer.Option(help="training steps")] = None,
    seed: Annotated[int | None, typer.Option(help="seed for initialisation and batching")] = None,
    dataset: Annotated[str | None, typer.Option(help="mnist, grid2, linear2, noisy100, random2, ...")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override any field: section.field=value")] = None,
    out: Annotated[Path | None, typer.Option(help="write summary.json (config + results) here")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Train every stage in this process (the reference schedule) and report test metrics."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides: dict[str, Any] = parse_sets(set_ or [])
    for key, value in (("credit.method", method), ("run.steps", steps), ("run.seed", seed), ("data.name", dataset)):
        if value is not None:
            overrides[key] = value
    try:
        cfg = load_recipe(recipe, overrides)
    except ConfigError as e:
        console.print(f"[red]config error:[/red] {e}")
        raise typer.Exit(2) from None
    with Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} loss {task.fields[loss]}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=quiet or not sys.stderr.isatty(),
    ) as bar:
        task = bar.add_task("train", total=cfg.run.steps, loss="-")
        result = train(cfg, progress=lambda step, loss: bar.update(task, completed=step + 1, loss=f"{loss:.4f}"))
    print_result(result)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        summary = {"config": cfg.to_dict(), **result.summary()}
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        print(f"wrote {out / 'summary.json'}")


@app.callback()
def main() -> None:
    """dni_dist: synthetic-gradient (DNI) training, one process per block."""


if __name__ == "__main__":
    app()
