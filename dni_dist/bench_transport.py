"""dni-bench's transport line: dni_dist's tensor messages against raw pyzmq PUSH/PULL.

    python -m dni_dist.bench_transport run --sizes 64K,256K,1M,4M,16M --endpoints ipc,tcp   # ~1 minute
    dni-bench --rounds 3 --out docs/bench            # runs it once per round, with the contestants

Two processes, as two blocks are: a receiver binds a PULL socket, a sender connects a PUSH and
sends, for each size, a few warm-up messages and then `count` timed ones. Throughput is the
tensor bytes of the timed messages over the receiver's time from the first to the last one.

- raw:       pyzmq with its defaults, one bytes frame per message, blocking send and recv: the
             floor any messaging on ZeroMQ pays.
- dni:       a gradient `Message` of a float32 [128, size / 512] tensor through `ZmqSender` and
             `ZmqReceiver` with the runtime's socket options (HWM 4, zero-copy tracked sends of
             big frames, msgpack header, validation, a tensor view on the received frame), as a
             free-running block receives, plaintext.
- dni-lockstep: the same as a lockstep block receives: a frame that does not start on a 64-byte
             boundary (libzmq's receive buffers mostly do not) is copied to an aligned tensor.
- raw-curve: raw pyzmq again, with CURVE keys on both sockets: the floor for encrypted messaging.
- dni-curve: dni, CURVE-encrypted (the runtime's default; docs/security.md).

The receiver waits on a poller and then drains every message that is waiting, as a worker does.
The result is MB/s per (mode, endpoint, size) and, as ratios, dni / raw, dni-lockstep / raw and
dni-curve / raw-curve: what dni_dist adds over the same ZeroMQ socket, with and without encryption.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import zmq

MODES = ("raw", "dni", "dni-lockstep", "raw-curve", "dni-curve")
PARTNER = {
    "dni": "raw",
    "dni-lockstep": "raw",
    "dni-curve": "raw-curve",
}  # each dni mode against the raw socket it runs on
ENDPOINTS = ("ipc", "tcp")
DEFAULT_SIZES = "64K,256K,1M,4M,16M"
WARMUP = 5
RUN = "bench"

app = typer.Typer(add_completion=False, help=__doc__)


def parse_size(text: str) -> int:
    """'64K' -> 65536, '4M' -> 4194304, '1000' -> 1000; a multiple of 512 bytes (128 rows of float32)."""
    units = {"K": 1 << 10, "M": 1 << 20}
    t = text.strip().upper()
    value = int(t[:-1]) * units[t[-1]] if t and t[-1] in units else int(t)
    if value <= 0 or value % 512:
        raise ValueError(f"size {text!r} must be a positive multiple of 512 bytes (e.g. 64K, 4M)")
    return value


def count_for(size: int) -> int:
    """Timed messages per size: about 768 MB, between 20 and 3000 messages (long enough for the
    scheduling noise of two busy processes on a small machine to average out)."""
    return max(20, min(3000, (768 << 20) // size))


def _socket(ctx: zmq.Context[Any], kind: int, mode: str, keys: dict[str, str]) -> zmq.Socket[Any]:
    from dni_dist.transport import Curve, TransportConfig, make_socket, secure

    curve = None
    server = kind == zmq.PULL
    if mode.endswith("-curve"):
        mine = "server" if server else "client"
        curve = Curve(keys[f"{mine}_public"].encode(), keys[f"{mine}_secret"].encode())
    if mode.startswith("raw"):
        raw: zmq.Socket[Any] = ctx.socket(kind)
        secure(raw, curve, server_key=None if server or curve is None else keys["server_public"].encode())
        return raw
    return make_socket(
        ctx,
        kind,
        TransportConfig(),
        curve=curve,
        server_key=None if server or curve is None else keys["server_public"].encode(),
    )


@app.command("recv", hidden=True)
def recv(mode: str, address: str, sizes: str, keys: str) -> None:
    """Receiver: bind, receive every size's messages, print {size: MB/s}."""
    from dni_dist.transport import ZmqReceiver

    ctx: zmq.Context[Any] = zmq.Context()
    sock = _socket(ctx, zmq.PULL, mode, json.loads(keys))
    sock.bind(address)
    print("ready", flush=True)
    rx = ZmqReceiver(sock, run=RUN, expect_block=0, allowed=frozenset({"gradient"}), prefix="[bench]", edge="bench",
                     align=mode == "dni-lockstep")  # fmt: skip
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    result: dict[int, float] = {}
    for size in map(int, sizes.split(",")):
        n = WARMUP + count_for(size)
        got, start = 0, 0.0
        while got < n:
            if mode.startswith("raw"):
                sock.recv(copy=False)
                waiting = True
            else:
                poller.poll(10_000)
                waiting = rx.recv() is not None
            while waiting:
                got += 1
                if got == WARMUP + 1:
                    start = time.perf_counter()
                waiting = got < n and not mode.startswith("raw") and rx.recv() is not None
        result[size] = (n - WARMUP - 1) * size / (time.perf_counter() - start) / 1e6
    print(json.dumps(result), flush=True)
    sock.close(linger=0)
    ctx.term()


@app.command("send", hidden=True)
def send(mode: str, address: str, sizes: str, keys: str) -> None:
    """Sender: connect and send every size's messages as fast as the socket takes them."""
    import torch

    from dni_dist.messages import Kind, Message
    from dni_dist.transport import ZmqSender

    ctx: zmq.Context[Any] = zmq.Context()
    sock = _socket(ctx, zmq.PUSH, mode, json.loads(keys))
    sock.connect(address)
    tx = ZmqSender(sock, run=RUN, block=0)
    for size in map(int, sizes.split(",")):
        tensor = torch.ones(128, size // 512)
        payload = bytes(size)
        for step in range(WARMUP + count_for(size)):
            if mode.startswith("raw"):
                sock.send(payload, copy=False)
                continue
            tx.send(Message(Kind.GRADIENT, step, 0, tensor))
            while not tx.flush():
                zmq.select([], [sock], [], 1.0)
    while not tx.flush():
        time.sleep(0.001)
    sock.close(linger=5000)
    ctx.term()


def measure(mode: str, endpoint: str, sizes: list[int]) -> dict[int, float]:
    """MB/s for each size, one receiver and one sender process (2 minutes at most)."""
    with tempfile.TemporaryDirectory() as tmp:
        if endpoint == "ipc":
            address = f"ipc://{Path(tmp) / 'bench.sock'}"
        else:
            from dni_dist.bench_runs import free_port

            address = f"tcp://127.0.0.1:{free_port()}"
        server, client = zmq.curve_keypair(), zmq.curve_keypair()
        keys = json.dumps({"server_public": server[0].decode(), "server_secret": server[1].decode(),
                           "client_public": client[0].decode(), "client_secret": client[1].decode()})  # fmt: skip
        args = [mode, address, ",".join(map(str, sizes)), keys]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        rx = subprocess.Popen([sys.executable, "-m", "dni_dist.bench_transport", "recv", *args], env=env,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert rx.stdout is not None
            if rx.stdout.readline().strip() != "ready":
                raise RuntimeError(f"transport receiver ({mode}, {endpoint}) did not start")
            tx = subprocess.run([sys.executable, "-m", "dni_dist.bench_transport", "send", *args], env=env,
                                capture_output=True, text=True, timeout=120)  # fmt: skip
            if tx.returncode != 0:
                raise RuntimeError(f"transport sender ({mode}, {endpoint}) failed:\n{tx.stderr[-2000:]}")
            out, _ = rx.communicate(timeout=120)
        finally:
            if rx.poll() is None:
                rx.kill()
                rx.wait()
        return {int(k): float(v) for k, v in json.loads(out.strip().splitlines()[-1]).items()}


def run_transport(sizes: list[int], endpoints: list[str], modes: tuple[str, ...] = MODES) -> dict[str, Any]:
    """{"<mode>/<endpoint>": {size: MB/s}} for every mode and endpoint."""
    return {f"{m}/{e}": measure(m, e, sizes) for e in endpoints for m in modes}


def ratios(runs: list[dict[str, Any]], sizes: list[int], endpoints: list[str]) -> dict[str, dict[str, float]]:
    """Median over rounds of the paired ratio of each dni mode to its raw partner (dni / raw,
    dni-curve / raw-curve), per "<mode>/<endpoint>" and size."""
    import statistics

    out: dict[str, dict[str, float]] = {}
    for e in endpoints:
        for m, raw in PARTNER.items():
            if all(f"{m}/{e}" in r and f"{raw}/{e}" in r for r in runs):
                out[f"{m}/{e}"] = {
                    str(s): statistics.median(r[f"{m}/{e}"][s] / r[f"{raw}/{e}"][s] for r in runs) for s in sizes
                }
    return out


@app.command("run")
def main(
    sizes: Annotated[str, typer.Option(help="message sizes, e.g. 64K,256K,1M,4M,16M")] = DEFAULT_SIZES,
    endpoints: Annotated[str, typer.Option(help="ipc, tcp or both")] = "ipc,tcp",
    rounds: Annotated[int, typer.Option(help="repeat and report the median ratio")] = 1,
) -> None:
    """Print MB/s per mode, endpoint and size, and dni / raw."""
    try:
        byte_sizes = [parse_size(s) for s in sizes.split(",")]
    except (ValueError, KeyError) as e:
        raise typer.BadParameter(str(e)) from None
    eps = [e.strip() for e in endpoints.split(",")]
    if not set(eps) <= set(ENDPOINTS):
        raise typer.BadParameter(f"--endpoints takes ipc and/or tcp, got {endpoints!r}")
    runs = [run_transport(byte_sizes, eps) for _ in range(rounds)]
    print(json.dumps({"mb_per_s": runs, "ratio_to_raw": ratios(runs, byte_sizes, eps)}, indent=1))


if __name__ == "__main__":
    app()
