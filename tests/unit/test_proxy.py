"""The fault proxy forwards both ways, delays by what it is told, and passes nothing while
partitioned (the bytes wait, the connection stays), on loopback only."""

from __future__ import annotations

import socket
import time

from dni_dist.proxy import FaultProxy


def echo_server() -> tuple[socket.socket, int]:
    srv = socket.create_server(("127.0.0.1", 0))
    return srv, srv.getsockname()[1]


def roundtrip(client: socket.socket, peer: socket.socket, payload: bytes) -> float:
    t0 = time.monotonic()
    client.sendall(payload)
    got = b""
    while len(got) < len(payload):
        got += peer.recv(65536)
    assert got == payload
    return time.monotonic() - t0


def test_forwards_delays_and_partitions() -> None:
    srv, port = echo_server()
    proxy = FaultProxy(("127.0.0.1", port)).start()
    client = socket.create_connection((proxy.host, proxy.port), timeout=10)
    server_side, _ = srv.accept()
    server_side.settimeout(10)
    try:
        assert roundtrip(client, server_side, b"x" * 200_000) < 1.0
        assert roundtrip(server_side, client, b"back") < 1.0  # both ways
        proxy.delay(0.2, seconds=30)
        assert 0.18 < roundtrip(client, server_side, b"slow") < 1.5
        proxy.delay(0.0, seconds=0)
        proxy.partition(0.6)
        elapsed = roundtrip(client, server_side, b"held")  # waits for the partition to end, then arrives
        assert 0.5 < elapsed < 2.0, elapsed
        assert proxy.connections == 1 and [k for k, _, _ in proxy.episodes] == ["delay", "delay", "partition"]
        proxy.cut()
        server_side.settimeout(5)
        assert server_side.recv(10) == b"", "the cut closes the connection"
    finally:
        proxy.close()
        client.close()
        server_side.close()
        srv.close()


def test_bytes_sent_before_a_close_still_arrive_on_a_delayed_link() -> None:
    """A peer that sends and closes at once: what it sent is delivered after the delay, then the
    close (as on a real slow link); drain() waits for it."""
    srv, port = echo_server()
    proxy = FaultProxy(("127.0.0.1", port)).start()
    proxy.delay(0.2, seconds=30)
    client = socket.create_connection((proxy.host, proxy.port), timeout=10)
    server_side, _ = srv.accept()
    server_side.settimeout(10)
    try:
        client.sendall(b"last words")
        client.close()
        time.sleep(0.05)
        assert not proxy.drain(timeout_s=0.01), "still held by the delay"
        assert proxy.drain(timeout_s=2.0)
        got = b""
        while chunk := server_side.recv(100):
            got += chunk
        assert got == b"last words"
    finally:
        proxy.close()
        server_side.close()
        srv.close()
