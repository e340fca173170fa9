"""Fault-tolerance acceptance runs (docs/reliability.md): kill, hang, partition, delay, memory.

    python tools/fault_trials.py kill --trials 20 --baselines 5 --out runs/faults   # kill -9 a random block
    python tools/fault_trials.py hang --out runs/faults        # SIGSTOP block 2 for 60 s
    python tools/fault_trials.py link --out runs/faults        # 10 s partition, then a 200 ms delay
    python tools/fault_trials.py rss --steps 100000 --out runs/faults   # worker RSS over a long run

Every run is `dni-launch` on the bundled MNIST subset, 4 blocks of `sg` on CPU, one thread per
worker, loopback only. `kill` draws (block, step) from `random.Random(--seed)` and injects
`kind=kill` (the worker SIGKILLs itself once it has forwarded that step, as `kill -9` would),
then checks that the run finished, that only the killed block's pid changed (pids read from
/proc at the start, compared with those in summary.json) and compares the median final test
accuracy with that of uninterrupted runs of the same config. Results go to <out>/<scenario>.json
and a table on stdout.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BASE = ["--dataset", "mnist", "--set", "data.subset=true", "--gpus", "cpu", "--no-live", "--threads", "1",
        "--blocks", "4", "--method", "sg"]  # fmt: skip


def worker_pids(launcher: int) -> dict[int, int]:
    """block -> pid of the launcher's worker processes, from /proc."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            argv = Path(f"/proc/{entry}/cmdline").read_text().split("\x00")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == launcher and "--block" in argv:
            found[int(argv[argv.index("--block") + 1])] = int(entry)
    return found


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def launch(args: list[str], out: Path, *, timeout: float, watch: Any = None) -> dict[str, Any]:
    """Run dni-launch; `watch(proc, pids)` is called every 0.2 s while it runs. Returns what
    happened: exit code, wall time, pids at the start, the summary (if written), output tail."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    shutil.rmtree(out, ignore_errors=True)  # an earlier run's checkpoints would fire `watch` too early
    cmd = [sys.executable, "-m", "dni_dist", "launch", *BASE, *args, "--out", str(out)]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pids: dict[int, int] = {}
    try:
        while proc.poll() is None:
            if len(pids) < 4:
                pids = worker_pids(proc.pid) | pids
            if watch is not None:
                watch(proc, pids)
            if time.monotonic() - start > timeout:
                proc.kill()
            time.sleep(0.2)
        output = proc.stdout.read() if proc.stdout else ""
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    return {"rc": proc.returncode, "wall_s": round(time.monotonic() - start, 1), "pids": pids, "summary": summary,
            "tail": output[-1500:], "output": output}  # fmt: skip


def brief(run: dict[str, Any]) -> dict[str, Any]:
    s = run["summary"] or {}
    return {
        "rc": run["rc"], "wall_s": run["wall_s"], "status": s.get("status"),
        "test_accuracy": (s.get("final") or {}).get("test_accuracy"),
        "restarts": s.get("restarts"), "start_pids": run["pids"],
        "end_pids": {b["block"]: b["pid"] for b in s.get("blocks", [])},
        "lag_seconds": {b["block"]: b["lag_seconds"] for b in s.get("blocks", [])},
        "dropped": {b["block"]: b["dropped"] for b in s.get("blocks", [])},
        "steps": {b["block"]: b["steps"] for b in s.get("blocks", [])},
    }  # fmt: skip


def kill(opts: argparse.Namespace) -> dict[str, Any]:
    cfg = ["--width", str(opts.width), "--batch-size", "32", "--steps", str(opts.steps), "--checkpoint-every", "50",
           "--max-restarts", "3"]  # fmt: skip
    rng = random.Random(opts.seed)
    baselines, trials = [], []
    for i in range(opts.baselines):
        run = brief(launch(cfg, opts.out / f"baseline{i}", timeout=opts.timeout))
        baselines.append(run)
        print(f"baseline {i}: {run['status']} acc {run['test_accuracy']} ({run['wall_s']}s)", flush=True)
    for i in range(opts.trials):
        block, step = rng.randrange(4), rng.randrange(opts.steps)
        run = brief(launch([*cfg, "--inject-fault", f"block={block},step={step},kind=kill"], opts.out / f"trial{i}",
                           timeout=opts.timeout))  # fmt: skip
        changed = sorted(b for b, pid in run["start_pids"].items() if run["end_pids"].get(b) != pid)
        run |= {"killed_block": block, "kill_step": step, "pids_changed": changed,
                "only_killed_changed": changed == [block] and len(run["start_pids"]) == 4}  # fmt: skip
        trials.append(run)
        causes = [(r["block"], r["cause"]) for r in run["restarts"] or []]
        print(f"trial {i}: kill block {block} at step {step}: {run['status']} acc {run['test_accuracy']} "
              f"restarts {causes} pids changed {changed} ({run['wall_s']}s)", flush=True)  # fmt: skip
    accuracy = [r["test_accuracy"] for r in trials if r["test_accuracy"] is not None]
    base_acc = [r["test_accuracy"] for r in baselines if r["test_accuracy"] is not None]
    result = {
        "config": cfg, "seed": opts.seed,
        "finished": sum(r["status"] == "finished" for r in trials), "trials": len(trials),
        "only_killed_pid_changed": sum(r["only_killed_changed"] for r in trials),
        "restarted_once_as_killed": sum([(x["block"], x["cause"]) for x in r["restarts"] or []]
                                        == [(r["killed_block"], "killed")] for r in trials),
        "median_accuracy_trials": statistics.median(accuracy) if accuracy else None,
        "median_accuracy_baselines": statistics.median(base_acc) if base_acc else None,
        "baselines_finished": sum(r["status"] == "finished" for r in baselines),
        "runs": {"baselines": baselines, "trials": trials},
    }  # fmt: skip
    if accuracy and base_acc:
        result["median_gap_points"] = round(
            100 * (result["median_accuracy_baselines"] - result["median_accuracy_trials"]), 2
        )
    return result


def hang(opts: argparse.Namespace) -> dict[str, Any]:
    """SIGSTOP block 2 once the run trains (its first checkpoint exists), SIGCONT it 60 s later."""
    cfg = ["--width", str(opts.width), "--batch-size", "32", "--steps", str(opts.steps), "--checkpoint-every", "50",
           "--max-restarts", "3"]  # fmt: skip
    out = opts.out / "hang"
    state: dict[str, Any] = {}

    def watch(_proc: subprocess.Popen[str], pids: dict[int, int]) -> None:
        now = time.monotonic()
        if "stopped_at" not in state and 2 in pids and list((out / "checkpoints").glob("step-*/manifest.json")):
            os.kill(pids[2], signal.SIGSTOP)
            state.update(stopped_at=now, stopped_wall=time.time(), pid=pids[2])
        elif "stopped_at" in state and "gone_after_s" not in state and not Path(f"/proc/{state['pid']}").exists():
            state["gone_after_s"] = round(now - state["stopped_at"], 2)  # declared hung and SIGKILLed
        elif "stopped_at" in state and "cont" not in state and now - state["stopped_at"] >= 60:
            state["cont"] = True
            try:
                os.kill(state["pid"], signal.SIGCONT)
            except ProcessLookupError:
                state["cont_target"] = "already gone"

    full = launch(cfg, out, timeout=opts.timeout, watch=watch)
    declared = re.search(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ERROR dni_dist\.supervisor: block 2 is hung: "
                         r"no heartbeat for ([\d.]+)s", full["output"])  # fmt: skip
    if declared and "stopped_wall" in state:  # the launcher's log line, against the moment of the SIGSTOP
        at = datetime.datetime.strptime(declared.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        state.update(declared_after_s=round(at - state["stopped_wall"], 3), silent_s=float(declared.group(2)))
    run = brief(full)
    sigstop = {k: v for k, v in state.items() if k not in ("stopped_at", "stopped_wall")}
    return {"config": cfg, **run, "sigstop": sigstop}


def link(opts: argparse.Namespace) -> dict[str, Any]:
    """A 10 s partition and a 10 s, 200 ms delay of block 2's inbound activation edge (fault proxy),
    against an uninterrupted run of the same config."""
    cfg = ["--width", str(opts.width), "--batch-size", "32", "--steps", str(opts.steps), "--checkpoint-every", "50"]
    runs = {}
    for name, fault in (("none", None), ("partition", "block=2,step=200,kind=partition,seconds=10"),
                        ("delay", "block=2,step=200,kind=delay,ms=200,seconds=10")):  # fmt: skip
        args = cfg + (["--inject-fault", fault] if fault else [])
        runs[name] = brief(launch(args, opts.out / f"link-{name}", timeout=opts.timeout))
        lag = {b: (round(v["p50"], 3), round(v["max"], 3)) for b, v in runs[name]["lag_seconds"].items()}
        print(f"{name}: {runs[name]['status']} acc {runs[name]['test_accuracy']} lag s (p50, max) {lag}", flush=True)
    return {"config": cfg, "runs": runs}


def rss(opts: argparse.Namespace) -> dict[str, Any]:
    """Worker RSS over a long run of a tiny model: sampled every 2 s; growth after warm-up."""
    cfg = ["--width", "8", "--depth", "2", "--batch-size", "8", "--steps", str(opts.steps), "--blocks", "2"]
    samples: list[tuple[float, dict[int, float]]] = []
    last = [0.0]

    def watch(_proc: subprocess.Popen[str], pids: dict[int, int]) -> None:
        if time.monotonic() - last[0] >= 2 and pids:
            last[0] = time.monotonic()
            now = {b: r for b, pid in pids.items() if (r := rss_mib(pid)) is not None}
            if now:
                samples.append((last[0], now))

    run = launch([*cfg], opts.out / "rss", timeout=opts.timeout, watch=watch)
    steps = (run["summary"] or {}).get("steps")
    warm = samples[len(samples) // 10 :]  # warm-up: the first tenth of the run
    growth = {}
    for b in sorted({b for _, s in warm for b in s}):
        series = [s[b] for _, s in warm if b in s]
        growth[b] = {"at_warm_up_mib": round(series[0], 1), "max_after_mib": round(max(series), 1),
                     "at_end_mib": round(series[-1], 1), "growth_mib": round(max(series) - series[0], 2)}  # fmt: skip
    return {"config": cfg, "rc": run["rc"], "wall_s": run["wall_s"], "steps": steps, "samples": len(samples),
            "status": (run["summary"] or {}).get("status"), "rss": growth}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=["kill", "hang", "link", "rss"])
    parser.add_argument("--out", type=Path, default=Path("runs/faults"))
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--baselines", type=int, default=5)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="draws which block dies at which step")
    parser.add_argument("--timeout", type=float, default=900.0, help="per run (s)")
    opts = parser.parse_args()
    opts.out.mkdir(parents=True, exist_ok=True)
    result = {"kill": kill, "hang": hang, "link": link, "rss": rss}[opts.scenario](opts)
    path = opts.out / f"{opts.scenario}.json"
    path.write_text(json.dumps(result, indent=2))
    shown = {k: v for k, v in result.items() if k not in ("runs", "tail")}
    print(json.dumps(shown, indent=2))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
