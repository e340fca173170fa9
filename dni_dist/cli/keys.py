"""`python -m dni_dist keys generate DIR --blocks N`: a keys directory for a cluster run.

    python -m dni_dist keys generate deploy/keys --blocks 4    # then mount it (compose secret, k8s Secret)
"""

from pathlib import Path
from typing import Annotated

import typer

from dni_dist import keys
from dni_dist.cli.options import console, fail
from dni_dist.config import ConfigError

keys_app = typer.Typer(add_completion=False, no_args_is_help=True, help="The keys of a run (CURVE + run secret).")


@keys_app.command("generate")
def generate_cmd(
    directory: Annotated[Path, typer.Argument(help="directory to (re)create; one run's trust domain")],
    blocks: Annotated[int, typer.Option(help="blocks of the run: one keypair each")] = 4,
) -> None:
    """Write a CURVE keypair per block and for the launcher, and the run secret (secret files 0600)."""
    try:
        d = keys.generate(directory, blocks)
    except ConfigError as e:
        raise fail(str(e)) from None
    console.print(f"wrote {d}: block0..block{blocks - 1}, launcher (.key public, .key_secret secret), run.secret")
