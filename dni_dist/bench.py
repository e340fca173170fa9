"""dni-bench: training throughput of decoupled (SG) blocks against their peers, side by side.

    dni-bench --rounds 3 --steps 300 --out docs/bench        # about 4 minutes on 2 cores
    dni-bench --link-delay-ms 0,2,10,50 --out docs/bench/latency   # slow links (dni_dist.bench_latency)

Every contestant trains the same balanced MLP (8 hidden ReLU+BN layers of 512, batch 128, the
bundled MNIST subset, Adam) and is timed over its training loop only (process start-up and
rendezvous excluded, first steps included):

- torch-1proc-1thread a plain PyTorch loop (forward, loss.backward, Adam), one process, one
                     torch thread: the baseline every ratio is reported against
- bp-1proc-1thread   dni_dist's own in-process trainer doing backprop on the same thread budget
- dni-sg-2proc       dni-launch, 2 worker processes (1 thread each), free-running cDNI at the cut,
                     CURVE-encrypted and authenticated (the default)
- dni-sg-2proc-plain the same with --insecure (plaintext): what the encryption costs
- dni-bp-2proc       the same two processes with backprop at the cut (update-locked)
- pp-<schedule>-m<M> torch.distributed.pipelining on the same two processes (gloo), each schedule
                     and microbatch count in --schedules / --microbatches

Contestants run interleaved (round 1: all of them, round 2: all again, ...) so drift in the
machine's speed hits all alike; the table reports the median samples/s per contestant and its
ratio to the baseline, and --out gets bench.json with every measurement.

With --link-delay-ms the comparison is over slow links instead: every link between two processes
goes through dni_dist's fault proxy with that one-way delay, and each contestant's learning curve
gives its time to a target accuracy (latency.json and latency.png, dni_dist.bench_latency).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from dni_dist.bench_runs import (
    BATCH,
    CUT,
    DEPTH,
    WIDTH,
    even_cuts,
    run_bp_single,
    run_dni,
    run_pipelining,
    run_torch_single,
)

app = typer.Typer(add_completion=False, help=__doc__)
console = Console(stderr=True)


@app.command("run", help=__doc__)
def bench(
    rounds: Annotated[int, typer.Option(help="interleaved rounds (each runs every contestant once)")] = 3,
    steps: Annotated[int, typer.Option(help="training steps per contestant run")] = 300,
    schedules: Annotated[str, typer.Option(help="pipelining schedules: gpipe,1f1b")] = "gpipe,1f1b",
    microbatches: Annotated[str, typer.Option(help="pipelining microbatch counts")] = "2,4,8",
    cut: Annotated[int, typer.Option(help="split after this hidden layer (both 2-process contestants)")] = CUT,
    out: Annotated[Path | None, typer.Option(help="write bench.json here")] = None,
    only: Annotated[
        str | None, typer.Option(help="run only these contestants (comma-separated; the baseline always runs)")
    ] = None,
    link_delay_ms: Annotated[
        str | None,
        typer.Option(help="latency mode: one-way delays in ms, e.g. 0,2,10,50 (dni_dist.bench_latency)"),
    ] = None,
    snapshot_every: Annotated[int, typer.Option(help="latency mode: steps between learning-curve points")] = 25,
    blocks: Annotated[str, typer.Option(help="latency mode: process counts to compare, e.g. 2,4")] = "2",
) -> None:
    """Run the comparison and print the table."""
    if link_delay_ms is not None:
        from dni_dist.bench_latency import run_latency

        try:
            delays = [float(d) for d in link_delay_ms.split(",") if d.strip()]
        except ValueError:
            raise typer.BadParameter(f"--link-delay-ms takes numbers like 0,2,10,50, got {link_delay_ms!r}") from None
        if not delays or min(delays) < 0:
            raise typer.BadParameter(f"--link-delay-ms needs one or more delays >= 0, got {link_delay_ms!r}")
        pipelining = [(s, int(m)) for s in schedules.split(",") for m in microbatches.split(",")]
        try:
            counts = [int(b) for b in blocks.split(",") if b.strip()]
            for b in counts:
                even_cuts(b)
        except ValueError as e:
            raise typer.BadParameter(f"--blocks {blocks!r}: {e}") from None
        run_latency(delays=delays, rounds=rounds, steps=steps, blocks=counts, cut=cut, pipelining=pipelining,
                    snapshot_every=snapshot_every, out=out)  # fmt: skip
        return
    contestants: dict[str, Any] = {
        "torch-1proc-1thread": lambda w: run_torch_single(steps),
        "bp-1proc-1thread": lambda w: run_bp_single(steps),
    }
    contestants["dni-sg-2proc"] = lambda w: run_dni("sg", steps, w / "dni-sg", cut)["samples_per_second"]
    contestants["dni-sg-2proc-plain"] = lambda w: run_dni("sg", steps, w / "dni-sg-plain", cut, insecure=True)[
        "samples_per_second"
    ]
    contestants["dni-bp-2proc"] = lambda w: run_dni("bp", steps, w / "dni-bp", cut)["samples_per_second"]
    for s in schedules.split(","):
        for m in microbatches.split(","):
            contestants[f"pp-{s}-m{m}"] = lambda w, s=s, m=int(m): run_pipelining(s, m, steps, w / f"pp-{s}-{m}", cut)
    if only is not None:
        wanted = {"torch-1proc-1thread", *(c.strip() for c in only.split(","))}
        unknown = wanted - set(contestants)
        if unknown:
            raise typer.BadParameter(
                f"unknown contestant(s) {', '.join(sorted(unknown))}; have {', '.join(contestants)}"
            )
        contestants = {k: v for k, v in contestants.items() if k in wanted}
    results: dict[str, list[float]] = {k: [] for k in contestants}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for name, fn in contestants.items():
                t0 = time.monotonic()
                sps = fn(Path(tmp))
                results[name].append(sps)
                console.print(f"round {r + 1}/{rounds} {name:18} {sps:9.0f} samples/s ({time.monotonic() - t0:.0f}s)")
    base = statistics.median(results["torch-1proc-1thread"])
    pp_best = max(
        (n for n in results if n.startswith("pp-")), key=lambda n: statistics.median(results[n]), default=None
    )
    table = Table(title=f"dni-bench: {DEPTH}×{WIDTH} ReLU+BN MLP cut after layer {cut}, batch {BATCH}, {steps} steps")
    for col in ("contestant", "median samples/s", "min", "max", "× torch-1proc-1thread"):
        table.add_column(col, justify="right" if col != "contestant" else "left")
    for name, values in results.items():
        med = statistics.median(values)
        label = name + (" (best pipelining)" if name == pp_best else "")
        table.add_row(label, f"{med:.0f}", f"{min(values):.0f}", f"{max(values):.0f}", f"{med / base:.2f}")
    Console().print(table)
    sg = statistics.median(results["dni-sg-2proc"]) if "dni-sg-2proc" in results else float("nan")
    summary = {
        "model": {"depth": DEPTH, "width": WIDTH, "batch": BATCH, "cut_after_layer": cut},
        "steps": steps,
        "rounds": rounds,
        "cpu_count": os.cpu_count(),
        "samples_per_second": results,
        "median": {k: statistics.median(v) for k, v in results.items()},
        "ratios": {
            "dni_sg_over_torch_1proc": sg / base,
            "dni_sg_over_best_pipelining": sg / statistics.median(results[pp_best]) if pp_best else None,
            "best_pipelining": pp_best,
            "curve_over_plain": (
                statistics.median(r / p for r, p in zip(results["dni-sg-2proc"], results["dni-sg-2proc-plain"]))
                if "dni-sg-2proc" in results and "dni-sg-2proc-plain" in results
                else None
            ),
        },
    }
    print(json.dumps(summary["ratios"]))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(summary, indent=2))
        print(f"wrote {out / 'bench.json'}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
