"""Minor page faults and time per training step of the benchmark's MLP, with glibc's default
allocator settings and with freed memory kept (mallopt), interleaved.

    python tools/page_faults.py --rounds 3 --steps 200      # about a minute on 2 cores

glibc hands freed blocks above its mmap threshold (128 KiB at first, adapted upwards) back to
the kernel, and a 128 x 512 float32 activation is 256 KiB: a step that frees and reallocates
such tensors faults their pages in again. `mallopt(M_MMAP_THRESHOLD)` and `M_TRIM_THRESHOLD`
keep them. This is an allocator effect that every contestant of dni-bench would get alike, not
a decoupling gain, so the runtime does not set it; this script measures how large it is.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import time

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def one_run(steps: int, keep: bool) -> dict[str, float]:
    """One process's ms/step and minor faults/step (after 20 warm-up steps)."""
    import torch

    if keep:
        libc = ctypes.CDLL("libc.so.6")
        if not (libc.mallopt(M_MMAP_THRESHOLD, 32 << 20) and libc.mallopt(M_TRIM_THRESHOLD, 512 << 20)):
            raise RuntimeError("mallopt refused the settings (not glibc?)")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    layers: list[torch.nn.Module] = []
    width = 784
    for _ in range(8):
        layers += [torch.nn.Linear(width, 512), torch.nn.BatchNorm1d(512), torch.nn.ReLU()]
        width = 512
    model = torch.nn.Sequential(*layers, torch.nn.Linear(512, 10))
    opt = torch.optim.Adam(model.parameters(), fused=True)
    x, y = torch.randn(128, 784), torch.randint(0, 10, (128,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(20):
        step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return {"ms_per_step": 1e3 * seconds / steps, "faults_per_step": faults / steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--child", choices=["default", "keep"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_run(args.steps, args.child == "keep")))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs: dict[str, list[dict[str, float]]] = {"default": [], "keep": []}
    for r in range(args.rounds):
        for mode in runs:
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--steps", str(args.steps)],
                                 env=env, capture_output=True, text=True, check=True).stdout  # fmt: skip
            runs[mode].append(json.loads(out))
            print(f"round {r + 1}/{args.rounds} {mode:8s} {runs[mode][-1]}", file=sys.stderr)
    med = {m: {k: statistics.median(x[k] for x in v) for k in v[0]} for m, v in runs.items()}
    ratios = [d["ms_per_step"] / k["ms_per_step"] for d, k in zip(runs["default"], runs["keep"], strict=True)]
    print(json.dumps({"medians": med, "default_over_keep_paired_median": statistics.median(ratios), "runs": runs}))


if __name__ == "__main__":
    main()
