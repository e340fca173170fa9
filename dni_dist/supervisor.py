"""Watch a run's worker processes: progress from their reports, a live table or progress lines,
stop on Ctrl-C / SIGTERM or when a block fails.

    sup = Supervisor(plans=[(0, log0), (1, log1)], procs=procs, router=router, steps=500,
                     console=console, live=False)
    failed = sup.run()     # None, or the block that exited non-zero first
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import msgpack
import zmq
from rich.console import Console
from rich.live import Live
from rich.table import Table

log = logging.getLogger(__name__)

LINE_EVERY_S = 5.0  # without a terminal: one progress line this often


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


@dataclass
class Supervisor:
    plans: list[tuple[int, Path]]  # (block, log path)
    procs: list[subprocess.Popen[bytes]]
    router: zmq.Socket[Any]
    steps: int
    console: Console
    live: bool = True
    stop_timeout_s: float = 30.0
    progress: dict[int, dict[str, Any]] = field(default_factory=dict)
    stop_requested: int = 0
    stop_sent_at: float | None = None
    started: float = field(default_factory=time.monotonic)

    def request_stop(self, signum: int, _frame: FrameType | None) -> None:
        self.stop_requested += 1
        log.info("launcher got %s: stopping every block (checkpoints are written)", signal.Signals(signum).name)

    def send_stop(self) -> None:
        for block, _ in self.plans:
            with contextlib.suppress(zmq.ZMQError):  # gone or not connected: the signal below reaches it
                self.router.send_multipart([f"block-{block}".encode(), msgpack.packb({"type": "stop"})], zmq.NOBLOCK)
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

    def run(self) -> int | None:
        """Supervise until every process has exited; the first block that failed, if any."""
        previous = {s: signal.signal(s, self.request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        failed: int | None = None
        live = Live(self.table(), console=self.console, refresh_per_second=4, transient=False) if self.live else None
        last_line = 0.0
        try:
            if live is not None:
                live.start()
            while any(proc.poll() is None for proc in self.procs):
                self.drain_progress(100)
                for (block, _), proc in zip(self.plans, self.procs):
                    rc = proc.poll()
                    if rc not in (None, 0) and failed is None and self.stop_sent_at is None:
                        failed = block
                        log.error("block %d exited with %s; stopping the run", block, rc)
                        self.send_stop()
                if self.stop_requested and self.stop_sent_at is None:
                    self.send_stop()
                if self.stop_sent_at is not None and (
                    time.monotonic() - self.stop_sent_at > self.stop_timeout_s or self.stop_requested > 1
                ):
                    for proc in self.procs:
                        if proc.poll() is None:
                            proc.kill()
                if live is not None:
                    live.update(self.table())
                elif time.monotonic() - last_line > LINE_EVERY_S and (self.progress or last_line == 0.0):
                    last_line = time.monotonic()
                    self.console.print(self.line())
            self.drain_progress(0)
        finally:
            if live is not None:
                live.update(self.table())
                live.stop()
            for s, h in previous.items():
                signal.signal(s, h)
        return failed

    def line(self) -> str:
        running = sum(proc.poll() is None for proc in self.procs)
        blocks = [b for b, _ in self.plans]
        return progress_line(self.progress, blocks, steps=self.steps, elapsed=time.monotonic() - self.started,
                             running=running)  # fmt: skip

    def table(self) -> Table:
        t = Table(title=f"dni-launch: {len(self.plans)} blocks", expand=False)
        for col in ("block", "step", "samples/s", "lag (p50)", "queue", "SG loss", "loss", "acc", "state"):
            t.add_column(col, justify="right")
        for (block, _), proc in zip(self.plans, self.procs):
            g = self.progress.get(block, {})
            rc = proc.poll()
            state = g.get("status") or ("running" if rc is None else f"exit {rc}")

            def f(key: str, fmt: str, g: dict[str, Any] = g) -> str:
                v = g.get(key)
                return "-" if v is None else format(v, fmt)

            t.add_row(
                str(block), f"{g.get('step', -1) + 1}/{self.steps}", f("samples_per_second", ".0f"), f("lag", ".1f"),
                f("queue", "d"), f("sg_loss", ".4f"), f("loss", ".4f"), f("accuracy", ".3f"), state,
            )  # fmt: skip
        return t


def progress_line(
    progress: dict[int, dict[str, Any]], blocks: list[int], *, steps: int, elapsed: float, running: int
) -> str:
    """One progress line for logs (no terminal): the last block's step, loss and accuracy, and
    every block's speed and lag; before the first report, what the blocks are doing."""
    if not progress:
        return f"[{elapsed:5.0f}s] {running}/{len(blocks)} blocks starting (loading data, rendezvous)"
    last = progress.get(blocks[-1], {})
    step = last.get("step", -1) + 1
    parts = [f"[{elapsed:5.0f}s] step {step}/{steps} ({100 * step / max(steps, 1):.0f}%)"]
    if last.get("loss") is not None:
        parts.append(f"loss {last['loss']:.4f} acc {last['accuracy']:.3f}")
    seen = [b for b in blocks if b in progress]
    parts.append("samples/s per block " + "/".join(f"{progress[b].get('samples_per_second', 0):.0f}" for b in seen))
    parts.append("lag p50 " + "/".join(f"{progress[b].get('lag', 0):.0f}" for b in seen))
    parts.append(f"{running}/{len(blocks)} running")
    return "  ".join(parts)
