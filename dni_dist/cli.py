"""Command lines: `dni-launch` (one process per block), `dni-worker` (one block), and
`python -m dni_dist train` (every block in this process).

    dni-launch --blocks 4 --gpus cpu --recipe launch/demo.toml --out runs/demo
    dni-worker --block 0 --blocks 2 --recipe launch/demo.toml --out runs/t   # normally started by dni-launch/torchrun
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

from dni_dist.config import METHODS, ConfigError, TrainConfig, load_recipe
from dni_dist.trainer import TrainResult, train

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(stderr=True)

# Flags that pick the training config, shared by dni-launch, dni-worker and `train`.
RecipeOpt = Annotated[Path | None, typer.Option(help="TOML recipe (launch/*.toml); built-in defaults when omitted")]
MethodOpt = Annotated[str | None, typer.Option(help=f"credit assignment at every interface: {', '.join(METHODS)}")]
ModelOpt = Annotated[str | None, typer.Option(help="model kind: linear, deep-linear or mlp")]
DepthOpt = Annotated[int | None, typer.Option(help="hidden layers")]
WidthOpt = Annotated[int | None, typer.Option(help="units per hidden layer")]
DatasetOpt = Annotated[
    str | None, typer.Option(help="mnist (bundled subset when offline), grid2, linear2, noisy100, ...")
]
StepsOpt = Annotated[int | None, typer.Option(help="training steps")]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", help="examples per step (0 = full batch)")]
SeedOpt = Annotated[int | None, typer.Option(help="seed for initialisation and batching")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override any config field: section.field=value")]


def build_config(
    recipe: Path | None,
    sets: list[str] | None,
    **flags: Any,
) -> TrainConfig:
    """Recipe + --set overrides + the named flags (which win), validated."""
    keys = {
        "method": "credit.method", "model": "model.kind", "depth": "model.depth", "width": "model.width",
        "dataset": "data.name", "steps": "run.steps", "batch_size": "data.batch_size", "seed": "run.seed",
    }  # fmt: skip
    overrides: dict[str, Any] = parse_sets(sets or [])
    for name, value in flags.items():
        if value is not None:
            overrides[keys[name]] = value
    return load_recipe(recipe, overrides)


def fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


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


launch_app = typer.Typer(add_completion=False, help="Train with one process per block over ZeroMQ (or in-process).")


@launch_app.command()
def launch_cmd(
    blocks: Annotated[int, typer.Option(help="worker processes, one block of consecutive stages each")] = 4,
    gpus: Annotated[
        str, typer.Option(help="'cpu', or device ids like 0,1,2,3 (block i gets id i, round-robin)")
    ] = "cpu",
    recipe: RecipeOpt = None,
    method: MethodOpt = None,
    model: ModelOpt = None,
    depth: DepthOpt = None,
    width: WidthOpt = None,
    dataset: DatasetOpt = None,
    steps: StepsOpt = None,
    batch_size: BatchOpt = None,
    seed: SeedOpt = None,
    set_: SetOpt = None,
    out: Annotated[Path, typer.Option(help="output directory: summary.json, checkpoints/, blocks/, logs/")] = Path(
        "runs/latest"
    ),
    log_dir: Annotated[Path | None, typer.Option(help="one log file per block (default: <out>/logs)")] = None,
    backend: Annotated[str, typer.Option(help="zmq (one process per block) or inproc (this process)")] = "zmq",
    lockstep: Annotated[bool, typer.Option(help="zmq: follow the in-process schedule exactly (for checks)")] = False,
    max_inflight: Annotated[int, typer.Option(help="steps an sg interface may run ahead of its targets")] = 8,
    overflow: Annotated[str, typer.Option(help="when that window is full: block or drop-oldest")] = "block",
    target_timeout: Annotated[float, typer.Option(help="with block: forget targets this late (s; 0 = never)")] = 0.0,
    checkpoint_every: Annotated[int, typer.Option(help="checkpoint every N steps (0: at the end / on stop)")] = 0,
    resume: Annotated[bool, typer.Option(help="continue from <out>/checkpoints")] = False,
    metrics_port: Annotated[int, typer.Option(help="Prometheus base port: block i serves base+i (0 = off)")] = 0,
    metrics_addr: Annotated[str, typer.Option(help="address the metrics servers listen on")] = "127.0.0.1",
    host: Annotated[str, typer.Option(help="address workers bind and advertise")] = "127.0.0.1",
    threads: Annotated[int, typer.Option(help="torch threads per worker (0: cores / blocks)")] = 0,
    live: Annotated[bool, typer.Option(help="live table (default when stderr is a terminal)")] = sys.stderr.isatty(),
) -> None:
    """Launch one worker per block, supervise them, and write <out>/summary.json."""
    from dni_dist.launcher import LaunchError, LaunchOptions, launch, parse_gpus

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = build_config(recipe, set_, method=method, model=model, depth=depth, width=width, dataset=dataset,
                           steps=steps, batch_size=batch_size, seed=seed)  # fmt: skip
        opts = LaunchOptions(
            blocks=blocks, gpus=parse_gpus(gpus), out=out, log_dir=log_dir, backend=backend, lockstep=lockstep,
            max_inflight=max_inflight, overflow=overflow, checkpoint_every=checkpoint_every, resume=resume,
            target_timeout_s=target_timeout,
            metrics_port=metrics_port, metrics_addr=metrics_addr, host=host, threads=threads, live=live,
        )  # fmt: skip
        summary = launch(cfg, opts)
    except (ConfigError, LaunchError, ValueError) as e:
        raise fail(str(e), 1 if isinstance(e, LaunchError) else 2) from None
    print_launch_summary(summary, out)
    if summary["status"] != "finished":
        raise typer.Exit(130)


def print_launch_summary(summary: dict[str, Any], out: Path) -> None:
    table = Table(title=f"dni-launch ({summary['backend']}{', lockstep' if summary['lockstep'] else ''}): "
                        f"{summary['status']}")  # fmt: skip
    for col in ("block", "stages", "steps", "lag p50/p90/max", "idle s by reason", "updates waited for"):
        table.add_column(col)
    for b in summary["blocks"]:
        lag = b["lag_steps"]
        table.add_row(
            str(b["block"]), f"{b['stages'][0]}-{b['stages'][1]}", str(b["steps"]),
            f"{lag['p50']:.0f}/{lag['p90']:.0f}/{lag['max']:.0f}",
            ", ".join(f"{k} {v:.2f}" for k, v in b["waits"].items()) or "-",
            ", ".join(f"{k} {v}" for k, v in sorted(b["update_waits"].items())),
        )  # fmt: skip
    console.print(table)
    f = summary["final"]
    print(
        f"steps {summary['steps']}  test loss {f['test_loss']:.4f}  test accuracy {f['test_accuracy']:.4f}  "
        f"{summary['samples_per_second']:.0f} samples/s  wall {summary['wall_seconds']:.1f}s  -> {out / 'summary.json'}"
    )


worker_app = typer.Typer(add_completion=False, help="Run one block (started by dni-launch, torchrun or a container).")


@worker_app.command()
def worker_cmd(
    block: Annotated[int | None, typer.Option(help="this block's index (default: $RANK)")] = None,
    blocks: Annotated[int | None, typer.Option(help="number of blocks (default: $WORLD_SIZE)")] = None,
    config_json: Annotated[Path | None, typer.Option(help="resolved config written by dni-launch")] = None,
    recipe: RecipeOpt = None,
    method: MethodOpt = None,
    model: ModelOpt = None,
    depth: DepthOpt = None,
    width: WidthOpt = None,
    dataset: DatasetOpt = None,
    steps: StepsOpt = None,
    batch_size: BatchOpt = None,
    seed: SeedOpt = None,
    set_: SetOpt = None,
    out: Annotated[Path, typer.Option(help="checkpoints/ and blocks/ go here (shared by all blocks)")] = Path(
        "runs/latest"
    ),
    run_id: Annotated[str | None, typer.Option(help="run id shared by all blocks (default: $DNI_RUN_ID)")] = None,
    lockstep: Annotated[bool, typer.Option()] = False,
    max_inflight: Annotated[int, typer.Option()] = 8,
    overflow: Annotated[str, typer.Option()] = "block",
    target_timeout: Annotated[float, typer.Option(help="block policy: forget targets this late (s; 0 = never)")] = 0.0,
    checkpoint_every: Annotated[int, typer.Option()] = 0,
    resume: Annotated[bool, typer.Option()] = False,
    metrics_port: Annotated[
        int, typer.Option(help="base port; this block serves base + block (0 = off; $DNI_METRICS_PORT: exact port)")
    ] = 0,
    metrics_addr: Annotated[str, typer.Option()] = "0.0.0.0",
    host: Annotated[str, typer.Option(help="address neighbours reach this block at ($DNI_HOST, 127.0.0.1)")] = "",
    bind: Annotated[str, typer.Option(help="address to listen on, if not --host ($DNI_BIND), e.g. 0.0.0.0")] = "",
    port: Annotated[int, typer.Option(help="fixed ports port..port+2 instead of free ones ($DNI_PORT)")] = -1,
    control: Annotated[str | None, typer.Option(help="the launcher's control endpoint")] = None,
    max_tensor_mb: Annotated[float, typer.Option(help="reject received tensors larger than this (MiB)")] = 256.0,
) -> None:
    """Host one block: meet the others through the TCPStore at $MASTER_ADDR:$MASTER_PORT and train."""
    import os

    from dni_dist.config import config_from_dict
    from dni_dist.transport import TransportConfig
    from dni_dist.worker import WorkerConfig, default_run_id, run_worker, setup_logging

    k = block if block is not None else int(os.environ.get("RANK", "0"))
    n = blocks if blocks is not None else int(os.environ.get("WORLD_SIZE", "1"))
    setup_logging()
    try:
        if config_json is not None:
            cfg = config_from_dict(json.loads(config_json.read_text()))
        else:
            cfg = build_config(recipe, set_, method=method, model=model, depth=depth, width=width, dataset=dataset,
                               steps=steps, batch_size=batch_size, seed=seed)  # fmt: skip
            from dni_dist.launcher import fit_blocks

            cfg = fit_blocks(cfg, n)
        wcfg = WorkerConfig(
            block=k, blocks=n, run_id=run_id or default_run_id(), out=str(out), lockstep=lockstep,
            max_inflight=max_inflight, overflow=overflow, checkpoint_every=checkpoint_every, resume=resume,
            target_timeout_s=target_timeout,
            metrics_port=int(os.environ.get("DNI_METRICS_PORT") or (metrics_port + k if metrics_port else 0)),
            metrics_addr=metrics_addr,
            host=host or os.environ.get("DNI_HOST", "127.0.0.1"), control=control,
            bind=bind or os.environ.get("DNI_BIND", ""),
            port=port if port >= 0 else int(os.environ.get("DNI_PORT", "0")),
            transport=TransportConfig(max_tensor_bytes=int(max_tensor_mb * 2**20)),
        )  # fmt: skip
    except (ConfigError, ValueError, OSError) as e:
        raise fail(f"[block {k}] {e}") from None
    raise typer.Exit(run_worker(cfg, wcfg))


def launch_main() -> None:
    launch_app()


def worker_main() -> None:
    worker_app()
