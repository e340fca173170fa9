"""The contestants of dni-bench, each run as its own processes and timed over its training loop.

    python -m dni_dist.bench_runs torch-loop 300 1 0 /tmp/t mlp      # internal: what dni-bench starts

Every contestant trains the same model on the same batch stream (the bundled MNIST subset,
batch 128, Adam lr 1e-3, seed 0): the balanced MLP (8 hidden ReLU+BN layers of 512, `mlp`) or
a conv net (4 Conv-BN-ReLU layers of 32/64/64/64 channels, pooling after the first two, a
linear head, a one-conv SG at the cut, `cnn`). Every process builds its modules with
`Topology.build_stages`, as dni_dist itself does, so all contestants start from the same weights.
`delay_ms` >= 0 puts every link between two processes through a `FaultProxy` holding each chunk
that long (dni-launch: `runtime.link_delay_ms`; pipelining: `RelayStore` on gloo's links); -1
runs them direct.
`snapshot_every` > 0 keeps the weights every K steps so `dni_dist.curves.learning_curve`
gives accuracy against wall time for any contestant.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from dni_dist.snapshots import Snapshots

DEPTH, WIDTH, BATCH = 8, 512, 128
CUT = 4  # default cut: after hidden layer 4, four hidden layers per block (block 0 also holds the SG)
MODELS: dict[str, dict[str, Any]] = {
    "mlp": {"kind": "mlp", "depth": DEPTH, "width": WIDTH, "batch_norm": True},
    "cnn": {"kind": "cnn", "depth": 4, "channels": [32, 64, 64, 64], "pool": [1, 2]},
}
DEFAULT_CUT = {"mlp": CUT, "cnn": 2}  # cnn: conv 1-2 | conv 3-4 + head, about equal work
SG_OF = {"mlp": {}, "cnn": {"layers": 0}}  # the conv SG of launch/fashion-cnn.toml

app = typer.Typer(add_completion=False, help=__doc__)


Cut = int | tuple[int, ...]  # after which hidden layer(s) the model is cut: one cut, 2 processes


def cuts_of(cut: Cut) -> tuple[int, ...]:
    return (cut,) if isinstance(cut, int) else tuple(cut)


def even_cuts(blocks: int) -> tuple[int, ...]:
    """Cuts that give each of `blocks` processes DEPTH / blocks hidden layers (2: after layer 4)."""
    if blocks < 2 or DEPTH % blocks:
        raise ValueError(f"{blocks} blocks cannot split {DEPTH} hidden layers evenly; use 2, 4 or 8")
    return tuple(DEPTH // blocks * i for i in range(1, blocks))


def config(
    method: str, steps: int, placement: str, cut: Cut = CUT, model: str = "mlp", threads: int = 1
) -> dict[str, Any]:
    split = (
        {"placement": placement, "cuts": list(cuts_of(cut))} if placement == "explicit" else {"placement": placement}
    )
    return {
        "model": dict(MODELS[model]),
        "split": split,
        "credit": {"method": method},
        "synthetic": dict(SG_OF[model]),
        "data": {"name": "mnist", "subset": True, "batch_size": BATCH},
        "run": {"steps": steps, "seed": 0, "threads": threads},
    }


def stage_modules(cfg: dict[str, Any]) -> list[Any]:
    """The modules of every stage of `cfg`, initialised from its seed exactly as dni_dist does."""
    from dni_dist.data import dataset_shape
    from dni_dist.recipes import config_from_dict
    from dni_dist.topology import Topology

    c = config_from_dict(cfg)
    input_dim, classes = dataset_shape(c.data.name)
    stages = Topology.for_data(c).build_stages(c, input_dim=input_dim, num_classes=classes)
    return [s.module for s in stages]


def env(threads: int = 1) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "CUDA_VISIBLE_DEVICES": ""}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def batches() -> Iterator[tuple[Any, Any]]:
    """The same batch stream every contestant trains on (bundled MNIST subset, seed 0)."""
    from dni_dist.data import BatchStream, load_dataset

    ds = load_dataset("mnist", subset=True)
    return iter(BatchStream(ds.x_train, ds.labels_train, 10, BATCH, seed=0))


def _write_run(out: Path, cfg: dict[str, Any], blocks: int) -> None:
    """A summary.json with what `learning_curve` reads, for a contestant that is not dni-launch."""
    from dni_dist.recipes import config_from_dict

    out.mkdir(parents=True, exist_ok=True)
    summary = {"config": config_from_dict(cfg).to_dict(), "blocks": [{"block": k} for k in range(blocks)]}
    (out / "summary.json").write_text(json.dumps(summary))


def median_reached(values: list[float | None]) -> float | None:
    """Median time to target over the runs that got there (None when fewer than half did)."""
    got = sorted(v for v in values if v is not None)
    return statistics.median(got) if len(got) * 2 > len(values) else None


def write_results(
    out: Path, stem: str, result: dict[str, Any], markdown: Callable[[dict[str, Any]], str],
    plot: Callable[[dict[str, Any], Path], None],
) -> None:  # fmt: skip
    """<out>/<stem>.json (every measurement), <stem>.md (the tables) and <stem>.png."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    (out / f"{stem}.md").write_text(markdown(result))
    plot(result, out / f"{stem}.png")
    print(f"wrote {out / stem}.json, {stem}.md and {stem}.png")


def _last_json(stdout: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return result


def run_torch_single(
    steps: int, threads: int = 1, out: Path | None = None, snapshot_every: int = 0, model: str = "mlp"
) -> float:
    """Plain PyTorch, one process, `threads` intra-op threads; samples/s."""
    if out is not None:
        _write_run(out, config("bp", steps, "none", model=model), blocks=1)
    proc = subprocess.run(
        [sys.executable, "-m", "dni_dist.bench_runs", "torch-loop", str(steps), str(threads), str(snapshot_every),
         str(out or ""), model],
        env=env(threads), capture_output=True, text=True, check=True, timeout=1800,
    )  # fmt: skip
    return float(_last_json(proc.stdout)["sps"])


@app.command("torch-loop")
def torch_loop(
    steps: int, threads: int, snapshot_every: int, out: str, model_name: Annotated[str, typer.Argument()] = "mlp"
) -> None:
    """The plain PyTorch baseline: no stages, no messages."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    (model,) = stage_modules(config("bp", steps, "none", model=model_name))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    stream, snaps = batches(), Snapshots(snapshot_every)
    start = time.perf_counter()
    for step in range(steps):
        x, y = next(stream)
        opt.zero_grad()
        torch.autograd.backward(F.cross_entropy(model(x), y))
        opt.step()
        snaps.take(step, [model])
    print(json.dumps({"sps": steps * BATCH / (time.perf_counter() - start)}))
    if out:
        snaps.write(Path(out), 0)


def run_bp_single(steps: int, out: Path | None = None, snapshot_every: int = 0, model: str = "mlp") -> float:
    """dni_dist's own in-process trainer doing backprop, one thread; samples/s."""
    cfg = config("bp", steps, "none", model=model)
    cfg["runtime"] = {"snapshot_every": snapshot_every}
    if out is not None:
        _write_run(out, cfg, blocks=1)
    code = (
        "import json,sys; from pathlib import Path; from dni_dist import config_from_dict, train; "
        "r = train(config_from_dict(json.loads(sys.argv[1]))); "
        "sys.argv[2] and r.snapshots.write(Path(sys.argv[2]), 0); "
        f"print(json.dumps({{'sps': {steps * BATCH} / r.wall_seconds}}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(cfg), str(out or "")],
        env=env(), capture_output=True, text=True, check=True, timeout=1800,
    )  # fmt: skip
    return float(_last_json(proc.stdout)["sps"])


def run_dni(
    method: str,
    steps: int,
    out: Path,
    cut: Cut,
    *,
    insecure: bool = False,
    sets: dict[str, Any] | None = None,
    model: str = "mlp",
) -> dict[str, Any]:
    """dni-launch, one worker process of 1 thread per block (2 for one cut); its summary.json."""
    cfg = out.with_suffix(".toml")
    c = config(method, steps, "explicit", cut, model=model)
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(
        "\n".join(
            f"[{sec}]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in vals.items()) for sec, vals in c.items()
        )
    )
    values = {key: str(v).lower() if isinstance(v, bool) else str(v) for key, v in (sets or {}).items()}
    extra = [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]
    proc = subprocess.run(
        [sys.executable, "-c", "from dni_dist.cli import launch_main; launch_main()", "--recipe", str(cfg),
         "--blocks", str(len(cuts_of(cut)) + 1), "--gpus", "cpu", "--threads", "1", "--out", str(out), "--no-live",
         *(["--insecure"] if insecure else []), *extra],
        env=env(), capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"dni-launch failed ({proc.returncode}):\n{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}")
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return summary


def run_pipelining(
    schedule: str,
    microbatches: int,
    steps: int,
    out: Path,
    cut: Cut,
    *,
    delay_ms: float = -1,
    snapshot_every: int = 0,
    model: str = "mlp",
) -> float:
    """torch.distributed.pipelining, one gloo process per stage; samples/s (the slowest rank's loop)."""
    ranks = len(cuts_of(cut)) + 1
    _write_run(out, config("bp", steps, "explicit", cut, model=model), blocks=ranks)
    port = free_port()
    procs = []
    for rank in range(ranks):
        cmd = [sys.executable, "-m", "dni_dist.bench_runs", "pp-rank", str(rank), str(port), schedule,
               str(microbatches), str(steps), str(out), ",".join(map(str, cuts_of(cut))),
               "off" if delay_ms < 0 else str(delay_ms),
               str(snapshot_every), model]  # fmt: skip
        procs.append(subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=1800)[0] for p in procs]
    failed = [(r, text) for r, (p, text) in enumerate(zip(procs, outputs, strict=True)) if p.returncode != 0]
    if failed:  # every failed rank's own output: a rank that lost its peer names only the symptom
        raise RuntimeError("".join(f"pipelining rank {r} failed:\n{text[-1500:]}\n" for r, text in failed))
    seconds = max(float(json.loads((out / f"pp-{r}.json").read_text())["seconds"]) for r in range(ranks))
    return steps * BATCH / seconds


@app.command("pp-rank")
def pp_rank(
    rank: int,
    port: int,
    schedule: str,
    microbatches: int,
    steps: int,
    out: Path,
    cut: Annotated[str, typer.Argument(help="comma-separated cuts (hidden layers); one process per stage")],
    delay_ms: Annotated[str, typer.Argument(help="one-way delay of gloo's links, or 'off' (direct)")] = "off",
    snapshot_every: Annotated[int, typer.Argument()] = 0,
    model_name: Annotated[str, typer.Argument()] = "mlp",
) -> None:
    """One rank of the torch.distributed.pipelining contestant."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    from dni_dist.relay_store import RelayStore

    torch.set_num_threads(1)
    cuts = tuple(int(c) for c in cut.split(","))
    world = len(cuts) + 1
    store: Any = getattr(dist, "TCPStore")(  # noqa: B009
        "127.0.0.1", port, world, rank == 0, timeout=timedelta(seconds=120)
    )
    delay_s = None if delay_ms == "off" else float(delay_ms) / 1000
    if delay_s is not None:
        store = RelayStore(store, delay_s)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world)
    module = stage_modules(config("bp", steps, "explicit", cuts, model=model_name))[rank]
    stage = PipelineStage(module, rank, world, torch.device("cpu"))
    kinds = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}
    sched = kinds[schedule](stage, n_microbatches=microbatches, loss_fn=lambda o, y: F.cross_entropy(o, y))
    opt = torch.optim.Adam(module.parameters(), lr=1e-3, fused=True)  # as dni_dist uses
    stream, snaps = batches(), Snapshots(snapshot_every)
    start = time.perf_counter()
    for step in range(steps):
        x, y = next(stream)
        opt.zero_grad()
        if rank == 0:
            sched.step(x)
        elif rank == world - 1:
            sched.step(target=y, losses=[])
        else:
            sched.step()
        opt.step()
        if step == 0 and rank > 0:  # the first step's shape inference fed BatchNorm uninitialised memory
            for bn in (m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)):
                bn.reset_running_stats()  # garbage (NaN, or huge but finite) in the running statistics
        snaps.take(step, [module])
    seconds = time.perf_counter() - start
    (out / f"pp-{rank}.json").write_text(json.dumps({"seconds": seconds}))
    snaps.write(out, rank)
    dist.barrier()
    if isinstance(store, RelayStore):
        store.close(drain_s=2 * (delay_s or 0.0) + 0.5)
    dist.destroy_process_group()


if __name__ == "__main__":
    app()
