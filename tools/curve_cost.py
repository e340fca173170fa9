"""What CURVE costs one ZeroMQ message: a 256 KiB send + receive over TCP on 127.0.0.1, plaintext
vs CURVE (pyzmq's authenticator admitting any key), median of 5 runs of 400 messages each.

    python tools/curve_cost.py
"""

import statistics
import time

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator


def run(curve, n=400, size=256 * 1024):
    ctx = zmq.Context()
    auth = None
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    if curve:
        sp, ss = zmq.curve_keypair()
        cp, cs = zmq.curve_keypair()
        auth = ThreadAuthenticator(ctx)
        auth.start()
        auth.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
        pull.curve_server = True
        pull.curve_publickey = sp
        pull.curve_secretkey = ss
        push.curve_publickey = cp
        push.curve_secretkey = cs
        push.curve_serverkey = sp
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push.connect(f"tcp://127.0.0.1:{port}")
    buf = b"x" * size
    push.send(buf)
    pull.recv()
    t = time.perf_counter()
    for _ in range(n):
        push.send(buf, copy=False)
        pull.recv(copy=False)
    dt = time.perf_counter() - t
    if auth:
        auth.stop()
    ctx.destroy(linger=0)
    return dt / n


res = {True: [], False: []}
for _ in range(5):
    for c in (False, True):
        res[c].append(run(c))
p, c = statistics.median(res[False]), statistics.median(res[True])
print(
    f"256 KiB message, send+recv in one thread: plain {p * 1e3:.3f} ms, CURVE {c * 1e3:.3f} ms, "
    f"extra {1e3 * (c - p):.3f} ms ({256 / 1024 / c:.0f} MiB/s encrypted)"
)
