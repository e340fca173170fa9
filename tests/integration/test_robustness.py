"""A live worker survives malformed frames; Ctrl-C and a dead worker end the run cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
import torch
import torch.nn.functional as F
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dni_dist import checkpoint, manifest
from dni_dist.messages import Kind, Marker, MarkerKind, Message, decode, encode
from dni_dist.rendezvous import Rendezvous
from dni_dist.worker.attempts import PeerKeys

from .helpers import alive, children_of, free_port, port_open, run_launch, start_launch

RUN = "fuzz-run"
WIDTH, CLASSES, N = 16, 10, 8
STEPS = 120  # more than the fuzzing needs; the rest is sent valid


def valid_frames(
    step: int,
    rows: int = N,
    width: int = WIDTH,
    change: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    **header: Any,
) -> list[bytes]:
    g = torch.Generator().manual_seed(step % 2**31)
    x, y = torch.randn(rows, width, generator=g), F.one_hot(torch.arange(rows) % CLASSES, CLASSES).float()
    if change is not None:  # a message that is valid on the wire but not usable by the block
        x, y = change(x, y)
    msg = Message(Kind.ACTIVATION, step, 0, x, y)
    frames = [bytes(f) for f in encode(msg, run=RUN, block=0)]
    if header:
        h = msgpack.unpackb(frames[0])
        h.update(header)
        frames[0] = msgpack.packb(h)
    return frames


# Each strategy makes one message the worker must reject (given the next valid step number).
Bad = Callable[[int], list[bytes]]
BAD: dict[str, Bad] = {
    "missing frame": lambda s: valid_frames(s)[:2],
    "extra frame": lambda s: [*valid_frames(s), b"\x00" * 4],
    "bad msgpack": lambda s: [b"\xc1\xc1\xc1", *valid_frames(s)[1:]],
    "not a map": lambda s: [msgpack.packb([1, 2, 3]), *valid_frames(s)[1:]],
    "wrong version": lambda s: valid_frames(s, v=2),
    "wrong run": lambda s: valid_frames(s, run="someone-else"),
    "wrong sender": lambda s: valid_frames(s, block=7),
    "wrong kind": lambda s: valid_frames(s, kind="gradient"),
    "bad dtype": lambda s: valid_frames(s, dtype="int64"),
    "shape/bytes mismatch": lambda s: valid_frames(s, shape=[N, WIDTH + 1]),
    "nbytes lie": lambda s: valid_frames(s, nbytes=3),
    "wrong width (valid frame, wrong model)": lambda s: valid_frames(s, width=WIDTH + 1),
    "oversized": lambda s: valid_frames(s, rows=1100),  # 70 kB > the 64 KiB cap this worker runs with
    "duplicate step": lambda s: valid_frames(max(0, s - 1)) if s > 0 else valid_frames(s, v=0),
    "end with a tensor": lambda s: [msgpack.packb({"v": 1, "kind": "end", "run": RUN, "block": 0, "step": s}), b"x"],
    "float64 activation": lambda s: valid_frames(s, change=lambda x, y: (x.double(), y.double())),
    "float16 activation": lambda s: valid_frames(s, change=lambda x, y: (x.half(), y.half())),
    "NaN activation": lambda s: valid_frames(
        s, change=lambda x, y: (x.index_fill(0, torch.tensor([1]), float("nan")), y)
    ),
    "Inf label": lambda s: valid_frames(s, change=lambda x, y: (x, y.index_fill(1, torch.tensor([0]), float("inf")))),
    "step 2**62": lambda s: valid_frames(2**62),
    "early END": lambda s: [bytes(f) for f in encode(Marker(MarkerKind.END, 0, 0), run=RUN, block=0)],
}


def test_live_worker_rejects_and_counts_malformed_frames_and_keeps_training(tmp_path: Path) -> None:
    cfg = {"model": {"depth": 2, "width": WIDTH}, "split": {"placement": "even", "stages": 2},
           "credit": {"method": "sg"}, "data": {"name": "mnist", "subset": True}, "run": {"steps": STEPS}}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    rdv = Rendezvous.host("127.0.0.1", run=RUN)
    ctx: zmq.Context[Any] = zmq.Context()
    grads = ctx.socket(zmq.PULL)
    rdv.add("block0/attempts", 1)  # this test plays block 0's first incarnation
    rdv.publish(PeerKeys.key(0, 0, "grad"), f"tcp://127.0.0.1:{grads.bind_to_random_port('tcp://127.0.0.1')}")
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(rdv.port)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "dni_dist.worker", "--block", "1", "--blocks", "2", "--config-json",
         str(tmp_path / "config.json"), "--out", str(tmp_path), "--run-id", RUN, "--max-tensor-mb", "0.0625",
         "--insecure"],  # this test is block 0, with plain sockets: loopback only
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    state = {"step": 0, "bad": 0}
    try:
        push.connect(rdv.lookup(PeerKeys.key(1, 0, "act"), timeout_s=60))

        def attack(kinds: list[str]) -> None:
            for kind in kinds:
                push.send_multipart(BAD[kind](state["step"]))
                state["bad"] += 1
            push.send_multipart(valid_frames(state["step"]))
            assert grads.poll(30_000), f"no gradient for step {state['step']} after {kinds}: the worker stopped"
            got = decode(grads.recv_multipart(), run=RUN, expect_block=1)
            assert isinstance(got, Message) and got.kind is Kind.GRADIENT and got.step == state["step"]
            assert got.tensor.shape == (N, WIDTH) and torch.isfinite(got.tensor).all()
            state["step"] += 1

        for kind in sorted(BAD):  # every kind of damage at least once, then hypothesis mixes them
            attack([kind])

        @settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
        @given(st.lists(st.sampled_from(sorted(BAD)), min_size=1, max_size=4))
        def fuzz(kinds: list[str]) -> None:
            attack(kinds)

        fuzz()
        while state["step"] < STEPS:  # the rest of the run, valid: END is only taken at the real end
            attack([])
        push.send_multipart(encode(Marker(MarkerKind.END, STEPS - 1, 0), run=RUN, block=0))
        out, _ = worker.communicate(timeout=60)
        assert worker.returncode == 0, out
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        ctx.destroy(linger=0)
    stats = json.loads((tmp_path / "blocks" / "block1.json").read_text())
    assert stats["steps"] == STEPS  # every valid step trained
    final = checkpoint.latest_block_file(tmp_path, 1)
    assert final is not None, "block 1 wrote its checkpoint at the end"
    state_dict = checkpoint.load(final)["stages"][0]["module"]
    assert all(torch.isfinite(t).all() for t in state_dict.values()), "the final checkpoint is finite"
    assert sum(stats["rejected"].values()) == state["bad"], (stats["rejected"], state)  # every bad one counted once
    assert set(stats["rejected"]) == {
        "bad_msgpack", "bad_header", "bad_version", "wrong_run", "wrong_sender", "bad_kind", "bad_dtype",
        "bad_size", "bad_frames", "too_large", "duplicate_step", "wrong_shape", "wrong_dtype", "nonfinite",
        "step_window", "early_end",
    }  # fmt: skip


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.mark.slow
def test_ctrl_c_stops_every_block_at_one_step_and_resume_continues_after_it(tmp_path: Path, reaper: list) -> None:  # type: ignore[type-arg]
    port = free_port()
    out = tmp_path / "run"
    args = ["--blocks", "4", "--method", "sg", "--width", "32", "--batch-size", "32", "--checkpoint-every", "20"]
    proc = start_launch([*args, "--steps", "1000000", "--metrics-port", str(port)], out)
    reaper.append(proc)
    _wait_for(lambda: manifest.latest(out) is not None, 90, "a first complete checkpoint")
    kids = children_of(proc.pid)
    assert len(kids) == 4
    assert all(port_open(port + k) for k in range(4))
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=90)
    assert proc.returncode == 130, output
    assert not [k for k in kids if alive(k)], "orphaned workers"
    assert not [k for k in range(4) if port_open(port + k)], "a metrics port is still open"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "stopped"
    man = manifest.latest(out)  # the stop is a consistent cut: every block saved the same step
    assert man is not None and man.step >= 19 and summary["final"]["checkpoint_step"] == man.step
    assert [checkpoint.load_block(man.path_of(k)).step for k in range(4)] == [man.step] * 4
    assert all(b["last_step"] <= man.step for b in summary["blocks"])
    # resume: continues after that step, to the new total
    total = man.step + 1 + 15
    resumed = run_launch([*args, "--steps", str(total), "--resume"], out)
    assert resumed["status"] == "finished"
    assert [b["restarts"] for b in resumed["blocks"]] == [1, 1, 1, 1]
    assert all(b["last_step"] == total - 1 for b in resumed["blocks"])
    assert resumed["blocks"][0]["steps"] == summary["blocks"][0]["steps"] + 15


def test_a_dead_worker_without_restarts_stops_the_run_and_names_the_block(tmp_path: Path, reaper: list) -> None:  # type: ignore[type-arg]
    proc = start_launch(
        ["--blocks", "3", "--method", "sg", "--width", "32", "--steps", "1000000", "--max-restarts", "0"], tmp_path
    )
    reaper.append(proc)
    logs = [tmp_path / "logs" / f"block{k}.log" for k in range(3)]
    _wait_for(lambda: all(p.is_file() and " up" in p.read_text() for p in logs), 90, "all blocks up")
    kids = children_of(proc.pid)
    victim = next(k for k in kids if "--block\x001\x00" in Path(f"/proc/{k}/cmdline").read_text())
    os.kill(victim, signal.SIGKILL)
    output, _ = proc.communicate(timeout=90)
    assert proc.returncode == 1
    assert "block 1 failed" in output, output
    assert not [k for k in kids if alive(k)]


def test_plan_gives_each_block_one_device_and_the_rendezvous(tmp_path: Path) -> None:
    from dni_dist.config import ConfigError
    from dni_dist.launcher import LaunchOptions, plan_workers
    from dni_dist.placement import parse_gpus

    opts = LaunchOptions(blocks=4, gpus=parse_gpus("0,1,2,3"), out=tmp_path, metrics_port=9100, resume=True)
    plans = plan_workers(opts, run_id="r", config_json=tmp_path / "c.json", store_port=1234, control="tcp://x:1",
                         base_env={})  # fmt: skip
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in plans] == ["0", "1", "2", "3"]
    assert {p.env["MASTER_PORT"] for p in plans} == {"1234"} and [p.env["RANK"] for p in plans] == ["0", "1", "2", "3"]
    assert all("--resume" in p.cmd and p.cmd[p.cmd.index("--block") + 1] == str(p.block) for p in plans)
    assert all(p.cmd[p.cmd.index("--config-json") + 1] == str(tmp_path / "c.json") for p in plans)  # the runtime
    cpu = plan_workers(LaunchOptions(blocks=2, out=tmp_path), run_id="r", config_json=tmp_path / "c.json",
                       store_port=1, control="c", base_env={})  # fmt: skip
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in cpu] == ["", ""]
    with pytest.raises(ConfigError, match="--gpus"):
        LaunchOptions(blocks=2, gpus=("a", "b"))
