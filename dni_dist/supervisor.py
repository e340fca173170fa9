"""Watch a run's worker processes: progress from their reports, a live table or progress lines,
restart a block that died or hung, stop on Ctrl-C / SIGTERM or when a block is beyond restarting.

    sup = Supervisor(plans=[(0, log0), (1, log1)], procs=procs, router=router, steps=500,
                     console=console, live=False, respawn=spawn, max_restarts=3, peer_timeout_s=15,
                     start_timeout_s=120, stall_after_s=60)
    failed = sup.run()     # None, or the block that failed for good
    sup.restarts           # one entry per restart: block, attempt, cause, exit code, pids, when

[Note: liveness]
Every worker reports from its loop every `runtime.progress_every_s` (0.5 s): that report is its
heartbeat (a report carries the sender's pid, so a dead incarnation's late report is not taken
for the new one's). A block is declared hung and SIGKILLed when its heartbeat stops for
`runtime.peer_timeout_s` (SIGSTOP, a deadlock, a step that never returns), or when a process
has not reported at all `runtime.start_timeout_s` after it was started (stuck before its loop).
Like a block that exits non-zero or is killed, it is restarted alone (`respawn`) until it has
been restarted `max_restarts` times; one failure more stops the run. The other blocks keep their
processes: they re-dial the new incarnation through the rendezvous (dni_dist.worker.rejoin).

A block that reports but waits (for an activation, a gradient, the end) is not hung: it waits
for a neighbour, and the neighbour is the one watched. But when every running block has reported
and every one has been waiting for `stall_after_s` (4 x peer_timeout_s under dni-launch), the
run as a whole is stuck (a message lost for good, a bug): it is stopped, with an error that says
what each block waits for, rather than left running forever; its checkpoints allow --resume.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import time
from collections.abc import Callable
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
    respawn: Callable[[int, str], subprocess.Popen[bytes]] | None = None  # (block, cause) -> new process
    max_restarts: int = 0
    peer_timeout_s: float = 15.0
    start_timeout_s: float = 120.0
    stall_after_s: float = 60.0
    progress: dict[int, dict[str, Any]] = field(default_factory=dict)
    stop_requested: int = 0
    stop_sent_at: float | None = None
    started: float = field(default_factory=time.monotonic)
    restarts: list[dict[str, Any]] = field(default_factory=list)
    heard: dict[int, float] = field(default_factory=dict)  # block -> last report of its current process
    hung: set[int] = field(default_factory=set)  # blocks SIGKILLed for silence, not yet restarted
    spawned: dict[int, float] = field(default_factory=dict)  # block -> start of its current process
    stalled: str | None = None  # why the run was stopped as stuck (see [Note: liveness])

    def __post_init__(self) -> None:
        self.spawned = {block: self.started for block in range(len(self.procs))}

    def request_stop(self, signum: int, _frame: FrameType | None) -> None:
        self.stop_requested += 1
        log.info("launcher got %s: stopping every block (checkpoints are written)", signal.Signals(signum).name)

    def send_stop(self, *, failed: bool = False) -> None:
        """Stop every block: at a consistent final cut, or at once when the run `failed` (a block
        is gone for good or the run is stuck: no cut can be taken; the last complete one stays)."""
        stop = msgpack.packb({"type": "stop", "now": failed})
        for block, _ in self.plans:
            with contextlib.suppress(zmq.ZMQError):  # gone or not connected: the signal below reaches it
                self.router.send_multipart([f"block-{block}".encode(), stop], zmq.NOBLOCK)
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
            block = msg.get("block") if isinstance(msg, dict) else None
            if not isinstance(block, int) or not 0 <= block < len(self.procs):
                continue
            if msg.get("pid") not in (None, self.procs[block].pid):
                continue  # a late report of a dead incarnation
            self.progress[block] = msg
            self.heard[block] = time.monotonic()

    def restarts_of(self, block: int) -> int:
        return sum(r["block"] == block for r in self.restarts)

    def check_liveness(self) -> None:
        """SIGKILL a block whose heartbeat stopped for peer_timeout_s, or that never reported within
        start_timeout_s of its start (it is then restarted)."""
        now = time.monotonic()
        for block, proc in enumerate(self.procs):
            if proc.poll() is not None or block in self.hung:
                continue
            last = self.heard.get(block)
            if last is None and now - self.spawned[block] > self.start_timeout_s:
                log.error("block %d is hung: no report %.1fs after its start (pid %d); killing it", block,
                          now - self.spawned[block], proc.pid)  # fmt: skip
            elif last is not None and now - last > self.peer_timeout_s:
                log.error("block %d is hung: no heartbeat for %.1fs (pid %d, last step %s); killing it", block,
                          now - last, proc.pid, self.progress.get(block, {}).get("step"))  # fmt: skip
            else:
                continue
            self.hung.add(block)
            proc.kill()

    def check_stall(self) -> None:
        """Stop the run when every running block has reported and waits for `stall_after_s`."""
        running = [b for b, proc in enumerate(self.procs) if proc.poll() is None]
        if not running or any(b not in self.heard or b in self.hung for b in running):
            return  # a block is starting or being replaced: its neighbours are meant to wait
        idle = {b: float(self.progress[b].get("idle_s") or 0.0) for b in running}
        if min(idle.values()) < self.stall_after_s:
            return
        waits = "; ".join(f"block {b} waits for {self.progress[b].get('waiting')} ({idle[b]:.0f}s, last step "
                          f"{self.progress[b].get('step')})" for b in running)  # fmt: skip
        self.stalled = f"no block did anything for {min(idle.values()):.0f}s: {waits}"
        log.error("the run is stuck (%s); stopping it", self.stalled)
        self.send_stop(failed=True)

    def exited(self, block: int, rc: int) -> bool:
        """A block's process ended with `rc` != 0: restart it if allowed; False if it failed for good."""
        cause = "hung" if block in self.hung else "killed" if rc < 0 else "exited"
        if self.respawn is None or self.stop_sent_at is not None or self.restarts_of(block) >= self.max_restarts:
            return False
        old = self.procs[block]
        self.hung.discard(block)
        self.heard.pop(block, None)
        new = self.respawn(block, cause)
        self.procs[block] = new
        self.spawned[block] = time.monotonic()
        detail = f"signal {signal.Signals(-rc).name}" if rc < 0 and -rc in signal.valid_signals() else f"exit {rc}"
        self.restarts.append({
            "block": block, "attempt": self.restarts_of(block) + 1, "cause": cause, "detail": detail, "exit_code": rc,
            "last_step": self.progress.get(block, {}).get("step"), "old_pid": old.pid, "new_pid": new.pid,
            "at_seconds": round(time.monotonic() - self.started, 3),
        })  # fmt: skip
        log.warning("block %d %s (%s) at step %s: restarted alone (restart %d of %d, pid %d)", block, cause, detail,
                    self.restarts[-1]["last_step"], self.restarts_of(block), self.max_restarts, new.pid)  # fmt: skip
        return True

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
                if self.stop_sent_at is None:
                    self.check_liveness()
                    self.check_stall()
                for (block, _), proc in zip(self.plans, list(self.procs)):
                    rc = proc.poll()
                    if (
                        rc not in (None, 0)
                        and failed is None
                        and self.stop_sent_at is None
                        and not self.exited(block, rc)
                    ):
                        failed = block
                        log.error("block %d exited with %s; stopping the run", block, rc)
                        self.send_stop(failed=True)
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
            state += f" (restarts {self.restarts_of(block)})" if self.restarts_of(block) else ""

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
