"""dni-bench's transport line: dni_dist's tensor messages against raw pyzmq PUSH/PULL.

    python -m dni_dist.bench_transport run --sizes 64K,256K,1M,4M,16M --endpoints ipc,tcp   # ~1 minute
    dni-bench --rounds 3 --out docs/bench            # runs it once per round, with the contestants

Two processes, as two blocks are: a receiver binds one PULL socket per mode, a sender connects a
PUSH to each. For each size the sender sends bursts of about 32 MB, one mode after the other and
in the reverse order on the next burst, and waits for the receiver's acknowledgement after each
burst, so the modes run side by side on the same machine state and never overlap. Throughput is
the tensor bytes of a mode's bursts over the receiver's time from the first to the last message
of each burst; the ratios are medians over bursts of the paired ratio to the raw partner.

- raw:       pyzmq with its defaults, one bytes frame per message, blocking send and recv: the
             floor any messaging on ZeroMQ pays.
- dni:       a gradient `Message` of a float32 [128, size / 512] tensor through `ZmqSender` and
             `ZmqReceiver` with the runtime's socket options (HWM 4, frames copied below 1 MiB and
             sent zero-copy and tracked above, msgpack header, validation, a tensor view on the
             received frame), as a free-running block receives, plaintext.
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
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import zmq

MODES = ("raw", "dni", "dni-lockstep", "raw-curve", "dni-curve")
PARTNER = {"dni": "raw", "dni-lockstep": "raw", "dni-curve": "raw-curve"}  # each dni mode against its raw socket
ENDPOINTS = ("ipc", "tcp")
DEFAULT_SIZES = "64K,256K,1M,4M,16M"
BURST_BYTES = 32 << 20
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


def burst_for(size: int) -> int:
    """Messages per burst: about 32 MB, at least 8."""
    return max(8, BURST_BYTES // size)


def bursts_for(size: int) -> int:
    """Bursts per mode and size: about 384 MB of each mode, at least 4 bursts."""
    return max(4, (384 << 20) // (burst_for(size) * size))


def schedule(sizes: list[int], modes: list[str]) -> list[tuple[int, int, str]]:
    """(size, burst, mode) in the order both processes run them: modes alternate direction per burst."""
    out = []
    for size in sizes:
        for b in range(bursts_for(size)):
            out += [(size, b, m) for m in (modes if b % 2 == 0 else modes[::-1])]
    return out


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


def _addresses(base: str, modes: list[str]) -> dict[str, str]:
    """One endpoint per mode, and "ack" for the receiver's acknowledgements: ipc paths or tcp ports."""
    names = [*modes, "ack"]
    if base.startswith("ipc://"):
        return {m: f"{base}.{i}" for i, m in enumerate(names)}
    host, port = base.rsplit(":", 1)
    return {m: f"{host}:{int(port) + i}" for i, m in enumerate(names)}


Sockets = tuple[zmq.Context[Any], dict[str, zmq.Socket[Any]], zmq.Socket[Any]]


def _open(modes: list[str], address: str, keys: str, *, receiver: bool) -> Sockets:
    """One side's context, its socket per mode and the acknowledgement socket: the receiver binds
    PULLs (and the PUSH of its acknowledgements), the sender connects PUSHes (and a PULL)."""
    addrs = _addresses(address, modes)
    ctx: zmq.Context[Any] = zmq.Context()
    key_map = json.loads(keys)
    socks = {m: _socket(ctx, zmq.PULL if receiver else zmq.PUSH, m, key_map) for m in modes}
    ack: zmq.Socket[Any] = ctx.socket(zmq.PUSH if receiver else zmq.PULL)
    for name, sock in (*socks.items(), ("ack", ack)):
        if receiver:
            sock.bind(addrs[name])
        else:
            sock.connect(addrs[name])
    return ctx, socks, ack


@app.command("recv", hidden=True)
def recv(modes: str, address: str, sizes: str, keys: str) -> None:
    """Receiver: bind, receive every burst, acknowledge it, print {mode: {size: [seconds per burst]}}."""
    from dni_dist.transport import ZmqReceiver

    mode_list = modes.split(",")
    ctx, socks, ack = _open(mode_list, address, keys, receiver=True)
    print("ready", flush=True)
    rxs = {m: ZmqReceiver(socks[m], run=RUN, expect_block=0, allowed=frozenset({"gradient"}), prefix="[bench]",
                          edge="bench", align=m == "dni-lockstep") for m in mode_list}  # fmt: skip
    pollers = {}
    for m in mode_list:
        pollers[m] = zmq.Poller()
        pollers[m].register(socks[m], zmq.POLLIN)
    seconds: dict[str, dict[int, list[float]]] = {m: {} for m in mode_list}
    for size, _, mode in schedule([int(x) for x in sizes.split(",")], mode_list):
        n, got, start = burst_for(size), 0, 0.0
        sock, rx = socks[mode], rxs[mode]
        while got < n:
            if mode.startswith("raw"):
                sock.recv(copy=False)
                waiting = True
            else:
                if not pollers[mode].poll(30_000):
                    raise RuntimeError(f"no {mode} message for 30 s")
                waiting = rx.recv() is not None
            while waiting:
                got += 1
                if got == 1:
                    start = time.perf_counter()
                waiting = got < n and not mode.startswith("raw") and rx.recv() is not None
        seconds[mode].setdefault(size, []).append(time.perf_counter() - start)
        ack.send(b"")
    print(json.dumps(seconds), flush=True)
    for sock in (*socks.values(), ack):
        sock.close(linger=0)
    ctx.term()


@app.command("send", hidden=True)
def send(modes: str, address: str, sizes: str, keys: str) -> None:
    """Sender: connect, send each burst as fast as the socket takes it, wait for its acknowledgement."""
    import torch

    from dni_dist.messages import Kind, Message
    from dni_dist.transport import ZmqSender

    mode_list = modes.split(",")
    ctx, socks, ack = _open(mode_list, address, keys, receiver=False)
    txs = {m: ZmqSender(socks[m], run=RUN, block=0) for m in mode_list}
    size_list = [int(x) for x in sizes.split(",")]
    tensors = {size: torch.ones(128, size // 512) for size in size_list}
    payloads = {size: bytes(t.view(-1).view(torch.uint8).numpy()) for size, t in tensors.items()}  # not the zero page
    step = 0
    for size, _, mode in schedule(size_list, mode_list):
        tensor, payload = tensors[size], payloads[size]
        sock, tx = socks[mode], txs[mode]
        for _ in range(burst_for(size)):
            step += 1
            if mode.startswith("raw"):
                sock.send(payload, copy=False)
                continue
            tx.send(Message(Kind.GRADIENT, step, 0, tensor))
            while not tx.flush():
                zmq.select([], [sock], [], 1.0)
        if not ack.poll(60_000):
            raise RuntimeError(f"the receiver did not acknowledge a {mode} burst of {size} bytes in 60 s")
        ack.recv()
    for sock in (*socks.values(), ack):
        sock.close(linger=5000)
    ctx.term()


def measure(endpoint: str, sizes: list[int], modes: tuple[str, ...] = MODES) -> dict[str, Any]:
    """{"mb_per_s": {"<mode>/<endpoint>": {"<size>": MB/s}}, "burst_ratio": {"<dni mode>/<endpoint>":
    {"<size>": median over bursts of (raw partner's seconds / this mode's seconds)}}}, from one
    receiver and one sender process that run every mode in alternating bursts (5 minutes at most)."""
    with tempfile.TemporaryDirectory() as tmp:
        if endpoint == "ipc":
            address = f"ipc://{Path(tmp) / 'bench.sock'}"
        else:
            from dni_dist.bench_runs import free_port

            port = free_port()
            while not all(_port_free(port + i) for i in range(len(modes) + 1)):
                port = free_port()
            address = f"tcp://127.0.0.1:{port}"
        server, client = zmq.curve_keypair(), zmq.curve_keypair()
        keys = json.dumps({"server_public": server[0].decode(), "server_secret": server[1].decode(),
                           "client_public": client[0].decode(), "client_secret": client[1].decode()})  # fmt: skip
        args = [",".join(modes), address, ",".join(map(str, sizes)), keys]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        rx = subprocess.Popen([sys.executable, "-m", "dni_dist.bench_transport", "recv", *args], env=env,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert rx.stdout is not None
            if rx.stdout.readline().strip() != "ready":
                raise RuntimeError(f"transport receiver ({endpoint}) did not start")
            tx = subprocess.run([sys.executable, "-m", "dni_dist.bench_transport", "send", *args], env=env,
                                capture_output=True, text=True, timeout=300)  # fmt: skip
            if tx.returncode != 0:
                raise RuntimeError(f"transport sender ({endpoint}) failed:\n{tx.stderr[-2000:]}")
            out, _ = rx.communicate(timeout=60)
        finally:
            if rx.poll() is None:
                rx.kill()
                rx.wait()
    seconds = {
        m: {int(k): v for k, v in by_size.items()} for m, by_size in json.loads(out.strip().splitlines()[-1]).items()
    }
    return {
        "mb_per_s": {
            f"{m}/{endpoint}": {str(s): len(v) * (burst_for(s) - 1) * s / sum(v) / 1e6 for s, v in by_size.items()}
            for m, by_size in seconds.items()
        },
        "burst_ratio": {
            f"{m}/{endpoint}": {
                str(s): statistics.median(r / d for r, d in zip(seconds[raw][s], seconds[m][s], strict=True))
                for s in sizes
            }
            for m, raw in PARTNER.items()
            if m in seconds and raw in seconds
        },
    }


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def run_transport(sizes: list[int], endpoints: list[str], modes: tuple[str, ...] = MODES) -> dict[str, Any]:
    """measure() for every endpoint, merged: {"mb_per_s": {...}, "burst_ratio": {...}}."""
    out: dict[str, Any] = {"mb_per_s": {}, "burst_ratio": {}}
    for e in endpoints:
        one = measure(e, sizes, modes)
        out["mb_per_s"] |= one["mb_per_s"]
        out["burst_ratio"] |= one["burst_ratio"]
    return out


def ratios(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median over rounds of each round's burst-paired ratio of a dni mode to its raw partner
    (dni / raw, dni-lockstep / raw, dni-curve / raw-curve), per "<mode>/<endpoint>" and size."""
    keys = runs[0]["burst_ratio"]
    return {k: {s: statistics.median(r["burst_ratio"][k][s] for r in runs) for s in keys[k]} for k in keys}


@app.command("run")
def main(
    sizes: Annotated[str, typer.Option(help="message sizes, e.g. 64K,256K,1M,4M,16M")] = DEFAULT_SIZES,
    endpoints: Annotated[str, typer.Option(help="ipc, tcp or both")] = "ipc,tcp",
    rounds: Annotated[int, typer.Option(help="repeat and report the median ratio")] = 1,
) -> None:
    """Print MB/s per mode, endpoint and size, and each dni mode / its raw partner."""
    try:
        byte_sizes = [parse_size(s) for s in sizes.split(",")]
    except (ValueError, KeyError) as e:
        raise typer.BadParameter(str(e)) from None
    eps = [e.strip() for e in endpoints.split(",")]
    if not set(eps) <= set(ENDPOINTS):
        raise typer.BadParameter(f"--endpoints takes ipc and/or tcp, got {endpoints!r}")
    runs = [run_transport(byte_sizes, eps) for _ in range(rounds)]
    print(json.dumps({"mb_per_s": [r["mb_per_s"] for r in runs], "ratio_to_raw": ratios(runs)}, indent=1))


if __name__ == "__main__":
    app()
