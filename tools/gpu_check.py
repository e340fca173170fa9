"""GPU check: CUDA tensors through the transport, and 4 blocks on one GPU (a few minutes).

    bash tools/gpu_check.sh runs/gpu                 # on a machine with one NVIDIA GPU
    python tools/gpu_check.py --out runs/gpu --device cpu --steps 100   # dry run of the same code on CPU

1. Transport: a float32 [128, d] tensor on the device goes through `ZmqSender` (staged through
   pinned host memory) and `ZmqReceiver` over ipc, then back to the device with a non_blocking
   copy; it must arrive equal. For 256 KiB, 1 MiB and 4 MiB it times the three parts per message
   (device -> pinned host, ZeroMQ send + receive, host -> device).
2. Four blocks on the one device: `dni-launch --blocks 4 --gpus 0,0,0,0` (free-running cDNI,
   the bench MLP on the bundled MNIST subset). Per block it reports the step time, the compute
   share (`compute_seconds / wall_seconds`), and the transport share: the messages the block
   sent and received per step, times the per-message cost of part 1 at that size, over its step
   time.
Writes gpu_check.json and prints a table; exits 1 if a tensor arrives changed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import zmq

from dni_dist.messages import Kind, Message
from dni_dist.transport import TransportConfig, ZmqReceiver, ZmqSender, make_socket, to_device

SIZES = (256 << 10, 1 << 20, 4 << 20)


def transport(device: torch.device, size: int, count: int, folder: Path) -> dict[str, float]:
    """Per-message seconds of each part, and whether every tensor arrived equal."""
    ctx: zmq.Context[Any] = zmq.Context()
    pull = make_socket(ctx, zmq.PULL, TransportConfig())
    pull.bind(f"ipc://{folder / f'gpu-{size}.sock'}")
    push = make_socket(ctx, zmq.PUSH, TransportConfig())
    push.connect(f"ipc://{folder / f'gpu-{size}.sock'}")
    tx = ZmqSender(push, run="gpu", block=0)
    rx = ZmqReceiver(pull, run="gpu", expect_block=0, allowed=frozenset({"gradient"}), prefix="[gpu]", edge="check")
    gen = torch.Generator().manual_seed(size)
    parts = {"to_host_s": 0.0, "zmq_s": 0.0, "to_device_s": 0.0}
    equal = True
    warmup = 3  # the first sends wait for the connection (IMMEDIATE) and the pinned allocator
    for step in range(warmup + count):
        if step == warmup:
            parts = dict.fromkeys(parts, 0.0)
        t = torch.randn(128, size // 512, generator=gen).to(device)
        sync(device)
        t0 = time.perf_counter()
        msg = Message(Kind.GRADIENT, step, 0, t)
        tx.send(msg)  # to_host: a pinned staging copy for a CUDA tensor
        t1 = time.perf_counter()
        got = None
        while got is None:
            tx.flush()
            if pull.poll(10):
                got = rx.recv()
        t2 = time.perf_counter()
        assert isinstance(got, Message)
        back = to_device(got, device)
        sync(device)
        t3 = time.perf_counter()
        equal &= bool(torch.equal(back.tensor, t))
        for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2)):
            parts[key] += dt
    push.close(linger=0)
    pull.close(linger=0)
    ctx.term()
    per = {k: v / count for k, v in parts.items()}
    per["message_s"] = sum(per.values())
    per["mb_per_s"] = size / per["message_s"] / 1e6
    return {**per, "equal": float(equal)}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def four_blocks(gpus: str, steps: int, out: Path) -> dict[str, Any]:
    """dni-launch with 4 blocks on the one device; its summary.json."""
    cmd = [sys.executable, "-c", "from dni_dist.cli import launch_main; launch_main()", "--blocks", "4",
           "--gpus", gpus, "--steps", str(steps), "--set", "data.subset=true", "--set", "model.depth=8",
           "--set", "model.width=512", "--set", "model.batch_norm=true", "--out", str(out), "--no-live"]  # fmt: skip
    print("$ dni-launch " + " ".join(cmd[3:]), flush=True)
    subprocess.run(cmd, check=True, timeout=600)
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cuda", help="cuda (the check) or cpu (a dry run of the same code)")
    p.add_argument("--steps", type=int, default=2000, help="training steps of the 4-block run")
    p.add_argument("--count", type=int, default=50, help="messages per transport size")
    a = p.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        print(f"no CUDA device visible to torch {torch.__version__} (built for CUDA {torch.version.cuda}); "
              "run on a GPU machine, or pass --device cpu for a dry run", file=sys.stderr)  # fmt: skip
        return 2
    device = torch.device(a.device)
    a.out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__}, device {name}", flush=True)
    result: dict[str, Any] = {"torch": torch.__version__, "device": name, "transport": {}}
    for size in SIZES:
        r = transport(device, size, a.count, a.out)
        result["transport"][str(size)] = r
        print(f"transport {size >> 10:5d} KiB: to host {1e3 * r['to_host_s']:.3f} ms, zmq {1e3 * r['zmq_s']:.3f} ms, "
              f"to device {1e3 * r['to_device_s']:.3f} ms, {r['mb_per_s']:.0f} MB/s, "
              f"{'equal' if r['equal'] else 'CHANGED'}", flush=True)  # fmt: skip
    summary = four_blocks("0,0,0,0" if device.type == "cuda" else "cpu", a.steps, a.out / "four-blocks")
    act_bytes = 128 * 512 * 4
    per_msg = result["transport"][str(min(SIZES, key=lambda s: abs(s - act_bytes)))]["message_s"]
    blocks = []
    for b in summary["blocks"]:
        step_s = b["wall_seconds"] / max(1, b["steps"])
        msgs = sum(m["messages"] for k, m in b["messages"].items() if k.startswith(("activation", "gradient")))
        share = msgs / max(1, b["steps"]) * per_msg / step_s
        compute = b["compute_seconds"] / b["wall_seconds"]
        blocks.append({"block": b["block"], "step_ms": 1e3 * step_s, "compute_share": compute,
                       "transport_share": share})  # fmt: skip
        print(f"block {b['block']}: {1e3 * step_s:.2f} ms/step, compute {blocks[-1]['compute_share']:.0%}, "
              f"transport {share:.1%} of step time", flush=True)  # fmt: skip
    result["four_blocks"] = {"samples_per_second": summary["samples_per_second"], "blocks": blocks,
                             "final_test_accuracy": summary["final"]["test_accuracy"]}  # fmt: skip
    (a.out / "gpu_check.json").write_text(json.dumps(result, indent=1))
    print(f"4 blocks: {summary['samples_per_second']:.0f} samples/s; wrote {a.out / 'gpu_check.json'}")
    return 0 if all(r["equal"] for r in result["transport"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
