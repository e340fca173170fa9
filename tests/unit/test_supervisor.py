"""The launcher's supervisor restarts a dead block alone, declares a silent one hung, ignores a
dead incarnation's late reports, and gives up after max_restarts (real processes, no network)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import msgpack
import zmq
from rich.console import Console

from dni_dist.supervisor import Supervisor


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"])


def control_pair(name: str) -> tuple[zmq.Context[Any], zmq.Socket[Any], zmq.Socket[Any]]:
    """The launcher's ROUTER and one block's DEALER, in process."""
    ctx: zmq.Context[Any] = zmq.Context()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    router.bind(f"inproc://{name}")
    dealer.connect(f"inproc://{name}")
    return ctx, router, dealer


def test_dead_and_hung_blocks_are_restarted_alone_until_the_budget_is_spent(tmp_path: Path) -> None:
    ctx, router, dealer = control_pair("sup")
    procs = [sleeper(), sleeper()]
    spawned: list[tuple[int, str]] = []

    def respawn(block: int, cause: str) -> subprocess.Popen[bytes]:
        spawned.append((block, cause))
        return sleeper()

    sup = Supervisor(plans=[(0, tmp_path / "0.log"), (1, tmp_path / "1.log")], procs=procs, router=router, steps=10,
                     console=Console(file=None, quiet=True), live=False, respawn=respawn, max_restarts=1,
                     peer_timeout_s=0.5)  # fmt: skip
    original = [p.pid for p in procs]
    try:
        dealer.send(msgpack.packb({"type": "progress", "block": 1, "step": 7, "pid": procs[1].pid}))
        sup.drain_progress(1000)
        assert sup.progress[1]["step"] == 7 and 1 in sup.heard
        sup.check_liveness()
        assert not sup.hung, "declared hung before the timeout"
        time.sleep(0.6)
        sup.check_liveness()  # block 1 went silent for longer than peer_timeout_s
        assert sup.hung == {1}
        assert procs[1].wait(timeout=10) == -9
        assert sup.exited(1, -9)
        assert spawned == [(1, "hung")] and procs[1].pid != original[1] and procs[0].pid == original[0]
        assert sup.restarts[0] | {"at_seconds": 0} == {
            "block": 1, "attempt": 1, "cause": "hung", "detail": "signal SIGKILL", "exit_code": -9, "last_step": 7,
            "old_pid": original[1], "new_pid": procs[1].pid, "at_seconds": 0,
        }  # fmt: skip
        dealer.send(msgpack.packb({"type": "progress", "block": 1, "step": 9, "pid": original[1]}))
        sup.drain_progress(200)
        assert sup.progress[1]["step"] == 7 and 1 not in sup.heard  # the dead one's late report is ignored
        procs[0].kill()
        assert sup.exited(0, procs[0].wait(timeout=10)) and spawned[-1] == (0, "killed")
        procs[0].kill()
        assert not sup.exited(0, procs[0].wait(timeout=10)), "a second death of block 0 exceeds max_restarts=1"
        assert [r["block"] for r in sup.restarts] == [1, 0]
    finally:
        for p in procs:
            p.kill()
            p.wait()
        ctx.destroy(linger=0)


def test_a_block_that_never_reports_is_hung_and_a_run_where_every_block_waits_is_stopped(tmp_path: Path) -> None:
    ctx, router, dealer = control_pair("sup2")
    procs = [sleeper(), sleeper()]
    sup = Supervisor(plans=[(0, tmp_path / "0.log"), (1, tmp_path / "1.log")], procs=procs, router=router, steps=10,
                     console=Console(file=None, quiet=True), live=False, peer_timeout_s=30, start_timeout_s=0.5,
                     stall_after_s=5)  # fmt: skip
    try:

        def report(block: int, idle_s: float, waiting: str | None) -> None:
            dealer.send(msgpack.packb({"type": "progress", "block": block, "step": 3, "pid": procs[block].pid,
                                       "idle_s": idle_s, "waiting": waiting}))  # fmt: skip
            sup.drain_progress(1000)

        report(0, 0.0, None)
        time.sleep(0.6)
        sup.check_liveness()  # block 1 never reported: stuck before its loop
        assert sup.hung == {1} and procs[1].wait(timeout=10) == -9 and procs[0].poll() is None
        procs[1] = sleeper()  # as if restarted
        sup.hung.clear()
        report(1, 0.0, None)
        report(0, 9.0, "gradient")
        sup.check_stall()
        assert sup.stalled is None, "block 1 is working: not stuck"
        report(1, 6.0, "activation")
        sup.check_stall()
        assert sup.stalled is not None and "block 0 waits for gradient (9s" in sup.stalled
        assert "block 1 waits for activation (6s" in sup.stalled and sup.stop_sent_at is not None
    finally:
        for p in procs:
            p.kill()
            p.wait()
        ctx.destroy(linger=0)
