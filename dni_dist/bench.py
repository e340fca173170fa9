"""dni-bench: training throughput of decoupled (SG) blocks against their peers, side by side.

    dni-bench --rounds 3 --steps 300 --out docs/bench        # about 4 minutes on 2 cores

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
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

DEPTH, WIDTH, BATCH = 8, 512, 128
CUT = 4  # default cut: after hidden layer 4, four hidden layers per block (block 0 also holds the SG)

app = typer.Typer(add_completion=False, help=__doc__)
console = Console(stderr=True)


def _config(method: str, steps: int, placement: str, cut: int = CUT) -> dict[str, Any]:
    return {
        "model": {"kind": "mlp", "depth": DEPTH, "width": WIDTH, "batch_norm": True},
        "split": {"placement": placement, "cuts": [cut]} if placement == "explicit" else {"placement": placement},
        "credit": {"method": method},
        "data": {"name": "mnist", "subset": True, "batch_size": BATCH},
        "run": {"steps": steps, "seed": 0, "threads": 1},
    }


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _batches() -> Iterator[tuple[Any, Any]]:
    """The same batch stream every contestant trains on (bundled MNIST subset, seed 0)."""
    from dni_dist.data import BatchStream, load_dataset

    ds = load_dataset("mnist", subset=True)
    return iter(BatchStream(ds.x_train, ds.labels_train, 10, BATCH, seed=0))


def run_torch_single(steps: int) -> float:
    out = subprocess.run(
        [sys.executable, "-m", "dni_dist.bench", "torch-loop", str(steps)],
        env=_env(), capture_output=True, text=True, check=True, timeout=1800,
    )  # fmt: skip
    return float(json.loads(out.stdout.strip().splitlines()[-1])["sps"])


@app.command("torch-loop", hidden=True)
def torch_loop(steps: int) -> None:
    """The plain PyTorch baseline (internal): no stages, no messages, one thread."""
    import torch
    import torch.nn.functional as F

    from dni_dist.config import ModelConfig
    from dni_dist.models import build_layers

    torch.set_num_threads(1)
    layers, _ = build_layers(ModelConfig(kind="mlp", depth=DEPTH, width=WIDTH), input_dim=784, num_classes=10, seed=0)
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    batches = _batches()
    start = time.perf_counter()
    for _ in range(steps):
        x, y = next(batches)
        opt.zero_grad()
        torch.autograd.backward(F.cross_entropy(model(x), y))
        opt.step()
    print(json.dumps({"sps": steps * BATCH / (time.perf_counter() - start)}))


def run_bp_single(steps: int) -> float:
    code = (
        "import json,sys; from dni_dist import config_from_dict, train; "
        "r = train(config_from_dict(json.loads(sys.argv[1]))); "
        f"print(json.dumps({{'sps': {steps * BATCH} / r.wall_seconds}}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(_config("bp", steps, "none"))],
        env=_env(), capture_output=True, text=True, check=True, timeout=1800,
    )  # fmt: skip
    return float(json.loads(out.stdout.strip().splitlines()[-1])["sps"])


def run_dni(method: str, steps: int, workdir: Path, cut: int, insecure: bool = False) -> float:
    out = workdir / f"dni-{method}{'-plain' if insecure else ''}"
    cfg = workdir / f"dni-{method}.toml"
    c = _config(method, steps, "explicit", cut)
    cfg.write_text(
        "\n".join(
            f"[{sec}]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in vals.items()) for sec, vals in c.items()
        )
    )
    subprocess.run(
        [sys.executable, "-c", "from dni_dist.cli import launch_main; launch_main()", "--recipe", str(cfg),
         "--blocks", "2", "--gpus", "cpu", "--threads", "1", "--out", str(out), "--no-live",
         *(["--insecure"] if insecure else [])],
        env=_env(), capture_output=True, text=True, check=True, timeout=1800,
    )  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    return float(summary["samples_per_second"])


def run_pipelining(schedule: str, microbatches: int, steps: int, workdir: Path, cut: int) -> float:
    port = _free_port()
    procs = []
    for rank in (0, 1):
        cmd = [sys.executable, "-m", "dni_dist.bench", "pp-rank", str(rank), str(port), schedule, str(microbatches),
               str(steps), str(workdir / f"pp-{rank}.json"), str(cut)]  # fmt: skip
        procs.append(subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for p in procs:
        out, _ = p.communicate(timeout=1800)
        if p.returncode != 0:
            raise RuntimeError(f"pipelining rank failed:\n{out[-2000:]}")
    seconds = max(float(json.loads((workdir / f"pp-{r}.json").read_text())["seconds"]) for r in (0, 1))
    return steps * BATCH / seconds


@app.command("pp-rank", hidden=True)
def pp_rank(rank: int, port: int, schedule: str, microbatches: int, steps: int, out: Path, cut: int) -> None:
    """One rank of the torch.distributed.pipelining contestant (internal)."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    from dni_dist.config import ModelConfig
    from dni_dist.models import build_layers

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2, init_method=f"tcp://127.0.0.1:{port}")
    layers, _ = build_layers(ModelConfig(kind="mlp", depth=DEPTH, width=WIDTH), input_dim=784, num_classes=10, seed=0)
    module = torch.nn.Sequential(*(layers[:cut] if rank == 0 else layers[cut:]))
    stage = PipelineStage(module, rank, 2, torch.device("cpu"))
    kinds = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}
    sched = kinds[schedule](stage, n_microbatches=microbatches, loss_fn=lambda o, y: F.cross_entropy(o, y))
    opt = torch.optim.Adam(module.parameters(), lr=1e-3, fused=True)  # as dni_dist uses
    batches = _batches()
    start = time.perf_counter()
    for _ in range(steps):
        x, y = next(batches)
        opt.zero_grad()
        if rank == 0:
            sched.step(x)
        else:
            sched.step(target=y, losses=[])
        opt.step()
    seconds = time.perf_counter() - start
    out.write_text(json.dumps({"seconds": seconds}))
    dist.destroy_process_group()


@app.command("run")
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
) -> None:
    """Run the comparison and print the table."""
    contestants: dict[str, Any] = {
        "torch-1proc-1thread": lambda w: run_torch_single(steps),
        "bp-1proc-1thread": lambda w: run_bp_single(steps),
    }
    contestants["dni-sg-2proc"] = lambda w: run_dni("sg", steps, w, cut)
    contestants["dni-sg-2proc-plain"] = lambda w: run_dni("sg", steps, w, cut, insecure=True)
    contestants["dni-bp-2proc"] = lambda w: run_dni("bp", steps, w, cut)
    for s in schedules.split(","):
        for m in microbatches.split(","):
            contestants[f"pp-{s}-m{m}"] = lambda w, s=s, m=int(m): run_pipelining(s, m, steps, w, cut)
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
    if len(sys.argv) > 1 and sys.argv[1] in ("pp-rank", "torch-loop"):
        app()
    else:
        sys.argv.insert(1, "run")
        app()


if __name__ == "__main__":
    main()
