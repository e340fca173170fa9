"""The command line: one Typer app with a subcommand per job, and the console scripts.

    python -m dni_dist train  --recipe launch/demo.toml              # every stage in this process
    python -m dni_dist launch --blocks 4 --gpus cpu --recipe launch/demo.toml   # = dni-launch
    python -m dni_dist worker --block 0 --blocks 2 ...               # = dni-worker (one block)
    python -m dni_dist repro table2 --quick --out runs/repro         # = dni-repro
    python -m dni_dist bench --rounds 3 --steps 300                  # = dni-bench
    python -m dni_dist keys generate runs/keys --blocks 4            # = dni keys generate ...

Flags map onto the config tree (dni_dist/config.py); `--set section.field=value` reaches every
field, recipes live in launch/*.toml. The shared flags are defined once (cli/options.py).
"""

import typer

from dni_dist.bench import bench as bench_cmd
from dni_dist.cli.keys import keys_app
from dni_dist.cli.launch import launch_cmd
from dni_dist.cli.train import train_cmd
from dni_dist.cli.worker import worker_cmd
from dni_dist.experiments.command import main as repro_cmd

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
app.command("train")(train_cmd)
app.command("launch")(launch_cmd)
app.command("worker")(worker_cmd)
app.command("repro")(repro_cmd)
app.command("bench")(bench_cmd)
app.add_typer(keys_app, name="keys")


def _single(command: typer.models.CommandFunctionType, help: str) -> typer.Typer:
    one = typer.Typer(add_completion=False, help=help)
    one.command()(command)
    return one


def launch_main() -> None:
    """`dni-launch`"""
    _single(launch_cmd, "Train with one process per block over ZeroMQ (or in-process).")()


def worker_main() -> None:
    """`dni-worker`"""
    _single(worker_cmd, "Run one block (started by dni-launch, torchrun or a container).")()


__all__ = ["app", "launch_main", "worker_main"]
