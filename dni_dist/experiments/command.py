"""`dni-repro`: run one experiment of the paper, or all of them and write REPORT.md.

dni-repro critical-point --out runs/repro
dni-repro all --out runs/repro --quick
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from dni_dist.experiments import registry
from dni_dist.experiments.base import ExperimentOptions, ExperimentResult

app = typer.Typer(add_completion=False, help=__doc__)
console = Console(stderr=True)


def _run_one(name: str, opts: ExperimentOptions) -> ExperimentResult:
    start = time.monotonic()
    console.print(f"[bold]{name}[/bold] ({'quick' if opts.quick else 'full'}) ...")
    result = registry()[name](opts)
    (opts.out / f"{name}.md").write_text(result.markdown)
    (opts.out / f"{name}.json").write_text(json.dumps(result.key, indent=2, default=float))
    console.print(f"{name}: done in {time.monotonic() - start:.0f}s -> {', '.join(result.files)}")
    return result


@app.command()
def main(
    experiment: Annotated[str, typer.Argument(help="an experiment, several joined by commas, or 'all'")],
    out: Annotated[Path, typer.Option(help="output directory")] = Path("runs/repro"),
    quick: Annotated[bool, typer.Option(help="the reduced version (well under a minute each)")] = False,
    seed: Annotated[int, typer.Option(help="seed")] = 0,
    distributed: Annotated[bool, typer.Option(help="also train on the ZeroMQ runtime where supported")] = False,
) -> None:
    """Run EXPERIMENT (or all) and write its results, figures and Markdown into OUT."""
    logging.basicConfig(level=logging.WARNING)
    names = list(registry())
    chosen = names if experiment == "all" else [e.strip() for e in experiment.split(",") if e.strip()]
    unknown = [e for e in chosen if e not in names]
    if unknown or not chosen:
        console.print(f"[red]error:[/red] unknown experiment {', '.join(unknown) or experiment!r}; "
                      f"choose from {', '.join(names)} or all")  # fmt: skip
        raise typer.Exit(2)
    out.mkdir(parents=True, exist_ok=True)
    opts = ExperimentOptions(out=out, quick=quick, seed=seed, distributed=distributed)
    results = [_run_one(n, opts) for n in chosen]  # in one process: rdm, weight-norms, probes share their training
    if experiment == "all":
        head = (
            "# Reproduction report\n\nUnderstanding Synthetic Gradients and Decoupled Neural Interfaces "
            f"(Czarnecki et al., ICML 2017), reproduced with dni_dist ({'quick' if quick else 'full'} runs, "
            f"seed {seed}{', distributed' if distributed else ''}).\n\n"
        )
        (out / "REPORT.md").write_text(head + "\n".join(r.markdown for r in results))
        print(f"wrote {out / 'REPORT.md'}")


def repro_main() -> None:
    app()
