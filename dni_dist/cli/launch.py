"""`dni-launch` (= `python -m dni_dist launch`): one worker process per block, supervised.

dni-launch --blocks 4 --gpus cpu --recipe launch/demo.toml --out runs/demo
dni-launch --blocks 4 --gpus 0,1,2,3 --method sg --steps 2000 --metrics-port 9100
dni-launch --blocks 2 --backend inproc --set runtime.max_inflight=4 --out runs/ref
"""

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from dni_dist.checkpoint import CheckpointError
from dni_dist.cli.options import CONFIG, RUNTIME, ConfigFlags, console, fail, with_options
from dni_dist.config import ConfigError
from dni_dist.launcher import LaunchError, LaunchOptions, launch
from dni_dist.placement import parse_gpus


@with_options(CONFIG, RUNTIME)
def launch_cmd(
    config: ConfigFlags,
    blocks: Annotated[int, typer.Option(help="worker processes, one block of consecutive stages each")] = 4,
    gpus: Annotated[
        str, typer.Option(help="'cpu', or CUDA device ids like 0,1,2,3 (block i gets id i, round-robin)")
    ] = "cpu",
    out: Annotated[
        Path, typer.Option(help="output directory: summary.json, config.json, checkpoints/, blocks/, logs/")
    ] = Path("runs/latest"),
    log_dir: Annotated[Path | None, typer.Option(help="one log file per block (default: <out>/logs)")] = None,
    backend: Annotated[str, typer.Option(help="zmq (one process per block) or inproc (this process)")] = "zmq",
    resume: Annotated[bool, typer.Option(help="continue from <out>/checkpoints")] = False,
    metrics_port: Annotated[int, typer.Option(help="Prometheus base port: block i serves base+i (0 = off)")] = 0,
    metrics_addr: Annotated[str, typer.Option(help="address the metrics servers listen on")] = "127.0.0.1",
    host: Annotated[str, typer.Option(help="address workers bind and advertise")] = "127.0.0.1",
    threads: Annotated[int, typer.Option(help="torch threads per worker (0: cores / blocks)")] = 0,
    live: Annotated[bool, typer.Option(help="live table (default when stderr is a terminal)")] = sys.stderr.isatty(),
    insecure: Annotated[
        bool, typer.Option(help="plaintext, unauthenticated sockets (default: CURVE with per-run keys); loopback only")
    ] = False,
) -> None:
    """Launch one worker per block, supervise them, and write <out>/summary.json."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = config.build()
        opts = LaunchOptions(
            blocks=blocks, gpus=parse_gpus(gpus), out=out, log_dir=log_dir, backend=backend, resume=resume,
            metrics_port=metrics_port, metrics_addr=metrics_addr, host=host, threads=threads, live=live,
            insecure=insecure,
        )  # fmt: skip
        summary = launch(cfg, opts)
    except (ConfigError, CheckpointError, LaunchError) as e:
        raise fail(str(e), 1 if isinstance(e, LaunchError) else 2) from None
    print_launch_summary(summary, out)
    if summary["status"] != "finished":
        raise typer.Exit(130)


def print_launch_summary(summary: dict[str, Any], out: Path) -> None:
    mode = f"{summary['backend']}{', lockstep' if summary['lockstep'] else ''}"
    table = Table(title=f"dni-launch ({mode}): {summary['status']}")
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
