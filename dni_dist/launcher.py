"""Plan, spawn and supervise one worker process per block; then write summary.json.

    dni-launch --blocks 4 --gpus cpu --recipe launch/demo.toml --out runs/demo
    dni-launch --blocks 4 --gpus 0,1,2,3 --method sg --steps 2000 --metrics-port 9100

`plan_workers` is a pure function from options to (cmd, env) per block, so what will run can
be inspected and tested without starting anything. `launch` hosts the TCPStore the workers
meet through and a ROUTER socket they report progress to, spawns them (each with one
CUDA_VISIBLE_DEVICES id, or none on CPU), shows one live row per block, and stops the whole
run when one block fails (showing that block's log) or on Ctrl-C / SIGTERM (every block
checkpoints first). `--backend inproc` runs the same config in this process instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import msgpack
import torch
import zmq
from rich.console import Console
from rich.live import Live
from rich.table import Table

from dni_dist import checkpoint
from dni_dist.config import TrainConfig
from dni_dist.data import load_dataset
from dni_dist.models import assemble
from dni_dist.rendezvous import Rendezvous
from dni_dist.topology import Topology
from dni_dist.trainer import evaluate, train
from dni_dist.worker import assign_blocks, percentiles

log = logging.getLogger(__name__)


class LaunchError(RuntimeError):
    pass


@dataclass(frozen=True, kw_only=True)
class LaunchOptions:
    blocks: int
    gpus: tuple[str, ...] = ("cpu",)  # "cpu", or one CUDA device id per block (reused round-robin)
    out: Path = Path("runs/latest")
    log_dir: Path | None = None  # default: <out>/logs, one file per block
    backend: str = "zmq"  # zmq | inproc
    lockstep: bool = False
    max_inflight: int = 8
    overflow: str = "block"
    target_timeout_s: float = 0.0
    checkpoint_every: int = 0
    resume: bool = False
    metrics_port: int = 0  # base: block i serves on base + i (0 = off)
    metrics_addr: str = "127.0.0.1"
    host: str = "127.0.0.1"  # address workers bind and advertise
    threads: int = 0  # torch threads per worker (0: cores / blocks, at least 1)
    live: bool = True
    stop_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.blocks < 1:
            raise LaunchError(f"--blocks must be >= 1, got {self.blocks}")
        if self.backend not in ("zmq", "inproc"):
            raise LaunchError(f"--backend must be zmq or inproc, got {self.backend!r}")
        if self.gpus != ("cpu",) and not all(g.isdigit() for g in self.gpus):
            raise LaunchError(
                f"--gpus takes 'cpu' or comma-separated device ids like 0,1,2,3; got {','.join(self.gpus)}"
            )
        if self.metrics_port and not 1024 <= self.metrics_port <= 65535 - self.blocks:
            raise LaunchError(f"--metrics-port {self.metrics_port} leaves no room for {self.blocks} ports below 65536")

    @property
    def logs(self) -> Path:
        return self.log_dir or self.out / "logs"


@dataclass(frozen=True)
class WorkerPlan:
    block: int
    cmd: list[str]
    env: dict[str, str]
    log_path: Path


def parse_gpus(value: str) -> tuple[str, ...]:
    value = value.strip()
    return ("cpu",) if value == "cpu" else tuple(v.strip() for v in value.split(",") if v.strip())


def plan_workers(
    opts: LaunchOptions,
    *,
    run_id: str,
    config_json: Path,
    store_port: int,
    control: str,
    base_env: dict[str, str] | None = None,
) -> list[WorkerPlan]:
    """The command line and environment of every worker (pure: nothing is started)."""
    env0 = dict(os.environ if base_env is None else base_env)
    threads = opts.threads or max(1, (os.cpu_count() or 1) // opts.blocks)
    plans = []
    for k in range(opts.blocks):
        cmd = [
            sys.executable, "-m", "dni_dist.worker",
            "--block", str(k), "--blocks", str(opts.blocks),
            "--config-json", str(config_json), "--out", str(opts.out), "--run-id", run_id,
            "--max-inflight", str(opts.max_inflight), "--overflow", opts.overflow,
            "--checkpoint-every", str(opts.checkpoint_every), "--target-timeout", str(opts.target_timeout_s),
            "--metrics-port", str(opts.metrics_port), "--metrics-addr", opts.metrics_addr,
            "--host", opts.host, "--control", control,
        ]  # fmt: skip
        if opts.lockstep:
            cmd.append("--lockstep")
        if opts.resume:
            cmd.append("--resume")
        env = {
            **env0,
            "MASTER_ADDR": opts.host,
            "MASTER_PORT": str(store_port),
            "RANK": str(k),
            "WORLD_SIZE": str(opts.blocks),
            "DNI_RUN_ID": run_id,
            "CUDA_VISIBLE_DEVICES": "" if opts.gpus == ("cpu",) else opts.gpus[k % len(opts.gpus)],
            "OMP_NUM_THREADS": str(threads),
            "PYTHONUNBUFFERED": "1",
        }
        plans.append(WorkerPlan(k, cmd, env, opts.logs / f"block{k}.log"))
    return plans


def fit_blocks(cfg: TrainConfig, blocks: int) -> TrainConfig:
    """A config with at least `blocks` stages: a split with fewer becomes an even split."""
    import dataclasses

    from dni_dist.config import SplitConfig

    stages = len(cfg.split.resolve(cfg.model.num_layers)) + 1
    if stages >= blocks:
        return cfg
    if blocks > cfg.model.num_layers:
        raise LaunchError(
            f"--blocks {blocks} needs a model with at least {blocks} layers; this one has {cfg.model.num_layers} "
            "(raise --depth)"
        )
    log.info(
        "split %s gives %d stages; cutting evenly into %d for --blocks %d", cfg.split.placement, stages, blocks, blocks
    )
    return dataclasses.replace(cfg, split=SplitConfig(placement="even", stages=blocks))


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


@dataclass
class _Supervisor:
    plans: list[WorkerPlan]
    procs: list[subprocess.Popen[bytes]]
    router: zmq.Socket[Any]
    progress: dict[int, dict[str, Any]] = field(default_factory=dict)
    stop_requested: int = 0
    stop_sent_at: float | None = None

    def request_stop(self, signum: int, _frame: FrameType | None) -> None:
        self.stop_requested += 1
        log.info("launcher got %s: stopping every block (checkpoints are written)", signal.Signals(signum).name)

    def send_stop(self) -> None:
        for p in self.plans:
            with contextlib.suppress(zmq.ZMQError):  # gone or not connected: the signal below reaches it
                self.router.send_multipart([f"block-{p.block}".encode(), msgpack.packb({"type": "stop"})], zmq.NOBLOCK)
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        self.stop_sent_at = time.monotonic()

    def drain_progress(self, timeout_ms: int) -> None:
        if not self.router.poll(timeout_ms):
            return
        while self.router.poll(0):
            frames = self.router.recv_multipart()
            if len(frames) != 2:
                continue
            try:
                msg = msgpack.unpackb(frames[1], raw=False, max_str_len=256, max_map_len=64, max_array_len=64)
            except Exception:
                continue
            if isinstance(msg, dict) and isinstance(msg.get("block"), int):
                self.progress[msg["block"]] = msg

    def table(self, steps: int) -> Table:
        t = Table(title=f"dni-launch: {len(self.plans)} blocks", expand=False)
        for col in ("block", "step", "samples/s", "lag (p50)", "queue", "SG loss", "loss", "acc", "state"):
            t.add_column(col, justify="right")
        for p, proc in zip(self.plans, self.procs):
            g = self.progress.get(p.block, {})
            rc = proc.poll()
            state = g.get("status") or ("running" if rc is None else f"exit {rc}")

            def f(key: str, fmt: str, g: dict[str, Any] = g) -> str:
                v = g.get(key)
                return "-" if v is None else format(v, fmt)

            t.add_row(
                str(p.block), f"{g.get('step', -1) + 1}/{steps}", f("samples_per_second", ".0f"), f("lag", ".1f"),
                f("queue", "d"), f("sg_loss", ".4f"), f("loss", ".4f"), f("accuracy", ".3f"), state,
            )  # fmt: skip
        return t


def launch_zmq(cfg: TrainConfig, opts: LaunchOptions, console: Console) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:12]
    opts.out.mkdir(parents=True, exist_ok=True)
    opts.logs.mkdir(parents=True, exist_ok=True)
    config_json = opts.out / "config.json"
    config_json.write_text(json.dumps(cfg.to_dict(), indent=2))
    rdv = Rendezvous.host(opts.host, run=run_id)
    ctx: zmq.Context[Any] = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    control = f"tcp://{opts.host}:{router.bind_to_random_port(f'tcp://{opts.host}')}"
    plans = plan_workers(opts, run_id=run_id, config_json=config_json, store_port=rdv.port, control=control)
    if opts.metrics_port:
        for p in plans:
            console.print(f"block {p.block} metrics: http://{opts.metrics_addr}:{opts.metrics_port + p.block}/metrics")
    start = time.monotonic()
    procs = []
    for p in plans:
        with open(p.log_path, "wb") as logf:
            procs.append(subprocess.Popen(p.cmd, env=p.env, stdout=logf, stderr=subprocess.STDOUT))
    sup = _Supervisor(plans, procs, router)
    previous = {s: signal.signal(s, sup.request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    failed: int | None = None
    live = Live(sup.table(cfg.run.steps), console=console, refresh_per_second=4, transient=False) if opts.live else None
    last_line = 0.0
    try:
        if live is not None:
            live.start()
        while any(proc.poll() is None for proc in procs):
            sup.drain_progress(100)
            for p, proc in zip(plans, procs):
                rc = proc.poll()
                if rc not in (None, 0) and failed is None and sup.stop_sent_at is None:
                    failed = p.block
                    log.error("block %d exited with %s; stopping the run", p.block, rc)
                    sup.send_stop()
            if sup.stop_requested and sup.stop_sent_at is None:
                sup.send_stop()
            if sup.stop_sent_at is not None and (
                time.monotonic() - sup.stop_sent_at > opts.stop_timeout_s or sup.stop_requested > 1
            ):
                for proc in procs:
                    if proc.poll() is None:
                        proc.kill()
            if live is not None:
                live.update(sup.table(cfg.run.steps))
            elif time.monotonic() - last_line > 5:
                last_line = time.monotonic()
                g = sup.progress.get(len(plans) - 1, {})
                console.print(f"step {g.get('step', -1) + 1}/{cfg.run.steps} loss {g.get('loss')}")
        sup.drain_progress(0)
    finally:
        if live is not None:
            live.update(sup.table(cfg.run.steps))
            live.stop()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for s, h in previous.items():
            signal.signal(s, h)
        ctx.destroy(linger=0)
    wall = time.monotonic() - start
    if failed is not None:
        p = plans[failed]
        raise LaunchError(
            f"block {failed} failed (exit {procs[failed].returncode}); last lines of {p.log_path}:\n{_tail(p.log_path)}"
        )
    for p, proc in zip(plans, procs):
        if proc.returncode != 0 and not sup.stop_requested:
            raise LaunchError(f"block {p.block} exited with {proc.returncode}; see {p.log_path}:\n{_tail(p.log_path)}")
    stats = []
    for p in plans:
        path = opts.out / "blocks" / f"block{p.block}.json"
        if not path.is_file():
            raise LaunchError(f"block {p.block} wrote no stats ({path}); see {p.log_path}:\n{_tail(p.log_path)}")
        stats.append(json.loads(path.read_text()))
    status = "stopped" if sup.stop_requested or any(s["status"] == "stopped" for s in stats) else "finished"
    return summarize(cfg, opts, stats, wall_seconds=wall, status=status, run_id=run_id)


def evaluate_checkpoints(cfg: TrainConfig, out: Path, blocks: int) -> tuple[float, float, str]:
    """Assemble the model from every block's checkpoint and evaluate it on the test split."""
    ds = load_dataset(cfg.data.name, data_dir=cfg.data.data_dir, download=cfg.data.download,
                      mirror=cfg.data.mirror, subset=cfg.data.subset)  # fmt: skip
    topo = Topology.from_config(cfg, input_dim=ds.input_dim, num_classes=ds.num_classes)
    stages = topo.build_stages(cfg, input_dim=ds.input_dim, num_classes=ds.num_classes)
    for k, (first, last) in enumerate(assign_blocks(topo.num_stages, blocks)):
        state = checkpoint.load(checkpoint.block_path(out, k))
        for stage, s in zip(stages[first : last + 1], state["stages"]):
            stage.load_state_dict(s)
    point = evaluate(assemble([s.module for s in stages]), ds.x_test, ds.y_test, cfg.model.loss)  # type: ignore[misc]
    return point.loss, point.accuracy, ds.source


def summarize(
    cfg: TrainConfig, opts: LaunchOptions, stats: list[dict[str, Any]], *, wall_seconds: float, status: str, run_id: str
) -> dict[str, Any]:
    test_loss, test_acc, source = evaluate_checkpoints(cfg, opts.out, opts.blocks)
    last = stats[-1]
    train_seconds = max(s["wall_seconds"] for s in stats)
    interfaces = [i for s in stats for i in s["interfaces"]]
    summary = {
        "backend": opts.backend,
        "lockstep": opts.lockstep,
        "run_id": run_id,
        "status": status,
        "dataset": source,
        "wall_seconds": wall_seconds,
        "train_seconds": train_seconds,
        "samples_per_second": last["samples"] / max(train_seconds, 1e-9),
        "steps": last["steps"],
        "final": {"test_loss": test_loss, "test_accuracy": test_acc, "train_loss": last["train_loss"]},
        "blocks": stats,
        "locking": [
            {
                "stage": i["stage"],
                "method": i["method"],
                "update_locked": i["update_waits"].get("gradient", 0) + i["update_waits"].get("output_error", 0) > 0,
                "backward_locked": i["update_waits"].get("gradient", 0) > 0,
                "direct_error": i["update_waits"].get("output_error", 0) > 0,
            }
            for i in interfaces
        ],
        "config": cfg.to_dict(),
    }
    (opts.out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def launch_inproc(cfg: TrainConfig, opts: LaunchOptions, console: Console) -> dict[str, Any]:
    """The same config in this process (the reference schedule), written out like a zmq run."""
    opts.out.mkdir(parents=True, exist_ok=True)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    start = time.monotonic()
    result = train(cfg)
    wall = time.monotonic() - start
    stats = []
    for k, (first, last) in enumerate(assign_blocks(result.topology.num_stages, opts.blocks)):
        block_stages = result.stages[first : last + 1]
        checkpoint.save(
            checkpoint.block_path(opts.out, k),
            {"block": k, "first": first, "last": last, "stages": [s.state_dict() for s in block_stages],
             "steps": cfg.run.steps, "samples": result.samples, "restarts": 0, "config": json.dumps(cfg.to_dict())},
        )  # fmt: skip
        update_waits: Counter[str] = Counter()
        for s in block_stages:
            update_waits.update(s.stats.waits)
        train_stats = block_stages[-1].stats.train
        stats.append(
            {
                "block": k,
                "stages": [first, last],
                "status": "finished",
                "steps": cfg.run.steps,
                "samples": result.samples,
                "wall_seconds": result.wall_seconds,  # the training loop, as for zmq blocks
                "lag_steps": percentiles([float(r.steps) for s in block_stages for r in s.stats.lags]),
                "lag_seconds": percentiles([r.seconds for s in block_stages for r in s.stats.lags]),
                "waits": {},  # wall-clock waits exist only between processes (--backend zmq)
                "update_waits": dict(update_waits),
                "interfaces": [
                    {"stage": s.spec.index, "method": s.spec.out_method, "update_waits": dict(s.stats.waits)}
                    for s in block_stages
                    if s.spec.out_method is not None
                ],
                "rejected": {},
                "dropped": {},
                "restarts": 0,
                "sg_loss": next((s.stats.sg[-1].loss for s in reversed(block_stages) if s.stats.sg), None),
                "train_loss": train_stats[-1][1] if train_stats else None,
                "train_accuracy": train_stats[-1][2] if train_stats else None,
            }
        )
    (opts.out / "blocks").mkdir(exist_ok=True)
    for entry in stats:
        (opts.out / "blocks" / f"block{entry['block']}.json").write_text(json.dumps(entry, indent=2))
    return summarize(cfg, opts, stats, wall_seconds=wall, status="finished", run_id="inproc")


def launch(cfg: TrainConfig, opts: LaunchOptions, console: Console | None = None) -> dict[str, Any]:
    console = console or Console(stderr=True)
    cfg = fit_blocks(cfg, opts.blocks)
    if opts.gpus != ("cpu",) and not cfg.run.device.startswith("cuda"):
        import dataclasses

        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, device="cuda:0"))
    assign_blocks(len(cfg.split.resolve(cfg.model.num_layers)) + 1, opts.blocks)  # fail early, with the fix
    if opts.backend == "inproc":
        return launch_inproc(cfg, opts, console)
    return launch_zmq(cfg, opts, console)
