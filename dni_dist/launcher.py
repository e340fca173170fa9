"""Plan, spawn and supervise one worker process per block; then write summary.json.

    dni-launch --blocks 4 --gpus cpu --recipe launch/demo.toml --out runs/demo
    dni-launch --blocks 4 --gpus 0,1,2,3 --method sg --steps 2000 --metrics-port 9100

`plan_workers` is a pure function from options to (cmd, env) per block, so what will run can
be inspected and tested without starting anything. `launch` checks the placement first (no
process starts for a placement that cannot work), hosts the TCPStore the workers meet through
and a ROUTER socket they report progress to, spawns them (each with one CUDA_VISIBLE_DEVICES id,
or none on CPU), shows one live row per block (or a progress line every few seconds without a
terminal), restarts a block that dies or hangs alone from its latest checkpoint (up to
`--max-restarts` times per block; docs/reliability.md), and stops the whole run when a block
fails beyond that (showing its log) or on Ctrl-C / SIGTERM (the blocks end at one step and
checkpoint it). `--resume` checks the newest complete checkpoint before any process starts.
`--backend inproc` runs the same config in this process instead (dni_dist/inproc.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
from rich.console import Console
from zmq.auth.thread import ThreadAuthenticator

from dni_dist import keys, manifest
from dni_dist.config import ConfigError, TrainConfig
from dni_dist.inproc import launch_inproc
from dni_dist.keys import RunKeys, check_insecure
from dni_dist.placement import CPU, check_placement, device_of, fit_blocks
from dni_dist.rendezvous import Rendezvous
from dni_dist.summary import summarize
from dni_dist.supervisor import Supervisor, tail
from dni_dist.transport import Curve, secure
from dni_dist.worker.attempts import PeerKeys

log = logging.getLogger(__name__)
STALL_FACTOR = 4  # the run is stuck when every block has waited this many peer timeouts (supervisor.py)


class LaunchError(RuntimeError):
    """The run was started but did not finish: a block failed or wrote no results."""


@dataclass(frozen=True, kw_only=True)
class LaunchOptions:
    """Process and placement facts of a launch (how blocks train is TrainConfig.runtime)."""

    blocks: int
    gpus: tuple[str, ...] = CPU  # "cpu", or one CUDA device id per block (reused round-robin)
    out: Path = Path("runs/latest")
    log_dir: Path | None = None  # default: <out>/logs, one file per block
    backend: str = "zmq"  # zmq | inproc
    resume: bool = False
    metrics_port: int = 0  # base: block i serves on base + i (0 = off)
    metrics_addr: str = "127.0.0.1"
    host: str = "127.0.0.1"  # address workers bind and advertise
    threads: int = 0  # torch threads per worker (0: cores / blocks, at least 1)
    live: bool = True
    stop_timeout_s: float = 30.0
    insecure: bool = False  # plaintext sockets and unsigned rendezvous (loopback only)

    def __post_init__(self) -> None:
        if self.blocks < 1:
            raise ConfigError(f"--blocks: must be >= 1, got {self.blocks}")
        if self.backend not in ("zmq", "inproc"):
            raise ConfigError(f"--backend: must be zmq or inproc, got {self.backend!r}")
        if self.gpus != CPU and not all(g.isdigit() for g in self.gpus):
            raise ConfigError(
                f"--gpus: takes 'cpu' or comma-separated device ids like 0,1,2,3; got {','.join(self.gpus)}"
            )
        if self.metrics_port and not 1024 <= self.metrics_port <= 65535 - self.blocks:
            raise ConfigError(f"--metrics-port {self.metrics_port}: leaves no room for {self.blocks} ports below 65536")
        if self.threads < 0:
            raise ConfigError(f"--threads: must be >= 0, got {self.threads}")
        if self.insecure:
            check_insecure(self.host)

    @property
    def logs(self) -> Path:
        return self.log_dir or self.out / "logs"


@dataclass(frozen=True)
class WorkerPlan:
    block: int
    cmd: list[str]
    env: dict[str, str]
    log_path: Path


def plan_workers(
    opts: LaunchOptions,
    *,
    run_id: str,
    config_json: Path,
    store_port: int,
    control: str,
    base_env: dict[str, str] | None = None,
) -> list[WorkerPlan]:
    """The command line and environment of every worker (pure: nothing is started). Everything
    about how the blocks train travels in `config_json`; the command line holds process facts."""
    env0 = dict(os.environ if base_env is None else base_env)
    threads = opts.threads or max(1, (os.cpu_count() or 1) // opts.blocks)
    plans = []
    for k in range(opts.blocks):
        cmd = [
            sys.executable, "-m", "dni_dist.worker",
            "--block", str(k), "--blocks", str(opts.blocks),
            "--config-json", str(config_json), "--out", str(opts.out), "--run-id", run_id,
            "--metrics-port", str(opts.metrics_port), "--metrics-addr", opts.metrics_addr,
            "--host", opts.host, "--control", control,
        ]  # fmt: skip
        cmd += ["--insecure"] if opts.insecure else ["--keys", str(opts.out / "keys")]
        if opts.resume:
            cmd.append("--resume")
        env = {
            **env0,
            "MASTER_ADDR": opts.host,
            "MASTER_PORT": str(store_port),
            "RANK": str(k),
            "WORLD_SIZE": str(opts.blocks),
            "DNI_RUN_ID": run_id,
            "CUDA_VISIBLE_DEVICES": device_of(opts.gpus, k),
            "OMP_NUM_THREADS": str(threads),
            "PYTHONUNBUFFERED": "1",
        }
        plans.append(WorkerPlan(k, cmd, env, opts.logs / f"block{k}.log"))
    return plans


def check_resume(cfg: TrainConfig, opts: LaunchOptions) -> None:
    """--resume: the newest complete checkpoint must fit this run (CheckpointError says why not);
    incomplete checkpoints after it belong to the abandoned run and are deleted."""
    man = manifest.check_resume(opts.out, cfg, blocks=opts.blocks)
    if man is not None:
        for d in manifest.discard_after(opts.out, man.step):
            log.info("deleted %s: an incomplete checkpoint after the one resumed from (step %d)", d, man.step)


def launch_zmq(cfg: TrainConfig, opts: LaunchOptions, console: Console) -> dict[str, Any]:
    if opts.resume:
        check_resume(cfg, opts)
    run_id = uuid.uuid4().hex[:12]
    opts.out.mkdir(parents=True, exist_ok=True)
    opts.logs.mkdir(parents=True, exist_ok=True)
    config_json = opts.out / "config.json"
    config_json.write_text(json.dumps(cfg.to_dict(), indent=2))
    run_keys = None if opts.insecure else RunKeys.load(keys.generate(opts.out / "keys", opts.blocks), me=keys.LAUNCHER)
    rdv = Rendezvous.host(opts.host, run=run_id, secret=None if run_keys is None else run_keys.run_secret)
    ctx: zmq.Context[Any] = zmq.Context()
    auth = None
    if run_keys is not None:  # only the run's blocks may report or be told to stop
        auth = ThreadAuthenticator(ctx)
        auth.start()
        auth.configure_curve(domain="*", location=str(run_keys.directory))
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    secure(router, None if run_keys is None else Curve(run_keys.public, run_keys.secret))
    router.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted block reuses its identity
    control = f"tcp://{opts.host}:{router.bind_to_random_port(f'tcp://{opts.host}')}"
    plans = plan_workers(opts, run_id=run_id, config_json=config_json, store_port=rdv.port, control=control)
    if opts.metrics_port:
        for p in plans:
            console.print(f"block {p.block} metrics: http://{opts.metrics_addr}:{opts.metrics_port + p.block}/metrics")
    start = time.monotonic()
    procs = []

    def respawn(block: int, cause: str) -> subprocess.Popen[bytes]:
        """The same worker again, resuming from its own latest checkpoint and rejoining the run."""
        PeerKeys.mark_dead(rdv, block)  # nobody may dial the dead incarnation any more
        p = plans[block]
        cmd = [*p.cmd, *([] if "--resume" in p.cmd else ["--resume"]), "--restart-cause", cause]
        with open(p.log_path, "ab") as logf:
            logf.write(f"\n=== dni-launch: block {block} {cause}; restarting it ===\n".encode())
            logf.flush()
            return subprocess.Popen(cmd, env=p.env, stdout=logf, stderr=subprocess.STDOUT)

    try:
        for p in plans:
            with open(p.log_path, "wb") as logf:
                procs.append(subprocess.Popen(p.cmd, env=p.env, stdout=logf, stderr=subprocess.STDOUT))
        rt = cfg.runtime
        sup = Supervisor(
            plans=[(p.block, p.log_path) for p in plans], procs=procs, router=router, steps=cfg.run.steps,
            console=console, live=opts.live, stop_timeout_s=opts.stop_timeout_s, respawn=respawn,
            max_restarts=rt.max_restarts, peer_timeout_s=rt.peer_timeout_s, start_timeout_s=rt.start_timeout_s,
            stall_after_s=STALL_FACTOR * rt.peer_timeout_s,
        )  # fmt: skip
        failed = sup.run()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        if auth is not None:
            auth.stop()
        ctx.destroy(linger=0)
    wall = time.monotonic() - start
    if sup.stalled is not None:
        raise LaunchError(f"the run was stopped because it is stuck: {sup.stalled}. Each block's log is in "
                          f"{opts.logs}; the latest complete checkpoint resumes with --resume")  # fmt: skip
    if failed is not None:
        p = plans[failed]
        raise LaunchError(
            f"block {failed} failed (exit {procs[failed].returncode}); last lines of {p.log_path}:\n{tail(p.log_path)}"
        )
    for p, proc in zip(plans, procs):
        if proc.returncode != 0 and not sup.stop_requested:
            raise LaunchError(f"block {p.block} exited with {proc.returncode}; see {p.log_path}:\n{tail(p.log_path)}")
    stats = []
    for p in plans:
        path = opts.out / "blocks" / f"block{p.block}.json"
        if not path.is_file():
            raise LaunchError(f"block {p.block} wrote no stats ({path}); see {p.log_path}:\n{tail(p.log_path)}")
        stats.append(json.loads(path.read_text()))
    status = "stopped" if sup.stop_requested or any(s["status"] == "stopped" for s in stats) else "finished"
    return summarize(cfg, stats, out=opts.out, blocks=opts.blocks, backend="zmq", wall_seconds=wall, status=status,
                     run_id=run_id, restarts=sup.restarts)  # fmt: skip


def launch(cfg: TrainConfig, opts: LaunchOptions, console: Console | None = None) -> dict[str, Any]:
    """Check the placement, then train `cfg` on `opts.blocks` blocks; returns summary.json's content.
    ConfigError (CheckpointError for --resume) before anything starts; LaunchError when a started
    run fails."""
    console = console or Console(stderr=True)
    check_placement(opts.gpus, opts.blocks)
    cfg = fit_blocks(cfg, opts.blocks)
    if opts.gpus != CPU and not cfg.run.device.startswith("cuda"):
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, device="cuda:0"))
    if opts.backend == "inproc":
        return launch_inproc(cfg, out=opts.out, blocks=opts.blocks, threads=opts.threads)
    return launch_zmq(cfg, opts, console)
