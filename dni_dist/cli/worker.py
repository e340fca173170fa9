"""`dni-worker` (= `python -m dni_dist worker`, `python -m dni_dist.worker`): host one block.

dni-worker --block 1 --blocks 4 --config-json runs/x/config.json --out runs/x   # as dni-launch runs it
torchrun --nproc-per-node 2 -m dni_dist.worker --recipe launch/demo.toml --out runs/t  # block = $RANK
"""

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from dni_dist.cli.options import CONFIG, RUNTIME, ConfigFlags, fail, with_options
from dni_dist.config import ConfigError
from dni_dist.placement import fit_blocks
from dni_dist.transport import TransportConfig
from dni_dist.worker import WorkerConfig, default_run_id, run_worker, setup_logging, torchrun_restarts


@with_options(CONFIG, RUNTIME)
def worker_cmd(
    config: ConfigFlags,
    block: Annotated[int | None, typer.Option(help="this block's index (default: $RANK)")] = None,
    blocks: Annotated[int | None, typer.Option(help="number of blocks (default: $WORLD_SIZE)")] = None,
    config_json: Annotated[
        Path | None, typer.Option(help="resolved config written by dni-launch (flags still override it)")
    ] = None,
    out: Annotated[Path, typer.Option(help="checkpoints/ and blocks/ go here (shared by all blocks)")] = Path(
        "runs/latest"
    ),
    run_id: Annotated[str | None, typer.Option(help="run id shared by all blocks (default: $DNI_RUN_ID)")] = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="continue from the newest complete checkpoint under <out>/checkpoints (implied "
            "when torchrun restarts the workers)"
        ),
    ] = False,
    restart_cause: Annotated[str, typer.Option(help="dni-launch: why this block was restarted", hidden=True)] = "",
    metrics_port: Annotated[
        int, typer.Option(help="base port; this block serves base + block (0 = off; $DNI_METRICS_PORT: exact port)")
    ] = 0,
    metrics_addr: Annotated[str, typer.Option(help="address the metrics server listens on")] = "127.0.0.1",
    host: Annotated[str, typer.Option(help="address neighbours reach this block at ($DNI_HOST, 127.0.0.1)")] = "",
    bind: Annotated[str, typer.Option(help="address to listen on, if not --host ($DNI_BIND), e.g. 0.0.0.0")] = "",
    port: Annotated[int, typer.Option(help="fixed ports port..port+2 instead of free ones ($DNI_PORT)")] = -1,
    control: Annotated[str | None, typer.Option(help="the launcher's control endpoint")] = None,
    max_tensor_mb: Annotated[float, typer.Option(help="reject received tensors larger than this (MiB)")] = 256.0,
    keys: Annotated[
        Path | None, typer.Option(help="the run's keys directory: CURVE on every socket, signed rendezvous ($DNI_KEYS)")
    ] = None,
    insecure: Annotated[
        bool, typer.Option(help="plaintext, unauthenticated sockets; refused unless every address is loopback")
    ] = False,
) -> None:
    """Host one block: meet the others through the TCPStore at $MASTER_ADDR:$MASTER_PORT and train."""
    k = block if block is not None else int(os.environ.get("RANK", "0"))
    n = blocks if blocks is not None else int(os.environ.get("WORLD_SIZE", "1"))
    setup_logging()
    try:
        if config_json is not None:
            cfg = config.build(base=json.loads(config_json.read_text()))
        else:
            cfg = fit_blocks(config.build(), n)
        wcfg = WorkerConfig(
            block=k, blocks=n, run_id=run_id or default_run_id(), out=str(out),
            resume=resume or torchrun_restarts() > 0, restart_cause=restart_cause, generation=torchrun_restarts(),
            metrics_port=int(os.environ.get("DNI_METRICS_PORT") or (metrics_port + k if metrics_port else 0)),
            metrics_addr=metrics_addr, host=host or os.environ.get("DNI_HOST", "127.0.0.1"), control=control,
            bind=bind or os.environ.get("DNI_BIND", ""),
            port=port if port >= 0 else int(os.environ.get("DNI_PORT", "0")),
            transport=TransportConfig(max_tensor_bytes=int(max_tensor_mb * 2**20)),
            keys=str(keys) if keys is not None else os.environ.get("DNI_KEYS") or None, insecure=insecure,
        )  # fmt: skip
    except (ConfigError, ValueError, OSError) as e:
        raise fail(f"[block {k}] {e}") from None
    raise typer.Exit(run_worker(cfg, wcfg))
