"""dni-bench: decoupled (SG) blocks against their peers, side by side, interleaved.

    dni-bench --rounds 3 --steps 600 --out docs/bench                  # samples/s + time to accuracy
    dni-bench --model cnn --rounds 3 --steps 300 --out docs/bench/cnn  # the conv net
    dni-bench --sg-variants r64,u4 --only dni-sg-2proc-r64,dni-sg-2proc-u4 --out /tmp/b  # cheaper SGs
    dni-bench --link-delay-ms 0,2,10,50 --out docs/bench/latency      # slow links

The default mode (dni_dist.bench_speed) runs plain PyTorch on 1 and 2 threads, dni_dist's own
trainer, 2 decoupled SG processes (CURVE and plaintext, and any --sg-variants), the same 2
processes with backprop, and torch.distributed.pipelining; every run is timed over its
training loop and evaluated against wall time, so the table gives samples/s and the time to
reach 97 % of the 1-thread baseline's final accuracy, as medians of interleaved rounds. Each
round also measures dni_dist's messages against raw pyzmq (--transport-sizes).
--link-delay-ms switches to the slow-link comparison (dni_dist.bench_latency).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dni_dist import bench_runs
from dni_dist.bench_runs import even_cuts
from dni_dist.bench_speed import Options, contestants, run_speed
from dni_dist.bench_transport import DEFAULT_SIZES, parse_size

HELP = (__doc__ or "").replace("\n    ", "\n")  # typer would indent all example lines but the first
app = typer.Typer(add_completion=False, help=HELP)


@app.command("run", help=HELP)
def bench(
    rounds: Annotated[int, typer.Option(help="interleaved rounds (each runs every contestant once)")] = 3,
    steps: Annotated[int, typer.Option(help="training steps per contestant run")] = 600,
    model: Annotated[str, typer.Option(help="mlp (8x512 ReLU+BN) or cnn (4 conv layers)")] = "mlp",
    schedules: Annotated[str, typer.Option(help="pipelining schedules: gpipe,1f1b")] = "gpipe,1f1b",
    microbatches: Annotated[str, typer.Option(help="pipelining microbatch counts")] = "2,4",
    cut: Annotated[
        int | None, typer.Option(help="split after this layer (2-process contestants; default: mlp 4, cnn 2)")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="write bench.json, bench.md and bench.png here")] = None,
    only: Annotated[
        str | None, typer.Option(help="run only these contestants (comma-separated; the baseline always runs)")
    ] = None,
    sg_variants: Annotated[
        str,
        typer.Option(
            help="cheaper SG contestants: r<rank>, k<conv SG kernel>, u<update_every> or a combination, "
            "e.g. r64,u4,r64u4 (mlp) or k1,k1u4 (cnn)"
        ),
    ] = "",
    transport_sizes: Annotated[str, typer.Option(help="transport line message sizes (empty: skip it)")] = DEFAULT_SIZES,
    endpoints: Annotated[str, typer.Option(help="transport line endpoints: ipc,tcp")] = "ipc,tcp",
    link_delay_ms: Annotated[
        str | None,
        typer.Option(help="latency mode: one-way delays in ms, e.g. 0,2,10,50 (dni_dist.bench_latency)"),
    ] = None,
    snapshot_every: Annotated[int, typer.Option(help="steps between learning-curve points")] = 25,
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
        run_latency(delays=delays, rounds=rounds, steps=steps, blocks=counts, cut=cut or bench_runs.CUT,
                    pipelining=pipelining, snapshot_every=snapshot_every, out=out)  # fmt: skip
        return
    try:
        options = Options(
            steps=steps,
            rounds=rounds,
            model=model,
            cut=bench_runs.DEFAULT_CUT.get(model, bench_runs.CUT) if cut is None else cut,
            pipelining=tuple((s, int(m)) for s in schedules.split(",") for m in microbatches.split(",")),
            variants=tuple(v.strip() for v in sg_variants.split(",") if v.strip()),
            only=None if only is None else frozenset(c.strip() for c in only.split(",")),
            snapshot_every=snapshot_every,
            transport_sizes=tuple(parse_size(x) for x in transport_sizes.split(",") if x.strip()),
            endpoints=tuple(e.strip() for e in endpoints.split(",")),
        )
        contestants(options)  # unknown --only names fail here, before anything runs
    except (ValueError, KeyError) as e:
        raise typer.BadParameter(str(e).strip("'")) from None
    run_speed(options, out)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
