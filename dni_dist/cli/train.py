"""`python -m dni_dist train`: every stage in this process (the reference schedule).

python -m dni_dist train --recipe launch/demo.toml
python -m dni_dist train --recipe launch/mnist-sg.toml --method bp --steps 500 --out runs/bp
python -m dni_dist train --set model.depth=20 --set split.placement=every --set data.subset=true
"""

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from dni_dist.cli.options import CONFIG, ConfigFlags, console, fail, with_options
from dni_dist.config import ConfigError
from dni_dist.trainer import TrainResult, train


@with_options(CONFIG)
def train_cmd(
    config: ConfigFlags,
    out: Annotated[Path | None, typer.Option(help="write summary.json (config + results) here")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Train every stage in this process (the reference schedule) and report test metrics."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = config.build()
    except ConfigError as e:
        raise fail(f"config error: {e}") from None
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


def print_result(result: TrainResult) -> None:
    table = Table(title="dni_dist: in-process training", show_header=True)
    for col in ("stage", "interface after", "updates", "waited for", "SG cosine (last)"):
        table.add_column(col, justify="right" if col in ("updates", "SG cosine (last)") else "left")
    for i, stage in enumerate(result.stages):
        s = stage.stats
        waits = ", ".join(f"{k}: {v}" for k, v in sorted(s.waits.items()))
        cosine = f"{s.sg[-1].cosine:.3f}" if s.sg else "-"
        table.add_row(str(i), stage.spec.out_method or "loss", str(s.updates), waits, cosine)
    console.print(table)
    print(
        f"steps {len(result.train_loss)}  train loss {result.train_loss[-1]:.4f}  "
        f"test loss {result.test_loss:.4f}  test accuracy {result.test_accuracy:.4f}  "
        f"wall {result.wall_seconds:.1f}s  data: {result.dataset_source}"
    )
