"""Strangers cannot talk to a run: CURVE keys, a signed rendezvous, a store bound where asked.

Each test starts real workers and ends by itself; every address is on 127.0.0.0/8."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import zmq
import zmq.auth

from dni_dist.keys import generate
from dni_dist.messages import Kind, Message, encode
from dni_dist.rendezvous import Rendezvous, RendezvousError

from .helpers import children_of, start_launch

MiB = 2**20


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _endpoint(log: Path, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.is_file() and (m := re.search(r"activations (tcp://[0-9.]+:\d+)", log.read_text())):
            return m.group(1)
        time.sleep(0.2)
    raise AssertionError(f"block 1 never said where it listens ({log})")


def _stranger(ctx: zmq.Context[Any], endpoint: str, server_key: bytes, keypair: tuple[bytes, bytes]) -> zmq.Socket[Any]:
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 0)
    sock.curve_publickey, sock.curve_secretkey = keypair
    sock.curve_serverkey = server_key
    sock.connect(endpoint)
    return sock


def _raw_zmtp_flood(endpoint: str, total: int, frame: int = MiB) -> int:
    """Speak ZMTP 3.0 with the NULL mechanism and stream `total` bytes of frames that all say
    "more follows", never finishing the message. Returns the bytes the peer let us send."""
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    greeting = b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00") + b"\x00" + b"\x00" * 31
    ready = b"\x05READY" + b"\x0bSocket-Type" + struct.pack(">I", 4) + b"PUSH"
    sent = 0
    with socket.create_connection((host, int(port)), timeout=10) as s, contextlib.suppress(OSError):
        s.sendall(greeting)
        s.sendall(b"\x04" + bytes([len(ready)]) + ready)
        payload = b"\x00" * frame
        while sent < total:
            s.sendall(b"\x03" + struct.pack(">Q", frame) + payload)  # MORE | LONG: never the last frame
            sent += frame
    return sent


@pytest.mark.slow
def test_strangers_get_no_message_in_and_the_run_finishes(tmp_path: Path) -> None:
    steps = 600
    args = ["--blocks", "2", "--method", "sg", "--steps", str(steps), "--width", "64", "--batch-size", "32"]
    proc = start_launch([*args, "--threads", "1"], tmp_path / "run")
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        endpoint = _endpoint(tmp_path / "run" / "logs" / "block1.log")
        block1_public = zmq.auth.load_certificate(str(tmp_path / "run" / "keys" / "block1.key"))[0]
        other_run = generate(tmp_path / "other-keys", blocks=2)
        other_key = zmq.auth.load_certificate(str(other_run / "block0.key_secret"))
        strangers = [
            _stranger(ctx, endpoint, block1_public, zmq.curve_keypair()),  # a key nobody allowed
            _stranger(ctx, endpoint, block1_public, (other_key[0], other_key[1] or b"")),  # another run's block 0
        ]
        block1 = next(
            pid for pid in children_of(proc.pid) if "--block\x001\x00" in Path(f"/proc/{pid}/cmdline").read_text()
        )
        rss_before = _rss(block1)
        sent = _raw_zmtp_flood(endpoint, total=1024 * MiB)
        rss_after = _rss(block1)
        msg = Message(Kind.ACTIVATION, 0, 0, torch.zeros(32, 64), torch.zeros(32, 10))
        for _ in range(20):
            for s in strangers:
                with contextlib.suppress(zmq.Again):
                    s.send_multipart(encode(msg, run="any", block=0), zmq.NOBLOCK)
            time.sleep(0.05)
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        ctx.destroy(linger=0)
    assert proc.returncode == 0, out
    print(
        f"raw ZMTP peer cut off after {sent / MiB:.0f} MiB; "
        f"block 1 RSS {rss_before / MiB:.0f} -> {rss_after / MiB:.0f} MiB"
    )
    assert sent < 64 * MiB, f"the raw peer streamed {sent / MiB:.0f} MiB before being cut off"
    cap = 2 * 256 * MiB  # the default message cap (two tensors of --max-tensor-mb 256)
    assert rss_after - rss_before < 4 * cap + 64 * MiB
    assert rss_after - rss_before < 64 * MiB, f"block 1 grew by {(rss_after - rss_before) / MiB:.0f} MiB"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    b1 = summary["blocks"][1]
    assert summary["status"] == "finished" and b1["steps"] == steps
    assert b1["messages"]["activation_in"]["messages"] == steps + 1, (
        "only block 0's steps and its END reached the decoder"
    )
    # ZeroMQ cut each of them off at the handshake, and the block counted it
    assert set(b1["rejected"]) == {"unauthenticated", "handshake"}, b1["rejected"]


def test_a_forged_endpoint_in_the_store_is_refused_and_nobody_is_redirected(tmp_path: Path) -> None:
    keys = generate(tmp_path / "keys", blocks=2)
    secret = bytes.fromhex((keys / "run.secret").read_text())
    rdv = Rendezvous.host("127.0.0.1", run="r1", secret=secret)
    ctx: zmq.Context[Any] = zmq.Context()
    trap = ctx.socket(zmq.PULL)
    trap_endpoint = f"tcp://127.0.0.1:{trap.bind_to_random_port('tcp://127.0.0.1')}"
    forger = Rendezvous.connect(
        "127.0.0.1", rdv.port, run="r1", secret=os.urandom(32)
    )  # knows the store, not the secret
    forger.add("block1/attempts", 1)  # counters are not signed: it can pretend block 1 started...
    forger.publish("block1/0/act", trap_endpoint)  # ...but cannot sign the endpoint it offers
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model": {"depth": 2, "width": 16}, "data": {"name": "mnist", "subset": True},
                                  "split": {"placement": "even", "stages": 2}, "run": {"steps": 5}}))  # fmt: skip
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(rdv.port)}
    try:
        worker = subprocess.run(
            [sys.executable, "-m", "dni_dist.worker", "--block", "0", "--blocks", "2", "--config-json", str(config),
             "--out", str(tmp_path / "out"), "--run-id", "r1", "--keys", str(keys)],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        said = worker.stdout + worker.stderr
        assert worker.returncode != 0
        assert "'block1/0/act'" in said and "failed authentication" in said, said[-3000:]
        assert not trap.poll(500), "the worker sent something to the forged endpoint"
    finally:
        ctx.destroy(linger=0)
    with pytest.raises(RendezvousError, match="'block1/0/act' of run r1 failed authentication"):
        rdv.lookup("block1/0/act", timeout_s=1)
    rdv.publish("block1/0/act", "tcp://127.0.0.1:1")  # the real owner can still publish and be read
    assert rdv.lookup("block1/0/act", timeout_s=1) == "tcp://127.0.0.1:1"


def test_the_store_listens_only_where_it_was_asked() -> None:
    rdv = Rendezvous.host("127.0.0.1", run="r2")
    with socket.socket() as s:
        s.settimeout(2)
        assert s.connect_ex(("127.0.0.2", rdv.port)) != 0, "the store also answers on 127.0.0.2"
    with socket.socket() as s:
        s.settimeout(2)
        assert s.connect_ex(("127.0.0.1", rdv.port)) == 0


def test_insecure_is_refused_beyond_loopback(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "dni_dist", "launch", "--insecure", "--host", "10.1.2.3", "--blocks",
                           "2", "--out", str(tmp_path / "r")], capture_output=True, text=True, timeout=60)  # fmt: skip
    said = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "--insecure" in said and "10.1.2.3" in said and "loopback" in said, said
